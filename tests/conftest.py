"""Shared fixtures: small synthetic customer tables and a fast training configuration."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_TRAIN = REPO / "data" / "raw" / "Train.csv"
SHIPPED_TEST = REPO / "data" / "raw" / "Test.csv"

#: Test modules that take longest (CPU and waiting on their processes, measured per test in a run of the
#: whole suite), longest first. pytest-xdist's loadscope hands a whole module to one worker; by default it
#: orders modules by their number of tests, which put these few-test, long modules last, so that one
#: worker ran them alone at the end. Handed out longest first (with --no-loadscope-reorder, in pyproject),
#: the two workers finish close together. A module not named here runs after these, in file order.
LONGEST_FIRST = [
    "test_integrity.py", "test_serve.py", "test_shipped_data.py", "test_streaming.py", "test_kill.py",
    "test_text_columns.py",
    "test_table_properties.py", "test_comparison.py", "test_other_tables.py", "test_distributed.py",
    "test_notebook.py", "test_export.py", "test_cli.py", "test_roles.py", "test_estimator_checks.py",
    "test_monitoring.py", "test_properties.py", "test_bad_input.py", "test_mixed_embedder.py", "test_autoencoder.py",
    "test_report_browser.py", "test_drift.py", "test_selection.py", "test_layers.py", "test_report.py",
]


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


#: Settings small enough that a run on a few hundred rows takes about a second.
FAST_TOML = """
seed = 7
preset = "reference"
[autoencoder]
max_epochs = 8
patience = 4
batch_size = 32
[clustering]
n_clusters = 3
n_init = 3
[k_selection]
k_min = 2
k_max = 4
n_init = 2
silhouette_sample = 0
[plots]
tsne_max_points = 150
dpi = 50
"""


def tiny_toml(seed: int | None = None, n_clusters: int = 3, k_max: int = 4, figures: bool = True) -> str:
    """Settings so small that a run on a few hundred rows trains in about two seconds.

    ``figures=False`` draws none (``[plots] figures = false``): for the tests that need a model or a
    table, not pictures; matplotlib is most of a small run (2 of 2.5 s).
    """
    head = f"seed = {seed}\n" if seed is not None else ""
    return head + f"""preset = "reference"

[autoencoder]
hidden_dims = [8]
latent_dim = 3
max_epochs = 3
batch_size = 64

[clustering]
n_clusters = {n_clusters}
n_init = 2

[k_selection]
k_max = {k_max}
n_init = 1

