"""Speed of the production paths: Dask scoring, the HTTP service, ONNX against torch.

Run from the repository root with the extras installed (``pip install -e ".[test]"``):

    python benchmarks/bench_production.py [--dask-rows 10000000] [--onnx-rows 1000000] [--http-seconds 10]
    python benchmarks/bench_production.py --only onnx
    python benchmarks/bench_production.py --only http-cpu --only http --preset reference --preset mixed

It trains the reference model (or ``--preset``'s) on the shipped Train.csv once (in a temporary folder),
builds bigger tables by resampling the shipped customers (new IDs), and prints Markdown
tables to paste into benchmarks/README.md. Each measurement says what it timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "data" / "raw" / "Train.csv"


def model_folder(folder: Path, preset: str) -> Path:
    """Where the model of ``preset`` goes in the work folder (``models`` for the reference, as before)."""
    return folder / ("models" if preset == "reference" else f"models-{preset}")


def train_model(folder: Path, preset: str = "reference") -> Path:
    """The model of ``preset`` as ``custseg train`` writes it on the shipped tables (its monitor and
    segment names included, as the service serves it), saved to :func:`model_folder`."""
    model = model_folder(folder, preset)
    subprocess.run([sys.executable, "-m", "custseg", "train", "--preset", preset, "--models-dir", str(model),
                    "--results-dir", str(folder / f"results-{preset}"), "--no-figures", "-q"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return model


def bench_http_cpu(model: Path, requests: int = 60) -> dict:
    """CPU time (``time.process_time``: every thread of the process) of what ``POST /predict`` runs for one
    request, in-process: the app's handler through FastAPI's TestClient, median over ``requests``
    single-record requests (different Test.csv customers) and over ``requests // 3`` 1,000-record ones.
    Unlike wall time on a shared machine, it barely depends on what else runs."""
    from fastapi.testclient import TestClient

    from custseg.serve import create_app

    records = json.loads(pd.read_csv(REPO / "data" / "raw" / "Test.csv").to_json(orient="records"))
    client = TestClient(create_app(model))

    def cpu_ms(body: bytes) -> float:
        start = time.process_time()
        answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        spent = (time.process_time() - start) * 1000
        assert answer.status_code == 200, answer.text
        return spent

    cpu_ms(json.dumps(records[0]).encode())  # first request: imports, caches
    single = statistics.median(cpu_ms(json.dumps(records[i]).encode()) for i in range(requests))
    batch = json.dumps(records[:1000]).encode()
    thousand = statistics.median(cpu_ms(batch) for _ in range(max(requests // 3, 5)))
    row = {"model": model.name, "cpu_1_record_ms": round(single, 1), "cpu_1000_records_ms": round(thousand, 1),
           "load": round(os.getloadavg()[0], 1)}
    print(f"HTTP CPU per request ({model.name}): 1 record {single:.1f} ms, 1,000 records {thousand:.1f} ms "
          f"(load average {row['load']})", flush=True)
    return row


def customers(rows: int, seed: int = 0, start_id: int = 10_000_000) -> pd.DataFrame:
    """``rows`` customers resampled from the shipped Train.csv, with fresh IDs, without the label."""
    base = pd.read_csv(TRAIN).drop(columns="Segmentation")
    idx = np.random.default_rng(seed).integers(0, len(base), rows)
    out = base.iloc[idx].reset_index(drop=True)
    out["ID"] = np.arange(start_id, start_id + rows)
    return out


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2 ** 20


# -- Dask ------------------------------------------------------------------------------------------
def bench_dask(model: Path, folder: Path, rows: int, parts: int) -> list[dict]:
    from distributed import Client, LocalCluster

    from custseg.distributed import predict_dask

    part_dir = folder / "parts"
    part_dir.mkdir(exist_ok=True)
    per = rows // parts
    for i in range(parts):
        path = part_dir / f"part-{i:03d}.parquet"
        if not path.exists():
            customers(per, seed=i, start_id=10_000_000 + i * per).to_parquet(path, index=False)
    results = []
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
                Client(lc) as client:
            client.run(lambda: __import__("custseg.distributed"))  # imports are not scoring
            peak = {"mb": 0.0}
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    info = client.run(lambda: __import__("psutil").Process().memory_info().rss / 2 ** 20)
                    peak["mb"] = max(peak["mb"], max(info.values()))
                    stop.wait(1.0)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            start = time.perf_counter()
            done = predict_dask(model, str(part_dir / "*.parquet"), folder / f"out-{workers}",
                                scheduler=lc.scheduler_address)
            wall = time.perf_counter() - start
            stop.set()
            watcher.join()
        results.append({"workers": workers, "rows": done.rows, "parts": parts, "seconds": wall,
                        "rows_per_s": done.rows / wall, "peak_rss_mb_per_worker": peak["mb"]})
        print(json.dumps(results[-1]), flush=True)
    return results


# -- HTTP ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(model: Path, seconds: float) -> list[dict]:
    import httpx

    one = json.loads(customers(1, seed=1).to_json(orient="records"))
    batch = customers(1000, seed=2).to_json(orient="records").encode()
    results = []
    for workers in (1, 2):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "custseg", "serve", "--model", str(model), "--port", str(port),
                                 "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.3)
            with httpx.Client(base_url=base) as client:
                for _ in range(50):  # warm up every worker
                    client.post("/predict", json=one)
                latencies = []
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t = time.perf_counter()
                    assert client.post("/predict", json=one).status_code == 200
                    latencies.append(time.perf_counter() - t)
                # the transport alone: no scoring, so what is left is HTTP and the socket
                health = []
                for _ in range(200):
                    t = time.perf_counter()
                    assert client.get("/health").status_code == 200
                    health.append(time.perf_counter() - t)

            def batches(n_done: list):
                with httpx.Client(base_url=base, timeout=60) as c:
                    stop_at = time.monotonic() + seconds
                    while time.monotonic() < stop_at:
                        r = c.post("/predict", content=batch, headers={"Content-Type": "application/json"})
                        assert r.status_code == 200
                        n_done.append(1000)

            counts: list = []
            clients = 2 * workers  # enough requests in flight to keep every worker busy
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(batches, [counts] * clients))
            wall = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(30)
        lat = np.array(latencies) * 1000
        results.append({"workers": workers, "single_p50_ms": float(np.percentile(lat, 50)),
                        "single_p99_ms": float(np.percentile(lat, 99)), "single_requests": len(lat),
                        "health_p50_ms": float(np.percentile(np.array(health) * 1000, 50)),
                        "batch_rows_per_s": sum(counts) / wall, "batch_clients": clients})
        print(json.dumps(results[-1]), flush=True)
    return results


# -- ONNX ------------------------------------------------------------------------------------------
def bench_onnx(model: Path, folder: Path, rows: int, repeats: int) -> dict:
    """Score ``rows`` customers with onnxruntime and with torch, 1 and 2 threads: best wall and its CPU seconds.

    CPU seconds (``time.process_time``: every thread of the process) say what the scoring costs
    when other jobs share the cores and stretch the wall clock; the load average before and
    after each path says how busy the machine was. torch scores in blocks of ``CHUNK_ROWS``
    rows, as ``custseg predict`` does (a 40-member ensemble's activations for a million rows
    at once would take over 10 GB); onnxruntime in its 65,536-row batches.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from custseg.export import OnnxSegmenter, export_onnx
    from custseg.io.chunks import CHUNK_ROWS
    from custseg.io.reading import table_from_frame
    from custseg.persistence import load_model

    export_onnx(model, folder / "segmenter.onnx")
    loaded = load_model(model)
    frame = table_from_frame(customers(rows, seed=3), "bench").frame
    out = {"rows": rows, "preset": loaded.settings.get("preset")}

    def torch_scores() -> pd.DataFrame:
        return pd.concat([loaded.pipeline.score_table(frame.iloc[start:start + CHUNK_ROWS])
                          for start in range(0, len(frame), CHUNK_ROWS)], ignore_index=True)

    def timed(name: str, score) -> pd.DataFrame:
        walls, cpus, load_before = [], [], os.getloadavg()[0]
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            scores = score()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        best = int(np.argmin(walls))
        out.update({f"{name}_s": round(walls[best], 2), f"{name}_cpu_s": round(cpus[best], 2),
                    f"{name}_load": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"})
        return scores

    for threads in (1, 2):
        segmenter = OnnxSegmenter(folder / "segmenter.onnx", threads=threads)
        onnx_scores = timed(f"onnx_{threads}t", lambda: segmenter.score(frame))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        if hasattr(loaded.pipeline.embedder_, "n_threads"):  # the mixed ensemble sets its own torch threads
            loaded.pipeline.embedder_.n_threads = threads
        with threadpool_limits(limits=threads):
            torch_result = timed(f"torch_{threads}t", torch_scores)
    out["identical_clusters"] = bool((onnx_scores["Cluster"].to_numpy() == torch_result["Cluster"].to_numpy()).all())
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dask-rows", type=int, default=10_000_000)
    parser.add_argument("--dask-parts", type=int, default=20)
    parser.add_argument("--onnx-rows", type=int, default=1_000_000)
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["dask", "http", "http-cpu", "onnx"], action="append")
    parser.add_argument("--preset", choices=["reference", "mixed", "guided"], action="append",
                        help="model(s) to measure (repeatable; default: reference; HTTP targets hold for both)")
    parser.add_argument("--workdir", type=Path, help="keep models and parts here (reused between runs)")
    args = parser.parse_args()
    only = set(args.only or ["dask", "http", "http-cpu", "onnx"])
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="custseg-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python "
          f"{platform.python_version()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    for preset in args.preset or ["reference"]:
        model = model_folder(folder, preset)
        if not (model / "manifest.json").exists():
            train_model(folder, preset)
        print(f"-- preset {preset}", flush=True)
        if "onnx" in only:
            bench_onnx(model, folder, args.onnx_rows, args.repeats)
        if "http-cpu" in only:
            bench_http_cpu(model)
        if "http" in only:
            bench_http(model, args.http_seconds)
        if "dask" in only:
            bench_dask(model, folder, args.dask_rows, args.dask_parts)


if __name__ == "__main__":
    main()
