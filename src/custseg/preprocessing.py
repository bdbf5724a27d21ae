"""Imputation, label encoding and scaling of customer tables, as one sklearn transformer.

:class:`CustomerPreprocessor` is the reference design's preprocessing: median
imputation of numeric columns, most-frequent imputation and label encoding of
categorical columns (categories in sorted order, as sklearn's ``LabelEncoder``),
codes in declared order for ordinal columns, then standard scaling of every feature,
all fitted on training rows only. Its fitted state is plain numbers and strings, so
it is saved as JSON (:meth:`to_dict` / :meth:`from_dict`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from .exceptions import NotFittedError, SchemaError
from .schema import category_text

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
    feature_names_in_ : ndarray of str
        The feature columns, in table order; the order of the output.
    medians_ : dict
        Numeric column -> training median.
    modes_ : dict
        Categorical / ordinal column -> most frequent training category.
    categories_ : dict
        Categorical / ordinal column -> list of categories; a category's code is its position.
    mean_, scale_ : ndarray
        Standard scaling of the encoded features.
    n_features_in_ : int

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

    def __init__(self, numeric=None, categorical=None, ordinal=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y=None) -> "CustomerPreprocessor":
        X = _as_frame(X)
        numeric, categorical, ordinal = self._roles(X)
        wanted = set(numeric) | set(categorical) | set(ordinal)
        missing = [c for c in wanted if c not in X.columns]
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        self.feature_names_in_ = np.array([c for c in X.columns if c in wanted], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.kinds_ = {c: ("numeric" if c in numeric else "ordinal" if c in ordinal else "categorical")
                       for c in self.feature_names_in_}
        self.medians_, self.modes_, self.categories_ = {}, {}, {}
        for name, kind in self.kinds_.items():
            if kind == "numeric":
                values = pd.to_numeric(X[name], errors="raise").astype("float64")
                median = float(np.nanmedian(values)) if values.notna().any() else 0.0
                self.medians_[name] = median
            else:
                text = _category_series(X[name])
                counts = text.value_counts(dropna=True)
                if kind == "ordinal":
                    cats = list(ordinal[name])
                else:
                    cats = sorted(counts.index.tolist())
                # most frequent; ties go to the first category in sorted order, as SimpleImputer
                top = counts.max() if len(counts) else 0
                self.modes_[name] = sorted(v for v, c in counts.items() if c == top)[0] if len(counts) else cats[0]
                self.categories_[name] = cats
        codes = self._encode(X)
        self.mean_ = codes.mean(axis=0)
        scale = codes.std(axis=0)
        scale[scale == 0.0] = 1.0  # constant features stay at 0, as StandardScaler does
        self.scale_ = scale
        return self

    def _roles(self, X: pd.DataFrame) -> tuple[list[str], list[str], dict[str, list[str]]]:
        ordinal = dict(self.ordinal or {})
        if self.numeric is None and self.categorical is None:
            numeric = [c for c in X.columns if c not in ordinal and pd.api.types.is_numeric_dtype(X[c])
                       and not pd.api.types.is_bool_dtype(X[c])]
            categorical = [c for c in X.columns if c not in ordinal and c not in numeric]
            return numeric, categorical, ordinal
        return list(self.numeric or []), list(self.categorical or []), ordinal

    # -- transforming -------------------------------------------------------------------------
    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Encoded, scaled features (float64, one column per feature, in table order)."""
        self._check_fitted()
        X = _as_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        return (self._encode(X) - self.mean_) / self.scale_

    def inverse_transform(self, Z: np.ndarray) -> pd.DataFrame:
        """Back to original units and categories (codes rounded to the nearest category)."""
        self._check_fitted()
        codes = np.asarray(Z, dtype="float64") * self.scale_ + self.mean_
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
        X = _as_frame(X)
        report: dict[str, dict[str, int]] = {}
        for name, kind in self.kinds_.items():
            if kind == "numeric" or name not in X.columns:
                continue
            text = _category_series(X[name]).dropna()
            unseen = text[~text.isin(self.categories_[name])]
            if len(unseen):
                report[name] = {str(k): int(v) for k, v in unseen.value_counts().sort_index().items()}
        return report

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        self._check_fitted()
        return self.feature_names_in_.copy()

    def _encode(self, X: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(X), len(self.feature_names_in_)), dtype="float64")
        for j, name in enumerate(self.feature_names_in_):
            if self.kinds_[name] == "numeric":
                values = pd.to_numeric(X[name], errors="coerce").astype("float64").to_numpy()
                out[:, j] = np.where(np.isnan(values), self.medians_[name], values)
            else:
                cats = self.categories_[name]
                lookup = {c: i for i, c in enumerate(cats)}
                mode_code = lookup[self.modes_[name]]
                text = _category_series(X[name])
                out[:, j] = text.map(lookup).fillna(mode_code).to_numpy(dtype="float64")
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("This CustomerPreprocessor instance is not fitted yet. Call 'fit' first.")

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Fitted state as plain JSON-able data."""
        self._check_fitted()
        return {
            "params": {"numeric": self.numeric, "categorical": self.categorical, "ordinal": self.ordinal},
            "feature_names_in": list(self.feature_names_in_),
            "kinds": self.kinds_,
            "medians": self.medians_,
            "modes": self.modes_,
            "categories": self.categories_,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CustomerPreprocessor":
        pre = cls(**data["params"])
        pre.feature_names_in_ = np.array(data["feature_names_in"], dtype=object)
        pre.n_features_in_ = len(pre.feature_names_in_)
        pre.kinds_ = dict(data["kinds"])
        pre.medians_ = {k: float(v) for k, v in data["medians"].items()}
        pre.modes_ = dict(data["modes"])
        pre.categories_ = {k: list(v) for k, v in data["categories"].items()}
        pre.mean_ = np.asarray(data["mean"], dtype="float64")
        pre.scale_ = np.asarray(data["scale"], dtype="float64")
        if pre.mean_.shape != (pre.n_features_in_,) or pre.scale_.shape != (pre.n_features_in_,):
            raise ValueError("preprocessor mean/scale do not match its feature list")
        return pre


def _as_frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    raise TypeError(f"CustomerPreprocessor expects a pandas DataFrame with named columns, got {type(X).__name__}")


def _category_series(col: pd.Series) -> pd.Series:
    return col.map(lambda v: np.nan if pd.isna(v) else category_text(v))
