"""A table to be scored is read as the model reads it: its category columns and IDs keep their text.

Typing a column from the values of the file at hand made one customer's answer depend on
the others: a model trained on codes '01'..'07' read a new file's '04' as the number 4 (the
unseen category '4') as soon as one row of that file held a plain '4', and every customer
of the file changed. And an ID column whose values all read as numbers lost its text
('00123' came out as '123', '458989.0' as '458989', '007' and '7' were called duplicates).
Every path that reads a table for a model is checked: streaming predict, train's test
table, the training table's own IDs, the HTTP service and the Dask engine's reader.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from custseg.cli import main
from custseg.io.reading import read_table, table_from_frame
from custseg.persistence import load_model
from custseg.workflow import predict_file, predict_table

from conftest import make_customers, tiny_toml

#: ID texts that read as numbers but are not the text of their number (with plain integers, the column
#: reads as numbers: every ID here must be a number, or the whole column would be text anyway)
ID_TEXTS = ["00123", "458989.0", "+458989", "1e5", "4000000000000000.0", "007", "7", "-0", "12.50", " 88"]


def coded(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with Spending written as zero-padded codes ('01', '02', '03'), as text."""
    codes = {"Low": "01", "Average": "02", "High": "03"}
    return frame.assign(Spending=frame["Spending"].map(codes))


def as_text_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.astype(object).where(frame.notna(), "").to_csv(path, index=False)
    return path


def new_table(n: int = 60) -> pd.DataFrame:
    return coded(make_customers(n, seed=7, start_id=5000).drop(columns="Segment"))


