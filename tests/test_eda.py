"""custseg.eda, the statistics of the exploratory notebook, on small tables built here.

Kept apart from test_notebook.py so that they run where the notebook tools (nbclient,
a Jupyter kernel) are not installed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custseg import eda
from custseg.exceptions import DataError



def test_eta_squared_and_kruskal_wallis():
    assert eda.eta_squared([1.0, 2, 3, 4], ["a", "a", "b", "b"]) == pytest.approx(0.8)
    assert np.isnan(eda.eta_squared([1.0, 1, 1], ["a", "b", "b"]))  # no variance to explain
    # the row with a missing value is left out: 5 | 5, 7 -> between 2/3, total 8/3
    assert eda.eta_squared([5.0, np.nan, 5.0, 7.0], ["a", "a", "b", "b"]) == pytest.approx(0.25)
    kw = eda.kruskal_wallis([1.0, 2, 3, 10, 11, 12], list("aaabbb"))
    assert kw["n"] == 6 and 0 < kw["p_value"] < 0.1
    assert kw["epsilon_squared"] == pytest.approx(kw["h"] / 5)
    assert np.isnan(eda.kruskal_wallis([1.0, 2, 3], ["a", "a", "a"])["h"])


def test_eta_of_a_yes_no_feature_equals_its_cramers_v():
    """What lets the notebook rank numeric and categorical features on one scale."""
    rng = np.random.default_rng(0)
    segment = rng.choice(list("ABCD"), 400)
    married = np.where(rng.random(400) < np.where(segment == "D", 0.2, 0.7), "Yes", "No")
    table = pd.DataFrame({"Ever_Married": married, "married_code": (married == "Yes").astype(float)})
    effects = eda.association_with_label(table, segment, numeric=["married_code"],
                                         categorical=["Ever_Married"]).set_index("feature")
    assert effects.loc["married_code", "effect"] == pytest.approx(effects.loc["Ever_Married", "effect"])
    assert effects.loc["Ever_Married", "measure"] == "Cramér's V"
    assert effects.loc["married_code", "measure"] == "eta"


def test_association_with_label_ranks_features_and_names_missing_columns():
    table = pd.DataFrame({"Age": [20.0, 22, 60, 64, 21, 62], "Gender": ["Male", "Female"] * 3})
    effects = eda.association_with_label(table, list("DDCCDC"), numeric=["Age"], categorical=["Gender"])
    assert effects["feature"].tolist() == ["Age", "Gender"]
    with pytest.raises(DataError, match="'Profession'"):
        eda.association_with_label(table, list("DDCCDC"), categorical=["Profession"])
    with pytest.raises(DataError, match="one value per row"):
        eda.association_with_label(table, list("DDC"), numeric=["Age"])


def test_cramers_v_matrix_is_symmetric_with_unit_diagonal():
    table = pd.DataFrame({"Ever_Married": ["Yes", "Yes", "No", "No", None],
                          "Spending_Score": ["High", "High", "Low", "Low", "Low"],
                          "Gender": ["Male", "Female", "Male", "Female", "Male"]})
    v = eda.cramers_v_matrix(table, list(table.columns))
    assert np.allclose(v.to_numpy(), v.to_numpy().T) and np.allclose(np.diag(v), 1)
    assert v.loc["Ever_Married", "Spending_Score"] == pytest.approx(1.0)
    assert v.loc["Ever_Married", "Gender"] == pytest.approx(0.0)


def test_iqr_outliers_counts_both_tails():
    out = eda.iqr_outliers(pd.DataFrame({"Age": [-50.0, 30, 31, 32, 33, 34, 35, 120, np.nan]}), ["Age"]).iloc[0]
    assert (out.n_below, out.n_above, out.n_outliers) == (1, 1, 2)
    assert out.share == pytest.approx(2 / 8)


def test_missing_patterns_count_rows_per_combination():
    table = pd.DataFrame({"Work_Experience": [np.nan, np.nan, 1.0, np.nan],
                          "Family_Size": [np.nan, 2.0, 3.0, 4.0]})
    patterns = eda.missing_patterns(table)
    assert patterns.iloc[0][["Work_Experience", "Family_Size", "count"]].tolist() == [True, False, 2]
    assert patterns["count"].sum() == len(table)
    assert patterns["share"].sum() == pytest.approx(1.0)


def test_standardized_mean_difference_and_total_variation_distance():
    assert eda.standardized_mean_difference([0.0, 2.0, 4.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert eda.standardized_mean_difference([3.0, 3.0], [3.0, 3.0]) == 0.0
    assert eda.total_variation_distance(["Low"] * 3 + ["High"], ["Low", "High", "High", "High"]) == pytest.approx(0.5)
    assert eda.total_variation_distance(["Cat_1", "Cat_2"], ["Cat_2", "Cat_1"]) == 0.0
    assert eda.total_variation_distance(["A"], ["B"]) == 1.0


def test_compare_distributions_reports_each_feature_with_its_measure():
    train = pd.DataFrame({"Age": [20.0, 30, 40, 50], "Gender": ["Male", "Male", "Female", "Female"]})
    test = pd.DataFrame({"Age": [30.0, 40, 50, 60], "Gender": ["Male", "Male", "Male", np.nan]})
    out = eda.compare_distributions(train, test, numeric=["Age"], categorical=["Gender"]).set_index("feature")
    assert out.loc["Age", "measure"] == "SMD" and out.loc["Age", "difference"] > 0
    assert out.loc["Gender", "difference"] == pytest.approx(0.5)
    assert out.loc["Gender", "missing_other"] == pytest.approx(0.25)


def test_compare_returning_customers_matches_on_id():
    train = pd.DataFrame({"ID": [1, 2, 3], "Age": [30.0, 40, 50], "Profession": ["Artist", np.nan, "Doctor"]})
    test = pd.DataFrame({"ID": [3, 2, 9], "Age": [52.0, 40, 20], "Profession": ["Doctor", np.nan, "Lawyer"]})
    out = eda.compare_returning_customers(train, test, id_column="ID", columns=["Age", "Profession"],
                                          numeric=["Age"]).set_index("feature")
    assert out.loc["Age", "n_pairs"] == 2
    assert out.loc["Age", "share_identical"] == 0.5
    assert out.loc["Age", "mean_change"] == 1.0  # (+2 and 0) / 2
    assert out.loc["Profession", "share_identical"] == 1.0  # equal, or missing in both rows
    with pytest.raises(DataError, match="'ID' must be unique"):
        eda.compare_returning_customers(pd.concat([train, train]), test, id_column="ID", columns=["Age"])
