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


def cli_train_usage(repeats: int, extra: list[str] | None = None,
                    cwd: Path | None = None) -> list[tuple[float, float, float]]:
    """(wall, CPU = user + sys of the child, peak RSS in MB) of fresh `custseg train` processes."""
    import resource

    out = []
    exe = shutil.which("custseg") or f"{sys.executable} -m custseg"
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            if cwd is None:
                shutil.copytree(REPO / "data" / "raw", Path(tmp) / "data" / "raw")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(exe.split() + ["train", "--quiet", *(extra or []),
                                          "--models-dir", f"{tmp}/models", "--results-dir", f"{tmp}/results"],
                           cwd=cwd or tmp, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out.append((wall, cpu, after.ru_maxrss / 1024))
    return out


#: (stage, module, attribute): the library functions `custseg train` spends its time in, wrapped
#: one by one by :func:`stage_profile`. A stage nested in another (the members' K-Means inside the
#: consensus) is subtracted from the outer one. scikit-learn's ``KMeans.fit`` is one function for
#: every caller: its stage is named by :data:`KMEANS_STAGES` after the stage that calls it.
STAGES = [
    ("loading (read, schema, checks)", "custseg.workflow", "load_tables"),
    ("preprocessing", "custseg.preprocessing", "CustomerPreprocessor.fit_transform"),
    ("autoencoder (fit)", "custseg.embedders.autoencoder", "AutoencoderEmbedder.fit"),
    ("autoencoder (fit)", "custseg.embedders.mixed", "MixedAutoencoderEmbedder.fit"),
    (None, "custseg.pipeline", "KMeans.fit"),
    ("members' K-Means (for Agreement)", "custseg.clustering", "batched_kmeans"),
    ("consensus: matching, agreement", "custseg.clustering", "ConsensusKMeans.fit"),
    ("latent features (transform)", "custseg.pipeline", "SegmentationPipeline.transform"),
    ("k scan 2..12 (K-Means + silhouettes)", "custseg.workflow", "select_k"),
    ("metrics", "custseg.workflow", "internal_metrics"),
    ("profiles and row tables", "custseg.workflow", "_profile"),
    ("profiles and row tables", "custseg.workflow", "_row_tables"),
    ("test scoring", "custseg.workflow", "_score_test"),
    ("monitoring (soft assignment, novelty, drift)", "custseg.workflow", "fit_monitor"),
    ("PCA map", "custseg.workflow", "pca_coordinates"),
    ("t-SNE map (second thread)", "custseg.workflow", "tsne_coordinates"),
    ("drift: classifier two-sample test", "custseg.workflow", "classifier_two_sample_test"),
    ("figures (PCA, distribution, profiles, training)", "custseg.workflow", "_draw_early"),
    ("figures (k selection, monitoring)", "custseg.workflow", "_draw_scan_and_monitoring"),
    ("figure (t-SNE map)", "custseg.workflow", "_draw"),
    ("report and writing", "custseg.workflow", "write_training_outputs"),
]

#: stage calling ``KMeans.fit`` (None: the pipeline's own) -> the stage its time is counted in;
#: K-Means called from any other stage (the k scan) stays in that stage
KMEANS_STAGES = {None: "K-Means k=7, n_init 50",
                 "consensus: matching, agreement": "consensus K-Means (side-by-side latent)"}


def stage_profile(preset: str = "reference") -> list[tuple[str, float, float]]:
    """(stage, wall s, CPU s of the thread that ran it) of one in-process `custseg train --preset` run.

    Imports are timed in a fresh process (`python -c "import custseg.cli, custseg.workflow"`);
    every other stage by wrapping the library function that does it.
    """
    import functools
    import importlib
    import threading

    start = time.perf_counter()
    cpu0 = _children_cpu()
    subprocess.run([sys.executable, "-c", "import custseg.cli, custseg.workflow"], check=True)
    rows = {"imports (fresh process)": [time.perf_counter() - start, _children_cpu() - cpu0]}
    from custseg import workflow
    from custseg.config import RunConfig

    depth = threading.local()

    def wrap(named, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            outer = getattr(depth, "stack", [])
            stage = named if named is not None else KMEANS_STAGES.get(outer[-1] if outer else None)
            if stage is None:
                return fn(*args, **kwargs)
            depth.stack = outer + [stage]
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                w, c = time.perf_counter() - w0, time.thread_time() - c0
                depth.stack = outer
                acc = rows.setdefault(stage, [0.0, 0.0])
                acc[0] += w
                acc[1] += c
                if outer and outer[-1] != stage:  # count nested time once, in the inner stage
                    parent = rows.setdefault(outer[-1], [0.0, 0.0])
                    parent[0] -= w
                    parent[1] -= c
        return timed

    for stage, module, attr in STAGES:
        mod = importlib.import_module(module)
        owner_name, _, name = attr.rpartition(".")
        owner = getattr(mod, owner_name) if owner_name else mod
        if hasattr(owner, name):
            setattr(owner, name, wrap(stage, getattr(owner, name)))
    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        result = workflow.train(RunConfig.from_preset(preset))
        workflow.write_training_outputs(result, f"{tmp}/models", f"{tmp}/results")
        total = (time.perf_counter() - w0, time.process_time() - c0)
    out = [(stage, w, c) for stage, (w, c) in rows.items()]
    out.append(("all but imports (wall; CPU of every thread)", *total))
    return out


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def time_autoencoder(threads: int, fast_backward: bool = True) -> tuple[float, int]:
    """Seconds and epochs of the reference autoencoder alone on the preprocessed shipped data
    (``fast_backward=False``: through autograd instead of its hand-written NumPy step)."""
    from custseg.config import RunConfig
    from custseg.workflow import build_pipeline, load_tables

    train, _, schema = load_tables(RunConfig())
    pipeline = build_pipeline(RunConfig(), schema)
    features = pipeline.preprocessor.fit_transform(train.frame)
    embedder = pipeline.embedder.set_params(n_threads=threads, fast_backward=fast_backward)
    start = time.perf_counter()
    embedder.fit(features, train.frame[schema.label_column])
    return time.perf_counter() - start, len(embedder.history_)


def time_dynamo_import() -> float:
    """Seconds to import ``torch._dynamo`` after torch, in a fresh process: what building any ``torch.optim``
    optimizer costs a run (custseg's trainers do not build one, see ``embedders.training.FusedAdam``)."""
    code = ("import time, torch; t = time.perf_counter(); import torch._dynamo; "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout)


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
    parser.add_argument("--stages-only", action="store_true", help="only the per-stage table")
    parser.add_argument("--preset", default="reference", help="the preset to train (default: reference)")
    args = parser.parse_args()
    os.chdir(REPO)
    print(f"Machine: {machine()}; load average before: {load_average()}\n")
    print("| stage | wall s | CPU s |")
    print("| --- | ---: | ---: |")
    for stage, wall, cpu in stage_profile(args.preset):
        print(f"| {stage} | {wall:.2f} | {cpu:.2f} |")
    print(f"\nload average after: {load_average()}\n")
    if args.stages_only:
        return
    usage = cli_train_usage(args.repeats, ["--preset", args.preset])
    walls, cpus = [u[0] for u in usage], [u[1] for u in usage]
    runs = walls
    ae1, ep1 = time_autoencoder(1)
    ae2, ep2 = time_autoencoder(2)
    aeg, epg = time_autoencoder(1, fast_backward=False)
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| `custseg train` (every output, report included), median of {args.repeats} | {statistics.median(runs):.1f} |")
    print(f"| `custseg train`, fastest / slowest | {min(runs):.1f} / {max(runs):.1f} |")
    print(f"| `custseg train`, CPU (user + sys), median of {args.repeats} | {statistics.median(cpus):.1f} |")
    print(f"| `custseg train`, peak memory MB (largest) | {max(u[2] for u in usage):.0f} |")
    print(f"| reference autoencoder alone, 1 torch thread ({ep1} epochs) | {ae1:.1f} ({1000 * ae1 / ep1:.0f} ms/epoch) |")
    print(f"| reference autoencoder alone, 2 torch threads ({ep2} epochs) | {ae2:.1f} ({1000 * ae2 / ep2:.0f} ms/epoch) |")
    print(f"| reference autoencoder alone, through autograd, 1 thread ({epg} epochs) | {aeg:.1f} "
          f"({1000 * aeg / epg:.0f} ms/epoch) |")
    print(f"| t-SNE map, 1,500-point stratified sample (openTSNE) | {time_tsne(1500):.1f} |")
    print(f"| importing `torch._dynamo` (what a `torch.optim` optimizer would add) | {time_dynamo_import():.1f} |")


if __name__ == "__main__":
    main()
