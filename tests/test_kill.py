"""Issue 10: a run killed with ``kill -9`` at any moment leaves old+old or new+new, never a mix.

A real ``custseg train`` subprocess is killed at set moments (during training, at and
after the commit journal appears, after it finished); the next command that opens the
folders (``custseg report`` here) completes or discards the interrupted commit, and every
model and result file must then be byte for byte the old run's or the new run's, with no
staging folder or journal left. ``CUSTSEG_SWAP_DELAY`` slows each move of the commit so
that the kills land inside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from custseg.cli import main

from conftest import customer_table, tiny_toml

SRC = Path(__file__).resolve().parents[1] / "src"


def _train_cmd(train_csv: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "custseg", "train", "--train", str(train_csv), "--config", str(config),
            "--models-dir", "models", "--results-dir", "results", "-q"]


def _identity(work: Path) -> dict[str, str]:
    """Hashes of every model and result file whose bytes do not depend on the clock."""
    out = {}
    for root in ("models", "results"):
        for path in sorted((work / root).rglob("*")):
            if path.is_file() and path.name not in ("run_summary.json", "report.html"):
                out[str(path.relative_to(work))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Reference outputs of the old run (seed 3) and the new run (seed 5), each in its own folder."""
    base = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    refs = {}
    customer_table(200).to_csv(base / "train.csv", index=False)
    for seed in (3, 5):
        work = base / f"seed{seed}"
        work.mkdir()
        (work / "tiny.toml").write_text(tiny_toml(seed=seed), encoding="utf-8")
        shutil.copyfile(base / "train.csv", work / "train.csv")
        run = subprocess.run(_train_cmd(Path("train.csv"), Path("tiny.toml")), cwd=work, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        refs[seed] = (work, _identity(work))
    return refs


def _start_new_run(old_work: Path, tmp_path: Path, swap_delay: float) -> tuple[Path, subprocess.Popen]:
    """A copy of the old run's folder, and the new run (seed 5) started there as a subprocess."""
    work = tmp_path / "w"
    shutil.copytree(old_work, work)
    (work / "tiny.toml").write_text(tiny_toml(seed=5), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "CUSTSEG_SWAP_DELAY": str(swap_delay)}
    proc = subprocess.Popen(_train_cmd(Path("train.csv"), Path("tiny.toml")), cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return work, proc


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["training", "journal+0.0", "journal+0.5", "journal+1.5", "journal+3.5",
                                        "finished"])
def test_kill_minus_nine_leaves_old_and_old_or_new_and_new(kill_after, two_runs, tmp_path):
    old_work, old_id = two_runs[3]
    _, new_id = two_runs[5]
    assert old_id != new_id
    work, proc = _start_new_run(old_work, tmp_path, swap_delay=0.25)
    journal = work / ".models.journal.json"
    deadline = time.monotonic() + 120
    if kill_after == "training":
        while not list(work.glob(".models.staging-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    elif kill_after.startswith("journal"):
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(kill_after.split("+")[1]))
    else:
        proc.wait(timeout=120)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the next command that opens the folders completes or discards the interrupted commit (run in this
    # process: the same code as `custseg report`, without a second interpreter's start-up)
    assert main(["report", "--models-dir", str(work / "models"), "--results-dir", str(work / "results")]) == 0
    state = _identity(work)
    assert state in (old_id, new_id), "models/ and results/ are a mix of two runs"
    if kill_after == "finished":
        assert state == new_id
    leftovers = [p.name for p in work.iterdir() if p.name.startswith((".models.", ".results."))
                 and not p.name.endswith(".lock")]
    assert leftovers == []


@pytest.mark.slow
def test_interrupted_commit_is_completed_by_the_next_train(two_runs, tmp_path):
    """A kill right after the commit point, then a new run: it starts from new+new, not a mix."""
    old_work, _ = two_runs[3]
    _, new_id = two_runs[5]
    work, proc = _start_new_run(old_work, tmp_path, swap_delay=0.3)
    journal = work / ".models.journal.json"
    deadline = time.monotonic() + 120
    while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.8)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert journal.exists()
    from custseg.io.atomic import recover

    recover(work / "models", work / "results")
    assert _identity(work) == new_id and not journal.exists()
