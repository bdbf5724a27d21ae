import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from custseg import CustomerPreprocessor, NotFittedError
from sklearn.exceptions import NotFittedError as SklearnNotFittedError


def _table():
    return pd.DataFrame({
        "Age": [20.0, 40.0, np.nan, 60.0],
        "Profession": ["Doctor", "Artist", "Artist", np.nan],
        "Score": ["Low", "High", "Low", "Low"],
    })


def test_imputes_median_and_mode_then_label_encodes_in_sorted_order():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    assert pre.medians_ == {"Age": 40.0}
    assert pre.modes_ == {"Profession": "Artist", "Score": "Low"}
    assert pre.categories_["Profession"] == ["Artist", "Doctor"]  # LabelEncoder order
    codes = pre.transform(_table()) * pre.scale_ + pre.mean_
    np.testing.assert_allclose(codes[:, 0], [20, 40, 40, 60])
    np.testing.assert_allclose(codes[:, 1], [1, 0, 0, 0])  # the missing profession takes the mode
    np.testing.assert_allclose(codes[:, 2], [1, 0, 1, 1])


def test_output_is_standardized_on_training_rows_only():
    train = _table()
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(train)
    out = pre.transform(train)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1)
    shifted = train.assign(Age=train["Age"] + 100)
    # transform does not refit: the shifted ages come out shifted by 100 / training scale
    np.testing.assert_allclose(pre.transform(shifted)[:, 0] - out[:, 0],
                               np.where(train["Age"].isna(), 0, 100 / pre.scale_[0]))


def test_unseen_category_maps_to_training_mode_and_is_counted():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    new = pd.DataFrame({"Age": [30.0, 30.0], "Profession": ["Pilot", "Doctor"], "Score": ["Medium", "Medium"]})
    out = pre.transform(new) * pre.scale_ + pre.mean_
    np.testing.assert_allclose(out[:, 1], [0, 1])  # Pilot -> Artist (mode, code 0)
    np.testing.assert_allclose(out[:, 2], [1, 1])  # Medium -> Low (mode, code 1)
    assert pre.unseen_categories(new) == {"Profession": {"Pilot": 1}, "Score": {"Medium": 2}}


def test_feature_names_follow_table_order_and_missing_column_is_named():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Score", "Profession"]).fit(_table())
    assert list(pre.get_feature_names_out()) == ["Age", "Profession", "Score"]
    with pytest.raises(Exception, match="columns are missing: {'Age'}"):
        pre.transform(_table().drop(columns="Age"))


def test_ordinal_codes_follow_declared_order():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession"],
                               ordinal={"Score": ["Low", "High"]}).fit(_table())
    codes = pre.transform(_table()) * pre.scale_ + pre.mean_
    np.testing.assert_allclose(codes[:, 2], [0, 1, 0, 0])


def test_round_trip_through_plain_data_gives_identical_output():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    again = CustomerPreprocessor.from_dict(pre.to_dict())
    np.testing.assert_array_equal(again.transform(_table()), pre.transform(_table()))


def test_sklearn_contract_clone_and_not_fitted():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession"])
    assert clone(pre).get_params() == pre.get_params()
    with pytest.raises(NotFittedError):
        pre.transform(_table())
    with pytest.raises(SklearnNotFittedError):
        pre.transform(_table())


def test_inverse_transform_returns_original_units():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    back = pre.inverse_transform(pre.transform(_table()))
    assert back["Profession"].tolist() == ["Doctor", "Artist", "Artist", "Artist"]
    np.testing.assert_allclose(back["Age"], [20, 40, 40, 60])
