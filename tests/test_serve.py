"""The HTTP service, started as ``custseg serve`` in a real process and driven over real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import REPO, SHIPPED_TEST, SHIPPED_TRAIN, make_customers, tiny_toml, train_tiny_model  # noqa: E402
from custseg.cli import main  # noqa: E402
from custseg.io.writing import FLOAT_FORMAT  # noqa: E402

LIMIT_MB = 0.25  # small, so an oversized body is quick to send


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    train_tiny_model(root, seed=4)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running_server(models: Path, max_body_mb: float = LIMIT_MB, workers: int = 1):
    """``custseg serve`` on ``models`` in its own process, and an HTTP client for it."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "custseg", "serve", "--model", str(models),
                             "--host", "127.0.0.1", "--port", str(port), "--max-body-mb", str(max_body_mb),
                             "--workers", str(workers)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start:\n" + proc.stdout.read())
        time.sleep(0.2)
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client, proc
    proc.terminate()
    try:
        log = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        log = proc.communicate()[0]
    assert "Traceback" not in log, log  # no request made the server print a traceback


@pytest.fixture(scope="module")
def server(trained):
    with _running_server(trained / "models") as running:
        yield running


def _cli_predict(trained, table: pd.DataFrame, tmp_path) -> tuple[int, pd.DataFrame | None, str]:
    path = tmp_path / "new.csv"
    table.to_csv(path, index=False)
    code = main(["predict", "--model", str(trained / "models"), "--input", str(path),
                 "--output", str(tmp_path / "pred.csv")])
    return code, pd.read_csv(tmp_path / "pred.csv") if code == 0 else None, path


