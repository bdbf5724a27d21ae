"""Issue 10: no silent wrong results, crash safety, clear errors -- a black-box catalogue.

Every case runs the command line (``custseg.cli.main`` in-process) and checks what a user
would see:

* a refused input: exit code 1, exactly one ``Error:`` line on stderr, no traceback, and
  every byte of the existing ``models/`` and ``results/`` as it was (no staging left);
* an accepted input: exit code 0, as many rows out as in, the table's own IDs kept;
* a tampered model folder (manifest re-hashed to match): refused on load;
* a run killed at any moment: see ``test_kill.py`` (a module of its own, so that the
  test runner can run those slow trials beside this catalogue);
* folders and files created with the user's umask.

One small model is trained once per module; each case works on copies where it writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from custseg.cli import main

from conftest import Trained, customer_table, tiny_toml, train_tiny

TINY = tiny_toml(seed=3)
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    return train_tiny(tmp_path_factory.mktemp("integrity"), TINY)


def snapshot(*folders: Path) -> dict[str, object]:
    """Every byte under the folders, and the hidden names beside them (staging, journal)."""
    files: dict[str, object] = {}
    for root in folders:
        for path in sorted(root.rglob("*")):
            files[str(path.relative_to(root.parent))] = path.read_bytes() if path.is_file() else "<dir>"
        beside = sorted(p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.")
                        and not p.name.endswith(".lock"))
        files[f"beside {root.name}"] = beside
    return files


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, captured.err
    assert lines[-1] == errors[0], captured.err
    return errors[0]


def _csv(tmp: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def _frame(tmp: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp / name
    frame.to_csv(path, index=False)
    return path


def _with_value(column: str, row: int, value: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        table = customer_table(60).astype({column: object})
        table.loc[row, column] = value
        return _frame(tmp, table)
    return build


def _bytes(data_fn: Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "bad.csv"
        path.write_bytes(data_fn())
        return path
    return build


def _labels(values: list[str]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        table = customer_table(len(values))
        table["Segmentation"] = values
        return _frame(tmp, table)
    return build


def _good_csv_bytes() -> bytes:
    return customer_table(60).to_csv(index=False).encode()


# -- 1. training inputs that must be refused before anything is replaced -----------------------------------------
TRAIN_REFUSED = {
    "NUL byte past the first 64 KiB": (
        _bytes(lambda: customer_table(2000).to_csv(index=False).encode() + b"7001,Male,3\x004,1.0,Artist,A\n"),
        ["NUL byte", "line 2002"], []),
    "NUL byte on line 2": (_bytes(lambda: b"ID,Age\n1,\x002\n2,3\n3,4\n"), ["NUL byte", "line 2"], []),
    "1e40 overflows float32": (_with_value("Income", 3, "1e40"), ["line 5", "'Income'", "'1e40'", "too large"], []),
    "whole number above 1e19": (_with_value("Age", 7, "20000000000000000000.0"), ["line 9", "'Age'", "too large"], []),
    "negative 1e16": (_with_value("Income", 0, "-1e16"), ["line 2", "'-1e16'", "too large"], []),
    "infinity": (_with_value("Income", 1, "inf"), ["line 3", "'inf'", "not a finite number"], []),
    "label half missing: ask": (
        lambda tmp: _frame(tmp, customer_table(80).assign(
            Segmentation=lambda d: d["Segmentation"].where(np.arange(80) % 2 == 0))),
        ["'Segmentation'", "50% of it is missing", "--label-column Segmentation", "--no-label"], []),
    "label mostly missing: ask": (
        lambda tmp: _frame(tmp, customer_table(80).assign(
            Segmentation=lambda d: d["Segmentation"].where(np.arange(80) % 5 == 0))),
        ["'Segmentation'", "80% of it is missing", "--label-column"], []),
    "two columns named like labels": (
        lambda tmp: _frame(tmp, customer_table(80).assign(label=lambda d: d["Segmentation"])),
        ["named like the known segment", "--label-column"], []),
    "label-named column with 60 classes": (
        lambda tmp: _frame(tmp, customer_table(120).assign(Segmentation=[f"S{i % 60}" for i in range(120)])),
        ["'Segmentation'", "60 distinct values", "--label-column"], []),
    "lowercase typo under --strict": (_labels(["A", "B", "C"] * 26 + ["a", "a"]),
                                      ["'A'", "'a'", "differ only in case", "--strict"], ["--strict"]),
    "'Segment C' under --strict": (_labels(["A", "B", "C", "D"] * 20 + ["Segment C"]),
                                   ["'Segment C'", "'C'", "--strict"], ["--strict"]),
    "rare label under --strict": (_labels(["A", "B", "C"] * 60 + ["X"] * 2),
                                  ["rare known segments", "'X' (2 rows)", "--strict"], ["--strict"]),
    "'segment_b' under --strict": (_labels(["A", "B", "C"] * 30 + ["segment_b"] * 3),
                                   ["'segment_b'", "'B'", "--strict"], ["--strict"]),
    "unclosed quote": (_bytes(lambda: b'ID,Age,Job\n1,30,"Artist\n2,40,Doctor\n3,50,Lawyer\n'), ["bad.csv"], []),
    "empty file": (_bytes(lambda: b""), ["is empty"], []),
    "header only": (_bytes(lambda: b"ID,Age,Income\n"), ["no data rows"], []),
    "duplicate IDs": (lambda tmp: _frame(tmp, customer_table(60).assign(ID=[1, 1] + list(range(2, 60)))),
                      ["ID '1'", "line 2", "line 3", "duplicates"], []),
    "numbers with one word": (_with_value("Income", 4, "unknown"), ["line 6", "'unknown'", "--na-values unknown"], []),
    "damaged gzip": (_bytes(lambda: __import__("gzip").compress(_good_csv_bytes())[:40]), ["gzip", "damaged"], []),
    "excel workbook": (_bytes(lambda: b"PK\x03\x04" + b"\x00" * 100), ["Excel", "export"], []),
    "not UTF-8": (_bytes(lambda: "ID,Name\n1,Jos\xe9\n2,Ann\n".encode("latin-1")), ["not UTF-8", "line 2"], []),
}


@pytest.mark.parametrize("name", list(TRAIN_REFUSED))
def test_refused_training_input_replaces_nothing(name, trained, tmp_path, capsys):
    build, expected, flags = TRAIN_REFUSED[name]
    path = build(tmp_path)
    before = snapshot(trained.models, trained.results)
    code = main(["train", "--train", str(path), "--config", str(trained.config), "--models-dir",
                 str(trained.models), "--results-dir", str(trained.results), "-q", *flags])
    line = one_error_line(capsys)
    assert code == 1
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    assert snapshot(trained.models, trained.results) == before


# -- 2. output locations refused before training ---------------------------------------------------------------
def _locations(kind: str, tmp: Path) -> tuple[Path, Path]:
    models, results = tmp / "models", tmp / "results"
    if kind == "same folder":
        return models, models
    if kind == "results inside models":
        return models, models / "results"
    if kind == "models inside results":
        return results / "models", results
    if kind == "results is a file":
        results.write_text("mine\n")
    if kind == "models is a file":
        models.write_text("mine\n")
    if kind == "models holds user files":
        models.mkdir()
        (models / "notes.txt").write_text("mine\n")
    return models, results


LOCATIONS = {
    "same folder": ["are the same folder", "two separate folders"],
    "results inside models": ["inside one another"],
    "models inside results": ["inside one another"],
    "results is a file": ["--results-dir", "is not a folder"],
    "models is a file": ["--models-dir", "is not a folder"],
    "models holds user files": ["not empty", "refusing to replace it"],
}


@pytest.mark.parametrize("kind", list(LOCATIONS))
def test_output_locations_are_checked_before_training(kind, trained, tmp_path, capsys, monkeypatch):
    import custseg.workflow

    models, results = _locations(kind, tmp_path)
    trained_at_all = []
    monkeypatch.setattr(custseg.workflow, "build_pipeline",
                        lambda *a, **k: trained_at_all.append(1) or (_ for _ in ()).throw(AssertionError("trained")))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = main(["train", "--train", str(trained.train_csv), "--config", str(trained.config),
                 "--models-dir", str(models), "--results-dir", str(results), "-q"])
    line = one_error_line(capsys)
    assert code == 1 and not trained_at_all
    for part in LOCATIONS[kind]:
        assert part in line, line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_second_run_into_locked_folders_fails_clearly(trained, tmp_path, capsys):
    models, results = tmp_path / "models", tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(60)"), str(tmp_path / ".models.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        code = main(["train", "--train", str(trained.train_csv), "--config", str(trained.config),
                     "--models-dir", str(models), "--results-dir", str(results), "-q"])
        line = one_error_line(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert "another custseg run is writing to" in line and "models" in line
    assert not models.exists() and not results.exists()


# -- 3. predict: refused inputs and outputs ------------------------------------------------------------------
def _predict_case(build: Callable[[Path, Trained], list[str]], expected: list[str]):
    return build, expected


PREDICT_REFUSED = {
    "output is the input": (lambda tmp, t: ["--input", str(_copy(t.test_csv, tmp)), "--output",
                                            str(tmp / "test.csv")], ["same file as --input"]),
    "output is the input by another spelling": (
        lambda tmp, t: ["--input", str(_copy(t.test_csv, tmp)), "--output", str(tmp / "." / "sub" / ".." / "test.csv")],
        ["same file as --input"]),
    "output is the input through a link": (
        lambda tmp, t: ["--input", str(_copy(t.test_csv, tmp)), "--output", str(_link(tmp / "test.csv", tmp))],
        ["same file as --input"]),
    "output is a folder": (lambda tmp, t: ["--input", str(t.test_csv), "--output", str(tmp)], ["is a folder"]),
    "--id-column not in the table": (lambda tmp, t: ["--input", str(t.test_csv), "--output", str(tmp / "o.csv"),
                                                     "--id-column", "CustomerNo"], ["'CustomerNo'", "not in the table"]),
    "NUL byte in the input": (lambda tmp, t: ["--input", str(_bytes_file(tmp, t.test_csv.read_bytes() + b"\x00")),
                                              "--output", str(tmp / "o.csv")], ["NUL byte"]),
    "1e40 in the input": (lambda tmp, t: ["--input", str(_frame(tmp, customer_table(20, label=False).astype(
        {"Income": object}).assign(Income=["1e40"] * 20))), "--output", str(tmp / "o.csv")], ["'1e40'", "too large"]),
    "feature column missing": (lambda tmp, t: ["--input", str(_frame(tmp, customer_table(20, label=False).drop(
        columns="Age"))), "--output", str(tmp / "o.csv")], ["'Age'", "missing"]),
    "model folder missing": (lambda tmp, t: ["--model", str(tmp / "nope"), "--input", str(t.test_csv), "--output",
                                             str(tmp / "o.csv")], ["does not exist"]),
}


def _copy(src: Path, tmp: Path) -> Path:
    dest = tmp / src.name
    shutil.copyfile(src, dest)
    (tmp / "sub").mkdir(exist_ok=True)
    return dest


def _link(target: Path, tmp: Path) -> Path:
    link = tmp / "alias.csv"
    link.symlink_to(target)
    return link


def _bytes_file(tmp: Path, data: bytes) -> Path:
    path = tmp / "in.csv"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", list(PREDICT_REFUSED))
def test_refused_prediction_changes_nothing(name, trained, tmp_path, capsys):
    build, expected = PREDICT_REFUSED[name]
    args = build(tmp_path, trained)
    if "--model" not in args:
        args = ["--model", str(trained.models), *args]
    before = {str(p): (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")}
    code = main(["predict", *args])
    line = one_error_line(capsys)
    assert code == 1
    for part in expected:
        assert part in line, line
    after = {str(p): (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")}
    assert after == before


# -- 4. predict: IDs and rows are never lost or invented -------------------------------------------------------
def _scored(trained: Trained, tmp: Path, frame: pd.DataFrame, capsys, *more: str) -> tuple[pd.DataFrame, str]:
    path = _frame(tmp, frame, "new.csv")
    out = tmp / "scored.csv"
    code = main(["predict", "--model", str(trained.models), "--input", str(path), "--output", str(out), *more])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    return pd.read_csv(out, dtype=str, keep_default_na=False), " ".join(captured.err.split())


def test_renamed_id_column_keeps_its_name_and_values(trained, tmp_path, capsys):
    frame = customer_table(30, seed=4, label=False).rename(columns={"ID": "CustomerID"})
    frame["CustomerID"] = [f"C-{i:03d}" for i in range(30)]
    scored, err = _scored(trained, tmp_path, frame, capsys)
    assert scored.columns[0] == "CustomerID"
    assert scored["CustomerID"].tolist() == frame["CustomerID"].tolist()
    assert "IDs taken from column 'CustomerID'" in err


def test_table_without_ids_gets_row_numbers_and_a_notice(trained, tmp_path, capsys):
    frame = customer_table(25, seed=5, label=False).drop(columns="ID")
    scored, err = _scored(trained, tmp_path, frame, capsys)
    assert scored.columns[0] == "Row" and scored["Row"].tolist() == [str(i) for i in range(1, 26)]
    assert "has no ID column" in err and "--id-column" in err


def test_id_column_option_chooses_the_ids(trained, tmp_path, capsys):
    frame = customer_table(20, seed=6, label=False).assign(Account=[f"acc{i}" for i in range(20)])
    scored, _ = _scored(trained, tmp_path, frame, capsys, "--id-column", "Account")
    assert scored.columns[0] == "Account" and scored["Account"].tolist() == frame["Account"].tolist()


def test_model_saved_from_python_without_schema_keeps_ids(trained, tmp_path, capsys):
    from custseg.persistence import load_model, save_model

    model = load_model(trained.models)
    save_model(model.pipeline, tmp_path / "api_model")
    frame = customer_table(15, seed=7, label=False)
    path = _frame(tmp_path, frame, "new.csv")
    code = main(["predict", "--model", str(tmp_path / "api_model"), "--input", str(path), "--output",
                 str(tmp_path / "o.csv")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    scored = pd.read_csv(tmp_path / "o.csv", dtype=str)
    assert scored["ID"].tolist() == frame["ID"].astype(str).tolist()
    assert "IDs taken from column 'ID'" in " ".join(captured.err.split())


def test_predictions_carry_the_segment_name(trained, tmp_path, capsys):
    scored, _ = _scored(trained, tmp_path, customer_table(20, seed=8, label=False), capsys)
    names = json.loads((trained.models / "cluster_names.json").read_text())
    assert scored.columns[:3].tolist() == ["ID", "Cluster", "Segment_Name"]
    assert [names[c] for c in scored["Cluster"]] == scored["Segment_Name"].tolist()


# -- 5. rows, formats, labels: accepted inputs give correct output -------------------------------------------
def _train_ok(trained: Trained, tmp: Path, path: Path, capsys, *more: str,
              figures: bool = False) -> tuple[Path, Path, str]:
    """``custseg train`` on ``path`` with the module's settings; figures only where the test is about them."""
    models, results = tmp / "models", tmp / "results"
    code = main(["train", "--train", str(path), "--config", str(trained.config), "--models-dir", str(models),
                 "--results-dir", str(results), "-q", *more, *([] if figures else ["--no-figures"])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    return models, results, " ".join(captured.err.split())


def test_one_column_table_with_empty_lines_keeps_every_row(trained, tmp_path, capsys):
    rng = np.random.default_rng(1)
    ages = [("" if rng.random() < 0.3 else str(int(rng.integers(18, 80)))) for _ in range(200)]
    ages[-1] = "44"
    path = _csv(tmp_path, "Age\n" + "\n".join(ages) + "\n", "ages.csv")
    models, results, _ = _train_ok(trained, tmp_path, path, capsys)
    rows = pd.read_csv(results / "training_results.csv")
    assert len(rows) == 200 and rows["ID"].tolist() == list(range(1, 201))
    code = main(["predict", "--model", str(models), "--input", str(path), "--output", str(tmp_path / "o.csv")])
    capsys.readouterr()
    assert code == 0 and len(pd.read_csv(tmp_path / "o.csv")) == 200


@pytest.mark.parametrize("values, expected", [
    (["45,600 EUR", "1,200 EUR", "900 EUR"], [45600.0, 1200.0, 900.0]),
    (["$1,200", "$350", "$12,000.50"], [1200.0, 350.0, 12000.5]),
    (["12%", "5.5%", "100%"], [12.0, 5.5, 100.0]),
    (["1,000", "25,300", "2,000,000"], [1000.0, 25300.0, 2000000.0]),
])
def test_formatted_numbers_are_read_as_numbers(values, expected, tmp_path):
    from custseg.io.reading import read_table

    path = _frame(tmp_path, pd.DataFrame({"ID": [1, 2, 3], "Amount": values}))
    table = read_table(path)
    assert table.frame["Amount"].tolist() == expected
    assert "formatted numbers parsed" in table.numeric_from_text["Amount"]


def test_unparseable_amounts_are_excluded_loudly_even_quietly(trained, tmp_path, capsys):
    table = customer_table(120, seed=2)
    currencies = np.array(["EUR", "USD"])[np.arange(120) % 2]
    table["Spend"] = [f"{v:,.0f} {c}" for v, c in zip(np.linspace(1000, 90000, 120), currencies)]
    _, _, err = _train_ok(trained, tmp_path, _frame(tmp_path, table), capsys)
    assert "column 'Spend' is not used by the model" in err


@pytest.mark.parametrize("labels, named", [
    (["A", "B", "C"] * 40 + ["a", "a"], ["'a'", "'A'"]),
    (["A", "B", "C", "D"] * 30 + ["Segment C"], ["'Segment C'"]),
    (["A", "B", "C"] * 60 + ["Q"], ["'Q' (1 row)"]),
])
def test_label_typos_are_warned_by_name(labels, named, trained, tmp_path, capsys):
    table = customer_table(len(labels))
    table["Segmentation"] = labels
    _, _, err = _train_ok(trained, tmp_path, _frame(tmp_path, table), capsys)
    assert "Warning:" in err
    for part in named:
        assert part in err


def test_clean_labels_give_no_warning(trained):
    # the module's own run: clean labels (A, B, C), and a test table that brings no warning either
    assert "Warning:" not in trained.err


def test_lowercase_true_false_labels_train_and_report(trained, tmp_path, capsys):
    table = customer_table(120, seed=3)
    table["Segmentation"] = np.where(table["Age"] > 40, "true", "false")
    models, results, _ = _train_ok(trained, tmp_path, _frame(tmp_path, table), capsys, figures=True)
    assert set(pd.read_csv(results / "training_results.csv", dtype=str)["True_Segment"]) == {"true", "false"}
    assert main(["report", "--models-dir", str(models), "--results-dir", str(results)]) == 0


def test_half_missing_label_is_used_when_named(trained, tmp_path, capsys):
    table = customer_table(80).assign(Segmentation=lambda d: d["Segmentation"].where(np.arange(80) % 2 == 0))
    models, _, _ = _train_ok(trained, tmp_path, _frame(tmp_path, table), capsys, "--label-column", "Segmentation")
    schema = json.loads((models / "schema.json").read_text())
    roles = {c["name"]: c["role"] for c in schema["columns"]}
    assert roles["Segmentation"] == "label"


def test_very_long_category_values_train_and_report(trained, tmp_path, capsys):
    table = customer_table(80, seed=9)
    table["Note"] = ["x" * 200_000 + str(i % 3) for i in range(80)]  # past the csv module's 128 KiB field limit
    models, results, _ = _train_ok(trained, tmp_path, _frame(tmp_path, table), capsys, figures=True)
    assert main(["report", "--models-dir", str(models), "--results-dir", str(results)]) == 0
    capsys.readouterr()
    names = json.loads((models / "cluster_names.json").read_text())
    assert max(len(n) for n in names.values()) < 200


def test_one_cluster_is_said(trained, tmp_path, capsys):
    config = tmp_path / "k1.toml"
    config.write_text(tiny_toml(seed=3, n_clusters=1), encoding="utf-8")
    code = main(["train", "--train", str(trained.train_csv), "--config", str(config), "--models-dir",
                 str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0 and "--clusters 1 puts every customer in one segment" in err


def test_no_cluster_is_reported_empty(trained, tmp_path, capsys):
    path = _frame(tmp_path, customer_table(4, seed=1))
    config = tmp_path / "k3.toml"
    config.write_text(tiny_toml(seed=3, n_clusters=3, k_max=3), encoding="utf-8")
    code = main(["train", "--train", str(path), "--config", str(config), "--models-dir", str(tmp_path / "m"),
                 "--results-dir", str(tmp_path / "r"), "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 0:  # every cluster reported must hold customers
        sizes = pd.read_csv(tmp_path / "r" / "cluster_characteristics.csv")["Size"]
        assert len(sizes) == 3 and (sizes > 0).all()
    else:
        errors = [line for line in captured.err.splitlines() if line.startswith("Error: ")]
        assert code == 1 and len(errors) == 1 and "clusters" in errors[0], captured.err


def test_python_warnings_never_reach_the_terminal_raw(trained, tmp_path, capsys):
    table = customer_table(12, seed=2)
    table["Income"] = 50.0  # constant and near-duplicate rows: the classic source of numeric warnings
    code = main(["train", "--train", str(_frame(tmp_path, table)), "--config", str(trained.config),
                 "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "-q"])
    captured = capsys.readouterr()
    import re

    # Python's own format is "path.py:123: SomeWarning: message"; custseg's is a sentence after "Note: "
    assert not re.search(r"\.py:\d+: \w*Warning", captured.err), captured.err
    assert "warnings.warn" not in captured.err and "Traceback" not in captured.err
    assert code in (0, 1)


def test_cluster_characteristics_are_rounded(trained):
    chars = (trained.results / "cluster_characteristics.csv").read_text().splitlines()[1:]
    for line in chars:
        for cell in line.split(","):
            if "." in cell and cell.replace(".", "").replace("-", "").isdigit():
                assert len(cell.split(".")[1]) <= 4, cell


@pytest.mark.parametrize("rows, max_points, expected", [(40, 60, "every customer"), (120, 60, "stratified sample")])
def test_tsne_axis_says_whether_it_is_a_sample(rows, max_points, expected, tmp_path, monkeypatch, capsys):
    import custseg.report.plots

    seen = []
    real = custseg.report.plots.plot_maps

    def recording(*args, **kwargs):
        seen.append(kwargs.get("axis_labels"))
        return real(*args, **kwargs)

    monkeypatch.setattr(custseg.report.plots, "plot_maps", recording)
    config = tmp_path / "t.toml"
    config.write_text(tiny_toml(seed=3).replace("tsne_max_points = 60", f"tsne_max_points = {max_points}"))
    code = main(["train", "--train", str(_frame(tmp_path, customer_table(rows))), "--config", str(config),
                 "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "-q"])
    capsys.readouterr()
    assert code == 0
    tsne = [labels[0] for labels in seen if labels and labels[0].startswith("t-SNE")]
    assert len(tsne) == 1 and expected in tsne[0], tsne


def test_palette_colours_stay_distinct_for_colour_blind_readers():
    from custseg.report.plots import segment_palette

    def lab(hex_colour: str) -> np.ndarray:
        rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
        f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    colours = segment_palette(11)  # 7 clusters + 4 known segments, the shipped data's legend
    distances = [np.linalg.norm(lab(a) - lab(b)) for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(distances) > 20


def test_segment_names_never_lead_with_a_code(tmp_path):
    from custseg.profiling import describe_segments, profile_segments

    rng = np.random.default_rng(0)
    n = 300
    group = np.arange(n) % 3
    frame = pd.DataFrame({"Var_1": np.array(["Cat_4", "Cat_6", "Cat_2"])[group],
                          "Ever_Married": np.where(group == 0, "No", "Yes"),
                          "Family_Size": np.where(group == 2, 6, 2) + rng.integers(0, 2, n),
                          "Age": 25 + 20 * group + rng.normal(0, 3, n)})
    names = [d.name for d in describe_segments(profile_segments(frame, group))]
    assert not any(name.startswith("Cat") for name in names), names
    assert not any("Not Ever" in name or "Family Size" in name.replace("Family Size ", "") for name in names), names


# -- 6. tampered model folders (manifest re-hashed to match) ------------------------------------------------
def _rehash(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        # NaN written as JSON's non-standard token: what a careless script produces
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))
    return tamper


def _set(path: list, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return edit


def _weights_nan(folder: Path) -> None:
    import safetensors.torch

    weights = safetensors.torch.load((folder / "autoencoder.safetensors").read_bytes())
    first = sorted(weights)[0]
    weights[first] = weights[first].clone()
    weights[first].view(-1)[0] = float("nan")
    (folder / "autoencoder.safetensors").write_bytes(safetensors.torch.save(weights, metadata={"format": "custseg-model"}))


def _symlinked(folder: Path) -> None:
    outside = folder.parent / "outside_settings.json"
    outside.write_bytes((folder / "settings.json").read_bytes())
    (folder / "settings.json").unlink()
    (folder / "settings.json").symlink_to(outside)


def _manifest_names_parent(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["../train.csv"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _swap_first_row(rows):
    return [[float("nan")] * len(rows[0])] + rows[1:]


TAMPERED = {
    "NaN centroid": (_edit_json("clustering.json", _set(["cluster_centers"], _swap_first_row)), ["not a finite"]),
    "infinite centroid": (_edit_json("clustering.json", _set(["cluster_centers"], lambda r: [[1e400] * len(r[0])] + r[1:])),
                          ["not a finite"]),
    "centroid row missing": (_edit_json("clustering.json", _set(["cluster_centers"], lambda r: r[:-1])), ["centres"]),
    "n_clusters changed": (_edit_json("clustering.json", _set(["params", "n_clusters"], 4)), ["centres"]),
    "zero scale": (_edit_json("preprocessor.json", _set(["scale"], lambda s: [0.0] + s[1:])), ["scale", "not positive"]),
    "negative scale": (_edit_json("preprocessor.json", _set(["scale"], lambda s: [-1.0] + s[1:])), ["not positive"]),
    "NaN mean": (_edit_json("preprocessor.json", _set(["mean"], lambda s: [float("nan")] + s[1:])), ["not a finite"]),
    "NaN median": (_edit_json("preprocessor.json", _set(["medians"], lambda m: {k: float("nan") for k in m})),
                   ["median"]),
    "mapping onto an unknown segment": (
        _edit_json("clustering.json", _set(["mapping"], lambda m: {**m, "0": "Z"})), ["'Z'", "not a known segment"]),
    "mapping misses a cluster": (
        _edit_json("clustering.json", _set(["mapping"], lambda m: {k: v for k, v in m.items() if k != "0"})),
        ["mapping names clusters"]),
    "mapping swapped between two clusters onto other known segments": (
        _edit_json("clustering.json", _set(["mapping"], lambda m: {**m, "0": m["1"], "1": m["0"]}
                                           if m["0"] != m["1"] else {**m, "0": sorted({"A", "B"} - {m["0"]})[0]})),
        ["map the clusters to different segments"]),
    "mapping names cluster 99": (
        _edit_json("clustering.json", _set(["mapping"], lambda m: {**m, "99": "A"})), ["mapping names clusters"]),
    "schema and preprocessor disagree": (
        _edit_json("schema.json", lambda d: [c.update(role="excluded") for c in d["columns"] if c["name"] == "Age"]),
        ["different feature columns"]),
    "cluster names for other clusters": (_edit_json("cluster_names.json", lambda d: d.update({"99": "Ghost"})),
                                         ["cluster_names.json"]),
    "training label outside the clusters": (_edit_json("clustering.json", _set(["labels"], lambda l: [7] + l[1:])),
                                            ["training label 7"]),
    "NaN weight": (_weights_nan, ["not finite"]),
    "file is a symbolic link out of the folder": (_symlinked, ["symbolic link"]),
    "manifest names a file outside": (_manifest_names_parent, ["'../train.csv'"]),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampered_model_is_refused(name, trained, tmp_path, capsys):
    tamper, expected = TAMPERED[name]
    folder = tmp_path / "models"
    shutil.copytree(trained.models, folder)
    tamper(folder)
    if name != "manifest names a file outside":
        _rehash(folder)
    out = tmp_path / "o.csv"
    code = main(["predict", "--model", str(folder), "--input", str(trained.test_csv), "--output", str(out)])
    line = one_error_line(capsys)
    assert code == 1 and not out.exists()
    assert str(folder) in line
    for part in expected:
        assert part in line, line


def test_untampered_copy_still_loads(trained, tmp_path, capsys):
    folder = tmp_path / "models"
    shutil.copytree(trained.models, folder)
    _rehash(folder)  # re-hashing alone changes nothing
    assert main(["predict", "--model", str(folder), "--input", str(trained.test_csv), "--output",
                 str(tmp_path / "o.csv")]) == 0


# -- 7. report on damaged results ------------------------------------------------------------------------------
def _results_edit(edit: Callable[[Path], None]):
    return edit


def _replace_cluster(value: str) -> Callable[[Path], None]:
    def edit(results: Path) -> None:
        path = results / "training_results.csv"
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[3].split(",")
        cells[header.index("Cluster")] = value
        lines[3] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    return edit


REPORT_REFUSED = {
    "cluster is text": (_replace_cluster("abc"), ["line 4", "'Cluster'", "'abc'"]),
    "cluster out of range": (_replace_cluster("9"), ["line 4", "'9'", "not a cluster"]),
    "cluster negative": (_replace_cluster("-1"), ["'-1'"]),
    "cluster fractional": (_replace_cluster("1.5"), ["'1.5'"]),
    "binary k_selection.csv": (lambda r: (r / "k_selection.csv").write_bytes(b"k,inertia\n\xff\xfe\x00\x01"),
                               ["k_selection.csv"]),
    "run_summary.json truncated": (lambda r: (r / "run_summary.json").write_text('{"data": '), ["run_summary.json"]),
    "training_results.csv missing": (lambda r: (r / "training_results.csv").unlink(), ["does not exist"]),
}


@pytest.mark.parametrize("name", list(REPORT_REFUSED))
def test_report_on_damaged_results_gives_one_error(name, trained, tmp_path, capsys):
    edit, expected = REPORT_REFUSED[name]
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained.models, models)
    shutil.copytree(trained.results, results)
    edit(results)
    code = main(["report", "--models-dir", str(models), "--results-dir", str(results)])
    line = one_error_line(capsys)
    assert code == 1
    for part in expected:
        assert part in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_into_a_read_only_folder_is_one_error(trained, tmp_path, capsys):
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained.models, models)
    shutil.copytree(trained.results, results)
    results.chmod(0o555)
    try:
        code = main(["report", "--models-dir", str(models), "--results-dir", str(results)])
        line = one_error_line(capsys)
    finally:
        results.chmod(0o755)
    assert code == 1 and "read-only" in line


# -- 8. permissions --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(umask, folder_mode, file_mode, trained, tmp_path):
    previous = os.umask(umask)  # process-wide, so set back at once whatever happens
    try:
        code = main(["train", "--train", str(trained.train_csv), "--config", str(trained.config),
                     "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q"])
    finally:
        os.umask(previous)
    assert code == 0
    assert (tmp_path / "models").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "results" / "plots").stat().st_mode & 0o777 == folder_mode
    for path in [tmp_path / "results" / "report.html", tmp_path / "models" / "manifest.json",
                 tmp_path / "results" / "training_results.csv"]:
        assert path.stat().st_mode & 0o777 == file_mode, path


def test_leftover_staging_folders_are_cleaned_by_the_next_run(trained, tmp_path, capsys):
    models, results = tmp_path / "models", tmp_path / "results"
    for stale in (".models.staging-dead1", ".results.staging-dead2", ".models.previous-dead3"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "junk").write_text("x")
    _train_ok(trained, tmp_path, trained.train_csv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")) == []
    assert (models / "manifest.json").is_file() and (results / "report.html").is_file()


# -- 10. the packaged sample data ----------------------------------------------------------------------------
def test_default_tables_come_from_the_package_outside_a_clone(tmp_path):
    from custseg.io.datasets import load_customers, resolve_default_path, sample_path

    os.chdir(tmp_path)  # pytest's tmp_path: no data/raw here
    try:
        resolved = resolve_default_path("data/raw/Train.csv")
        assert Path(resolved) == sample_path("train") and Path(resolved).is_file()
        assert resolve_default_path("data/raw/Typo.csv") == "data/raw/Typo.csv"  # a user's path is never replaced
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
    repo_copy = Path(__file__).resolve().parents[1] / "data" / "raw" / "Train.csv"
    assert sample_path("train").read_bytes() == repo_copy.read_bytes()
    assert len(load_customers("test").frame) == 2627


def test_the_catalogue_is_large_enough():
    cases = (len(TRAIN_REFUSED) + len(LOCATIONS) + len(PREDICT_REFUSED) + len(TAMPERED) + len(REPORT_REFUSED))
    assert cases >= 60


def test_a_results_folder_another_run_writes_to_is_refused_by_every_writer(tmp_path):
    # compare, select-k and drift write through write_into: they take the lock train takes
    import subprocess
    import sys

    from custseg.exceptions import DataError
    from custseg.io.writing import write_into

    results = tmp_path / "results"
    results.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom custseg.io.atomic import output_lock\n"
         f"with output_lock({str(results)!r}):\n    print('held', flush=True)\n    time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match="another custseg run is writing to"):
            write_into(results, {"comparison.csv": b"a\n1\n"})
        assert not (results / "comparison.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    assert write_into(results, {"comparison.csv": b"a\n1\n"}) == [results / "comparison.csv"]


def test_held_interrupts_leave_an_ignored_signal_ignored(python_sigint):
    # under nohup (SIGINT ignored) a commit must not start reacting to Ctrl-C; a held one is raised after
    import os
    import signal

    from custseg.io.atomic import checkpoint, held_interrupts

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            checkpoint()  # ignored: nothing held, nothing raised
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    with pytest.raises(KeyboardInterrupt):  # held to the end of the block
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler runs between bytecodes: it only records the signal
    assert signal.getsignal(signal.SIGINT) is before
