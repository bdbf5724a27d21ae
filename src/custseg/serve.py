"""An HTTP scoring service over a saved model (FastAPI, run by uvicorn).

Needs the ``serve`` extra (``pip install "custseg[serve]"``). :func:`create_app` builds
the application around one model folder, loaded and verified once; :func:`serve` runs
it (``custseg serve``). Endpoints:

``POST /predict``
    A JSON list of customer records (objects: column -> value) -> a JSON list of scores,
    one per record, in order: ``ID, Cluster, [Predicted_Segment,] Distance_To_Centroid,
    Reconstruction_Error`` and whatever else ``custseg predict`` writes.
``POST /predict/csv``
    A table file as the request body (CSV or Parquet, as ``custseg predict`` reads it;
    ``?filename=`` names it in error messages) -> the CSV ``custseg predict`` would write,
    streamed back in chunks.
``GET /health``
    ``{"status": "ok", "model_sha256": ...}``.
``GET /model``
    The model's schema, versions, fit metrics, mapping and manifest checksum.

Every input is checked by the same code as the command line, so a bad record gets
HTTP 422 and the message ``custseg predict`` prints after ``Error:`` (for JSON records,
"line N" is record N). A body larger than ``max_body_bytes`` gets 413 before it is
read. Any other failure is a 500 with one line that says so; tracebacks stay in the
server's log.
"""

# no "from __future__ import annotations": FastAPI reads the endpoints' annotations as objects
import gc
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from ._version import __version__
from .exceptions import ConfigError, CustsegError, DataError
from .io.reading import read_table_bytes, table_from_frame
from .persistence import MANIFEST, LoadedModel, load_model
from .io.writing import FLOAT_FORMAT
from .schema import text_columns_of
from .workflow import predict_table

__all__ = ["create_app", "serve", "listening_socket", "DEFAULT_MAX_BODY_BYTES"]

#: 32 MB: about 250,000 customer records of the shipped table's width as JSON
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: rows per chunk of a streamed CSV answer
CSV_CHUNK_ROWS = 10_000
_ENV_MODEL, _ENV_LIMIT = "CUSTSEG_SERVE_MODEL", "CUSTSEG_SERVE_MAX_BODY_BYTES"
log = logging.getLogger("custseg.serve")


class _TooLarge(Exception):
    pass


def _fastapi():
    try:
        import fastapi
        import starlette
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("the HTTP service needs the 'serve' extra: pip install \"custseg[serve]\"") from None
    return fastapi, starlette


def model_description(model: LoadedModel, folder: str | Path) -> dict[str, Any]:
    """What ``GET /model`` answers: schema, versions, fit metrics, mapping, checksums."""
    pipeline = model.pipeline
    history = pipeline.embedder_.history_ if hasattr(pipeline.embedder_, "history_") else None
    metrics: dict[str, Any] = {"n_clusters": int(pipeline.n_clusters), "inertia": float(pipeline.inertia_),
                               "kmeans_iterations": int(pipeline.n_iter_)}
    if history is not None and len(history):
        best = history["val_loss"].min() if "val_loss" in history else math.nan
        metrics.update(autoencoder_epochs=int(len(history)),
                       autoencoder_best_val_loss=None if pd.isna(best) else float(best))
    return {
        "model": str(folder),
        "custseg_version": __version__,
        "model_versions": model.manifest.get("versions", {}),
        "format_version": model.manifest.get("format_version"),
        "manifest_sha256": hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest(),
        "files_sha256": model.manifest.get("files", {}),
        "schema": None if model.schema is None else model.schema.to_dict(),
        "features": [str(f) for f in pipeline.feature_names_in_],
        "mapping": None if pipeline.mapping_ is None else {str(k): v for k, v in pipeline.mapping_.items()},
        "metrics": metrics,
    }