def _as_cli_text(value) -> str:
    """A JSON answer's value as ``custseg predict`` writes it in its CSV (FLOAT_FORMAT for floats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return FLOAT_FORMAT % value
    return str(value)


def _assert_answer_is_the_cli_output(answer, expected_csv) -> None:
    assert answer.status_code == 200, answer.text
    expected = pd.read_csv(expected_csv, dtype=str, keep_default_na=False)
    got = answer.json()
    assert len(got) == len(expected) and all(list(r) == list(expected.columns) for r in got)
    for column in expected.columns:
        assert [_as_cli_text(r[column]) for r in got] == expected[column].tolist(), column


def test_good_records_score_as_the_cli_does(server, trained, tmp_path):
    client, _ = server
    new = make_customers(300, seed=2, start_id=7000).drop(columns="Segment")
    code, _, _ = _cli_predict(trained, new, tmp_path)
    assert code == 0
    records = json.loads(new.to_json(orient="records"))  # NaN -> null, as a JSON client sends missing values
    _assert_answer_is_the_cli_output(client.post("/predict", json=records), tmp_path / "pred.csv")
    for i in (0, 1, 17):  # one customer per request: the service's most frequent call
        (tmp_path / "one").mkdir(exist_ok=True)
        assert _cli_predict(trained, new.iloc[[i]], tmp_path / "one")[0] == 0
        _assert_answer_is_the_cli_output(client.post("/predict", json=records[i]), tmp_path / "one" / "pred.csv")


def test_awkward_records_score_as_the_cli_does(server, trained, tmp_path):
    # numbers sent as text, padded text, missing-value tokens, an unseen category, an extra column,
    # a far-out number, a record with every feature missing: the answer is still the CLI's, cell for cell
    client, _ = server
    new = make_customers(12, seed=5, start_id=9000).drop(columns="Segment").astype(object)
    new.loc[0, "Age"] = "41"
    new.loc[1, "Income"] = " 52.5 "
    new.loc[2, "Gender"] = " Male "
    new.loc[3, "Profession"] = "Astronaut"
    new.loc[4, "Spending"] = "NA"
    new.loc[5, "Age"] = 900
    new.loc[6, ["Age", "Income", "Family_Size", "Gender", "Profession", "Spending"]] = None
    new.loc[7, "Family_Size"] = "3"
    new["Channel"] = ["web", None, "shop", "web", "web", "shop", None, "web", "web", "shop", "web", "web"]
    code, _, _ = _cli_predict(trained, new, tmp_path)
    assert code == 0
    records = json.loads(new.to_json(orient="records"))
    assert records[0]["Age"] == "41" and records[6]["Age"] is None
    _assert_answer_is_the_cli_output(client.post("/predict", json=records), tmp_path / "pred.csv")


#: the default preset (the mixed-type ensemble with consensus clustering), made small
TINY_MIXED = tiny_toml(seed=3, n_clusters=4, figures=False).replace('preset = "reference"', 'preset = "mixed"').replace(
    "hidden_dims = [8]", "n_members = 5\nhidden_dims = [8]")


@pytest.mark.slow
@pytest.mark.parametrize("settings", [tiny_toml(seed=3, n_clusters=4, figures=False), TINY_MIXED], ids=["reference", "mixed"])
def test_every_shipped_test_customer_scores_as_the_cli_does(tmp_path, settings):
    # a model of the shipped table's columns (tiny settings, 800 of its customers), all 2,627 customers of
    # Test.csv in one request and the first 30 one by one: the CLI's output, cell for cell (both presets:
    # the service scores with one thread per request and the encodings' own arithmetic)
    train = pd.read_csv(SHIPPED_TRAIN).sample(800, random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "tiny.toml").write_text(settings, encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--config", str(tmp_path / "tiny.toml"),
                 "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"),
                 "--quiet"]) == 0
    test = pd.read_csv(SHIPPED_TEST)
    assert _cli_predict(tmp_path, test, tmp_path)[0] == 0
    records = json.loads(test.to_json(orient="records"))
    with _running_server(tmp_path / "models", max_body_mb=8) as (client, _):
        _assert_answer_is_the_cli_output(client.post("/predict", json=records), tmp_path / "pred.csv")
        expected = pd.read_csv(tmp_path / "pred.csv", dtype=str, keep_default_na=False)
        # both networks run in fixed tiles (custseg.embedders.inference), so a customer sent alone gets the
        # numbers it got in the whole table, last printed digit included
        for i in range(30):
            got = client.post("/predict", json=records[i])
            assert got.status_code == 200, got.text
            assert [_as_cli_text(v) for v in got.json()[0].values()] == expected.iloc[i].tolist()


def test_csv_upload_streams_back_what_the_cli_writes(server, trained, tmp_path):
    client, _ = server
    new = make_customers(50, seed=3, start_id=8000).drop(columns="Segment")
    code, _, path = _cli_predict(trained, new, tmp_path)
    assert code == 0
    answer = client.post("/predict/csv", params={"filename": "new.csv"}, content=path.read_bytes(),
                         headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.text == (tmp_path / "pred.csv").read_text()


def test_malformed_upload_gets_422_with_the_cli_message(server, trained, tmp_path, capsys):
    client, _ = server
    new = make_customers(10, seed=3).drop(columns="Segment")
    new["Age"] = new["Age"].astype(object)
    new.loc[4, "Age"] = "forty"
    code, _, path = _cli_predict(trained, new, tmp_path)
    cli_error = capsys.readouterr().err.strip()
    assert code == 1 and cli_error.startswith("Error: ")
    answer = client.post("/predict/csv", params={"filename": str(path)}, content=path.read_bytes())
    assert answer.status_code == 422
    assert "Error: " + answer.json()["detail"] == cli_error
    assert "line 6, column 'Age': value 'forty' is not a number" in cli_error


@pytest.mark.parametrize("body, expected", [
    (b"[{\"Age\": 30,", "not valid JSON"),
    (b"[]", "non-empty JSON list"),
    (b"[1, 2]", "record 1 is a JSON int"),
    (b"[{\"Age\": [1, 2]}]", "record 1, column 'Age': value [1, 2] is a JSON list"),
    # the first record with a nested value, and its first such key (text before it in the same column)
    (b"[{\"Age\": 3, \"Gender\": \"Male\"}, {\"Y\": [1], \"Gender\": {\"b\": 1}}, {\"Age\": [2]}]",
     "record 2, column 'Y': value [1] is a JSON list"),
    (b"[{\"Age\": 30, \"Gender\": \"Male\"}]", "columns are missing: 'Income'"),
    (b"[{\"Age\": 30, \"Income\": 40, \"Family_Size\": 2, \"Gender\": \"Male\", \"Profession\": \"Artist\", "
     b"\"Spending\": \"Low\"}, {\"Age\": \"old\"}]", "line 2, column 'Age': value 'old' is not a number"),
    (b"[{\"Age\": 30, \"Income\": Infinity, \"Family_Size\": 2, \"Gender\": \"Male\"}]",
     "line 1, column 'Income': value 'inf' is not a finite number"),
    # a lone UTF-16 surrogate escape is valid JSON but no character (it had given a 500): in a value, in a name
    (b"[{\"Age\": 30, \"Gender\": \"Male\"}, {\"Age\": 31, \"Gender\": \"M\\udc80le\"}]",
     "record 2, column 'Gender': value 'M\\udc80le' holds a lone UTF-16 surrogate ('\\udc80')"),
    (b"[{\"Age\": 30, \"\\uD800x\": 1}]", "record 1, column name '\\ud800x' holds a lone UTF-16 surrogate"),
    # json reads UTF-16 and UTF-32 bodies too: the escape is no longer the bytes of ASCII text there
    ("[{\"Age\": 30, \"Gender\": \"M\\udc80le\"}]".encode("utf-16"), "holds a lone UTF-16 surrogate ('\\udc80')"),
    ("[{\"Age\": 30, \"Gender\": \"M\\udc80le\"}]".encode("utf-32-le"), "holds a lone UTF-16 surrogate ('\\udc80')"),
    # an escape pair is one character: read, and only short of the model's columns
    (b"[{\"Age\": 30, \"Gender\": \"\\ud83d\\ude00\"}]", "columns are missing: 'Income'"),
])
def test_malformed_records_get_422_never_500(server, body, expected):
    client, _ = server
    answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert expected in answer.json()["detail"]
    assert "Traceback" not in answer.text


def test_oversized_bodies_get_413(server):
    client, _ = server
    big = b"[" + b",".join([b'{"Age": 30, "Gender": "Male"}'] * 20_000) + b"]"
    assert len(big) > LIMIT_MB * 1024 * 1024
    answer = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "larger than the limit" in answer.json()["detail"]

    def chunked():  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    answer = client.post("/predict/csv", content=chunked())
    assert answer.status_code == 413


def test_health_and_model_describe_the_verified_model(server, trained):
    client, _ = server
    manifest = hashlib.sha256((trained / "models" / "manifest.json").read_bytes()).hexdigest()
    assert client.get("/health").json() == {"status": "ok", "model_sha256": manifest}
    info = client.get("/model").json()
    assert info["manifest_sha256"] == manifest
    assert {c["name"] for c in info["schema"]["columns"]} >= {"Age", "Income", "Gender", "Profession"}
    assert info["metrics"]["n_clusters"] == 3 and info["metrics"]["inertia"] > 0
    assert set(info["mapping"].values()) <= {"G0", "G1", "G2"}


def test_concurrent_clients_get_their_own_answers(server):
    client, _ = server
    tables = [make_customers(20, seed=s, start_id=100 * s).drop(columns="Segment") for s in range(12)]

    def ask(table):
        answer = client.post("/predict", content=table.to_json(orient="records"),
                             headers={"Content-Type": "application/json"})
        return answer.status_code, [int(r["ID"]) for r in answer.json()]

    with ThreadPoolExecutor(max_workers=6) as pool:
        done = list(pool.map(ask, tables))
    assert done == [(200, t["ID"].tolist()) for t in tables]


def test_serve_refuses_a_damaged_model_in_one_line(trained, tmp_path, capsys):
    bad = tmp_path / "models"
    bad.mkdir()
    for f in (trained / "models").iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "clustering.json").write_text("{}")
    assert main(["serve", "--model", str(bad), "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("Error: ") and "was edited or truncated" in err


def _nodelay_of_accepted_connection(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted by an asyncio server on ``listener`` (as uvicorn's workers serve)."""
    import asyncio

    async def run() -> int:
        seen = asyncio.get_running_loop().create_future()

        async def on_connect(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    return asyncio.run(run())


def test_workers_share_a_socket_whose_connections_send_at_once():
    """Several workers serve a socket bound before they start. Bound the way uvicorn does it
    (``socket.socket(family)``: proto 0) its connections keep Nagle's algorithm on and every
    keep-alive answer waits ~40 ms for the client's delayed ACK; custseg's has TCP_NODELAY."""
    from custseg.serve import listening_socket

    plain = socket.socket(socket.AF_INET)
    plain.bind(("127.0.0.1", 0))
    assert _nodelay_of_accepted_connection(plain) == 0
    ours = listening_socket("127.0.0.1", 0)
    assert ours.proto == socket.IPPROTO_TCP
    assert _nodelay_of_accepted_connection(ours) != 0


def test_a_taken_port_is_one_clear_error():
    from custseg.exceptions import ConfigError
    from custseg.serve import listening_socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} .*another --host or --port"):
            listening_socket("127.0.0.1", port)


