"""The exploratory notebook: committed without outputs, and it runs top to bottom on the shipped data.

The notebook is executed once per test session with nbclient, on the ``python3``
kernel, from ``notebooks/`` (as Jupyter would). The checks ask for more than "no
error": every section is there, every figure cell drew a figure, and the numbers
the notebook prints agree with the same numbers computed here straight from the
CSV files, without custseg.

The statistics the notebook relies on (``custseg.eda``) are checked in test_eda.py,
which runs without the notebook tools this file needs.
"""

from __future__ import annotations

import base64
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_exploratory_data_analysis.ipynb"
DATA = ROOT / "data" / "raw"

SECTIONS = [
    "1. Loading and overview",
    "2. Missing values",
    "3. The known segments",
    "4. Numeric features",
    "5. Categorical features",
    "6. Relations between features",
    "7. What separates the known segments",
    "8. New customers versus existing ones",
    "9. Key insights and recommended next steps",
]
#: the notebook must run in well under a minute; this leaves room for a slow CI machine
TIME_LIMIT_SECONDS = 120

requires_data = pytest.mark.skipif(not (DATA / "Train.csv").is_file() or not (DATA / "Test.csv").is_file(),
                                   reason="the shipped data (data/raw/Train.csv, Test.csv) is not present")


def _committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def _figure_cells(nb):
    """Code cells that draw a figure: by the notebook's convention, they end with plt.show()."""
    return [c for c in nb.cells if c.cell_type == "code" and "plt.show()" in c.source]


def _printed(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.output_type == "stream" and o.get("name") == "stdout")


# --------------------------------------------------------------------------- the committed file


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = _committed()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    with_outputs = [c.id for c in code if c.outputs]
    assert not with_outputs, f"strip the outputs of cells {with_outputs} before committing"
    assert all(c.execution_count is None for c in code)
    assert all(not c.metadata for c in nb.cells), "cell metadata should be empty"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_markdown_cells_state_no_numbers_about_the_data():
    """Numbers belong in code cells that compute them; markdown only frames (section numbers aside)."""
    for cell in _committed().cells:
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"^#+\s*\d+\.", "", cell.source, flags=re.MULTILINE)  # "## 3. The known segments"
        text = re.sub(r"`[^`]*`", "", text)  # code spans: file and column names such as `Var_1`
        assert not re.search(r"\d", text), f"markdown cell {cell.id!r} types a number by hand: {cell.source[:80]!r}"


def test_every_section_is_present_in_order():
    headings = [line.lstrip("#").strip() for c in _committed().cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS


def test_python3_kernel_runs_this_interpreter():
    """nbclient starts the ``python3`` kernelspec; it must be this venv's Python, which has custseg installed."""
    spec = jupyter_client.kernelspec.KernelSpecManager().get_kernel_spec("python3")
    executable = spec.argv[0]
    # jupyter_client replaces a bare "python"/"python3" by sys.executable when it launches the kernel
    bare = {"python", "python%i" % sys.version_info[0], "python%i.%i" % sys.version_info[:2]}
    same = executable in bare or Path(executable).resolve() == Path(sys.executable).resolve()
    assert same, (f"the python3 kernel runs {executable!r} (from {spec.resource_dir}), not {sys.executable!r}; "
                  "run 'python -m ipykernel install --sys-prefix' in this environment")


# --------------------------------------------------------------------------- the executed notebook


@pytest.fixture(scope="session")
def executed():
    """The notebook, executed from notebooks/ on the shipped data; with its run time in seconds."""
    nb = _committed()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    return nb, time.perf_counter() - start


@requires_data
@pytest.mark.slow
def test_notebook_runs_without_error_in_time(executed):
    nb, seconds = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert seconds < TIME_LIMIT_SECONDS, f"the notebook took {seconds:.0f} s"


@requires_data
@pytest.mark.slow
def test_every_figure_cell_drew_a_png(executed):
    nb, _ = executed
    figures = _figure_cells(nb)
    assert len(figures) >= len(SECTIONS) - 1  # section 9 is text
    for cell in figures:
        images = [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
        assert len(images) == 1, f"cell {cell.id!r} should show one figure, shows {len(images)}"
        png = base64.b64decode(images[0]["data"]["image/png"])
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, f"cell {cell.id!r} drew an empty figure"


@requires_data
@pytest.mark.slow
def test_every_section_before_the_summary_has_a_figure_and_printed_findings(executed):
    nb, _ = executed
    section, seen = None, {}
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0].lstrip("#").strip()
            seen[section] = {"figures": 0, "printed": 0}
        elif cell.cell_type == "code" and section:
            seen[section]["figures"] += any("image/png" in o.get("data", {}) for o in cell.outputs)
            seen[section]["printed"] += any(o.output_type == "stream" for o in cell.outputs)
    for name in SECTIONS[:-1]:
        assert seen[name]["figures"] >= 1, f"section {name!r} has no figure"
        assert seen[name]["printed"] >= 1, f"section {name!r} prints no finding"
    assert "Key insights" in _printed(nb) and "Recommended next steps" in _printed(nb)


@requires_data
@pytest.mark.slow
def test_printed_numbers_match_the_data(executed):
    """The notebook's sentences agree with the CSV files read here with plain pandas."""
    nb, _ = executed
    text = _printed(nb)
    train, test = pd.read_csv(DATA / "Train.csv"), pd.read_csv(DATA / "Test.csv")
    features = [c for c in test.columns if c != "ID"]

    assert f"Train.csv: {len(train):,} rows x {train.shape[1]} columns" in text
    assert f"Test.csv: {len(test):,} rows x {test.shape[1]} columns" in text

    returning = test["ID"].isin(train["ID"])
    assert f"{returning.sum():,} of the {len(test):,} Test.csv IDs ({returning.mean():.1%}) also appear in Train.csv" \
        in text

    rows_missing = train[features].isna().any(axis=1)
    assert f"{rows_missing.sum():,} rows ({rows_missing.mean():.1%}) miss at least one feature" in text

    counts = train["Segmentation"].value_counts()
    assert f"the largest, {counts.idxmax()}, holds {counts.max():,} customers ({counts.max() / len(train):.1%})" in text

    pairs = train.merge(test, on="ID", suffixes=("_train", "_test"))
    age_same = (pairs["Age_train"] == pairs["Age_test"]).mean()
    assert f"Age is the same for only {age_same:.1%}" in text
    def identical(c):
        a, b = pairs[f"{c}_train"], pairs[f"{c}_test"]
        return ((a == b) | (a.isna() & b.isna())).all()

    unchanged = [c for c in features if identical(c)]
    assert f"{len(unchanged)} of {len(features)} features are identical in both files" in text


@requires_data
def test_notebook_finds_the_data_from_the_repository_root(tmp_path):
    """The path lookup (its first code cell) works from the root too, and fails clearly elsewhere."""
    setup = next(c for c in _committed().cells if c.cell_type == "code").source
    body = setup.split("def find_data_dir", 1)[1].split("\n\n\n", 1)[0]
    namespace: dict = {"Path": Path}
    exec("def find_data_dir" + body, namespace)  # the function only, without running the notebook
    assert namespace["find_data_dir"](ROOT) == ROOT / "data" / "raw"
    assert namespace["find_data_dir"](ROOT / "notebooks") == ROOT / "data" / "raw"
    with pytest.raises(FileNotFoundError, match="data/raw/Train.csv"):
        namespace["find_data_dir"](tmp_path)