def _records_frame(body: bytes) -> pd.DataFrame:
    """The JSON list of records of a request as a DataFrame; errors say what is wrong with the body."""
    try:
        records = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the request body is not valid JSON ({exc}); send a JSON list of customer records "
                        "such as [{\"Age\": 40, \"Gender\": \"Male\"}]") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list) or not records:
        raise DataError("the request body must be a non-empty JSON list of customer records (objects); "
                        f"got {type(records).__name__ if records != [] else 'an empty list'}")
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataError(f"record {i} is a JSON {type(record).__name__}, not an object of column -> value; "
                            "send each customer as {\"column\": value, ...}")
    # (json.loads also reads UTF-16 and UTF-32 bodies, whose escapes the byte pattern does not see)
    if _SURROGATE_ESCAPE.search(body) or json.detect_encoding(body) != "utf-8":
        _check_surrogates(records)
    frame = pd.DataFrame.from_records(records)
    # a nested value can only sit in a column of Python objects that is not all text (one C-level scan
    # a column instead of a check a value: a 1,000-record request spent ~4 ms here)
    nested = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
            found = np.flatnonzero(column.map(lambda v: isinstance(v, (dict, list))).to_numpy(dtype=bool))
            if len(found):
                nested[name] = int(found[0])
    if nested:  # the first record holding one, and its first such key
        row = min(nested.values())
        key = next(k for k in records[row] if nested.get(k) == row)
        value = records[row][key]
        raise DataError(f"record {row + 1}, column {key!r}: value {json.dumps(value)[:40]} is a JSON "
                        f"{type(value).__name__}; give a number, a string or null")
    return frame


#: a JSON escape of a UTF-16 surrogate (\\uD800-\\uDFFF): only through one can a string hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_surrogates(records: list[dict]) -> None:
    """Refuse a column name or text value holding a lone surrogate: it is no character, and no table can hold it."""
    for i, record in enumerate(records, start=1):
        for key, value in record.items():
            for is_name, text in ((True, key), (False, value)):
                try:
                    if isinstance(text, str):
                        text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    what = f"column name {key[:40]!r}" if is_name else f"column {key!r}: value {text[:40]!r}"
                    raise DataError(f"record {i}, {what} holds a lone UTF-16 surrogate ({ascii(text[exc.start])}), "
                                    "which is no character; send text as UTF-8 (a character beyond U+FFFF as one "
                                    "escape pair, such as \"\\ud83d\\ude00\")") from None


