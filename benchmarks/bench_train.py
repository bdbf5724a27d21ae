"""Speed of `custseg train` on the shipped data, and of its parts.

Run from the repository root with the package installed:

    python benchmarks/bench_train.py [--repeats 3]

It prints a Markdown table; paste it with the machine lines into benchmarks/README.md.
Each `custseg train` run is a fresh process in a fresh temporary folder (imports, data
loading, training, every output, the report), timed wall-clock from outside.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def time_cli_train(repeats: int) -> list[float]:
    times = []
    exe = shutil.which("custseg") or f"{sys.executable} -m custseg"
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(REPO / "data" / "raw", Path(tmp) / "data" / "raw")
            start = time.perf_counter()
            subprocess.run(exe.split() + ["train", "--quiet"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return times


def time_autoencoder(threads: int) -> tuple[float, int]:
    """Seconds and epochs of the reference autoencoder alone on the preprocessed shipped data."""
    from custseg.config import RunConfig
    from custseg.workflow import build_pipeline, load_tables

    train, _, schema = load_tables(RunConfig())
    pipeline = build_pipeline(RunConfig(), schema)
    features = pipeline.preprocessor.fit_transform(train.frame)
    embedder = pipeline.embedder.set_params(n_threads=threads)
    start = time.perf_counter()
    embedder.fit(features, train.frame[schema.label_column])
    return time.perf_counter() - start, len(embedder.history_)


def time_tsne(points: int) -> float:
    import numpy as np

    from custseg.report.maps import tsne_coordinates

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(8068, 8))
    labels = rng.integers(0, 7, 8068)
    start = time.perf_counter()
    tsne_coordinates(latent, labels, max_points=points, random_state=0)
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn
    import torch

    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"scikit-learn {sklearn.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.chdir(REPO)
    print(f"Machine: {machine()}\n")
    runs = time_cli_train(args.repeats)
    ae1, ep1 = time_autoencoder(1)
    ae2, ep2 = time_autoencoder(2)
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| `custseg train` (every output, report included), median of {args.repeats} | {statistics.median(runs):.1f} |")
    print(f"| `custseg train`, fastest / slowest | {min(runs):.1f} / {max(runs):.1f} |")
    print(f"| autoencoder alone, 1 torch thread ({ep1} epochs) | {ae1:.1f} ({1000 * ae1 / ep1:.0f} ms/epoch) |")
    print(f"| autoencoder alone, 2 torch threads ({ep2} epochs) | {ae2:.1f} ({1000 * ae2 / ep2:.0f} ms/epoch) |")
    print(f"| t-SNE map, 1,500-point stratified sample (openTSNE) | {time_tsne(1500):.1f} |")


if __name__ == "__main__":
    main()
