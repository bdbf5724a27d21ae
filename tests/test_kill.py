"""Issue 10: a run killed with ``kill -9`` at any moment leaves old+old or new+new, never a mix.

A real ``custseg train`` subprocess is killed at set moments (during training, at and
after the commit journal appears, after it finished); the next command that opens the
folders (``custseg report`` here) completes or discards the interrupted commit, and every
model and result file must then be byte for byte the old run's or the new run's, with no
staging folder or journal left. ``CUSTSEG_SWAP_DELAY`` slows each move of the commit so
that the kills land inside it.

Each run is a process of its own, forked from a forkserver that has imported custseg's
libraries once (torch, scikit-learn, pandas, matplotlib): a kill -9 hits a real process
running ``custseg.cli.main(["train", ...])`` as ``python -m custseg train`` does, without
paying the interpreter's 4-5 CPU-seconds of imports nine times over.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from custseg.cli import main

from conftest import customer_table, tiny_toml

TRAIN_ARGS = ["train", "--train", "train.csv", "--config", "tiny.toml", "--models-dir", "models",
              "--results-dir", "results", "-q"]
#: what the children import before they are forked (the modules a train run loads)
PRELOAD = ["custseg.cli", "custseg.workflow", "custseg.report.plots", "custseg.report.html", "matplotlib.pyplot",
           "openTSNE", "sklearn.manifold", "safetensors.torch"]


def _train_in_child(work: str, swap_delay: float | None) -> None:
    """The child process: ``custseg train`` in ``work`` (its output in work/train.log); exits with its code."""
    log = os.open(os.path.join(work, "train.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(work)
    if swap_delay is not None:
        os.environ["CUSTSEG_SWAP_DELAY"] = str(swap_delay)
    sys.exit(main(TRAIN_ARGS))


def _start_train(work: Path, swap_delay: float | None = None) -> multiprocessing.Process:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read when the forkserver starts: the first call of this module
    proc = context.Process(target=_train_in_child, args=(str(work), swap_delay), daemon=True)
    proc.start()
    return proc


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
    refs = {}
    customer_table(200).to_csv(base / "train.csv", index=False)
    for seed in (3, 5):
        work = base / f"seed{seed}"
        work.mkdir()
        # the old run draws its figures (results/plots/, the commit's one nested folder); the new one draws
        # none, so its commit also retires the old run's figures: moves of every kind are killed mid-way
        (work / "tiny.toml").write_text(tiny_toml(seed=seed, figures=seed == 3), encoding="utf-8")
        shutil.copyfile(base / "train.csv", work / "train.csv")
        run = _start_train(work)
        run.join(timeout=300)
        assert run.exitcode == 0, (work / "train.log").read_text()
        refs[seed] = (work, _identity(work))
    return refs


def _start_new_run(old_work: Path, tmp_path: Path, swap_delay: float) -> tuple[Path, multiprocessing.Process]:
    """A copy of the old run's folder, and the new run (seed 5) started there in a process of its own."""
    work = tmp_path / "w"
    shutil.copytree(old_work, work)
    (work / "tiny.toml").write_text(tiny_toml(seed=5, figures=False), encoding="utf-8")
    return work, _start_train(work, swap_delay)


#: Seconds before each move of the commit: the new run's ~25 moves (the model folder out and in, ~15
#: results files in, the old run's ~8 figures out) take ~2.5 s, so the kills below land in each kind
SWAP_DELAY = 0.1


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["training", "journal+0.0", "journal+0.3", "journal+1.0", "journal+2.0",
                                        "finished"])
def test_kill_minus_nine_leaves_old_and_old_or_new_and_new(kill_after, two_runs, tmp_path):
    old_work, old_id = two_runs[3]
    _, new_id = two_runs[5]
    assert old_id != new_id
    work, proc = _start_new_run(old_work, tmp_path, swap_delay=0.0 if kill_after == "finished" else SWAP_DELAY)
    journal = work / ".models.journal.json"
    deadline = time.monotonic() + 120
    if kill_after == "training":
        while not list(work.glob(".models.staging-*")) and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    elif kill_after.startswith("journal"):
        while not journal.exists() and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(kill_after.split("+")[1]))
    else:
        proc.join(timeout=120)
        assert proc.exitcode == 0, (work / "train.log").read_text()
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    if kill_after.startswith("journal"):  # the kill landed inside the commit
        assert proc.exitcode == -signal.SIGKILL and journal.exists()
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
    while not journal.exists() and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.8)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL and journal.exists()
    from custseg.io.atomic import recover

    recover(work / "models", work / "results")
    assert _identity(work) == new_id and not journal.exists()