[plots]
tsne_max_points = 60
dpi = 30
""" + ("" if figures else "figures = false\n")


def make_customers(n: int = 240, seed: int = 0, n_groups: int = 3, start_id: int = 1000) -> pd.DataFrame:
    """A customer table with ``n_groups`` planted groups that differ in age, profession and spending.

    Columns: ID, Age, Income, Family_Size (numeric, some missing), Gender, Profession,
    Spending (categorical, some missing), Segment (the planted group, as 'G0', 'G1', ...).
    """
    rng = np.random.default_rng(seed)
    group = np.arange(n) % n_groups
    rng.shuffle(group)
    professions = np.array(["Artist", "Doctor", "Engineer", "Lawyer", "Homemaker"])
    spending = np.array(["Low", "Average", "High"])
    frame = pd.DataFrame({
        "ID": np.arange(start_id, start_id + n),
        "Age": np.round(25 + 20 * group + rng.normal(0, 3, n)),
        "Income": np.round(30 + 25 * group + rng.normal(0, 4, n), 1),
        "Family_Size": rng.integers(1, 7, n).astype(float),
        "Gender": rng.choice(["Female", "Male"], n),
        "Profession": professions[(group + (rng.random(n) < 0.1)) % len(professions)],
        "Spending": spending[group % 3],
        "Segment": np.array([f"G{g}" for g in group], dtype=object),
    })
    frame.loc[rng.random(n) < 0.05, "Age"] = np.nan
    frame.loc[rng.random(n) < 0.05, "Profession"] = np.nan
    return frame


@pytest.fixture
def customers() -> pd.DataFrame:
    return make_customers()


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST_TOML, encoding="utf-8")
    return path


@pytest.fixture
def customer_files(tmp_path: Path) -> tuple[Path, Path]:
    """train.csv (with Segment) and new.csv (without, IDs partly overlapping) in tmp_path."""
    train = make_customers(240, seed=1)
    new = make_customers(60, seed=2, start_id=1200).drop(columns="Segment")
    train_path, new_path = tmp_path / "train.csv", tmp_path / "new.csv"
    train.to_csv(train_path, index=False)
    new.to_csv(new_path, index=False)
    return train_path, new_path


def train_tiny_model(root: Path, seed: int) -> Path:
    """Train a tiny model on 240 synthetic customers (Segment known) into ``root / "models"``; return that folder."""
    from custseg.cli import main

    make_customers(240, seed=1).to_csv(root / "train.csv", index=False)
    (root / "tiny.toml").write_text(tiny_toml(seed=seed, figures=False), encoding="utf-8")
    assert main(["train", "--train", str(root / "train.csv"), "--config", str(root / "tiny.toml"),
                 "--models-dir", str(root / "models"), "--results-dir", str(root / "results"), "--quiet"]) == 0
    return root / "models"


def customer_table(n: int = 200, seed: int = 0, label: bool = True, income_gaps: bool = False) -> pd.DataFrame:
    """ID, Gender, Age, Income, Profession and (optionally) the known segment A/B/C in ``Segmentation``.

    ``income_gaps`` empties a few Income cells (drawn after the rest, so the other values stay the same).
    """
    rng = np.random.default_rng(seed)
    segment = rng.choice(["A", "B", "C"], n)
    table = pd.DataFrame({
        "ID": np.arange(5000, 5000 + n),
        "Gender": rng.choice(["Male", "Female"], n),
        "Age": np.where(segment == "A", rng.normal(28, 4, n), rng.normal(50, 6, n)).round(),
        "Income": np.where(segment == "C", rng.normal(90, 8, n), rng.normal(40, 8, n)).round(1),
        "Profession": rng.choice(["Artist", "Doctor", "Engineer", "Lawyer"], n),
        "Segmentation": segment,
    })
    if income_gaps:
        table.loc[rng.choice(n, min(6, n // 4), replace=False), "Income"] = np.nan
    return table if label else table.drop(columns="Segmentation")


@dataclass
class Trained:
    """A tiny model trained through the CLI: its folders, settings and tables."""

    work: Path
    models: Path
    results: Path
    config: Path
    train_csv: Path
    test_csv: Path
    #: what the run printed on stderr, runs of whitespace made single spaces
    err: str = ""


def train_tiny(work: Path, settings: str, income_gaps: bool = False) -> Trained:
    """Train on 200 customers (40 new ones as --test) with ``settings`` through ``custseg train``."""
    from custseg.cli import main

    config = work / "tiny.toml"
    config.write_text(settings, encoding="utf-8")
    train_csv, test_csv = work / "train.csv", work / "test.csv"
    customer_table(200, income_gaps=income_gaps).to_csv(train_csv, index=False)
    customer_table(40, seed=1, label=False, income_gaps=income_gaps).assign(
        ID=lambda d: d["ID"] + 1000).to_csv(test_csv, index=False)
    t = Trained(work, work / "models", work / "results", config, train_csv, test_csv)
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        code = main(["train", "--train", str(train_csv), "--test", str(test_csv), "--config", str(config),
                     "--models-dir", str(t.models), "--results-dir", str(t.results), "-q"])
    assert code == 0, printed.getvalue()
    t.err = " ".join(printed.getvalue().split())
    return t


@pytest.fixture
def python_sigint():
    """SIGINT raises KeyboardInterrupt during the test, as in an interactive shell, and is restored after.

    A test process started in the background of a shell without job control inherits SIGINT
    ignored, and Python then installs no handler: a test of what Ctrl-C does needs one.
    """
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
