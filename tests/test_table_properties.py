"""Property tests of issue 10: generated tables give a clean error or a correct output.

"Correct" is what a user can check without knowing the model: as many rows out as in,
in the same order, under the same IDs (or numbered 1..n when the table has none). A
clean error is exit code 1, exactly one ``Error:`` line, no traceback, and no output
file. Everything runs through ``custseg.cli.main``, as a user would.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custseg.cli import main
from custseg.io.reading import read_table

from conftest import customer_table, tiny_toml

pytestmark = pytest.mark.filterwarnings("ignore")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# cells a user's export may hold: numbers, formatted amounts, tokens, damage
CELL_NUMBER = st.one_of(
    st.integers(-10_000, 10_000).map(str),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["", "NA", "n/a", "null", " ", "1e40", "-2e19", "inf", "abc", "12%", "$1,200", "1,5"]),
)
CELL_TEXT = st.one_of(st.sampled_from(["Male", "Female", "", "Artist", "Doctor", "Engineer", "Lawyer", "Chef"]),
                      st.text(alphabet="abXY09 ,;\"'-_é\n", max_size=6))
ID_STYLES = st.sampled_from(["ID", "CustomerID", "Account No", None])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("props")
    config = work / "tiny.toml"
    config.write_text(tiny_toml(seed=3, figures=False), encoding="utf-8")
    train = work / "train.csv"
    customer_table(150, 0).to_csv(train, index=False)
    assert main(["train", "--train", str(train), "--config", str(config), "--models-dir", str(work / "models"),
                 "--results-dir", str(work / "results"), "-q"]) == 0
    return work / "models"


def _clean_error(captured, out: Path) -> None:
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, captured.err
    assert not out.exists()


@st.composite
def tables_to_score(draw) -> tuple[pd.DataFrame, str | None]:
    n = draw(st.integers(1, 30))
    id_name = draw(ID_STYLES)
    columns: dict[str, list[str]] = {}
    if id_name is not None:
        style = draw(st.sampled_from(["int", "text", "padded"]))
        start = draw(st.integers(0, 10**6))
        columns[id_name] = [str(start + i) if style == "int" else f"C-{start + i}" if style == "text"
                            else f"{start + i:08d}" for i in range(n)]
    columns["Gender"] = draw(st.lists(CELL_TEXT, min_size=n, max_size=n))
    columns["Age"] = draw(st.lists(CELL_NUMBER, min_size=n, max_size=n))
    columns["Income"] = draw(st.lists(CELL_NUMBER, min_size=n, max_size=n))
    columns["Profession"] = draw(st.lists(CELL_TEXT, min_size=n, max_size=n))
    if draw(st.booleans()):
        columns["Notes"] = draw(st.lists(CELL_TEXT, min_size=n, max_size=n))
    order = draw(st.permutations(list(columns)))
    return pd.DataFrame({c: columns[c] for c in order}), id_name


@given(case=tables_to_score())
@settings(max_examples=60, **SETTINGS)
def test_scoring_gives_a_clean_error_or_every_row_under_its_id(case, model, capsys):
    frame, id_name = case
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "new.csv", Path(tmp) / "scored.csv"
        frame.to_csv(path, index=False)
        capsys.readouterr()
        code = main(["predict", "--model", str(model), "--input", str(path), "--output", str(out)])
        captured = capsys.readouterr()
        if code != 0:
            assert code == 1
            _clean_error(captured, out)
            return
        assert "Traceback" not in captured.err
        scored = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert len(scored) == len(frame)
        if id_name is None:
            assert scored.columns[0] == "Row"
            assert scored["Row"].tolist() == [str(i) for i in range(1, len(frame) + 1)]
        else:
            assert scored.columns[0] == id_name
            assert scored[id_name].tolist() == frame[id_name].tolist()


@given(values=st.lists(st.one_of(st.none(), st.integers(0, 999)), min_size=1, max_size=80),
       quoted_blanks=st.booleans())
@settings(max_examples=80, **SETTINGS)
def test_one_column_tables_keep_every_row(values, quoted_blanks):
    """Missing values in a one-column table are empty lines (or ""): each is still a row."""
    values[-1] = 7 if values[-1] is None else values[-1]  # empty lines at the very end are padding
    blank = '""' if quoted_blanks else ""
    text = "Visits\n" + "\n".join(blank if v is None else str(v) for v in values) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.csv"
        path.write_text(text, encoding="utf-8")
        frame = read_table(path).frame
    assert len(frame) == len(values)
    assert [None if pd.isna(v) else int(v) for v in frame["Visits"]] == values


@given(rows=st.lists(st.tuples(CELL_NUMBER, CELL_TEXT, CELL_NUMBER), min_size=1, max_size=40))
@settings(max_examples=80, **SETTINGS)
def test_reading_keeps_every_row_or_refuses(rows):
    from custseg.exceptions import CustsegError

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ID", "Amount", "Kind", "Score"])
    writer.writerows([[i, *r] for i, r in enumerate(rows)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8")
        try:
            frame = read_table(path).frame
        except CustsegError as exc:
            assert str(exc).startswith("file ")
            return
    assert len(frame) == len(rows)
    assert frame["ID"].tolist() == list(range(len(rows)))


@st.composite
def training_tables(draw) -> pd.DataFrame:
    n = draw(st.integers(3, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frame = pd.DataFrame({
        "CustomerID": [f"K{i:04d}" for i in draw(st.permutations(range(n)))],
        "Age": [draw(st.one_of(st.none(), st.integers(18, 90))) for _ in range(n)],
        "Plan": rng.choice(["basic", "pro", "max"], n),
    })
    if draw(st.booleans()):
        frame["Spend"] = [f"${v:,.0f}" for v in rng.integers(10, 50_000, n)]
    if draw(st.booleans()):
        frame["Segmentation"] = [draw(st.sampled_from(["A", "B", "a", None])) for _ in range(n)]
    return frame


@given(frame=training_tables(), k=st.integers(1, 4))
@settings(max_examples=6, **SETTINGS)
def test_training_gives_a_clean_error_or_every_row_under_its_id(frame, k, tmp_path, capsys):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        tmp = Path(tmp)
        # the subject is the rows and their IDs, not the pictures: trained without drawing
        (tmp / "tiny.toml").write_text(tiny_toml(seed=1, n_clusters=k, k_max=3, figures=False), encoding="utf-8")
        frame.to_csv(tmp / "train.csv", index=False)
        capsys.readouterr()
        code = main(["train", "--train", str(tmp / "train.csv"), "--config", str(tmp / "tiny.toml"),
                     "--models-dir", str(tmp / "models"), "--results-dir", str(tmp / "results"), "-q"])
        captured = capsys.readouterr()
        if code != 0:
            assert code == 1
            _clean_error(captured, tmp / "results" / "training_results.csv")
            assert not (tmp / "models").exists()
            return
        rows = pd.read_csv(tmp / "results" / "training_results.csv", dtype=str)
        assert rows["ID"].tolist() == frame["CustomerID"].tolist()
        sizes = pd.read_csv(tmp / "results" / "cluster_characteristics.csv")["Size"]
        assert len(sizes) == k and (sizes > 0).all()
