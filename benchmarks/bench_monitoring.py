"""Cost of the confidence and novelty columns: scoring 1,000,000 customers with and without them.

Usage: ``PYTHONPATH=src python benchmarks/bench_monitoring.py [rows] [repeats]``

Trains the reference architecture on data/raw/Train.csv for a few epochs (the cost of
scoring does not depend on how well the network is trained), builds a table of ``rows``
customers by sampling data/raw/Test.csv with replacement, and times
:func:`custseg.workflow.predict_table` without a monitor (the pipeline's columns) and
with one (plus Confidence, Second_Cluster, Segment_Probability, Second_Segment, Novelty,
Unusual, Reason). Prints the median of ``repeats`` runs of each and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from custseg.config import RunConfig
from custseg.io.reading import LoadedTable, read_table
from custseg.schema import infer_schema
from custseg.workflow import build_pipeline, fit_monitor, predict_table

ROOT = Path(__file__).resolve().parents[1]


def main(rows: int = 1_000_000, repeats: int = 3) -> dict[str, float]:
    train = read_table(ROOT / "data" / "raw" / "Train.csv")
    test = read_table(ROOT / "data" / "raw" / "Test.csv")
    schema = infer_schema(train.frame, integer_columns=train.integer_columns)
    config = RunConfig()
    config.autoencoder.max_epochs = 3
    config.clustering.n_init = 2
    pipeline = build_pipeline(config, schema).fit(train.frame, train.frame[schema.label_column])
    monitor = fit_monitor(pipeline, schema, train.frame, train.frame[schema.label_column])
    rng = np.random.default_rng(0)
    big = test.frame.iloc[rng.integers(0, len(test.frame), rows)].reset_index(drop=True)
    big[schema.id_column] = np.arange(rows)
    table = LoadedTable(frame=big, source="benchmark")
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeats):
        for name, mon in (("without", None), ("with", monitor)):
            started = time.perf_counter()
            predict_table(pipeline, schema, table, mon)
            times[name].append(time.perf_counter() - started)
    result = {name: statistics.median(t) for name, t in times.items()}
    result["ratio"] = result["with"] / result["without"]
    print(f"{rows:,} rows, median of {repeats}: without {result['without']:.2f} s, with {result['with']:.2f} s, "
          f"ratio {result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
