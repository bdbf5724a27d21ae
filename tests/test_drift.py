"""Drift between a reference table and new customers: per feature, as a whole, by segment, returning customers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import SHIPPED_TEST, SHIPPED_TRAIN, make_customers
from custseg.cli import main
from custseg.monitoring import DRIFT_COLUMNS, drift_markdown, drift_report, population_stability_index
from custseg.schema import infer_schema


@pytest.fixture(scope="module")
def shipped():
    from custseg.io.reading import read_table

    train = read_table(SHIPPED_TRAIN)
    test = read_table(SHIPPED_TEST)
    schema = infer_schema(train.frame, integer_columns=train.integer_columns)
    return train.frame, test.frame, schema


def test_age_shifted_by_five_years_is_the_only_drift(shipped):
    train, test, schema = shipped
    older = test.assign(Age=test["Age"] + 5)
    report = drift_report(train, older, schema, classifier=False)
    assert report.drifted_features == ["Age"]
    assert not report.features.loc[report.features["feature"] != "Age", "drifted"].any()
    age = report.features[(report.features["feature"] == "Age") & (report.features["kind"] == "numeric")].iloc[0]
    assert age["effect"] == pytest.approx(5 / train["Age"].std(ddof=0), abs=0.03)


def test_shipped_test_table_is_indistinguishable_from_training(shipped):
    train, test, schema = shipped
    report = drift_report(train, test, schema)
    c = report.classifier
    assert c["low"] <= 0.5 <= c["high"]
    assert not c["drifted"]
    assert report.drifted_features == []
    # 88.8% of the test customers are returning ones; their categories never change, their age mostly does
    r = report.returning
    assert r["ids_in_both"] == 2332
    assert r["share_of_new"] == pytest.approx(0.888, abs=0.001)
    assert r["per_feature"]["Profession"] == 1.0
    assert r["per_feature"]["Age"] < 0.2


def test_classifier_sees_a_shift_no_single_feature_shows(shipped):
    # swap professions between two groups: each feature's marginal is unchanged, their relation is not
    train, test, schema = shipped
    swapped = test.copy()
    rng = np.random.default_rng(0)
    swapped["Age"] = np.where(swapped["Ever_Married"] == "Yes", rng.integers(18, 30, len(swapped)),
                              rng.integers(60, 89, len(swapped)))
    report = drift_report(train, swapped, schema, n_bootstrap=50)
    assert report.classifier["drifted"]
    assert report.classifier["low"] > 0.6


def test_categories_and_missingness_drift_on_a_table_of_our_own():
    ref = make_customers(1500, seed=1)
    new = make_customers(1500, seed=2, start_id=5000)
    new.loc[new["Gender"] == "Female", "Spending"] = "High"  # a category's share moves
    new.loc[new.index[:600], "Income"] = np.nan  # 40% of a column goes missing
    schema = infer_schema(ref)
    report = drift_report(ref, new, schema, classifier=False)
    f = report.features.set_index(["feature", "kind"])
    assert f.loc[("Spending", "categorical"), "drifted"]
    assert f.loc[("Spending", "categorical"), "effect"] > 0.1
    assert f.loc[("Income", "missing"), "drifted"]
    assert f.loc[("Income", "missing"), "effect"] == pytest.approx(0.4, abs=0.03)
    assert not f.loc[("Age", "numeric"), "drifted"]
    assert not f.loc[("Gender", "categorical"), "drifted"]
    assert list(report.features.columns) == DRIFT_COLUMNS


def test_segment_shares_shift():
    ref = make_customers(600, seed=1)
    new = make_customers(600, seed=2, start_id=5000)
    schema = infer_schema(ref)
    same = drift_report(ref, new, schema, reference_segments=ref["Segment"], new_segments=new["Segment"],
                        classifier=False)
    assert not same.segment_test["drifted"]
    moved = np.where(np.arange(600) < 400, "G0", new["Segment"])
    shifted = drift_report(ref, new, schema, reference_segments=ref["Segment"], new_segments=moved,
                           classifier=False)
    assert shifted.segment_test["drifted"]
    g0 = shifted.segments.set_index("segment").loc["G0"]
    assert g0["new_share"] > 0.66 and g0["difference"] > 0.3
    assert "## Segment shares" in drift_markdown(shifted)


def test_population_stability_index():
    assert population_stability_index([10, 20, 30], [10, 20, 30]) == 0.0
    assert population_stability_index([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5))


def test_drift_command_writes_csv_markdown_and_figure(tmp_path, capsys):
    older = pd.read_csv(SHIPPED_TEST)
    older["Age"] = older["Age"] + 5
    new_path = tmp_path / "older.csv"
    older.to_csv(new_path, index=False)
    code = main(["drift", "--reference", str(SHIPPED_TRAIN), "--new", str(new_path), "--output", str(tmp_path / "d")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Drifted features: Age (of 9)" in printed
    csv = pd.read_csv(tmp_path / "d" / "drift.csv")
    assert list(csv.columns) == ["feature", "kind", "test", "statistic", "p_value", "psi", "effect", "drifted"]
    assert csv.loc[csv["drifted"], "feature"].tolist() == ["Age"]
    md = (tmp_path / "d" / "drift.md").read_text()
    assert "**Drifted features:** Age." in md and "## Returning customers" in md
    assert (tmp_path / "d" / "plots" / "drift.png").read_bytes()[:4] == b"\x89PNG"


def test_drift_command_names_a_missing_column(tmp_path, capsys):
    ref, new = make_customers(200, seed=1), make_customers(100, seed=2).drop(columns="Income")
    ref.to_csv(tmp_path / "ref.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    code = main(["drift", "--reference", str(tmp_path / "ref.csv"), "--new", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "d")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "'Income'" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
