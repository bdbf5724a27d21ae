"""Imputation, label encoding and scaling of customer tables, built from scikit-learn's parts.

:class:`CustomerPreprocessor` is the reference design's preprocessing, assembled from
stock scikit-learn transformers, one branch per column of a ``ColumnTransformer`` (so
the output keeps the table's column order):

* numeric column: ``SimpleImputer(strategy="median")``;
* categorical column: ``SimpleImputer(strategy="most_frequent")`` (ties: the first
  category in sorted order) then ``OrdinalEncoder`` (categories in sorted order, as
  sklearn's ``LabelEncoder``); a category unseen in training is treated as missing,
  so it takes the training mode too;
* ordinal column: the same with the categories in their declared order;

then a ``StandardScaler`` over every feature, all fitted on training rows only.

Category values are compared as their canonical text
(:func:`custseg.schema.category_text`: ``1.0`` and ``"1"`` are the same category). The
text is computed once per distinct value, and ``transform`` encodes the distinct values
of each column only, then spreads the codes back over the rows: a million rows cost a
few factorisations, not a million Python calls.

``transform`` stacks the columns of one kind into one call of the same stock
transformers (``numeric_imputer_``, ``category_encoder_``, built from the branches'
fitted attributes): they work column by column, so the output is the branches' own,
and a one-customer request pays sklearn's input validation twice, not once per column.

The fitted state is read from those parts' learned attributes (``statistics_``,
``categories_``, ``mean_``, ``scale_``) into plain JSON (:meth:`to_dict`), and
:meth:`from_dict` rebuilds the parts from it. No pickle.

A NumPy array is read as a table of numeric columns named ``x0``, ``x1``, ...
Missing values are imputed (NaN is allowed); infinite values and text in a numeric
column are refused with a :class:`~custseg.exceptions.DataError` naming the column and
the value.
"""

from __future__ import annotations


from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_array

from .exceptions import ConfigError, DataError, NotFittedError, SchemaError
from .schema import category_codes

__all__ = ["CustomerPreprocessor"]