def test_two_workers_score_as_the_cli_does(trained, tmp_path):
    new = make_customers(40, seed=8, start_id=8000).drop(columns="Segment")
    assert _cli_predict(trained, new, tmp_path)[0] == 0
    records = json.loads(new.to_json(orient="records"))
    with _running_server(trained / "models", workers=2) as (client, _):
        for _ in range(3):  # keep-alive requests, to whichever worker takes them
            _assert_answer_is_the_cli_output(client.post("/predict", json=records), tmp_path / "pred.csv")


@pytest.mark.parametrize("workers", [1, 2])
def test_the_service_process_keeps_its_long_lived_objects_out_of_the_collector(trained, monkeypatch, workers):
    """The model and the libraries (~300,000 objects) would be walked by every full collection, in the middle
    of a request: the process ``custseg serve`` runs freezes them once the application is built."""
    import gc

    import uvicorn

    from custseg import serve

    frozen = {}

    def run(app, **kwargs):  # what uvicorn.run would serve, and the collector's state when it starts
        frozen["app"], frozen["count"] = app, gc.get_freeze_count()

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv(serve._ENV_MODEL, str(trained / "models"))
    monkeypatch.setenv(serve._ENV_LIMIT, "1000")
    gc.unfreeze()
    try:
        if workers == 1:
            serve.serve(trained / "models")
        else:  # each of uvicorn's worker processes builds its application with this factory
            run(serve.app_from_environment())
        assert frozen["count"] > 10_000 and frozen["app"].title == "custseg"
    finally:
        gc.unfreeze()
