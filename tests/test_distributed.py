"""Scoring on a Dask cluster: the same rows, the same numbers and the same errors as ``custseg predict``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from conftest import make_customers, train_tiny_model  # noqa: E402
from custseg.cli import main  # noqa: E402
from custseg.distributed import profile_dask, score_dask  # noqa: E402
from custseg.io.reading import read_table  # noqa: E402
from custseg.persistence import load_model  # noqa: E402
from custseg.profiling import profile_segments  # noqa: E402
from custseg.workflow import predict_table  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("dask_model"), seed=3)


@pytest.fixture(scope="module")
def cluster():
    # one worker process: the model and the partitions still cross a process boundary (pickled to the
    # worker); two workers are what the command starts itself, checked in the test that runs it without
    # --scheduler. Each worker process pays its own imports of torch, scikit-learn and pandas.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            Client(lc) as client:
        yield client


@pytest.fixture
def parts(tmp_path):
    """Three Parquet parts of new customers (no Segment column) and the same rows as one CSV."""
    folder = tmp_path / "parts"
    folder.mkdir()
    whole = make_customers(300, seed=5, start_id=5000).drop(columns="Segment")
    for i, chunk in enumerate(np.array_split(np.arange(len(whole)), 3)):
        whole.iloc[chunk].to_parquet(folder / f"part-{i}.parquet", index=False)
    whole.to_csv(tmp_path / "whole.csv", index=False)
    return folder, tmp_path / "whole.csv"


def _lines(files):
    """Data lines of CSV files, in order, header once."""
    out = []
    for i, f in enumerate(files):
        lines = f.read_text().splitlines()
        out += lines if i == 0 else lines[1:]
    return out


def test_cli_dask_output_is_identical_to_single_machine_predict(model_dir, parts, tmp_path, capsys):
    folder, whole = parts
    assert main(["predict", "--model", str(model_dir), "--input", str(whole), "--output", str(tmp_path / "one.csv")]) == 0
    # no --scheduler: a local cluster of 2 worker processes is started and stopped
    code = main(["predict", "--engine", "dask", "--model", str(model_dir), "--input", str(folder / "*.parquet"),
                 "--output", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "300 rows from 3 parts" in printed.out and "2 Dask workers" in printed.out
    written = sorted((tmp_path / "out").glob("part-*.csv"))
    assert [p.name for p in written] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert _lines(written) == (tmp_path / "one.csv").read_text().splitlines()
    summary = json.loads((tmp_path / "out" / "scoring.json").read_text())
    assert summary["rows"] == 300 and summary["parts"]["part-00001.csv"].endswith("part-1.parquet")


def test_worker_error_is_the_same_one_line_error(model_dir, parts, cluster, tmp_path, capsys):
    folder, _ = parts
    bad = pd.read_parquet(folder / "part-1.parquet")
    bad["Age"] = bad["Age"].astype(str)  # a text column, as an export with one typo in it would be
    bad.loc[bad.index[3], "Age"] = "forty"
    bad.to_parquet(folder / "part-1.parquet", index=False)
    assert main(["predict", "--model", str(model_dir), "--input", str(folder / "part-1.parquet"),
                 "--output", str(tmp_path / "p.csv")]) == 1
    single = capsys.readouterr().err
    code = main(["predict", "--engine", "dask", "--scheduler", cluster.scheduler.address, "--model", str(model_dir),
                 "--input", str(folder / "*.parquet"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == single and len(err.strip().splitlines()) == 1
    assert "line 5, column 'Age': value 'forty' is not a number" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_unreachable_scheduler_and_empty_pattern_are_one_line_errors(model_dir, tmp_path, capsys):
    assert main(["predict", "--engine", "dask", "--model", str(model_dir), "--input", str(tmp_path / "none*.parquet"),
                 "--output", str(tmp_path / "out")]) == 1
    assert "matches no file" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--input", "x.csv", "--output", "y.csv",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert "--scheduler needs --engine dask" in capsys.readouterr().err


def test_score_dask_frame_matches_predict_table_and_numbers_rows_without_ids(model_dir, cluster, tmp_path):
    model = load_model(model_dir)
    table = make_customers(150, seed=9).drop(columns=["Segment", "ID"])
    table.to_csv(tmp_path / "t.csv", index=False)
    expected = predict_table(model.pipeline, model.schema, read_table(tmp_path / "t.csv"),
                             segment_names=model.cluster_names, monitor=model.monitor).table
    got = score_dask(dd.from_pandas(table, npartitions=4), model_dir).compute().reset_index(drop=True)
    assert got.columns[0] == expected.columns[0] == "Row"
    assert got["Row"].tolist() == list(range(1, 151))  # numbered through the whole table, not per partition
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_profile_over_partitions_matches_the_single_table_profile(model_dir, cluster):
    model = load_model(model_dir)
    frame = make_customers(400, seed=11).drop(columns="Segment")
    scored = score_dask(dd.from_pandas(frame, npartitions=5), model_dir, with_features=True)
    numeric = model.schema.names("numeric")
    categorical = model.schema.names("categorical") + model.schema.names("ordinal")
    got = profile_dask(scored, numeric=numeric, categorical=categorical)
    local = scored.compute().reset_index(drop=True)
    want = profile_segments(local, local["Cluster"].to_numpy(), numeric=numeric, categorical=categorical)
    pd.testing.assert_frame_equal(got.sizes, want.sizes)
    pd.testing.assert_frame_equal(got.categorical, want.categorical, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(got.features, want.features, check_exact=False, rtol=1e-9)
    exact = ["segment", "feature", "mean", "cohens_d"]
    pd.testing.assert_frame_equal(got.numeric[exact], want.numeric[exact], check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(got.overall_categorical, want.overall_categorical, check_exact=False, rtol=1e-12)
    # quartiles are merged from per-partition percentiles: close to the exact ones, not equal
    spread = (want.numeric["q3"] - want.numeric["q1"]).abs().clip(lower=1.0)
    for q in ("median", "q1", "q3"):
        assert ((got.numeric[q] - want.numeric[q]).abs() <= 0.25 * spread).all(), q
    assert got.whole_number_features == want.whole_number_features
