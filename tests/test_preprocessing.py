import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from custseg import CustomerPreprocessor, DataError, NotFittedError, SchemaError
from custseg.schema import category_text

from conftest import SHIPPED_TEST, SHIPPED_TRAIN, make_customers


def _table():
    return pd.DataFrame({
        "Age": [20.0, 40.0, np.nan, 60.0],
        "Profession": ["Doctor", "Artist", "Artist", np.nan],
        "Score": ["Low", "High", "Low", "Low"],
    })


class _ReferencePreprocessor:
    """custseg 0.2's hand-written preprocessor (the code before the stock parts), kept as the oracle."""

    def __init__(self, numeric, categorical, ordinal=None):
        self.numeric, self.categorical, self.ordinal = numeric, categorical, dict(ordinal or {})

    @staticmethod
    def _text(col):
        return col.map(lambda v: np.nan if pd.isna(v) else category_text(v))

    def fit(self, X):
        wanted = set(self.numeric) | set(self.categorical) | set(self.ordinal)
        self.names = [c for c in X.columns if c in wanted]
        self.medians, self.modes, self.cats = {}, {}, {}
        for name in self.names:
            if name in self.numeric:
                values = pd.to_numeric(X[name], errors="raise").astype("float64")
                self.medians[name] = float(np.nanmedian(values)) if values.notna().any() else 0.0
            else:
                counts = self._text(X[name]).value_counts(dropna=True)
                cats = list(self.ordinal[name]) if name in self.ordinal else sorted(counts.index.tolist())
                top = counts.max() if len(counts) else 0
                self.modes[name] = sorted(v for v, c in counts.items() if c == top)[0] if len(counts) else cats[0]
                self.cats[name] = cats
        codes = self._encode(X)
        self.mean = codes.mean(axis=0)
        scale = codes.std(axis=0)
        scale[scale == 0.0] = 1.0
        self.scale = scale
        return self

    def _encode(self, X):
        out = np.empty((len(X), len(self.names)), dtype="float64")
        for j, name in enumerate(self.names):
            if name in self.numeric:
                values = pd.to_numeric(X[name], errors="coerce").astype("float64").to_numpy()
                out[:, j] = np.where(np.isnan(values), self.medians[name], values)
            else:
                lookup = {c: i for i, c in enumerate(self.cats[name])}
                out[:, j] = self._text(X[name]).map(lookup).fillna(lookup[self.modes[name]]).to_numpy(dtype="float64")
        return out

    def transform(self, X):
        return (self._encode(X) - self.mean) / self.scale


SHIPPED_ROLES = dict(numeric=["Age", "Work_Experience", "Family_Size"],
                     categorical=["Gender", "Ever_Married", "Graduated", "Profession", "Spending_Score", "Var_1"])


def _assert_same_as_reference(train, tables, **roles):
    ours = CustomerPreprocessor(**roles).fit(train)
    reference = _ReferencePreprocessor(**roles).fit(train)
    rebuilt = CustomerPreprocessor.from_dict(json.loads(json.dumps(ours.to_dict())))
    for table in [train, *tables]:
        expected = reference.transform(table)
        assert np.abs(ours.transform(table) - expected).max() == 0.0
        assert np.abs(rebuilt.transform(table) - expected).max() == 0.0


def test_identical_to_the_hand_written_preprocessor_on_the_shipped_data():
    train, test = pd.read_csv(SHIPPED_TRAIN), pd.read_csv(SHIPPED_TEST)
    _assert_same_as_reference(train, [test], **SHIPPED_ROLES)


def test_identical_to_the_hand_written_preprocessor_with_unseen_and_missing_categories():
    train = make_customers(300, seed=1)
    new = make_customers(80, seed=2)
    new.loc[::3, "Profession"] = "Astronaut"  # unseen
    new.loc[1::5, "Spending"] = np.nan  # missing
    new.loc[2::7, "Gender"] = None
    new.loc[::4, "Age"] = np.nan
    roles = dict(numeric=["Age", "Income", "Family_Size"], categorical=["Gender", "Profession"],
                 ordinal={"Spending": ["Low", "Average", "High"]})
    _assert_same_as_reference(train, [new], **roles)
    # numbers as categories: 1.0 and "1" are the same category
    codes = pd.DataFrame({"Plan": [1.0, 2.0, np.nan, 2.0]})
    text = pd.DataFrame({"Plan": ["1", "2", "3", None]})
    _assert_same_as_reference(codes, [text], numeric=[], categorical=["Plan"])


def test_imputes_median_and_mode_then_label_encodes_in_sorted_order():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    assert pre.medians_ == {"Age": 40.0}
    assert pre.modes_ == {"Profession": "Artist", "Score": "Low"}
    assert pre.categories_["Profession"] == ["Artist", "Doctor"]  # LabelEncoder order
    codes = pre.transform(_table()) * pre.scale_ + pre.mean_
    np.testing.assert_allclose(codes[:, 0], [20, 40, 40, 60])
    np.testing.assert_allclose(codes[:, 1], [1, 0, 0, 0])  # the missing profession takes the mode
    np.testing.assert_allclose(codes[:, 2], [1, 0, 1, 1])


