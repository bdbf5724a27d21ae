"""Held-out calibration and novelty rates on the shipped data (the README's figures).

For each split seed, a quarter of Train.csv (stratified by segment) is held out; the
reference pipeline and its monitor (soft assignment, novelty) are fitted on the rest.
Prints the expected calibration error of Segment_Probability and the share of clean
held-out customers flagged Unusual::

    PYTHONPATH=src python benchmarks/bench_calibration.py --splits 0 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.model_selection import train_test_split

from custseg.config import RunConfig
from custseg.io.reading import read_table
from custseg.monitoring import expected_calibration_error
from custseg.schema import infer_schema
from custseg.workflow import build_pipeline, fit_monitor, score_frame

SHIPPED_TRAIN = Path(__file__).resolve().parents[1] / "data" / "raw" / "Train.csv"


def held_out_rates(split_seed: int) -> tuple[float, float]:
    """(expected calibration error, share flagged Unusual) on the held-out quarter of one split.

    The pipeline and its monitor are fitted as ``custseg train`` fits them; the held-out
    rows are scored as ``custseg predict`` scores them.
    """
    table = read_table(SHIPPED_TRAIN)
    schema = infer_schema(table.frame, integer_columns=table.integer_columns)
    fit_rows, held_out = train_test_split(table.frame, test_size=0.25, random_state=split_seed,
                                          stratify=table.frame["Segmentation"])
    pipe = build_pipeline(RunConfig(), schema).fit(fit_rows, fit_rows["Segmentation"])
    monitor = fit_monitor(pipe, schema, fit_rows, fit_rows["Segmentation"])
    scored, _ = score_frame(pipe, held_out, monitor)
    correct = (scored["Predicted_Segment"] == held_out["Segmentation"]).to_numpy()
    ece = expected_calibration_error(scored["Segment_Probability"].to_numpy(), correct)
    return float(ece), float(scored["Unusual"].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1], help="split seeds")
    args = parser.parse_args()
    print("| split seed | held-out ECE | clean held-out flagged Unusual |\n| ---: | ---: | ---: |")
    for seed in args.splits:
        ece, unusual = held_out_rates(seed)
        print(f"| {seed} | {ece:.3f} | {100 * unusual:.1f}% |")


if __name__ == "__main__":
    main()
