"""Cost of the confidence and novelty columns: scoring 1,000,000 customers with and without them.

Usage: ``PYTHONPATH=src python benchmarks/bench_monitoring.py [rows] [repeats]``

Trains the reference architecture on data/raw/Train.csv for a few epochs (the cost of
scoring does not depend on how well the network is trained), builds a table of ``rows``
customers by sampling data/raw/Test.csv with replacement, and times
:func:`custseg.workflow.predict_table` without a monitor (the pipeline's columns) and
with one (plus Confidence, Second_Cluster, Segment_Probability, Second_Segment, Novelty,
Unusual, Reason). Prints the median of ``repeats`` runs of each and their ratio, in wall-clock
and in CPU seconds (the fairer figure on a shared machine), with one BLAS/OpenMP thread.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

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
    wall: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    with threadpool_limits(limits=1):
        for _ in range(repeats):
            for name, mon in (("without", None), ("with", monitor)):
                started, started_cpu = time.perf_counter(), time.process_time()
                predict_table(pipeline, schema, table, monitor=mon)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
    result = {f"{kind}_{name}": statistics.median(t[name]) for kind, t in (("wall", wall), ("cpu", cpu))
              for name in ("without", "with")}
    result["wall_ratio"] = result["wall_with"] / result["wall_without"]
    result["cpu_ratio"] = result["cpu_with"] / result["cpu_without"]
    print(f"{rows:,} rows, median of {repeats}: wall {result['wall_without']:.2f} s without, "
          f"{result['wall_with']:.2f} s with (ratio {result['wall_ratio']:.2f}); CPU {result['cpu_without']:.2f} s "
          f"without, {result['cpu_with']:.2f} s with (ratio {result['cpu_ratio']:.2f})")
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