def test_built_from_stock_parts_whose_attributes_are_the_state():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    assert isinstance(pre.encoder_, ColumnTransformer)
    assert pre.encoder_.named_transformers_["Age"].statistics_.tolist() == [40.0]
    assert pre.encoder_.named_transformers_["Profession"].named_steps["encode"].categories_[0].tolist()[:2] == \
        ["Artist", "Doctor"]
    state = pre.to_dict()
    assert state["mean"] == pre.scaler_.mean_.tolist() and state["medians"] == {"Age": 40.0}
    json.dumps(state)  # plain data


def test_stacked_parts_encode_as_the_fitted_column_branches_do():
    # transform calls one imputer for the numeric columns and one encoder for the category columns;
    # their output must be the ColumnTransformer's own, branch by branch (missing values included)
    train = make_customers(300, seed=1)
    roles = dict(numeric=["Age", "Income", "Family_Size"], categorical=["Gender", "Profession"],
                 ordinal={"Spending": ["Low", "Average", "High"]})
    new = make_customers(80, seed=2)[["Spending", "Age", "Gender", "Income", "Profession", "Family_Size"]]
    new.loc[1::5, "Spending"] = np.nan
    new.loc[2::7, "Gender"] = None
    new.loc[::4, "Age"] = np.nan
    new.loc[3, "Profession"], new.loc[5, "Gender"] = "Astronaut", "Other"  # unseen: imputed as missing
    for pre in (fitted := CustomerPreprocessor(**roles).fit(train),
                CustomerPreprocessor.from_dict(json.loads(json.dumps(fitted.to_dict())))):
        prepared = pd.DataFrame({c: new[c].astype("float64") if pre.kinds_[c] == "numeric"
                                 else new[c].map(lambda v: np.nan if pd.isna(v) or category_text(v) not in
                                                 pre.categories_[c] else category_text(v))
                                 for c in pre.feature_names_in_})
        by_branch = pre.encoder_.transform(prepared)
        assert not np.isnan(by_branch).any()
        assert np.array_equal(pre._encode(new), by_branch)
        # transform's scaling is the fitted StandardScaler's, to the byte, for the table and for one row
        assert pre.transform(new).tobytes() == pre.scaler_.transform(by_branch).tobytes()
        assert pre.transform(new.iloc[[3]]).tobytes() == pre.scaler_.transform(by_branch[[3]]).tobytes()
        assert pre.numeric_imputer_.statistics_.tolist() == [pre.medians_[c] for c in roles["numeric"]]
        assert [c.tolist() for c in pre.category_encoder_.named_steps["encode"].categories_] == \
            [pre.categories_[c] for c in ("Gender", "Profession", "Spending")]


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
    with pytest.raises(SchemaError, match="columns are missing: {'Age'}"):
        pre.transform(_table().drop(columns="Age"))


def test_ordinal_codes_follow_declared_order():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession"],
                               ordinal={"Score": ["Low", "High"]}).fit(_table())
    codes = pre.transform(_table()) * pre.scale_ + pre.mean_
    np.testing.assert_allclose(codes[:, 2], [0, 1, 0, 0])


@pytest.mark.parametrize("step", ["fit", "transform"])
def test_text_in_a_numeric_column_is_named(step):
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession"])
    bad = _table().assign(Age=["20", "forty", None, "60"])
    if step == "transform":
        pre.fit(_table())
    with pytest.raises(DataError, match="column 'Age' is numeric but holds the text 'forty'"):
        getattr(pre, step)(bad)


def test_infinite_values_are_refused_and_missing_ones_imputed():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession"])
    with pytest.raises(DataError, match="column 'Age' holds the infinite value inf"):
        pre.fit(_table().assign(Age=[20.0, np.inf, np.nan, 1.0]))
    X = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, 6.0]])
    out = CustomerPreprocessor().fit(X).transform(X)
    assert not np.isnan(out).any()
    with pytest.raises(DataError, match="column 'x1' holds the infinite value -inf"):
        CustomerPreprocessor().fit(X).transform(np.array([[1.0, -np.inf]]))


def test_numpy_array_is_a_table_of_numeric_columns():
    X = np.array([[1.0, 10.0], [3.0, 30.0], [np.nan, 20.0]])
    pre = CustomerPreprocessor().fit(X)
    assert pre.kinds_ == {"x0": "numeric", "x1": "numeric"} and pre.medians_ == {"x0": 2.0, "x1": 20.0}
    np.testing.assert_array_equal(pre.transform(X), pre.transform(pd.DataFrame(X, columns=["x0", "x1"])))
    with pytest.raises(SchemaError, match="X has 3 features, but CustomerPreprocessor is expecting 2"):
        pre.transform(np.zeros((2, 3)))
    with pytest.raises(DataError, match="no rows"):
        CustomerPreprocessor().fit(pd.DataFrame({"a": []}))


def test_round_trip_through_plain_data_gives_identical_output():
    pre = CustomerPreprocessor(numeric=["Age"], categorical=["Profession", "Score"]).fit(_table())
    again = CustomerPreprocessor.from_dict(pre.to_dict())
    np.testing.assert_array_equal(again.transform(_table()), pre.transform(_table()))
    assert again.get_params() == pre.get_params() and again.modes_ == pre.modes_


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
