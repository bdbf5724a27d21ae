"""Where scoring a few customers, and scoring with onnxruntime, spend their time, part by part.

Run from the repository root with the extras installed (``pip install -e ".[test]"``):

    python benchmarks/bench_scoring_parts.py [--preset reference --preset mixed] [--only handler|tiles|onnx|gc]

- ``handler``: what ``POST /predict`` runs, stage by stage, in-process, for 1 record and for
  1,000 records (Test.csv customers): parsing the JSON records, reading and checking them as a
  table, scoring (preprocessing, network, cluster assignment, monitor), the JSON answer.
  Medians over the requests, in ms of wall time, with one OpenMP / BLAS thread as the
  service runs them.
- ``tiles`` (reference preset): the reference network's inference tile, 4,096 rows against
  1,024: one customer, 1,000,000 rows, and whether the shipped Train.csv's latent features
  are the same bits.
- ``gc``: the service's garbage collector, before and after ``gc.freeze`` (``serve._long_lived``):
  a full collection's time, and the full collections 600 in-process requests trigger.
- ``onnx``: onnxruntime's own profile of the exported graph (the part ``predict --runtime onnx``
  runs) on the shipped Train.csv twelve times over (96,816 rows) in 512-row calls: node time by operator.

Models are trained once with ``custseg train --no-figures`` into ``--workdir`` (as
``bench_production.py`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_production import model_folder, train_model  # noqa: E402


def _median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1000


def bench_handler(model_dir: Path, records: int, requests: int) -> dict[str, float]:
    """Median ms per stage of the service's handler for requests of ``records`` Test.csv customers."""
    from threadpoolctl import ThreadpoolController

    from custseg.io.reading import table_from_frame
    from custseg.persistence import load_model
    from custseg.schema import text_columns_of
    from custseg.serve import _records_frame
    from custseg.workflow import predict_table

    model = load_model(model_dir)
    pipeline, monitor = model.pipeline, model.monitor
    text_columns = text_columns_of(model.schema)
    customers = json.loads(pd.read_csv(REPO / "data" / "raw" / "Test.csv").to_json(orient="records"))
    bodies = [json.dumps(customers[i * records % len(customers):][:records]).encode() for i in range(requests)]
    stages: dict[str, list[float]] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        stages.setdefault(name, []).append(time.perf_counter() - start)
        return value

    threads = ThreadpoolController()
    with threads.limit(limits=1):
        for round_ in range(2):  # the first round warms caches and is not counted
            stages.clear()
            for body in bodies:
                frame = timed("parse JSON records", _records_frame, body)
                table = timed("read and check as a table", table_from_frame, frame, "request body",
                              first_line=1, text_columns=text_columns)
                scored = timed("score (all of predict_table)", predict_table, pipeline, model.schema, table,
                               segment_names=model.cluster_names, monitor=monitor).table
                timed("JSON answer", scored.to_json, orient="records", double_precision=15)
                # the parts of scoring, again on their own
                features = timed("  preprocessing", pipeline.preprocessor_.transform, table.frame)
                latent, error = timed("  network", pipeline.latent_and_error, features)
                timed("  cluster assignment", pipeline.assign_latent, latent)
                where = pipeline.assignment_space(latent) if monitor.space == "assignment" else latent
                clusters = pipeline.assign_latent(latent)[0]
                timed("  monitor", monitor.score_columns, table.frame, where, error, clusters)
    return {name: round(_median_ms(times), 2) for name, times in stages.items()}