def with_a_plain_code(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` and one more customer whose code is written without its 0."""
    return pd.concat([table, table.iloc[[0]].assign(ID=99999, Spending="2")])


@pytest.fixture(scope="module")
def coded_model(tmp_path_factory) -> Path:
    # trained with a test table that holds one plain code (train reads its test table as the model does)
    work = tmp_path_factory.mktemp("coded")
    train = as_text_csv(coded(make_customers(240, seed=1)), work / "train.csv")
    test = as_text_csv(with_a_plain_code(new_table()), work / "odd.csv")
    (work / "tiny.toml").write_text(tiny_toml(seed=3, figures=False), encoding="utf-8")
    assert main(["train", "--train", str(train), "--test", str(test), "--config", str(work / "tiny.toml"),
                 "--models-dir", str(work / "models"), "--results-dir", str(work / "results"), "-q"]) == 0
    schema = load_model(work / "models").schema
    assert schema.column("Spending").dtype == "text" and schema.column("Spending").role == "categorical"
    return work / "models"


@pytest.mark.parametrize("chunk_rows", [7, 100_000])
def test_one_plain_code_does_not_change_the_other_customers(coded_model, tmp_path, chunk_rows):
    table = new_table()
    clean = predict_file(coded_model, as_text_csv(table, tmp_path / "clean.csv"), tmp_path / "clean_out.csv",
                         chunk_rows=chunk_rows)
    odd = with_a_plain_code(table)
    report = predict_file(coded_model, as_text_csv(odd, tmp_path / "odd.csv"), tmp_path / "odd_out.csv",
                          chunk_rows=chunk_rows)
    before = (tmp_path / "clean_out.csv").read_text().splitlines()
    after = (tmp_path / "odd_out.csv").read_text().splitlines()
    assert after[:len(before)] == before
    assert clean.unseen_categories == {} and report.unseen_categories == {"Spending": {"2": 1}}


def test_train_test_table_and_service_read_codes_as_the_model(coded_model, tmp_path):
    model = load_model(coded_model)
    odd = with_a_plain_code(new_table())
    path = coded_model.parent / "odd.csv"
    whole = predict_table(model.pipeline, model.schema, read_table(path, text_columns=model.schema.text_columns()),
                          monitor=model.monitor)
    records = table_from_frame(odd.astype(object).where(odd.notna(), None).reset_index(drop=True), "request body",
                               text_columns=model.schema.text_columns())
    served = predict_table(model.pipeline, model.schema, records, monitor=model.monitor)
    assert whole.unseen_categories == served.unseen_categories == {"Spending": {"2": 1}}
    pd.testing.assert_frame_equal(whole.table, served.table)
    # the model's training run scored the same table as its --test table: the same guards fired
    detailed = pd.read_csv(coded_model.parent / "results" / "test_predictions_detailed.csv", dtype={"ID": str})
    assert (detailed["Unusual"].to_numpy()[:-1] == whole.table["Unusual"].to_numpy()[:-1]).all()
    assert not detailed["Unusual"].iloc[:-1].any() or detailed["Unusual"].iloc[:-1].mean() < 0.5


@pytest.mark.parametrize("engine", ["stream", "whole", "records"])
def test_ids_come_out_as_they_went_in(coded_model, tmp_path, engine):
    table = new_table(len(ID_TEXTS) + 20)
    table["ID"] = ID_TEXTS + [str(i) for i in range(100, 120)]  # the rest plain integers: the column reads as numbers
    path = as_text_csv(table, tmp_path / "ids.csv")
    model = load_model(coded_model)
    if engine == "stream":
        predict_file(coded_model, path, tmp_path / "out.csv", chunk_rows=7)
        ids = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)["ID"]
    elif engine == "whole":
        ids = predict_table(model.pipeline, model.schema, read_table(path, text_columns=model.schema.text_columns()),
                            monitor=model.monitor).table["ID"]
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        ids = predict_table(model.pipeline, model.schema,
                            table_from_frame(frame, "request body", text_columns=model.schema.text_columns()),
                            monitor=model.monitor).table["ID"]
    # as written; only the spaces around a value go, as for every value read
    assert ids.tolist() == table["ID"].str.strip().tolist()


def test_training_outputs_keep_the_id_text(tmp_path):
    train = make_customers(240, seed=2)
    train["ID"] = train["ID"].astype(str)
    train.loc[0, "ID"], train.loc[1, "ID"], train.loc[2, "ID"] = "00123", "458989.0", "007"
    path = as_text_csv(train, tmp_path / "train.csv")
    (tmp_path / "tiny.toml").write_text(tiny_toml(seed=3, figures=False), encoding="utf-8")
    assert main(["train", "--train", str(path), "--config", str(tmp_path / "tiny.toml"), "--models-dir",
                 str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q"]) == 0
    out = pd.read_csv(tmp_path / "results" / "training_results.csv", dtype=str, keep_default_na=False)
    assert out["ID"].tolist() == train["ID"].tolist()
    assert load_model(tmp_path / "models").schema.id_column == "ID"


def test_parquet_numbers_stay_numbers_in_the_stream_as_in_read_table(tmp_path):
    # text_columns keeps the text a file holds; a Parquet column of numbers holds numbers, in both readers
    from custseg.io.chunks import TableStream

    path = tmp_path / "typed.parquet"
    pd.DataFrame({"ID": range(1000, 1010), "Code": ["01"] * 5 + ["4"] * 5}).to_parquet(path)
    keep = {"ID", "Code"}
    streamed = pd.concat([b.frame for b in TableStream(path, chunk_rows=4, text_columns=keep)], ignore_index=True)
    whole = read_table(path, text_columns=keep).frame
    assert pd.api.types.is_float_dtype(streamed["ID"]) and pd.api.types.is_float_dtype(whole["ID"])
    assert streamed["ID"].tolist() == whole["ID"].tolist() == [float(i) for i in range(1000, 1010)]
    assert streamed["Code"].astype(object).tolist() == whole["Code"].tolist() == ["01"] * 5 + ["4"] * 5


@pytest.mark.parametrize("index", ["ID", "CustID", None], ids=["named ID", "other name", "unnamed"])
def test_a_parquet_index_is_a_column_in_read_table_as_in_the_stream(tmp_path, index):
    # pandas writes a DataFrame's index as columns of the file; read_parquet puts them back into the index, and
    # read_table had then lost them (predict --runtime onnx numbered the rows where predict kept the IDs)
    from custseg.io.chunks import TableStream

    frame = pd.DataFrame({"ID": ["007", "8", "x9", "10"], "Age": [40, 41, 42, 43]})
    frame = frame.set_index("ID").rename_axis(index)
    frame.index = pd.Index(["007", "8", "x9", "10"], name=index)
    path = tmp_path / "indexed.parquet"
    frame.to_parquet(path)
    streamed = pd.concat([b.frame for b in TableStream(path, chunk_rows=3, text_columns=lambda c: c != "Age")],
                         ignore_index=True)
    whole = read_table(path, text_columns=lambda c: c != "Age").frame
    assert list(whole.columns) == list(streamed.columns) == ["Age", index or "__index_level_0__"]
    name = whole.columns[-1]
    assert whole[name].tolist() == streamed[name].astype(object).tolist() == ["007", "8", "x9", "10"]
    assert whole["Age"].tolist() == [40, 41, 42, 43]
