"""Column roles (inferred, flagged, from the TOML config), labels or none, and checks at predict time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custseg.cli import main

from conftest import tiny_toml
from custseg.config import RunConfig, load_config
from custseg.exceptions import DataError
from custseg.schema import infer_schema
from custseg.workflow import load_tables

REPO = Path(__file__).resolve().parents[1]

TINY_TOML = tiny_toml(seed=5)


def customer_table(n: int, seed: int = 0, segments: list[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "ID": np.arange(1, n + 1) + 70000 + 1000 * seed,
        "Gender": rng.choice(["Male", "Female"], n),
        "Age": rng.integers(18, 80, n).astype(float),
        "Income": rng.normal(50, 12, n).round(1),
        "Plan": rng.choice(["basic", "plus", "premium"], n),
        "Children": rng.integers(0, 3, n),
    })
    if segments is not None:
        table["Tier"] = rng.choice(segments, n)
    return table


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    return path


def _train(tmp_path: Path, config: Path, train: Path, *more: str, figures: bool = False) -> tuple[Path, Path]:
    """``custseg train``; figures only where the test is about what they show (labels in legends)."""
    models, results = tmp_path / "models", tmp_path / "results"
    code = main(["train", "--train", str(train), "--config", str(config), "--models-dir", str(models),
                 "--results-dir", str(results), "-q", *more, *([] if figures else ["--no-figures"])])
    assert code == 0
    return models, results


# -- inference ----------------------------------------------------------------------------------------
def test_every_role_is_inferred_with_its_reason():
    n = 60
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "client_id": [f"C{i:04d}" for i in range(n)],
        "Age": rng.integers(18, 80, n).astype(float),
        "Kids": rng.integers(0, 3, n).astype(float),
        "Plan": rng.choice(["basic", "pro"], n),
        "Country": "India",
        "Notes": np.nan,
        "Comment": [f"called on day {i}, wants a call back" for i in range(n)],
        "Joined": [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
        "row": np.arange(1, n + 1).astype(float),
        "segment": rng.choice(["A", "B", "C"], n),
    }).astype({"Notes": object})
    schema = infer_schema(frame, integer_columns=["Age", "Kids", "row"])
    roles = dict(zip(schema.roles_table()["column"], zip(schema.roles_table()["role"], schema.roles_table()["reason"])))
    assert roles["client_id"] == ("id", "named like an identifier, values all different")
    assert roles["Age"] == ("numeric", "numbers")
    assert roles["Kids"] == ("categorical", "whole numbers with only 3 distinct values (codes or flags)")
    assert roles["Plan"] == ("categorical", "text with 2 distinct values")
    assert roles["Country"] == ("excluded", "constant (only 'India')")
    assert roles["Notes"] == ("excluded", "every value is missing")
    assert roles["Comment"][0] == "excluded" and "free text" in roles["Comment"][1]
    assert roles["Joined"][0] == "excluded" and "date-like" in roles["Joined"][1]
    assert roles["row"] == ("excluded", "row numbers (1, 2, 3, ...)")
    assert roles["segment"][0] == "label"
    assert schema.id_column == "client_id" and schema.label_column == "segment"


@pytest.mark.parametrize("name, is_id", [
    ("ID", True), ("customerID", True), ("CUST_ID", True), ("client_id", True), ("Account No", True),
    ("AccountNo", True), ("AmountPaid", False), ("Valid", False), ("Piano", False),
])
def test_the_id_is_recognised_by_its_name_and_unique_values(name, is_id):
    frame = pd.DataFrame({name: [f"{i * 7919 % 1000:03d}.5" for i in range(30)], "Age": np.arange(30) % 7 + 20.5})
    frame[name] = pd.to_numeric(frame[name])
    assert (infer_schema(frame).id_column == name) is is_id


def test_explicit_roles_win_and_an_ordinal_order_is_kept():
    frame = customer_table(40).assign(Score=lambda d: np.where(d.index % 3 == 0, "Low", "High"))
    schema = infer_schema(frame, id_column="ID", numeric=["Children"], exclude=["Gender"],
                          ordinal={"Score": ["Low", "Average", "High"]}, infer_label=False)
    assert schema.column("Children").role == "numeric"
    assert schema.column("Gender").role == "excluded"
    assert schema.column("Score").role == "ordinal"
    assert schema.ordinal_orders == {"Score": ["Low", "Average", "High"]}
    assert schema.label_column is None


def test_a_duplicated_id_column_is_still_the_id_so_the_duplicates_are_reported(tmp_path):
    frame = customer_table(50)
    frame.loc[7, "ID"] = frame.loc[3, "ID"]
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = RunConfig()
    cfg.data.train, cfg.data.test = str(tmp_path / "t.csv"), None
    with pytest.raises(DataError, match=r"ID '70004' appears on line 5 and again on line 9"):
        load_tables(cfg)


def test_no_label_flag_and_config_setting(tmp_path, tiny_config):
    frame = customer_table(50).assign(Segmentation=lambda d: np.where(d["Age"] > 50, "A", "B"))
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = RunConfig()
    cfg.data.train, cfg.data.test = str(tmp_path / "t.csv"), None
    assert load_tables(cfg)[2].label_column == "Segmentation"
    cfg.data.infer_label = False
    schema = load_tables(cfg)[2]
    assert schema.label_column is None and schema.column("Segmentation").role == "categorical"


# -- the shipped dataset's settings ---------------------------------------------------------------------------
def test_janatahack_config_gives_the_roles_inference_gives(monkeypatch):
    monkeypatch.chdir(REPO)
    configured = load_config("configs/janatahack.toml")
    assert configured.data.id_column == "ID" and configured.data.label_column == "Segmentation"
    _, test_c, from_config = load_tables(configured)
    _, test_i, inferred = load_tables(RunConfig())
    assert test_c is not None and test_i is not None
    role_of = lambda schema: dict(zip(schema.roles_table()["column"], schema.roles_table()["role"]))  # noqa: E731
    assert role_of(from_config) == role_of(inferred)
    assert from_config.names("numeric") == ["Age", "Work_Experience", "Family_Size"]
    assert from_config.names("categorical") == ["Gender", "Ever_Married", "Graduated", "Profession",
                                                "Spending_Score", "Var_1"]
    # the same roles build the same preprocessing
    assert {c.name: c.categories for c in from_config.columns} == {c.name: c.categories for c in inferred.columns}


# -- without a label, and with labels of any number and name ------------------------------------------------
def test_unlabelled_table_trains_and_predicts_with_cluster_ids(tmp_path, tiny_config, capsys):
    customer_table(150).to_csv(tmp_path / "train.csv", index=False)
    customer_table(30, seed=1).to_csv(tmp_path / "test.csv", index=False)
    models, results = _train(tmp_path, tiny_config, tmp_path / "train.csv", "--test", str(tmp_path / "test.csv"),
                             figures=True)

    training = pd.read_csv(results / "training_results.csv")
    assert list(training.columns) == ["ID", "Cluster", "Confidence", "Second_Cluster", "Novelty", "Unusual", "Reason"]
    assert not (results / "submission.csv").exists()
    assert not (results / "cluster_segment_crosstab.csv").exists()
    detailed = pd.read_csv(results / "test_predictions_detailed.csv")
    assert "Predicted_Segment" not in detailed.columns and detailed["Cluster"].between(0, 2).all()
    summary = json.loads((results / "run_summary.json").read_text())
    assert summary["mapping"] is None and "nmi" not in summary["metrics"]

    assert main(["predict", "--model", str(models), "--input", str(tmp_path / "test.csv"),
                 "--output", str(tmp_path / "scored.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert list(scored.columns) == ["ID", "Cluster", "Segment_Name", "Distance_To_Centroid", "Reconstruction_Error",
                                    "Confidence", "Second_Cluster", "Novelty", "Unusual", "Reason"]
    assert scored["Cluster"].tolist() == detailed["Cluster"].tolist()


@pytest.mark.parametrize("segments", [
    ["Yes", "No"],
    ["Gold tier", "Silver, legacy", "Bronze (old)", "Ünïcode", "B2B", "7"],
], ids=["2 classes", "6 odd names"])
def test_labels_of_any_number_and_name(segments, tmp_path, tiny_config):
    customer_table(150, segments=segments).to_csv(tmp_path / "train.csv", index=False)
    customer_table(30, seed=1).to_csv(tmp_path / "test.csv", index=False)
    models, results = _train(tmp_path, tiny_config, tmp_path / "train.csv", "--test", str(tmp_path / "test.csv"),
                             "--label-column", "Tier", figures=True)

    training = pd.read_csv(results / "training_results.csv", dtype={"True_Segment": str, "Predicted_Segment": str})
    assert list(training.columns) == ["ID", "True_Segment", "Cluster", "Predicted_Segment", "Confidence",
                                      "Second_Cluster", "Segment_Probability", "Second_Segment", "Novelty",
                                      "Unusual", "Reason"]
    assert set(training["True_Segment"]) == set(segments)
    assert set(training["Predicted_Segment"]) <= set(segments)
    crosstab = pd.read_csv(results / "cluster_segment_crosstab.csv")
    assert set(segments) <= set(crosstab.columns)
    # the competition's format, whatever the label column is called
    submission = pd.read_csv(results / "submission.csv", dtype={"Segmentation": str})
    assert list(submission.columns) == ["ID", "Segmentation"] and set(submission["Segmentation"]) <= set(segments)
    assert len(submission) == 30


# -- predict checks the incoming table against the saved schema ------------------------------------------------
def test_predict_ignores_extra_columns_and_reports_unseen_categories(tmp_path, tiny_config, capsys):
    customer_table(150).to_csv(tmp_path / "train.csv", index=False)
    models, _ = _train(tmp_path, tiny_config, tmp_path / "train.csv")
    schema = json.loads((models / "schema.json").read_text())
    assert [c["role"] for c in schema["columns"]] == ["id", "categorical", "numeric", "numeric", "categorical",
                                                      "categorical"]
    new = customer_table(20, seed=2).assign(Region="North", Loyalty=1)
    new.loc[[0, 5, 6], "Plan"] = "enterprise"
    new.loc[1, "Gender"] = "Other"
    new.loc[2, "Children"] = 7
    new.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()

    code = main(["predict", "--model", str(models), "--input", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "scored.csv")])

    out = capsys.readouterr().out
    assert code == 0
    assert "Ignored columns not used by the model: Region, Loyalty" in out
    assert "Unseen categories in Plan (assigned the training mode): 'enterprise' x3" in out
    assert "Unseen categories in Gender (assigned the training mode): 'Other' x1" in out
    assert "Unseen categories in Children (assigned the training mode): '7' x1" in out
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 20


def test_unseen_categories_take_the_training_mode(tmp_path, tiny_config):
    from custseg.persistence import load_model

    customer_table(150).to_csv(tmp_path / "train.csv", index=False)
    models, _ = _train(tmp_path, tiny_config, tmp_path / "train.csv")
    pipeline = load_model(models).pipeline
    mode = pipeline.preprocessor_.modes_["Plan"]
    rows = customer_table(10, seed=3)
    unseen = rows.assign(Plan="enterprise")
    assert (pipeline.predict(unseen) == pipeline.predict(rows.assign(Plan=mode))).all()


def test_an_all_missing_numeric_column_at_predict_time_is_imputed(tmp_path, tiny_config):
    customer_table(150).to_csv(tmp_path / "train.csv", index=False)
    models, _ = _train(tmp_path, tiny_config, tmp_path / "train.csv")
    customer_table(10, seed=4).assign(Income=np.nan).to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", "--model", str(models), "--input", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "scored.csv")]) == 0


def test_train_flags_set_the_id_the_missing_tokens_and_no_label(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(REPO)  # where data/raw/Test.csv is: it must not be scored against another table
    frame = customer_table(80).drop(columns="ID").astype({"Age": object})
    frame.insert(0, "Account", [f"acc-{i:03d}" for i in range(80)])
    frame["Job"] = np.where(frame.index % 7 == 0, "unknown", np.where(frame.index % 2, "Doctor", "Artist"))
    frame.loc[frame.index % 9 == 0, "Age"] = "?"
    frame["Segmentation"] = np.where(frame.index % 2, "A", "B")
    frame.to_csv(tmp_path / "t.csv", index=False)
    config = tmp_path / "with_na.toml"
    config.write_text(TINY_TOML + '\n[data]\nna_values = ["?"]\n', encoding="utf-8")

    models, results = _train(tmp_path, config, tmp_path / "t.csv", "--id-column", "Account",
                             "--na-values", "unknown", "--no-label")

    schema = json.loads((models / "schema.json").read_text())
    columns = {c["name"]: c for c in schema["columns"]}
    assert schema["id_column"] == "Account" and columns["Account"]["reason"] == "set explicitly"
    assert schema["label_column"] is None and columns["Segmentation"]["role"] == "categorical"
    assert columns["Age"]["role"] == "numeric" and columns["Age"]["n_missing"] == 9  # '?' from the config
    assert columns["Job"]["n_missing"] == 12 and "unknown" not in columns["Job"]["categories"]  # from the flag
    training = pd.read_csv(results / "training_results.csv")
    assert list(training.columns) == ["ID", "Cluster", "Confidence", "Second_Cluster", "Novelty", "Unusual", "Reason"]
    assert training["ID"].iloc[0] == "acc-000"
    assert not (results / "test_predictions_detailed.csv").exists()


def test_a_config_that_names_its_own_training_table_has_no_default_test_table(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[data]\ntrain = "mine.csv"\n', encoding="utf-8")
    assert load_config(path).data.test is None
    path.write_text('[data]\ntest = ""\n', encoding="utf-8")
    assert load_config(path).data.test is None
    path.write_text('[data]\ntrain = "mine.csv"\ntest = "new.csv"\n', encoding="utf-8")
    assert load_config(path).data.test == "new.csv"



def test_customer_numbers_under_any_name_are_the_ids_not_a_feature():
    # all different whole numbers as dense as row numbers are handed out one by one: an identifier
    # whatever its name ('Kundennummer' was a numeric feature); a measurement stays a feature
    from conftest import SHIPPED_TRAIN

    table = pd.read_csv(SHIPPED_TRAIN).rename(columns={"ID": "Kundennummer"})
    rng = np.random.default_rng(0)
    table["Spend_Cents"] = rng.choice(10 ** 7, len(table), replace=False)  # all different, but spread out
    schema = infer_schema(table)
    assert schema.id_column == "Kundennummer"
    assert "as dense as row numbers" in schema.column("Kundennummer").reason
    assert schema.column("Spend_Cents").role == "numeric"
    table["Ticket"] = rng.permutation(len(table)) + 5000  # a second such column: not a feature either
    schema = infer_schema(table)
    assert schema.id_column is None
    assert schema.column("Ticket").role == schema.column("Kundennummer").role == "excluded"
    assert "--id-column" in schema.column("Ticket").reason
    with_gaps = table.drop(columns="Ticket").astype({"Kundennummer": "float64"})
    with_gaps.loc[3, "Kundennummer"] = np.nan  # not every customer numbered: not the IDs, nor a feature
    schema = infer_schema(with_gaps)
    assert schema.id_column is None and schema.column("Kundennummer").role == "excluded"


def test_id_like_names_of_features_and_small_tables_keep_their_numbers(tmp_path):
    # only the ID column keeps its text: 'Family_Number' and 'Years_No' (named like identifiers, but counts)
    # stay numeric features; and a small table's all-different whole numbers (a tenure, a rank) are no IDs
    from conftest import SHIPPED_TRAIN

    table = pd.read_csv(SHIPPED_TRAIN).rename(columns={"Family_Size": "Family_Number", "Work_Experience": "Years_No"})
    table.to_csv(tmp_path / "train.csv", index=False)
    config = RunConfig()
    config.data.train, config.data.test = str(tmp_path / "train.csv"), None
    train_t, _, schema = load_tables(config)
    assert schema.column("Family_Number").role == schema.column("Years_No").role == "numeric"
    assert schema.id_column == "ID" and schema.column("ID").dtype == "text"
    small = customer_table(40, seed=3).drop(columns="ID")
    small["Tenure_Months"] = np.random.default_rng(0).permutation(80)[:40] + 1
    assert infer_schema(small).column("Tenure_Months").role == "numeric"