def create_app(model_dir: str | Path, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI application scoring with the model in ``model_dir``.

    The model is loaded and its checksums verified once, here; a damaged folder fails
    now, not at the first request.

    Parameters
    ----------
    model_dir : str or path
        Model folder written by ``custseg train``.
    max_body_bytes : int
        Larger request bodies are refused with HTTP 413.

    Examples
    --------
    >>> from fastapi.testclient import TestClient                   # doctest: +SKIP
    >>> client = TestClient(create_app("models"))                   # doctest: +SKIP
    >>> client.post("/predict", json=[{"Age": 40, "Gender": "Male"}]).json()   # doctest: +SKIP
    """
    fastapi, starlette = _fastapi()
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes must be an int >= 1. Got {max_body_bytes!r} instead.")
    model = load_model(model_dir)
    description = model_description(model, model_dir)
    # One OpenMP and one BLAS thread per request: sklearn's nearest-centroid search opens a parallel
    # region per call, and on a busy machine waking its threads took 20-60 ms for a single customer;
    # OpenBLAS's threads cost the mixed ensemble's 1,000-customer request ~20 ms more in the monitor's
    # distances. Requests are served in parallel by the workers instead; the tests check the answers
    # are the CLI's. (A ThreadpoolController found once makes each limit ~0.1 ms.)
    threads = ThreadpoolController()
    na = list(model.settings.get("data", {}).get("na_values", []))
    # the model's category columns and the ID column as sent: '007' stays '007' (see Schema.text_columns)
    text_columns = text_columns_of(model.schema)
    app = fastapi.FastAPI(title="custseg", version=__version__,
                          description="Assign customers to segments with a saved custseg model.")

    def error(status: int, message: str):
        return JSONResponse({"detail": message}, status_code=status)

    async def body_of(request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise _TooLarge()
        chunks, size = [], 0
        async for chunk in request.stream():  # also bounds bodies sent without a length (chunked)
            size += len(chunk)
            if size > max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
        return b"".join(chunks)

    @app.exception_handler(_TooLarge)
    async def too_large(request, exc):
        return error(413, f"the request body is larger than the limit of {max_body_bytes:,} bytes; send fewer "
                          "customers per request, or start the service with a larger --max-body-mb")

    @app.exception_handler(CustsegError)
    async def bad_input(request, exc):
        return error(422, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug: say so in one line, keep the traceback in the log
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    def score_records(body: bytes) -> str:
        frame = _records_frame(body)
        table = table_from_frame(frame, "request body", na, first_line=1, text_columns=text_columns)
        with threads.limit(limits=1):
            scored = predict_table(model.pipeline, model.schema, table, segment_names=model.cluster_names,
                                   monitor=model.monitor).table
        return scored.to_json(orient="records", double_precision=15)

    def score_file(body: bytes, filename: str) -> pd.DataFrame:
        if not body.strip():
            raise DataError(f"file {filename!r} is empty; send the table as the request body")
        table = read_table_bytes(body, filename, na, parquet=filename.lower().endswith((".parquet", ".pq")),
                                 text_columns=text_columns)
        with threads.limit(limits=1):
            return predict_table(model.pipeline, model.schema, table, segment_names=model.cluster_names,
                                 monitor=model.monitor).table

    @app.post("/predict")
    async def predict(request: fastapi.Request):
        """Score a JSON list of customer records."""
        body = await body_of(request)
        return Response(await run_in_threadpool(score_records, body), media_type="application/json")

    @app.post("/predict/csv")
    async def predict_csv(request: fastapi.Request, filename: str = "upload.csv"):
        """Score a table file (CSV or Parquet) sent as the body; the CSV of scores is streamed back."""
        body = await body_of(request)
        scored = await run_in_threadpool(score_file, body, filename)

        def chunks():
            for start in range(0, len(scored), CSV_CHUNK_ROWS):
                buffer = io.StringIO()
                scored.iloc[start:start + CSV_CHUNK_ROWS].to_csv(buffer, index=False, header=start == 0,
                                                                float_format=FLOAT_FORMAT, lineterminator="\n")
                yield buffer.getvalue()

        return StreamingResponse(chunks(), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="predictions.csv"'})

    @app.get("/health")
    async def health():
        """The service is up and its model verified."""
        return {"status": "ok", "model_sha256": description["manifest_sha256"]}

    @app.get("/model")
    async def model_info():
        """Schema, versions, fit metrics and checksums of the model being served."""
        return description

    return app


def app_from_environment():
    """The application for uvicorn's worker processes (``--workers 2``): settings come through the environment."""
    return _long_lived(create_app(os.environ[_ENV_MODEL], max_body_bytes=int(os.environ[_ENV_LIMIT])))


def _long_lived(app):
    """``app``, with every object the service process holds so far out of the garbage collector's way.

    The libraries and the model are ~300,000 objects that live as long as the service: a full
    collection walks all of them (about 100 ms here), and it would run in the middle of a request.
    ``gc.freeze`` moves them to the permanent generation after one last collection; what requests
    allocate is collected as before. Only for the process ``custseg serve`` runs: a program that
    embeds :func:`create_app` keeps its own collector settings.
    """
    gc.collect()
    gc.freeze()
    return app


def serve(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info") -> None:
    """Run the service until interrupted (``custseg serve``).

    The model is verified here first, so a bad folder is one error line, not a crash
    in every worker.
    """
    _fastapi()
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("the HTTP service needs the 'serve' extra: pip install \"custseg[serve]\"") from None
    if workers < 1:
        raise ConfigError(f"--workers must be an int >= 1. Got {workers} instead.")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535. Got {port} instead.")
    if workers == 1:
        uvicorn.run(_long_lived(create_app(model_dir, max_body_bytes=max_body_bytes)), host=host, port=port,
                    log_level=log_level, access_log=False)
        return
    load_model(model_dir)
    os.environ[_ENV_MODEL], os.environ[_ENV_LIMIT] = str(Path(model_dir).resolve()), str(max_body_bytes)
    config = uvicorn.Config("custseg.serve:app_from_environment", factory=True, host=host, port=port,
                            workers=workers, log_level=log_level, access_log=False)
    sock = listening_socket(host, port)
    from uvicorn.supervisors import Multiprocess

    # what uvicorn.run does for several workers (uvicorn >= 0.51), with the socket above instead of
    # Config.bind_socket's
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket several workers share, created as ``IPPROTO_TCP``.

    uvicorn binds it with ``socket.socket(family)``, whose ``proto`` is 0; accepted
    connections inherit it, and asyncio turns ``TCP_NODELAY`` on only for sockets that say
    ``IPPROTO_TCP`` (uvicorn issue #3149). Without it every keep-alive response waited for
    the client's delayed ACK, about 40 ms (``benchmarks/bench_production.py --only http``
    measures ``GET /health`` and single records with 1 and 2 workers).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); give another --host or "
                          "--port") from None
    sock.set_inheritable(True)
    return sock