class CustomerPreprocessor(TransformerMixin, BaseEstimator):
    """Impute, encode and standardize the feature columns of a customer table.

    Parameters
    ----------
    numeric : list of str, optional
        Numeric columns (median imputation). If both ``numeric`` and
        ``categorical`` are None, numeric dtypes are numeric and the rest categorical.
    categorical : list of str, optional
        Categorical columns (most-frequent imputation, codes of the sorted categories).
    ordinal : dict, optional
        Ordinal column -> categories from lowest to highest (most-frequent imputation,
        codes in that order).

    Attributes
    ----------
    encoder_ : sklearn.compose.ColumnTransformer
        One fitted branch per feature column, named after the column.
    numeric_imputer_ : sklearn.impute.SimpleImputer or None
        The numeric branches' medians, all numeric columns at once (what ``transform`` calls).
    category_encoder_ : sklearn.pipeline.Pipeline or None
        The category branches' modes and categories, all category columns at once.
    scaler_ : sklearn.preprocessing.StandardScaler
    feature_names_in_ : ndarray of str
        The feature columns, in table order; the order of the output.
    n_features_in_ : int
    kinds_ : dict
        Column -> "numeric", "categorical" or "ordinal".
    medians_ : dict
        Numeric column -> training median (read from ``encoder_``).
    modes_ : dict
        Categorical / ordinal column -> most frequent training category.
    categories_ : dict
        Categorical / ordinal column -> list of categories; a category's code is its position.
    mean_, scale_ : ndarray
        Standard scaling of the encoded features (``scaler_``'s).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Age": [20, 40, None], "Gender": ["Male", "Female", "Male"]})
    >>> pre = CustomerPreprocessor(numeric=["Age"], categorical=["Gender"]).fit(df)
    >>> pre.transform(df).shape
    (3, 2)
    >>> list(pre.get_feature_names_out())
    ['Age', 'Gender']
    """

    _parameter_constraints = {"numeric": [list, tuple, None], "categorical": [list, tuple, None],
                              "ordinal": [dict, None]}

    def __init__(self, numeric=None, categorical=None, ordinal=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed
        return tags

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X, y=None) -> "CustomerPreprocessor":
        """Learn medians, modes, categories and scaling from the rows of ``X``.

        Parameters
        ----------
        X : DataFrame or ndarray of shape (n_rows, n_columns)
            Columns not named in the parameters are ignored (when any is named).
        y : ignored
        """
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(str(exc)) from None
        frame = _as_frame(X)
        numeric, categorical, ordinal = self._roles(frame)
        wanted = set(numeric) | set(categorical) | set(ordinal)
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        names = [c for c in frame.columns if c in wanted]
        kinds = {c: ("numeric" if c in numeric else "ordinal" if c in ordinal else "categorical") for c in names}
        prepared = pd.DataFrame({c: _numeric_values(frame, c) if kinds[c] == "numeric"
                                 else _category_text(frame[c]) for c in names}, index=frame.index)
        branches = [(c, _branch(kinds[c], [ordinal[c]] if c in ordinal else None), [c]) for c in names]
        self.encoder_ = ColumnTransformer(branches, remainder="drop").fit(prepared)
        self._set_learned(names, kinds)
        self.scaler_ = StandardScaler().fit(self._encode(prepared))
        self.mean_, self.scale_ = self.scaler_.mean_, self.scaler_.scale_
        return self

    def _roles(self, X: pd.DataFrame) -> tuple[list[str], list[str], dict[str, list[str]]]:
        ordinal = dict(self.ordinal or {})
        if self.numeric is None and self.categorical is None:
            numeric = [c for c in X.columns if c not in ordinal and pd.api.types.is_numeric_dtype(X[c])
                       and not pd.api.types.is_bool_dtype(X[c])]
            categorical = [c for c in X.columns if c not in ordinal and c not in numeric]
            return numeric, categorical, ordinal
        return list(self.numeric or []), list(self.categorical or []), ordinal

    def _set_learned(self, names: list[str], kinds: dict[str, str]) -> None:
        """The readable views of the fitted encoder branches, and the stacked parts that transform with them."""
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = len(names)
        self.kinds_ = dict(kinds)
        self.medians_, self.modes_, self.categories_ = {}, {}, {}
        for name in names:
            branch = self.encoder_.named_transformers_[name]
            if kinds[name] == "numeric":
                self.medians_[name] = float(branch.statistics_[0])
            else:
                cats = branch.named_steps["encode"].categories_[0].tolist()
                mode = branch.named_steps["impute"].statistics_[0]
                if mode not in cats:
                    raise DataError(f"ordinal column {name!r}: its most frequent value {mode!r} is not one of its "
                                    f"declared levels {cats}; add it to the order or fix the values")
                self.categories_[name] = cats
                self.modes_[name] = mode
        self.numeric_imputer_, self.category_encoder_ = _stacked_parts(names, kinds, self.medians_, self.modes_,
                                                                       self.categories_)

    # -- transforming -------------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Encoded, scaled features (float64, one column per feature, in table order)."""
        self._check_fitted()
        frame = _as_frame(X, self.n_features_in_ if _is_array(X) else None)
        missing = [c for c in self.feature_names_in_ if c not in frame.columns]
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        encoded = self._encode(frame)
        # StandardScaler.transform's own arithmetic on its fitted numbers (the bytes are its; a test
        # compares them): its input checks cost a one-customer request ~1 ms and _encode's output is ours
        encoded -= self.scaler_.mean_
        encoded /= self.scaler_.scale_
        return encoded

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Codes before scaling, in feature order; categories are encoded once per distinct value.

        The numbers of ``numeric_imputer_`` and ``category_encoder_`` (medians; modes and
        category positions), applied as those stock transformers do, so the same values
        without their input checks on every call (a one-customer request paid ~3 ms for
        them); a test compares the output with theirs.
        """
        names, kinds = self.feature_names_in_, self.kinds_
        out = np.empty((len(frame), len(names)), dtype="float64")
        numeric = [j for j, name in enumerate(names) if kinds[name] == "numeric"]
        if numeric:
            values = np.column_stack([_numeric_values(frame, names[j]) for j in numeric])
            gaps = np.isnan(values)
            values[gaps] = np.broadcast_to(self.numeric_imputer_.statistics_, values.shape)[gaps]
            out[:, numeric] = values
        columns = [j for j, name in enumerate(names) if kinds[name] != "numeric"]
        if not columns:
            return out
        modes = self.category_encoder_.named_steps["impute"].statistics_
        levels = self.category_encoder_.named_steps["encode"].categories_
        for k, j in enumerate(columns):
            codes, text = category_codes(frame[names[j]])
            position = {v: float(i) for i, v in enumerate(levels[k].tolist())}
            # the code of each distinct value, then one for a missing cell (code -1 picks the last);
            # unseen categories count as missing: both take the imputed mode's position
            fill = position[modes[k]]
            encoded = np.array([position.get(v, fill) for v in text.tolist()] + [fill], dtype="float64")
            out[:, j] = encoded[codes]
        return out

    def inverse_transform(self, Z: np.ndarray) -> pd.DataFrame:
        """Back to original units and categories (codes rounded to the nearest category)."""
        self._check_fitted()
        codes = self.scaler_.inverse_transform(np.asarray(Z, dtype="float64"))
        out = {}
        for j, name in enumerate(self.feature_names_in_):
            if self.kinds_[name] == "numeric":
                out[name] = codes[:, j]
            else:
                cats = self.categories_[name]
                idx = np.clip(np.rint(codes[:, j]), 0, len(cats) - 1).astype(int)
                out[name] = np.asarray(cats, dtype=object)[idx]
        return pd.DataFrame(out)

    def unseen_categories(self, X: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Categories of ``X`` never seen in training, per column, with their counts.

        ``transform`` maps each of them to the training mode of its column.
        """
        self._check_fitted()
        frame = _as_frame(X)
        report: dict[str, dict[str, int]] = {}
        for name, kind in self.kinds_.items():
            if kind == "numeric" or name not in frame.columns:
                continue
            codes, distinct = category_codes(frame[name])
            counts = pd.Series(np.bincount(codes[codes >= 0], minlength=len(distinct)), index=distinct)
            counts = counts.groupby(level=0).sum()
            unseen = counts[~counts.index.isin(self.categories_[name]) & (counts > 0)]
            if len(unseen):
                report[name] = {str(k): int(v) for k, v in unseen.sort_index().items()}
        return report

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The feature columns, in output order."""
        self._check_fitted()
        return self.feature_names_in_.copy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "scaler_"):
            raise NotFittedError("This CustomerPreprocessor instance is not fitted yet. Call 'fit' first.")

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Fitted state as plain JSON-able data, read from the fitted scikit-learn parts."""
        self._check_fitted()
        return {
            "params": {"numeric": _plain(self.numeric), "categorical": _plain(self.categorical),
                       "ordinal": None if self.ordinal is None else {k: list(v) for k, v in self.ordinal.items()}},
            "feature_names_in": [str(c) for c in self.feature_names_in_],
            "kinds": self.kinds_,
            "medians": self.medians_,
            "modes": self.modes_,
            "categories": self.categories_,
            "mean": self.scaler_.mean_.tolist(),
            "scale": self.scaler_.scale_.tolist(),
            "var": self.scaler_.var_.tolist(),
            "n_samples_seen": int(np.max(self.scaler_.n_samples_seen_)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CustomerPreprocessor":
        """Rebuild a fitted preprocessor from :meth:`to_dict`'s data.

        Each encoder branch is fitted on one synthetic row holding the saved median or
        mode, with the saved categories given explicitly, which reproduces its learned
        attributes exactly; the scaler takes the saved mean and scale.
        """
        pre = cls(**data["params"])
        names = list(data["feature_names_in"])
        kinds = dict(data["kinds"])
        row, branches = {}, []
        for name in names:
            if kinds[name] == "numeric":
                row[name] = [float(data["medians"][name])]
                branches.append((name, _branch("numeric", None), [name]))
            else:
                cats = list(data["categories"][name])
                row[name] = np.array([data["modes"][name]], dtype=object)
                branches.append((name, _branch(kinds[name], [cats]), [name]))
        pre.encoder_ = ColumnTransformer(branches, remainder="drop").fit(pd.DataFrame(row))
        mean = np.asarray(data["mean"], dtype="float64")
        scale = np.asarray(data["scale"], dtype="float64")
        if mean.shape != (len(names),) or scale.shape != (len(names),):
            raise ValueError("preprocessor mean/scale do not match its feature list")
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = mean, scale
        scaler.var_ = np.asarray(data.get("var", (scale ** 2).tolist()), dtype="float64")
        scaler.n_features_in_ = len(names)
        scaler.n_samples_seen_ = np.int64(data.get("n_samples_seen", 0))
        pre.scaler_ = scaler
        pre._set_learned(names, kinds)
        pre.mean_, pre.scale_ = scaler.mean_, scaler.scale_
        return pre


def _branch(kind: str, categories) -> Any:
    """The stock transformer of one column, or of several of one kind at once.

    ``categories`` holds one list of categories per column; None means the sorted training values.
    """
    if kind == "numeric":
        # keep_empty_features: a column missing in every training row imputes 0 instead of vanishing
        return SimpleImputer(strategy="median", keep_empty_features=True)
    return Pipeline([
        ("impute", SimpleImputer(strategy="most_frequent")),
        # values outside a declared order are counted for the mode but are no level; transform
        # never shows them to the encoder (it treats them as missing, see _encode)
        ("encode", OrdinalEncoder(categories="auto" if categories is None else [list(c) for c in categories],
                                  handle_unknown="use_encoded_value", unknown_value=np.nan, dtype=np.float64)),
    ])


def _stacked_parts(names, kinds: dict[str, str], medians: dict, modes: dict, categories: dict):
    """The stock transformers of all numeric columns at once and of all category columns at once.

    Each is fitted on one row holding the fitted branches' medians or modes, with their
    categories given explicitly, as :meth:`CustomerPreprocessor.from_dict` rebuilds the
    branches: their learned attributes are those of the branches, column by column.
    Fitted on arrays (no column names), so they transform arrays without a names check.
    """
    numeric = [n for n in names if kinds[n] == "numeric"]
    other = [n for n in names if kinds[n] != "numeric"]
    imputer = _branch("numeric", None).fit(np.array([[medians[n] for n in numeric]], dtype="float64")) \
        if numeric else None
    encoder = None
    if other:
        encoder = _branch("categorical", [categories[n] for n in other])
        encoder.fit(np.array([[modes[n] for n in other]], dtype=object))
    return imputer, encoder


def _plain(value):
    return None if value is None else [str(v) for v in value]


def _is_array(X) -> bool:
    return not isinstance(X, pd.DataFrame)


def _as_frame(X, n_expected: int | None = None) -> pd.DataFrame:
    """A DataFrame as it is; anything else as a table of numeric columns x0, x1, ..."""
    if isinstance(X, pd.DataFrame):
        if len(X) == 0:
            raise DataError("the table has no rows; give at least one customer")
        return X
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__") and not hasattr(X, "__array__"):
        raise DataError(f"CustomerPreprocessor expects a table (DataFrame or 2-D array), got {type(X).__name__}")
    try:
        arr = check_array(X, dtype=np.float64, ensure_all_finite=False, ensure_min_samples=1)
    except ValueError as exc:  # a TypeError (an object that is no number at all) stays one
        raise DataError(f"CustomerPreprocessor reads a NumPy array as numeric columns: {exc}") from None
    if n_expected is not None and arr.shape[1] != n_expected:
        raise SchemaError(f"X has {arr.shape[1]} features, but CustomerPreprocessor is expecting "
                          f"{n_expected} features as input.")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])], copy=False)


def _numeric_values(frame: pd.DataFrame, name) -> np.ndarray:
    """Column ``name`` as float64; text or infinite values are a DataError naming the column and value."""
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype="float64", na_value=np.nan)
    else:
        numbers = pd.to_numeric(col, errors="coerce")
        bad = numbers.isna().to_numpy() & col.notna().to_numpy()
        if bad.any():
            value = col[bad].iloc[0]
            raise DataError(f"column {name!r} is numeric but holds the text {value!r} "
                            f"({int(bad.sum())} such value(s)); fix those cells or declare the column categorical")
        values = numbers.to_numpy(dtype="float64", na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        raise DataError(f"column {name!r} holds the infinite value {float(values[infinite][0])!r} "
                        f"({int(infinite.sum())} such value(s)); replace it by a finite number or leave it empty")
    return values


def _category_text(col: pd.Series) -> np.ndarray:
    """Canonical category text of every row (NaN where missing), as an object array."""
    codes, distinct = category_codes(col)
    return np.append(distinct, np.nan).astype(object)[codes]
