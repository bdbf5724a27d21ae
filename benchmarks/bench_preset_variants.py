"""One comparison method with changed autoencoder settings, scored exactly as ``custseg compare`` scores it.

Issue 11's targets are read off ``custseg compare --seeds 5``. This script runs the same
scoring (:func:`custseg.evaluation.comparison.compare_methods`: in-sample ARI, NMI and mapped
accuracy, returning customers, 5-fold held-out scores, seed-to-seed ARI) for one method, the
preset it is built from, and settings laid over that preset's ``[autoencoder]`` section, so a
variant can be tried without editing a preset. The shipped Train.csv and Test.csv, k = 7.

Usage (from the repository root)::

    python benchmarks/bench_preset_variants.py --method guided_ensemble --set learning_rate=0.01 --set n_members=80
    python benchmarks/bench_preset_variants.py --method mixed_ensemble --set max_epochs=60 \\
        --set learning_rate=0.001 --set hidden_dims=[64,32] --no-held-out

Prints the settings, the mean of every score over the seeds and the wall time, on one line.
The ensemble rows decide the guidance themselves (``custseg.evaluation.methods``): the mixed row
never learns from the segments, the guided row with ``guidance_weight`` if it is above 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRESET_OF = {"guided_ensemble": "guided", "mixed_ensemble": "mixed", "autoencoder_kmeans": "reference"}


def _setting(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"--set takes name=value (a JSON value), got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(PRESET_OF), default="guided_ensemble")
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                        help="an [autoencoder] setting over the method's preset, name=value (JSON value)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=None,
                        help="score the 5-fold held-out folds (always for the guided method)")
    args = parser.parse_args(argv)

    from custseg.config import RunConfig
    from custseg.evaluation.comparison import compare_methods
    from custseg.workflow import load_tables

    # checked as a config file's settings are: an unknown name or a value out of range is an error, not ignored
    from custseg.exceptions import ConfigError

    try:
        config = RunConfig.from_preset(PRESET_OF[args.method]).with_overrides(
            source="--set", **{f"autoencoder__{name}": value for name, value in args.settings})
    except ConfigError as exc:
        parser.error(str(exc))
    config.data.train, config.data.test = str(REPO / "data" / "raw" / "Train.csv"), str(REPO / "data" / "raw" / "Test.csv")
    train, test, schema = load_tables(config)
    started = time.perf_counter()
    held_out = args.held_out if args.held_out is not None else args.method == "guided_ensemble"
    runs = compare_methods(train.frame, schema, test_frame=test.frame, methods=[args.method], supervised=False,
                           config=config, seeds=tuple(range(config.seed, config.seed + args.seeds)),
                           held_out_folds=held_out).runs
    columns = ["ari", "nmi", "mapped_accuracy", "returning_accuracy", "held_out_nmi", "held_out_accuracy",
               "stability_ari", "fit_seconds"]
    summary = {"method": args.method, "settings": dict(args.settings), "seeds": args.seeds,
               **{c: round(float(runs[c].mean()), 4) for c in columns if c in runs and runs[c].notna().any()},
               "wall_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(main() and 0)
