"""Property tests: random mixed-type customer tables, written to disk and read back like a user's file.

Whatever the table, training and predicting either work or fail with a
:class:`~custseg.exceptions.CustsegError` (a message for the user), never with
another exception; and a fitted model assigns its own training rows to the clusters
it gave them, before and after a save / load round trip.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from custseg.config import RunConfig
from custseg.exceptions import CustsegError
from custseg.persistence import load_model, save_model
from custseg.workflow import build_pipeline, load_tables, predict_table

# characters that make CSV writing and reading interesting; no '\r' or NUL (pandas and
# csv would write them unquoted, which no reader can tell from a line break / binary data)
TEXT = st.text(alphabet="abcXYZ019 ,;|\t\"'-_.éü\n", min_size=0, max_size=8)
NUMBER = st.one_of(st.integers(-10_000, 10_000), st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False))
# duplicate customers make K-Means say it found fewer distinct clusters than asked; that is the point here
pytestmark = pytest.mark.filterwarnings("ignore:Number of distinct clusters")
SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def customer_tables(draw, valid: bool = False) -> tuple[list[str], list[list[object]], int]:
    """(header, rows, k): an ID maybe, numeric and categorical columns with gaps, a known segment maybe."""
    n = draw(st.integers(12 if valid else 2, 40))
    columns: dict[str, list[object]] = {}
    if draw(st.booleans()):
        start = draw(st.integers(0, 10**6))
        columns["ID"] = [start + i for i in range(n)] if draw(st.booleans()) else [f"C-{start + i}" for i in range(n)]
    for j in range(draw(st.integers(1 if valid else 0, 3))):
        values = draw(st.lists(st.one_of(NUMBER, st.none()), min_size=n, max_size=n))
        if valid:  # at least three distinct numbers, so the column is a numeric feature
            values[:3] = [1.5, 2.5, 3.5]
        columns[f"num{j}"] = values
    for j in range(draw(st.integers(0, 3))):
        categories = draw(st.lists(TEXT, min_size=1, max_size=5))
        columns[f"cat{j}"] = draw(st.lists(st.one_of(st.sampled_from(categories), st.none()), min_size=n, max_size=n))
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["A", "B", "Gold tier", "7", "Ünï"]), min_size=2, max_size=4, unique=True))
        segment = draw(st.lists(st.sampled_from(names), min_size=n, max_size=n))
        segment[:2] = names[:2]
        columns["segment"] = segment
    k = draw(st.integers(1, 3 if valid else 4))
    header = list(columns)
    rows = [[columns[c][i] for c in header] for i in range(n)]
    return header, rows, k


def _write(path: Path, header: list[str], rows: list[list[object]], delimiter: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def _tiny_config(path: Path, k: int) -> RunConfig:
    cfg = RunConfig()
    cfg.data.train, cfg.data.test = str(path), None
    cfg.seed = 0
    cfg.autoencoder.hidden_dims, cfg.autoencoder.latent_dim = (4,), 2
    cfg.autoencoder.max_epochs, cfg.autoencoder.batch_size = 2, 16
    cfg.clustering.n_clusters, cfg.clustering.n_init, cfg.clustering.max_iter = k, 1, 50
    return cfg.validate()


def _fit_predict_round_trip(header, rows, k, delimiter) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "customers.csv"
        _write(path, header, rows, delimiter)
        cfg = _tiny_config(path, k)
        train_t, _, schema = load_tables(cfg)
        frame = train_t.frame
        y = frame[schema.label_column] if schema.label_column else None
        pipeline = build_pipeline(cfg, schema).fit(frame, y)

        assert (pipeline.predict(frame) == pipeline.labels_).all()
        assert set(np.unique(pipeline.labels_)) <= set(range(k))
        save_model(pipeline, Path(tmp) / "model", schema=schema, settings=cfg.to_dict())
        loaded = load_model(Path(tmp) / "model")
        scored = predict_table(loaded.pipeline, loaded.schema, train_t).table
        assert (scored["Cluster"].to_numpy() == pipeline.labels_).all()
        assert ("Predicted_Segment" in scored.columns) == (schema.label_column is not None)


@settings(**SETTINGS)
@given(table=customer_tables(), delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_any_table_trains_and_predicts_or_fails_with_a_message(table, delimiter):
    header, rows, k = table
    try:
        _fit_predict_round_trip(header, rows, k, delimiter)
    except CustsegError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip()


@settings(**SETTINGS)
@given(table=customer_tables(valid=True), delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_a_usable_table_always_trains_and_reassigns_its_rows(table, delimiter):
    header, rows, k = table
    assume(len({tuple(r) for r in rows}) > k)  # more distinct customers than clusters
    _fit_predict_round_trip(header, rows, k, delimiter)
