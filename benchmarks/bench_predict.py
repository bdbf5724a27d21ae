"""Time `custseg predict` on big generated tables: wall time, rows per second, peak memory.

A model of ``--preset`` (default: the reference design; ``mixed`` is the default
preset of ``custseg train``) is trained once on the shipped data unless ``--model`` names
one; tables of each size are generated once with ``gen_big_table.py`` into
``--workdir`` (outside the repository). Each predict runs in a fresh process under
``/usr/bin/time -v`` (wall clock and maximum resident set size, start-up included)::

    python benchmarks/bench_predict.py --rows 1000000 5000000 --workdir /tmp/custseg-bench
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gen_big_table import generate  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak memory in GiB) of a command run under /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return seconds, kib / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/custseg-bench"))
    parser.add_argument("--model", type=Path, help="a trained model folder (default: train one in --workdir)")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--preset", default="reference", help="preset of the model trained when --model is not given")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    custseg = [sys.executable, "-m", "custseg"]
    model = args.model
    if model is None:
        model = args.workdir / f"models-{args.preset}"
        if not (model / "manifest.json").exists():
            subprocess.run([*custseg, "train", "--preset", args.preset, "--models-dir", str(model), "--results-dir",
                            str(args.workdir / "results"), "-q"], check=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    print("| rows | wall (s) | rows/s | peak memory (GiB) |")
    print("| ---: | ---: | ---: | ---: |")
    for rows in args.rows:
        table = args.workdir / f"big_{rows}.{args.format}"
        if not table.exists():
            generate(rows, table)
        cmd = [*custseg, "predict", "--model", str(model), "--input", str(table),
               "--output", str(args.workdir / f"predictions_{rows}.csv")]
        wall, peak = timed(cmd)
        print(f"| {rows:,} | {wall:.1f} | {rows / wall:,.0f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
