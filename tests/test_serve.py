"""The HTTP service, started as ``custseg serve`` in a real process and driven over real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import REPO, make_customers, train_tiny_model  # noqa: E402
from custseg.cli import main  # noqa: E402

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


@pytest.fixture(scope="module")
def server(trained):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "custseg", "serve", "--model", str(trained / "models"),
                             "--host", "127.0.0.1", "--port", str(port), "--max-body-mb", str(LIMIT_MB)],
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


def _cli_predict(trained, table: pd.DataFrame, tmp_path) -> tuple[int, pd.DataFrame | None, str]:
    path = tmp_path / "new.csv"
    table.to_csv(path, index=False)
    code = main(["predict", "--model", str(trained / "models"), "--input", str(path),
                 "--output", str(tmp_path / "pred.csv")])
    return code, pd.read_csv(tmp_path / "pred.csv") if code == 0 else None, path


def test_good_records_score_as_the_cli_does(server, trained, tmp_path):
    client, _ = server
    new = make_customers(40, seed=2, start_id=7000).drop(columns="Segment")
    code, expected, _ = _cli_predict(trained, new, tmp_path)
    assert code == 0
    records = json.loads(new.to_json(orient="records"))  # NaN -> null, as a JSON client sends missing values
    answer = client.post("/predict", json=records)
    assert answer.status_code == 200, answer.text
    got = pd.DataFrame(answer.json())
    assert list(got.columns) == list(expected.columns)
    assert got["ID"].astype(int).tolist() == new["ID"].tolist()
    assert got["Cluster"].tolist() == expected["Cluster"].tolist()
    assert got["Predicted_Segment"].tolist() == expected["Predicted_Segment"].tolist()
    pd.testing.assert_series_equal(got["Distance_To_Centroid"], expected["Distance_To_Centroid"], rtol=1e-5)


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
    (b"[{\"Age\": 30, \"Gender\": \"Male\"}]", "columns are missing: 'Income'"),
    (b"[{\"Age\": 30, \"Income\": 40, \"Family_Size\": 2, \"Gender\": \"Male\", \"Profession\": \"Artist\", "
     b"\"Spending\": \"Low\"}, {\"Age\": \"old\"}]", "line 2, column 'Age': value 'old' is not a number"),
    (b"[{\"Age\": 30, \"Income\": Infinity, \"Family_Size\": 2, \"Gender\": \"Male\"}]",
     "line 1, column 'Income': value 'inf' is not a finite number"),
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
