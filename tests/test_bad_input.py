"""A catalogue of malformed inputs: each one fails with one clear 'Error:' line and loses nothing.

One small model is trained once (module fixture) into ``models/`` and ``results/``.
Every case then runs ``custseg.cli.main`` with the same folders on a small bad file
built in ``tmp_path`` and checks that:

* the exit code is 1 and stderr is exactly one line starting with ``Error: ``;
* the line names what is wrong (file, column, value, line) and says how to fix it;
* no traceback is printed;
* every byte in ``models/`` and ``results/`` is as it was, and no staging folder is left.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import custseg.io.atomic
import custseg.io.reading
import custseg.workflow
from custseg.cli import main

from conftest import Trained, customer_table, tiny_toml, train_tiny

#: Small settings so that the fixture trains in about two seconds.
TINY_TOML = tiny_toml(seed=3)

HEADER = "ID,Gender,Age,Income,Profession,Segmentation"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    t = train_tiny(tmp_path_factory.mktemp("trained"), TINY_TOML, income_gaps=True)
    code = main(["predict", "--model", str(t.models), "--input", str(t.test_csv),
                 "--output", str(t.results / "predictions.csv")])
    assert code == 0
    return t


def snapshot(t: Trained) -> dict[str, object]:
    """Every byte under models/ and results/, and the names beside them (staging folders would show)."""
    files = {}
    for root in (t.models, t.results):
        for path in sorted(root.rglob("*")):
            files[str(path.relative_to(t.work))] = path.read_bytes() if path.is_file() else "<dir>"
    return {"files": files, "beside": sorted(os.listdir(t.work))}


# -- the catalogue ----------------------------------------------------------------------------------
@dataclass
class Case:
    """A bad input: ``build(tmp_path, trained)`` writes what it needs and returns the CLI arguments."""

    build: Callable[[Path, Trained], list[str]]
    expected: list[str]  # substrings of the error line: what is wrong, where, and the fix
    quiet: bool = False
    patch: Callable | None = None  # (monkeypatch, tmp_path) -> None, applied before the run


def _train(t: Trained, path: Path | str, *more: str) -> list[str]:
    return ["train", "--train", str(path), "--config", str(t.config), "--models-dir", str(t.models),
            "--results-dir", str(t.results), *more]


def _predict(t: Trained, path: Path | str, model: Path | None = None, output: Path | None = None) -> list[str]:
    return ["predict", "--model", str(model or t.models), "--input", str(path),
            "--output", str(output or t.results / "predictions.csv")]


def _csv(tmp: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def _table(tmp: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp / name
    frame.to_csv(path, index=False)
    return path


def _config(tmp: Path, extra: str) -> Path:
    path = tmp / "bad.toml"
    path.write_text(TINY_TOML + "\n" + extra, encoding="utf-8")
    return path


def _model_copy(tmp: Path, t: Trained, edit: Callable[[Path], None]) -> Path:
    copy = tmp / "model_copy"
    shutil.copytree(t.models, copy)
    edit(copy)
    return copy


def _set_format_version(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit_clustering(folder: Path) -> None:
    data = json.loads((folder / "clustering.json").read_text())
    data["inertia"] = 0.0
    (folder / "clustering.json").write_text(json.dumps(data))


def _truncate_weights(folder: Path) -> None:
    path = folder / "autoencoder.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _with_value(column: str, row: int, value, n: int = 200) -> Callable[[Path, Trained], list[str]]:
    def build(tmp: Path, t: Trained) -> list[str]:
        frame = customer_table(n).astype({column: object})
        frame.loc[row, column] = value
        return _train(t, _table(tmp, frame))
    return build


def _deny_read(monkeypatch, tmp: Path) -> None:
    """As root, chmod 000 does not stop reads: make opening the file fail as it would for a user."""
    if os.geteuid() != 0:
        return  # the chmod in _locked is enough
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("locked.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(custseg.io.reading, "open", fake_open, raising=False)


def _locked(tmp: Path, t: Trained) -> list[str]:
    path = _table(tmp, customer_table(), "locked.csv")
    if os.geteuid() != 0:
        path.chmod(0)
    return _train(t, path)


def _bytes(tmp: Path, data: bytes, name: str = "bad.csv") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _settings(tmp: Path, t: Trained, toml: str, table: Path | None = None, whole: bool = False) -> list[str]:
    """Train on ``table`` (the fixture's by default) with the tiny settings plus ``toml`` (or ``toml`` alone)."""
    config = _csv(tmp, toml, "bad.toml") if whole else _config(tmp, toml)
    return _train(t, table or t.train_csv) + ["--config", str(config)]


def _bad_setting(toml: str, expected: list[str]) -> "Case":
    """A case that trains with a config file holding only ``toml``."""
    return Case(lambda tmp, t: _settings(tmp, t, toml, whole=True), expected)


def _damaged_parquet(tmp: Path) -> Path:
    path = tmp / "cut.parquet"
    customer_table().to_parquet(path)
    path.write_bytes(path.read_bytes()[:-200])
    return path


def _user_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return folder


LATIN1 = (HEADER + "\n1,Male,30,50.0,Caf\xe9 owner,A\n").encode("latin-1")

CASES: dict[str, Case] = {
    # -- the file itself ---------------------------------------------------------------------------
    "missing file": Case(lambda tmp, t: _train(t, tmp / "nope.csv"), ["nope.csv", "does not exist", "check the path"]),
    "missing file, close name": Case(
        lambda tmp, t: (_table(tmp, customer_table(), "customers.csv"), _train(t, tmp / "customer.csv"))[1],
        ["customer.csv", "does not exist", "did you mean", "customers.csv"]),
    "directory given as file": Case(lambda tmp, t: _train(t, tmp), ["is a directory", "give the path of a CSV"]),
    "unreadable file": Case(_locked, ["locked.csv", "permission denied", "fix its permissions"], patch=_deny_read),
    "empty file": Case(lambda tmp, t: _train(t, _csv(tmp, "")), ["bad.csv", "is empty", "header row"]),
    "only blank lines": Case(lambda tmp, t: _train(t, _csv(tmp, "\n  \n\n")), ["bad.csv", "is empty"]),
    "binary bytes": Case(lambda tmp, t: _train(t, _bytes(tmp, bytes(range(256)) * 4)),
                         ["bad.csv", "binary", "give a CSV (UTF-8) or Parquet file"]),
    "excel workbook": Case(lambda tmp, t: _train(t, _bytes(tmp, b"PK\x03\x04" + b"\x00" * 60, "sheet.xlsx")),
                           ["sheet.xlsx", "Excel", "export the sheet as CSV"]),
    "not UTF-8 (latin-1)": Case(lambda tmp, t: _train(t, _bytes(tmp, LATIN1)),
                                ["bad.csv", "not UTF-8", "0xe9", "line 2", "save the file as UTF-8"]),
    "damaged gzip": Case(lambda tmp, t: _train(t, _bytes(tmp, gzip.compress(b"a,b\n1,2\n" * 100)[:30], "bad.csv.gz")),
                         ["bad.csv.gz", "gzip", "damaged", "compress it again"]),
    "damaged parquet": Case(lambda tmp, t: _train(t, _bytes(tmp, b"PAR1" + b"garbage" * 20, "bad.parquet")),
                            ["bad.parquet", "not a readable Parquet file", "re-export it"]),
    "truncated parquet": Case(lambda tmp, t: _train(t, _damaged_parquet(tmp)),
                              ["cut.parquet", "not a readable Parquet file", "re-export it"]),
    # -- shape of the table ---------------------------------------------------------------------------
    "header only": Case(lambda tmp, t: _train(t, _csv(tmp, HEADER + "\n")), ["bad.csv", "no data rows"]),
    "single row": Case(lambda tmp, t: _train(t, _csv(tmp, HEADER + "\n1,Male,30,50.0,Artist,A\n")),
                       ["bad.csv", "has 1 customer", "needs at least 4", "give more rows"]),
    "fewer rows than clusters": Case(lambda tmp, t: _train(t, _table(tmp, customer_table(5)), "--clusters", "6"),
                                     ["bad.csv", "has 5 customers", "6 clusters", "--clusters 4 or fewer"]),
    "fewer distinct customers than clusters": Case(
        lambda tmp, t: _train(t, _table(tmp, pd.DataFrame({"Age": [30, 40] * 10, "Plan": ["a", "b"] * 10}))),
        ["bad.csv", "only 2 different ones", "Age, Plan", "--clusters 2 or fewer"]),
    "no usable feature column": Case(
        lambda tmp, t: _train(t, _csv(tmp, "ID,Country\n" + "".join(f"{i},India\n" for i in range(20)))),
        ["bad.csv", "no usable feature column", "Country=excluded", "check the delimiter"]),
    "duplicate column names": Case(lambda tmp, t: _train(t, _csv(tmp, "ID,Age,Age\n1,2,3\n")),
                                   ["bad.csv", "duplicate column name 'Age'", "columns 2, 3", "rename one"]),
    "unnamed column (pandas index)": Case(lambda tmp, t: _train(t, _csv(tmp, ",Age,Income\n0,30,5\n1,40,6\n")),
                                          ["bad.csv", "column 1", "no name", "name every column"]),
    "mixed delimiters": Case(lambda tmp, t: _train(t, _csv(tmp, "ID;Age;Income\n1,30,5.5\n2,40,6.5\n3,50,7.5\n")),
                             ["bad.csv", "header is separated by ';'", "next lines by ','", "use one delimiter"]),
    "one line with another delimiter": Case(
        lambda tmp, t: _train(t, _csv(tmp, HEADER + "\n1,Male,30,50.0,Artist,A\n2;Female;40;60.0;Doctor;B\n"
                                      "3,Male,50,70.0,Lawyer,C\n")),
        ["bad.csv", "line 3", "separated by ';' instead", "use one delimiter"]),
    "truncated last line": Case(lambda tmp, t: _train(t, _csv(tmp, customer_table(50).to_csv(index=False)[:-12])),
                                ["bad.csv", "line 51", "truncated", "complete or remove it"]),
    "unquoted comma in a value": Case(
        lambda tmp, t: _train(t, _csv(tmp, HEADER + "\n1,Male,30,50.0,Artist,A\n2,Female,40,60.0,Doctor, GP,B\n")),
        ["bad.csv", "line 3", "7 fields where the header has 6", "quote that value"]),
    "quote never closed": Case(
        lambda tmp, t: _train(t, _csv(tmp, HEADER + '\n1,Male,30,50.0,"Artist,A\n2,Female,40,60.0,Doctor,B\n')),
        ["bad.csv", "line 2", "quoted value opened on line 2", "close the quote"]),
    "title line above the header": Case(
        lambda tmp, t: _train(t, _csv(tmp, "Customer export 2024\n" + customer_table(20).to_csv(index=False))),
        ["bad.csv", "first line is a single column", "remove any title line"]),
    # -- values ---------------------------------------------------------------------------------------
    "inf string": Case(_with_value("Income", 7, "inf"),
                       ["bad.csv", "line 9", "'Income'", "'inf'", "not a finite number", "leave the cell empty"]),
    "-Infinity string": Case(_with_value("Age", 0, "-Infinity"), ["line 2", "'Age'", "'-Infinity'", "not a finite"]),
    "absurdly large number": Case(_with_value("Income", 3, "1e200"), ["line 5", "'Income'", "'1e200'", "too large"]),
    "number beyond float range": Case(_with_value("Income", 4, "1e999"), ["line 6", "'1e999'", "too large"]),
    "a word among numbers": Case(_with_value("Age", 10, "unknown"),
                                 ["bad.csv", "line 12", "'Age'", "'unknown'", "--na-values unknown"]),
    "duplicate IDs (inferred id)": Case(_with_value("ID", 9, 5002),
                                        ["bad.csv", "'ID'", "ID '5002'", "line 4", "line 11", "remove the duplicates"]),
    "duplicate IDs (--id-column)": Case(
        lambda tmp, t: _train(t, _table(tmp, customer_table().assign(Code=lambda d: d["ID"] % 150)),
                              "--id-column", "Code"),
        ["'Code'", "appears on line", "remove the duplicates"]),
    "empty ID": Case(
        lambda tmp, t: _train(t, _table(tmp, customer_table().astype({"ID": object}).assign(
            ID=lambda d: d["ID"].where(d.index != 4, None))), "--id-column", "ID"),
        ["bad.csv", "line 6", "'ID'", "the ID is empty", "give every customer an ID"]),
    "label with one class": Case(
        lambda tmp, t: _train(t, _table(tmp, customer_table().assign(Tier="Gold")), "--label-column", "Tier"),
        ["'Tier'", "one class only", "'Gold'", "--no-label"]),
    "all-missing label": Case(
        lambda tmp, t: _train(t, _table(tmp, customer_table().assign(Tier=np.nan)), "--label-column", "Tier"),
        ["'Tier'", "entirely missing", "--no-label"]),
    # -- flags and settings ---------------------------------------------------------------------------
    "--label-column not in table": Case(lambda tmp, t: _train(t, t.train_csv, "--label-column", "Segment"),
                                        ["train.csv", "'Segment'", "not in the table", "did you mean 'Segmentation'"]),
    "--id-column not in table": Case(lambda tmp, t: _train(t, t.train_csv, "--id-column", "CustomerID"),
                                     ["'CustomerID'", "not in the table", "its columns are ID"]),
    "--no-label with --label-column": Case(
        lambda tmp, t: _train(t, t.train_csv, "--no-label", "--label-column", "Segmentation"),
        ["--no-label and --label-column", "give one of them"]),
    "zero clusters": Case(lambda tmp, t: _train(t, t.train_csv, "--clusters", "0"),
                          ["--clusters", "int >= 1", "Got 0", "e.g. --clusters 5"]),
    "negative clusters": Case(lambda tmp, t: _train(t, t.train_csv, "-k", "-2"), ["--clusters", "Got -2"]),
    "clusters not a number": Case(lambda tmp, t: _train(t, t.train_csv, "--clusters", "many"),
                                  ["'--clusters'", "valid integer", "see 'custseg train --help'"]),
    "unknown config key": Case(lambda tmp, t: _settings(tmp, t, "[data]\nlabel_colum = 'x'\n"),
                               ["bad.toml", "unknown setting", "'data.label_colum'", "did you mean 'data.label_column'"]),
    "config wrong type": Case(lambda tmp, t: _settings(tmp, t, "[data]\nnumeric = 'Age'\n"),
                              ["bad.toml", "'data.numeric'", "must be a list of strings", "'Age'"]),
    "config not TOML": Case(lambda tmp, t: _settings(tmp, t, "seed = = 3\n", whole=True),
                            ["bad.toml", "not valid TOML", "line 1"]),
    "config file missing": Case(lambda tmp, t: _train(t, t.train_csv) + ["--config", str(tmp / "none.toml")],
                                ["none.toml", "does not exist", "--config"]),
    "config: all-missing column as a feature": Case(
        lambda tmp, t: _settings(tmp, t, "[data]\ncategorical = ['Notes']\n",
                                 _table(tmp, customer_table().assign(Notes=np.nan))),
        ["bad.csv", "'Notes'", "every value is missing", "move it to 'exclude'"]),
    "config: text in a numeric column": Case(
        lambda tmp, t: _settings(tmp, t, "[data]\nnumeric = ['Profession']\n"),
        ["train.csv", "line 2", "'Profession'", "is not a number", "make the column categorical"]),
    "config: column not in table": Case(lambda tmp, t: _settings(tmp, t, "[data]\nexclude = ['Incme']\n"),
                                        ["'Incme'", "not in the table", "did you mean 'Income'"]),
    "config: one column, two roles": Case(
        lambda tmp, t: _settings(tmp, t, "[data]\nnumeric = ['Age']\nexclude = ['Age']\n"),
        ["'Age'", "two roles", "give it one"]),
    "config: value outside ordinal order": Case(
        lambda tmp, t: _settings(tmp, t, "[data]\nordinal = { Profession = ['Artist', 'Doctor', 'Engineer'] }\n"),
        ["'Profession'", "'Lawyer'", "not in its declared order", "add it to the order"]),
    "config: k_max below k_min": Case(lambda tmp, t: _settings(tmp, t, "[k_selection]\nk_max = 1\n", whole=True),
                                      ["'k_selection.k_max'", "must be an int >= 2", "Got 1"]),
    # -- every numeric setting is checked when the settings are read (issue 10) ------------------------------
    "seed below 0": Case(lambda tmp, t: _train(t, t.train_csv, "--seed", "-1"),
                         ["--seed", "int >= 0 and <= 4294967295", "Got -1"]),
    "seed above 2**32 - 1": Case(lambda tmp, t: _train(t, t.train_csv, "--seed", str(2**32)),
                                 ["--seed", "Got 4294967296", "from 0 to 4294967295"]),
    "seed too large in the config": _bad_setting(f"seed = {2**40}\n", ["bad.toml", "'seed'", "Got 1099511627776"]),
    "learning rate inf": _bad_setting(
        "[autoencoder]\nlearning_rate = inf\n",
        ["bad.toml", "'autoencoder.learning_rate'", "finite number > 0", "Got inf"]),
    "learning rate 1e30": _bad_setting(
        "[autoencoder]\nlearning_rate = 1e30\n", ["'autoencoder.learning_rate'", "<= 10", "Got 1e+30"]),
    "min_lr inf": _bad_setting("[autoencoder]\nmin_lr = inf\n", ["'autoencoder.min_lr'", "finite number", "Got inf"]),
    "perplexity negative": _bad_setting(
        "[plots]\ntsne_perplexity = -5.0\n", ["'plots.tsne_perplexity'", "> 0", "Got -5.0"]),
    "perplexity NaN": _bad_setting(
        "[plots]\ntsne_perplexity = nan\n", ["'plots.tsne_perplexity'", "finite number", "Got nan"]),
    "dpi 0": _bad_setting("[plots]\ndpi = 0\n", ["'plots.dpi'", "int >= 10", "Got 0"]),
    "negative silhouette sample": _bad_setting(
        "[k_selection]\nsilhouette_sample = -100\n", ["'k_selection.silhouette_sample'", "int >= 0", "Got -100"]),
    "negative t-SNE sample": _bad_setting("[plots]\ntsne_max_points = -1\n", ["'plots.tsne_max_points'", "Got -1"]),
    "n_init 0": _bad_setting("[clustering]\nn_init = 0\n", ["'clustering.n_init'", "int >= 1", "Got 0"]),
    "absurd thread count": _bad_setting(
        "[autoencoder]\nn_threads = 100000\n", ["'autoencoder.n_threads'", "four per core", "Got 100000"]),
    "a number given as text": _bad_setting(
        "[autoencoder]\ndropout = '0.2'\n", ["'autoencoder.dropout'", ">= 0 and < 1", "Got '0.2'"]),
    "true as a number": _bad_setting(
        "[clustering]\nmax_iter = true\n", ["'clustering.max_iter'", "an int", "Got True"]),
    "unknown preset": _bad_setting(
        "preset = 'refernce'\n", ["bad.toml", "unknown preset 'refernce'", "did you mean 'reference'"]),
    "test table lacks a feature": Case(
        lambda tmp, t: _train(t, t.train_csv, "--test",
                              str(_table(tmp, customer_table(30, label=False).drop(columns="Income"), "new.csv"))),
        ["new.csv", "columns are missing: 'Income'", "add the missing ones"]),
    "models dir holds other files": Case(
        lambda tmp, t: _train(t, t.train_csv, "--models-dir", str(_user_folder(tmp))),
        ["mine", "not empty and holds no custseg model", "refusing to replace it"], quiet=True),
    "very long path stays one line": Case(
        lambda tmp, t: _train(t, tmp / ("a-very-long-folder-name-" * 8) / "customers.csv"),
        ["does not exist", "customers.csv"]),
    # -- predict ------------------------------------------------------------------------------------------
    "predict: model folder missing": Case(lambda tmp, t: _predict(t, t.test_csv, model=tmp / "nomodel"),
                                          ["nomodel", "does not exist", "run 'custseg train' first"]),
    "predict: not a model folder": Case(lambda tmp, t: _predict(t, t.test_csv, model=tmp),
                                        ["has no manifest.json", "retrain"]),
    "predict: other format version": Case(
        lambda tmp, t: _predict(t, t.test_csv, model=_model_copy(tmp, t, _set_format_version)),
        ["model_copy", "format version 99", "reads version 1", "retrain"]),
    "predict: edited model file": Case(
        lambda tmp, t: _predict(t, t.test_csv, model=_model_copy(tmp, t, _edit_clustering)),
        ["model_copy", "'clustering.json'", "edited or truncated", "restore the folder"]),
    "predict: truncated weights": Case(
        lambda tmp, t: _predict(t, t.test_csv, model=_model_copy(tmp, t, _truncate_weights)),
        ["'autoencoder.safetensors'", "edited or truncated", "retrain"]),
    "predict: missing column": Case(
        lambda tmp, t: _predict(t, _table(tmp, customer_table(20, label=False).drop(columns=["Age"]))),
        ["bad.csv", "columns are missing: 'Age'", "add the missing ones"]),
    "predict: misspelt column": Case(
        lambda tmp, t: _predict(t, _table(tmp, customer_table(20, label=False).rename(columns={"Income": "income"}))),
        ["columns are missing: 'Income'", "'income' is there"]),
    "predict: text in numeric column": Case(
        lambda tmp, t: _predict(t, _table(tmp, customer_table(30, label=False).astype({"Income": object}).assign(
            Income=lambda d: d["Income"].where(d.index != 12, "n.a.")))),
        ["bad.csv", "line 14", "'Income'", "'n.a.'", "not a number", "--na-values"]),
    "predict: inf in numeric column": Case(
        lambda tmp, t: _predict(t, _table(tmp, customer_table(30, label=False).astype({"Age": object}).assign(
            Age=lambda d: d["Age"].where(d.index != 2, "inf")))),
        ["line 4", "'Age'", "'inf'", "not a finite number"]),
    "predict: duplicate IDs": Case(
        lambda tmp, t: _predict(t, _table(tmp, customer_table(30, label=False).assign(ID=7))),
        ["'ID'", "ID '7'", "remove the duplicates"]),
    "predict: output is a folder": Case(lambda tmp, t: _predict(t, t.test_csv, output=tmp),
                                        ["--output", "is a folder", "give a file name"]),
    "predict: header only": Case(lambda tmp, t: _predict(t, _csv(tmp, "ID,Gender,Age,Income,Profession\n")),
                                 ["bad.csv", "no data rows"]),
    "predict: header only, no line end": Case(
        lambda tmp, t: _predict(t, _csv(tmp, "ID,Gender,Age,Income,Profession")), ["bad.csv", "no data rows"]),
    "predict: --strict with the ONNX runtime": Case(
        lambda tmp, t: [*_predict(t, t.test_csv, model=tmp / "segmenter.onnx"), "--runtime", "onnx", "--strict"],
        ["--strict needs the confidence and novelty columns", "--runtime onnx does not compute", "leave out --strict"]),
    "predict: --probabilities with Dask": Case(
        lambda tmp, t: [*_predict(t, t.test_csv), "--engine", "dask", "--probabilities", "--unusual-above", "95"],
        ["--probabilities and --unusual-above need", "--engine dask does not compute"]),
    "predict: output name too long": Case(lambda tmp, t: _predict(t, t.test_csv, output=tmp / ("p" * 300 + ".csv")),
                                          ["--output", "cannot be written", "too long", "choose another --output"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_error_and_loses_nothing(name, trained, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    argv = case.build(tmp_path, trained)
    if case.quiet:
        argv.append("-q")
    if case.patch is not None:
        case.patch(monkeypatch, tmp_path)
    before = snapshot(trained)
    capsys.readouterr()

    code = main(argv)

    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("Error: ")
    for part in case.expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(trained) == before


def test_long_error_is_not_wrapped_at_terminal_width(trained, tmp_path, capsys):
    path = tmp_path / ("x" * 150) / "customers.csv"
    assert main(_train(trained, path)) == 1
    line, = capsys.readouterr().err.splitlines()
    assert len(line) > 160 and line.endswith("check the path")


@pytest.mark.parametrize("step", ["training", "writing", "retiring"])
def test_interrupted_run_keeps_earlier_outputs(step, trained, monkeypatch, capsys):
    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    more = []
    if step == "training":
        monkeypatch.setattr(custseg.workflow, "_evaluate", interrupt)
    elif step == "writing":  # everything is staged; the model folder is about to be swapped in
        calls = []

        def interrupt_mid_swap(*_args, **_kwargs):  # after the model folder moved, before the results did
            calls.append(1)
            if len(calls) == 3:
                interrupt()

        monkeypatch.setattr(custseg.io.atomic, "_pause", interrupt_mid_swap)
    else:  # a run without figures moves the earlier run's aside: interrupted after the first of them
        more = ["--no-figures"]

        def interrupt_mid_retire(*_args, **_kwargs):
            if list(trained.work.glob(f".{trained.results.name}.previous-*/plots/*.png")):
                interrupt()

        monkeypatch.setattr(custseg.io.atomic, "_pause", interrupt_mid_retire)
    before = snapshot(trained)
    assert any(name.endswith(".png") for name in before["files"])
    capsys.readouterr()
    code = main(_train(trained, trained.train_csv, "--seed", "11", "-q", *more))
    captured = capsys.readouterr()
    assert code != 0
    line, = captured.err.splitlines()
    assert line.startswith("Error: interrupted")
    assert snapshot(trained) == before  # includes: no '.models.staging-*' folder left beside them


def test_all_missing_column_is_excluded_with_a_reason_when_inferred(tmp_path):
    from custseg.io.reading import read_table
    from custseg.schema import infer_schema

    path = _table(tmp_path, customer_table(50).assign(Notes=np.nan))
    table = read_table(path)
    info = infer_schema(table.frame, integer_columns=table.integer_columns).column("Notes")
    assert (info.role, info.reason) == ("excluded", "every value is missing")


def test_nan_strings_are_missing_values(tmp_path):
    from custseg.io.reading import read_table

    text = "ID,Age,Income\n1,30,NaN\n2,nan,5.5\n3,41,NAN\n"
    frame = read_table(_csv(tmp_path, text)).frame
    assert frame["Age"].isna().tolist() == [False, True, False]
    assert frame["Income"].isna().tolist() == [True, False, True]
    assert frame["Income"].dtype == "float64"


@pytest.mark.parametrize("moment", ["between moves", "after the last move"])
def test_ctrl_c_during_the_commit_is_told_truthfully(moment, trained, monkeypatch, capsys, python_sigint):
    # a real SIGINT while the outputs are committed: held back to a point where the outcome is known.
    # Between the moves the commit rolls back ("left as they were" is then true); after the last move the
    # new run stays and the user is told so (it used to say "left as they were" of a committed run)
    import signal

    from custseg.io import atomic

    real_pause, real_discard = atomic._pause, atomic._discard
    calls = []

    def signal_mid_commit():
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        real_pause()

    def signal_after_commit(journal):
        os.kill(os.getpid(), signal.SIGINT)
        real_discard(journal)

    if moment == "between moves":
        monkeypatch.setattr(atomic, "_pause", signal_mid_commit)
    else:
        monkeypatch.setattr(atomic, "_discard", signal_after_commit)
    before = snapshot(trained)
    capsys.readouterr()
    code = main(_train(trained, trained.train_csv, "--seed", "12", "-q"))  # figures kept for the other tests
    line, = capsys.readouterr().err.splitlines()
    assert code == 130
    after = snapshot(trained)
    assert not [name for name in after["beside"] if ".previous-" in name or ".staging-" in name]
    if moment == "between moves":
        assert line == "Error: interrupted; earlier models and results were left as they were"
        assert after == before
    else:
        assert line == ("Error: interrupted after the new model and results had been written; they are complete "
                        "and in place")
        assert json.loads((trained.models / "settings.json").read_text())["seed"] == 12
        assert json.loads((trained.results / "run_summary.json").read_text())["settings"]["seed"] == 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
