"""Streaming predict: the same bytes as scoring the whole table, block by block, with the same errors.

One small model is trained once (module fixture) on synthetic customers; every table is
scored whole (read_table + predict_table + to_csv, the reference) and streamed in
blocks of 7 rows and of 100,000, and the outputs are compared byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custseg.cli import main
from custseg.exceptions import DataError, SchemaError
from custseg.io.chunks import TableStream, read_table_in_blocks
from custseg.io.reading import read_table
from custseg.io.writing import FLOAT_FORMAT, csv_rows, format_general
from custseg.persistence import load_model
from custseg.workflow import predict_file, predict_table, score_chunks

from conftest import SHIPPED_TEST, SHIPPED_TRAIN, make_customers, tiny_toml


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("stream")
    train = work / "train.csv"
    make_customers(240, seed=1).to_csv(train, index=False)
    (work / "tiny.toml").write_text(tiny_toml(seed=3, figures=False), encoding="utf-8")
    code = main(["train", "--train", str(train), "--config", str(work / "tiny.toml"), "--models-dir",
                 str(work / "models"), "--results-dir", str(work / "results"), "-q"])
    assert code == 0
    return work / "models"


def whole_table_bytes(models: Path, path: Path, id_column: str | None = None) -> bytes:
    model = load_model(models)
    na = model.settings.get("data", {}).get("na_values", [])
    result = predict_table(model.pipeline, model.schema, read_table(path, na_values=na), id_column=id_column,
                           segment_names=model.cluster_names, monitor=model.monitor)
    return result.table.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n").encode("utf-8")


def assert_streams_like_whole(models: Path, path: Path, tmp_path: Path, id_column: str | None = None,
                              small_block: int = 7) -> None:
    """Blocks of ``small_block`` rows, and one block: the same bytes as the whole table scored at once.

    The network runs in fixed zero-padded tiles (``run_in_tiles``), so a customer's
    scores do not depend on which other rows are in its block.
    """
    expected = whole_table_bytes(models, path, id_column)
    for chunk_rows in (small_block, 100_000):
        out = tmp_path / f"out_{chunk_rows}.csv"
        report = predict_file(models, path, out, id_column=id_column, chunk_rows=chunk_rows, threads=2)
        assert report.rows == expected.count(b"\n") - 1
        assert out.read_bytes() == expected, f"blocks of {chunk_rows} rows differ from the whole table"


def new_customers(n: int = 90, seed: int = 5) -> pd.DataFrame:
    return make_customers(n, seed=seed, start_id=5000).drop(columns="Segment")


def awkward_cells(table: pd.DataFrame, variant: str, quoted: str) -> None:
    """The cell-level variants both awkward-table tests share, applied to ``table`` in place."""
    if variant == "missing":
        table.loc[::4, "Age"] = np.nan
        table.loc[1::5, "Profession"] = np.nan
    if variant == "quoted":
        table["Profession"] = table["Profession"].str.replace("Artist", quoted)
    if variant == "multiline":
        table["Profession"] = table["Profession"].str.replace("Doctor", "Doc\ntor")
    if variant == "spaces":
        table["Gender"] = " " + table["Gender"] + " "


# -- the same bytes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["reference", "mixed"])
def test_shipped_test_table_streams_like_whole(tmp_path, preset, monkeypatch):
    # a model trained on the shipped data's columns, then the shipped Test.csv in blocks of 97 rows
    # (28 blocks, the last one short; the awkward tables below take blocks of 7) and its first 150
    # customers one by one (float32 kernels take another path for one row than for many: the
    # mixed ensemble's latent features differed in every member for a customer scored alone)
    work = tmp_path / "shipped"
    work.mkdir()
    train = work / "train.csv"
    pd.read_csv(SHIPPED_TRAIN).sample(600, random_state=0).to_csv(train, index=False)
    settings = tiny_toml(seed=1, figures=False).replace('preset = "reference"', f'preset = "{preset}"')
    (work / "tiny.toml").write_text(settings.replace("[autoencoder]\n", "[autoencoder]\nn_members = 6\n")
                                    if preset == "mixed" else settings, encoding="utf-8")
    assert main(["train", "--train", str(train), "--config", str(work / "tiny.toml"), "--models-dir",
                 str(work / "models"), "--results-dir", str(work / "results"), "-q"]) == 0
    assert load_model(work / "models").settings["preset"] == preset
    # blocks of 97 rows cut into slices of 50, scored side by side on two threads (assert_streams_like_whole
    # asks for two): the same bytes, and torch's process-wide thread count as it was
    import torch

    import custseg.workflow as workflow

    monkeypatch.setattr(workflow, "SCORE_ROWS", 50)
    threads_before = torch.get_num_threads()
    assert_streams_like_whole(work / "models", SHIPPED_TEST, tmp_path, small_block=97)
    assert torch.get_num_threads() == threads_before
    monkeypatch.undo()
    head = tmp_path / "head.csv"
    pd.read_csv(SHIPPED_TEST, dtype=str, keep_default_na=False).head(150).to_csv(head, index=False)
    assert_streams_like_whole(work / "models", head, tmp_path, small_block=1)


@pytest.mark.parametrize("variant", ["plain", "missing", "quoted", "bom", "semicolon", "crlf", "blank_lines",
                                     "sep_line", "multiline", "parquet", "parquet_categories", "na_tokens", "spaces"])
def test_awkward_tables_stream_like_whole(models, tmp_path, variant):
    table = new_customers()
    path = tmp_path / "new.csv"
    awkward_cells(table, variant, quoted="Artist, painter")
    if variant == "parquet":
        path = tmp_path / "new.parquet"
        table.to_parquet(path)
    elif variant == "parquet_categories":  # pandas categoricals with missing values: Arrow dictionaries with nulls
        path = tmp_path / "new.parquet"
        table.loc[1::5, "Profession"] = np.nan
        table.astype({"Profession": "category", "Gender": "category"}).to_parquet(path)
    elif variant == "semicolon":
        table.to_csv(path, index=False, sep=";", decimal=",")
    elif variant == "bom":
        table.to_csv(path, index=False, encoding="utf-8-sig")
    elif variant == "crlf":
        table.to_csv(path, index=False, lineterminator="\r\n")
    elif variant == "na_tokens":
        text = table.to_csv(index=False, na_rep="NA")
        path.write_text(text.replace(",Low", ",null", 3), encoding="utf-8")
    else:
        text = table.to_csv(index=False, quoting=1 if variant == "quoted" else 0)
        if variant == "blank_lines":
            lines = text.split("\n")
            text = "\n".join(lines[:20] + [""] + lines[20:40] + ["", ""] + lines[40:])
        if variant == "sep_line":
            text = "sep=,\n" + text
        path.write_text(text, encoding="utf-8")
    assert_streams_like_whole(models, path, tmp_path)


def _with_age(text: str, line: int, value: str, sep: str = ",") -> str:
    """``text`` (a CSV of make_customers) with the Age of file line ``line`` replaced by ``value``."""
    lines = text.split("\n")
    fields = lines[line - 1].split(sep)
    fields[1] = value
    lines[line - 1] = sep.join(fields)
    return "\n".join(lines)


@pytest.mark.parametrize("variant", ["plain", "missing", "quoted", "multiline", "spaces", "decimal_commas",
                                     "blank_number", "codes", "text_late", "bom"])
def test_training_table_read_in_blocks_like_read_table(tmp_path, variant):
    # train reads big tables with read_table_in_blocks: the LoadedTable must be read_table's in every field
    table = make_customers(60, seed=3, start_id=7000)
    table["Age"] = table["Age"].round()
    path = tmp_path / "train.csv"
    awkward_cells(table, variant, quoted='Artist, "painter"')
    if variant == "codes":
        table["ID"] = [f"{i:07d}" for i in range(len(table))]
    sep = ";" if variant == "decimal_commas" else ","
    text = table.to_csv(index=False, sep=sep, decimal="," if variant == "decimal_commas" else ".")
    if variant == "decimal_commas":
        text = _with_age(text, 20, "41,5", sep)
    if variant == "blank_number":
        text = _with_age(text, 30, "   ")
    if variant == "text_late":  # numbers in the first blocks, a word in the last
        text = _with_age(text, 55, "unknown age")
    path.write_text(text, encoding="utf-8-sig" if variant == "bom" else "utf-8")
    expected = read_table(path)
    got = read_table_in_blocks(path, chunk_rows=7)
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=True)
    for c in expected.frame:
        assert got.frame[c].map(type).tolist() == expected.frame[c].map(type).tolist(), c
    assert got.integer_columns == expected.integer_columns
    assert got.numeric_from_text == expected.numeric_from_text
    assert (got.delimiter, got.source) == (expected.delimiter, expected.source)
    np.testing.assert_array_equal(got.line_numbers, expected.line_numbers)


def test_training_table_read_in_blocks_names_bad_values(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(_with_age(make_customers(40, seed=3).to_csv(index=False), 34, "1e400"), encoding="utf-8")
    with pytest.raises(DataError) as whole:
        read_table(path)
    with pytest.raises(DataError) as blocks:
        read_table_in_blocks(path, chunk_rows=7)
    assert str(blocks.value) == str(whole.value) and "line 34" in str(whole.value)


def test_ids_typed_by_the_whole_column(models, tmp_path):
    """IDs '7.0' read as numbers in the first blocks and as text once a word appears: rescored as text."""
    table = new_customers(40).astype({"ID": object})
    table["ID"] = [f"{i}.0" for i in range(len(table))]
    table.loc[35, "ID"] = "X-1"
    path = tmp_path / "ids.csv"
    table.to_csv(path, index=False)
    assert_streams_like_whole(models, path, tmp_path)
    assert b"\n0.0," in (tmp_path / "out_100000.csv").read_bytes()


def test_interrupted_predict_leaves_earlier_output(models, tmp_path):
    path = tmp_path / "new.csv"
    new_customers().to_csv(path, index=False)
    out = tmp_path / "predictions.csv"
    out.write_text("earlier output\n")

    def interrupt(report):
        if report.rows >= 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_file(models, path, out, chunk_rows=7, progress=interrupt)
    assert out.read_text() == "earlier output\n"
    assert sorted(os.listdir(tmp_path)) == ["new.csv", "predictions.csv"]


# -- errors name line, column and value -------------------------------------------------------------
def _write_with_line(tmp_path: Path, row: int, column: str, value: str) -> Path:
    table = new_customers(60).astype({column: object})
    table.loc[row, column] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return path


def test_text_in_numeric_column_late_in_the_file(models, tmp_path):
    path = _write_with_line(tmp_path, 50, "Income", "lots")
    with pytest.raises(SchemaError, match=r"line 52, column 'Income': value 'lots' is not a number"):
        predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)
    assert not (tmp_path / "out.csv").exists()


def test_too_large_number_late_in_the_file(models, tmp_path):
    path = _write_with_line(tmp_path, 44, "Age", "1e300")
    with pytest.raises(DataError, match=r"line 46, column 'Age': value '1e300' is too large"):
        predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)


def test_field_count_error_in_a_late_block(models, tmp_path):
    path = tmp_path / "bad.csv"
    lines = new_customers(60).to_csv(index=False).split("\n")
    lines[41] += ",extra"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"line 42: 8 fields where the header has 7"):
        predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)


def test_duplicate_ids_across_blocks(models, tmp_path):
    path = _write_with_line(tmp_path, 55, "ID", "5003")
    with pytest.raises(DataError, match=r"ID '5003' appears on line 5 and again on line 57 \(1 duplicate ID in all\)"):
        predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)


def test_missing_column_is_named_from_the_header(models, tmp_path):
    path = tmp_path / "bad.csv"
    new_customers().drop(columns="Age").to_csv(path, index=False)
    with pytest.raises(SchemaError, match="columns are missing: 'Age'"):
        predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)


def test_unseen_categories_counted_across_blocks(models, tmp_path):
    table = new_customers(60)
    table.loc[[3, 30, 59], "Profession"] = "Astronaut"
    path = tmp_path / "new.csv"
    table.to_csv(path, index=False)
    report = predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)
    assert report.unseen_categories == {"Profession": {"Astronaut": 3}}


# -- the pieces -------------------------------------------------------------------------------------
def test_score_chunks_yields_blocks_in_input_order(models, tmp_path):
    path = tmp_path / "new.csv"
    new_customers(30).to_csv(path, index=False)
    blocks = list(score_chunks(load_model(models), path, chunk_rows=8))
    # blocks are cut at about chunk_rows rows (by bytes, at a record's end)
    assert len(blocks) == 4 and sum(len(b) for b in blocks) == 30 and max(len(b) for b in blocks) <= 12
    assert pd.concat(blocks)["ID"].tolist() == [str(i) for i in range(5000, 5030)]


def test_stream_gives_line_numbers_of_each_block(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sep=;\nID;Age\n1;30\n\n2;\n3;41\n4;50\n", encoding="utf-8")
    blocks = list(TableStream(path, chunk_rows=2))
    assert len(blocks) > 1  # cut by bytes at a record's end: about 2 rows each
    assert np.concatenate([b.line_numbers for b in blocks]).tolist() == [3, 5, 6, 7]
    ages = np.concatenate([b.frame["Age"].to_numpy(dtype="float64") for b in blocks])
    np.testing.assert_array_equal(ages, [30.0, np.nan, 41.0, 50.0])


def test_csv_rows_match_pandas():
    rng = np.random.default_rng(0)
    values = rng.random(2000) * 10.0 ** rng.integers(-8, 9, 2000)
    values[::97] = np.nan
    frame = pd.DataFrame({"ID": [f"c{i}" for i in range(2000)], "Cluster": rng.integers(0, 7, 2000),
                          "Predicted_Segment": rng.choice(["A", "B"], 2000), "Distance": values})
    expected = frame.to_csv(index=False, header=False, float_format="%.6g", lineterminator="\n").encode()
    assert csv_rows(frame) == expected
    frame.loc[5, "ID"] = 'a "quoted", id'
    frame.loc[7, "Predicted_Segment"] = "two\nlines, quoted"
    frame.loc[9, "Predicted_Segment"] = '"'
    assert csv_rows(frame) == frame.to_csv(index=False, header=False, float_format="%.6g",
                                           lineterminator="\n").encode()
    assert b'"a ""quoted"", id"' in csv_rows(frame)
    frame.loc[11, "ID"] = "carriage\rreturn"
    assert csv_rows(frame) == frame.to_csv(index=False, header=False, float_format="%.6g",
                                           lineterminator="\n").encode()
    assert format_general(np.array([0.5, 1e-5, np.nan])).to_pylist() == ["0.5", "1e-05", ""]


@pytest.mark.parametrize("float_format", ["%.6g", "%.3g", "%.1g"])
def test_format_general_gives_pythons_bytes(float_format):
    # computed on whole arrays; every value must read as Python's '%' writes it, ties and edges included
    rng = np.random.default_rng(1)
    values = np.concatenate([
        rng.random(20000) * 10.0 ** rng.integers(-12, 14, 20000) * rng.choice([-1, 1], 20000),
        np.frombuffer(rng.bytes(8 * 5000), dtype=np.float64),  # any bit pattern: NaN, subnormals, 1e300
        rng.integers(0, 10 ** 6, 5000) + 0.5, np.round(rng.random(5000) * 1000, 3),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 0.5, 2.5, 0.95, 99999.95, 999999.5, 9999995.0, 1e-5, 1e-4, 99999.5,
         123456.5, 1e100, -1e-100, 5e-324, 1.7e308, 1e16, 1e22, 1e23, 0.1, 100.0, 1234567.0]])
    expected = ["" if np.isnan(v) else float_format % v for v in values.tolist()]
    assert format_general(values, float_format).to_pylist() == expected


def test_formatted_amounts_stream_like_whole(models, tmp_path):
    # read_table reads '$1,200' as 1200 when the whole column has one unit; blocks of 7 must agree
    table = new_customers(40).astype({"Income": object})
    table["Income"] = [f"${v:,.0f}" for v in new_customers(40)["Income"]]
    path = tmp_path / "amounts.csv"
    table.to_csv(path, index=False)
    assert_streams_like_whole(models, path, tmp_path)


def test_no_id_column_numbers_rows_with_a_notice(models, tmp_path):
    path = tmp_path / "no_ids.csv"
    new_customers(30).drop(columns="ID").to_csv(path, index=False)
    assert_streams_like_whole(models, path, tmp_path)
    report = predict_file(models, path, tmp_path / "out.csv", chunk_rows=7)
    assert report.id_column == "Row"
    assert "numbered 1..30 in table order in column 'Row'" in report.id_notice
    assert (tmp_path / "out.csv").read_text().startswith("Row,Cluster,Segment_Name,")


def test_id_column_option_keeps_its_name(models, tmp_path):
    table = new_customers(30).rename(columns={"ID": "Customer Number"})
    path = tmp_path / "named.csv"
    table.to_csv(path, index=False)
    assert_streams_like_whole(models, path, tmp_path, id_column="Customer Number")
    assert (tmp_path / "out_7.csv").read_text().startswith("Customer Number,")


def test_a_big_block_is_scored_in_slices_with_the_same_result(models, monkeypatch):
    # score_frame cuts a block into slices of SCORE_ROWS rows (memory); with slices of 7 rows the
    # scores and the monitor's summary are those of the block in one piece
    import custseg.workflow as workflow

    model = load_model(models)
    frame = new_customers(60)
    awkward_cells(frame, "missing", quoted="")
    frame.loc[3, "Profession"] = "Astronaut"
    whole, whole_summary = workflow.score_frame(model.pipeline, frame, model.monitor)
    monkeypatch.setattr(workflow, "SCORE_ROWS", 7)
    sliced, sliced_summary = workflow.score_frame(model.pipeline, frame, model.monitor)
    pd.testing.assert_frame_equal(sliced, whole)
    assert sliced_summary.to_dict() == whole_summary.to_dict()
    assert sliced_summary.rows == 60 and sliced_summary.unseen_categories == {"Profession": {"Astronaut": 1}}


def test_small_float_parquet_columns_read_without_warnings(models, tmp_path):
    # float16 / float32 Parquet columns: read exactly, and no numpy overflow warning (predict printed
    # "a numeric computation met an undefined value" for a clean float16 column)
    import warnings

    table = new_customers()
    plain, small = tmp_path / "plain.parquet", tmp_path / "small.parquet"
    table.to_parquet(plain)
    table.astype({"Age": "float16", "Family_Size": "float32"}).to_parquet(small)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_file(models, small, tmp_path / "small.csv", chunk_rows=7)
    predict_file(models, plain, tmp_path / "plain.csv")
    assert (tmp_path / "small.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
