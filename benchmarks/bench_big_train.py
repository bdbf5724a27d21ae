"""Time `custseg train` on a big generated training table: wall time, peak memory, what it found.

The table (``gen_big_table.py --train``: Train.csv's customers with their known segment and
new IDs) is generated once into ``--workdir`` (outside the repository); each preset trains
in a fresh process under ``/usr/bin/time -v`` (start-up, reading and every output
included), as issue 13's large-table check runs it::

    python benchmarks/bench_big_train.py --rows 1000000 --preset mixed reference --workdir /tmp/custseg-bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_predict import timed  # noqa: E402
from gen_big_table import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--preset", nargs="+", default=["mixed", "reference"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/custseg-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = args.workdir / f"big_train_{args.rows}.csv"
    if not table.exists():
        generate(args.rows, table, train=True)
    print("| preset | rows | wall (s) | peak memory (GiB) | silhouette / NMI / mapped accuracy |")
    print("| --- | ---: | ---: | ---: | --- |")
    for preset in args.preset:
        results = args.workdir / f"results-big-{preset}"
        wall, peak = timed([sys.executable, "-m", "custseg", "train", "--train", str(table), "--preset", preset,
                            "--models-dir", str(args.workdir / f"models-big-{preset}"), "--results-dir",
                            str(results), "-q"])
        metrics = json.loads((results / "run_summary.json").read_text(encoding="utf-8"))["metrics"]
        found = " / ".join(f"{metrics[m]:.3f}" for m in ("silhouette", "nmi", "mapped_accuracy"))
        print(f"| {preset} | {args.rows:,} | {wall:.1f} | {peak:.2f} | {found} |", flush=True)


if __name__ == "__main__":
    main()