def bench_tiles(model_dir: Path) -> list[dict]:
    """The reference network's tile size: one customer, a million rows, and the same bits or not."""
    from custseg.embedders import autoencoder
    from custseg.io.reading import read_table
    from custseg.persistence import load_model

    pipeline = load_model(model_dir).pipeline
    features = pipeline.preprocessor_.transform(read_table(REPO / "data" / "raw" / "Train.csv").frame)
    million = np.tile(features, (1_000_000 // len(features) + 1, 1))[:1_000_000]
    original = autoencoder.run_in_tiles
    rows, reference = [], None
    try:
        for tile in (4096, 1024):
            autoencoder.run_in_tiles = lambda net, X, n_threads=1, tile_rows=tile: original(net, X, n_threads, tile)
            latent = pipeline.embedder_.transform(features)
            reference = latent if reference is None else reference
            one = features[:1]
            for _ in range(20):
                pipeline.latent_and_error(one)
            start = time.perf_counter()
            for _ in range(200):
                pipeline.latent_and_error(one)
            single = (time.perf_counter() - start) / 200 * 1000
            start = time.perf_counter()
            pipeline.latent_and_error(million)
            rows.append({"tile": tile, "one_customer_ms": round(single, 2),
                         "million_rows_s": round(time.perf_counter() - start, 2),
                         "same_bits_as_4096": bool(np.array_equal(latent, reference))})
    finally:
        autoencoder.run_in_tiles = original
    return rows


def bench_onnx_nodes(model_dir: Path, folder: Path) -> dict:
    """onnxruntime's profile of the exported graph, 512-row calls over Train.csv x 12: node ms by operator."""
    import onnx
    import onnxruntime as ort

    from custseg.export import SESSION_ROWS, OnnxSegmenter, export_onnx, scoring_graph
    from custseg.io.reading import read_table

    path = folder / f"{model_dir.name}.onnx"
    export_onnx(model_dir, path)
    frame = pd.concat([read_table(REPO / "data" / "raw" / "Train.csv").frame] * 12, ignore_index=True)
    feeds = OnnxSegmenter(path).feeds(frame)
    options = ort.SessionOptions()
    options.enable_profiling, options.intra_op_num_threads = True, 1
    options.profile_file_prefix = str(folder / "ort-profile")
    # the part of the graph OnnxSegmenter runs (the columns of predict)
    session = ort.InferenceSession(scoring_graph(onnx.load(str(path))).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    for at in range(0, len(frame), SESSION_ROWS):
        session.run(None, {name: values[at:at + SESSION_ROWS] for name, values in feeds.items()})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"].get("op_name")] += event["dur"] / 1000
    return {"rows": len(frame), "node_ms": round(sum(by_op.values())),
            "by_operator_ms": {op: round(ms) for op, ms in by_op.most_common(10)}}


def bench_gc(model_dir: Path, requests: int) -> dict:
    """The service's garbage collector: a full collection's time before and after ``gc.freeze`` (what
    ``custseg serve`` calls once its application is built), and the full collections ``requests`` in-process
    requests (one in ten of 1,000 records, the others of one) trigger without and with the freeze."""
    import gc

    from fastapi.testclient import TestClient

    from custseg.serve import _long_lived, create_app

    app = create_app(model_dir)
    client = TestClient(app)
    customers = json.loads(pd.read_csv(REPO / "data" / "raw" / "Test.csv").to_json(orient="records"))
    full: list[float] = []

    def timed(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            full.append(time.perf_counter() if phase == "start" else time.perf_counter() - full.pop())

    def collections() -> tuple[int, float]:
        full.clear()
        gc.callbacks.append(timed)
        try:
            for i in range(requests):
                start = i * 7 % 1500
                assert client.post("/predict", json=customers[start:start + (1000 if i % 10 == 0 else 1)]).is_success
        finally:
            gc.callbacks.remove(timed)
        return len(full), round(max(full, default=0.0) * 1000, 1)

    def collect_ms() -> float:
        started = time.perf_counter()
        gc.collect()
        return round((time.perf_counter() - started) * 1000, 1)

    out = {"tracked_objects": len(gc.get_objects())}
    # the requests first, as a service started without the freeze serves them; then one full collection timed
    out["full_collections_in_requests"], out["longest_ms"] = collections()
    out["full_collection_ms"] = collect_ms()
    _long_lived(app)
    try:
        out["frozen_full_collection_ms"] = collect_ms()
        out["frozen_full_collections_in_requests"], out["frozen_longest_ms"] = collections()
    finally:
        gc.unfreeze()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["reference", "mixed", "guided"], action="append")
    parser.add_argument("--only", choices=["handler", "tiles", "onnx", "gc"], action="append")
    parser.add_argument("--requests", type=int, default=300, help="single-record requests (1,000-record: a tenth)")
    parser.add_argument("--workdir", type=Path, help="keep the models here (reused between runs)")
    args = parser.parse_args()
    only = set(args.only or ["handler", "tiles", "onnx", "gc"])
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="custseg-parts-"))
    folder.mkdir(parents=True, exist_ok=True)
    for preset in args.preset or ["reference", "mixed"]:
        model = model_folder(folder, preset)
        if not (model / "manifest.json").exists():
            train_model(folder, preset)
        print(f"-- preset {preset}", flush=True)
        if "handler" in only:
            for records, requests in ((1, args.requests), (1000, max(args.requests // 10, 5))):
                print(f"handler, {records:,} record(s), median ms:",
                      json.dumps(bench_handler(model, records, requests)), flush=True)
        if "tiles" in only and preset == "reference":
            for row in bench_tiles(model):
                print("tiles:", json.dumps(row), flush=True)
        if "onnx" in only:
            print("onnx nodes:", json.dumps(bench_onnx_nodes(model, folder)), flush=True)
        if "gc" in only:
            print("garbage collector:", json.dumps(bench_gc(model, 2 * args.requests)), flush=True)


if __name__ == "__main__":
    main()
