"""Column roles: which columns are the id, the known segment, and the features.

:func:`infer_schema` looks at a training table and gives each column a role with the
reason for it; any role can be set explicitly (flags or the TOML config), and
explicit settings always win. The resulting :class:`Schema` is saved with the model
and :meth:`Schema.check` validates every table that is scored later.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .exceptions import DataError, SchemaError

__all__ = ["ColumnInfo", "Schema", "infer_schema", "ROLES"]

ROLES = ("id", "label", "numeric", "categorical", "ordinal", "excluded")
FEATURE_ROLES = ("numeric", "categorical", "ordinal")

_ID_NAME = re.compile(r"(^|[_\s-])(id|key|number|no)$|^(id|uuid|guid)$|(?<=[a-z])ID$|Id$", re.IGNORECASE)
_LABEL_NAMES = {"segmentation", "segment", "segments", "label", "class", "target", "y"}
#: integer columns with at most this many distinct values are read as categories (codes, flags)
MAX_INTEGER_CATEGORIES = 5
#: a label (known segment) has at most this many classes
MAX_LABEL_CLASSES = 50
#: text columns with more distinct values than this and than half the rows are excluded
MAX_CATEGORIES = 50


@dataclass
class ColumnInfo:
    """One column of a table: its role, why, and what was seen in training."""

    name: str
    role: str
    reason: str
    dtype: str  # "number" or "text"
    n_missing: int = 0
    n_distinct: int = 0
    categories: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class Schema:
    """The columns of a training table and their roles.

    Attributes
    ----------
    columns : list of ColumnInfo
        Every column of the training table, in table order.
    id_column, label_column : str or None
    ordinal_orders : dict
        Ordinal column -> categories from lowest to highest.
    """

    columns: list[ColumnInfo]
    id_column: str | None = None
    label_column: str | None = None
    ordinal_orders: dict[str, list[str]] = field(default_factory=dict)

    def names(self, role: str) -> list[str]:
        """Columns with ``role``, in table order."""
        return [c.name for c in self.columns if c.role == role]

    @property
    def feature_columns(self) -> list[str]:
        """Every feature column (numeric, categorical, ordinal), in table order."""
        return [c.name for c in self.columns if c.role in FEATURE_ROLES]

    def column(self, name: str) -> ColumnInfo:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def roles_table(self) -> pd.DataFrame:
        """One row per column: name, role, type, missing, distinct values, reason."""
        return pd.DataFrame(
            [(c.name, c.role, c.dtype, c.n_missing, c.n_distinct, c.reason) for c in self.columns],
            columns=["column", "role", "type", "missing", "distinct", "reason"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [asdict(c) for c in self.columns],
            "id_column": self.id_column,
            "label_column": self.label_column,
            "ordinal_orders": self.ordinal_orders,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schema":
        return cls(
            columns=[ColumnInfo(**c) for c in data["columns"]],
            id_column=data.get("id_column"),
            label_column=data.get("label_column"),
            ordinal_orders={k: list(v) for k, v in data.get("ordinal_orders", {}).items()},
        )

    def check(self, frame: pd.DataFrame, source: str = "input", line_of=None) -> list[str]:
        """Validate a table that is to be scored with this schema.

        Returns the list of extra columns (ignored). Raises :class:`SchemaError` if a
        feature column is missing or a numeric column holds text.
        """
        required = self.feature_columns
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise SchemaError(
                f"file {source!r}: columns are missing: {', '.join(repr(c) for c in missing)}; "
                f"the model needs {', '.join(required)}"
            )
        for name in self.names("numeric"):
            col = frame[name]
            if not pd.api.types.is_numeric_dtype(col):
                bad = col.map(lambda v: not _is_number(v))
                pos = int(np.argmax(bad.to_numpy()))
                line = line_of(pos) if line_of else pos + 2
                raise SchemaError(
                    f"file {source!r}, line {line}, column {name!r}: value {col.iloc[pos]!r} is not a number, "
                    "but the model reads this column as numeric; fix the value or leave the cell empty"
                )
        known = set(required) | {self.id_column, self.label_column} | {c.name for c in self.columns}
        return [c for c in frame.columns if c not in known]


def _is_number(value: Any) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def infer_schema(
    frame: pd.DataFrame,
    *,
    id_column: str | None = None,
    label_column: str | None = None,
    infer_label: bool = True,
    numeric: Iterable[str] = (),
    categorical: Iterable[str] = (),
    ordinal: dict[str, list[str]] | None = None,
    exclude: Iterable[str] = (),
    integer_columns: Iterable[str] = (),
    other_columns: Iterable[str] | None = None,
    source: str = "input",
) -> Schema:
    """Give every column of ``frame`` a role, with the reason.

    Parameters
    ----------
    frame : DataFrame
        The training table as returned by :func:`custseg.loading.read_table`.
    id_column, label_column : str, optional
        Set the id / known-segment column; otherwise inferred where unambiguous.
    infer_label : bool
        If false, no label is inferred (the table is treated as unlabelled).
    numeric, categorical, exclude : iterables of str
        Columns whose role is set explicitly.
    ordinal : dict
        Ordinal column -> categories from lowest to highest.
    integer_columns : iterable of str
        Numeric columns written as whole numbers (from the reader).
    other_columns : iterable of str, optional
        The columns of the table to be scored (the test table). A low-cardinality
        column present in training but absent there is the known segment.
    source : str
        File name for error messages.
    """
    ordinal = dict(ordinal or {})
    explicit: dict[str, tuple[str, str]] = {}
    for role, names in (("numeric", numeric), ("categorical", categorical), ("ordinal", ordinal), ("excluded", exclude)):
        for name in names:
            if name in explicit:
                raise DataError(f"column {name!r} is given two roles ({explicit[name][0]} and {role}); give it one")
            explicit[name] = (role, "set in config")
    for name, why in ((id_column, "--id-column"), (label_column, "--label-column")):
        if name is not None and name not in frame.columns:
            raise DataError(f"file {source!r}: column {name!r} given by {why} is not in the table; "
                            f"its columns are {', '.join(map(str, frame.columns))}")
    for name in explicit:
        if name not in frame.columns:
            raise DataError(f"file {source!r}: column {name!r} named in the config is not in the table; "
                            f"its columns are {', '.join(map(str, frame.columns))}")
    if id_column is not None and id_column in explicit:
        raise DataError(f"column {id_column!r} is the id column and also has role {explicit[id_column][0]}; give it one")
    integer_columns = set(integer_columns)
    n = len(frame)

    id_given = id_column is not None
    if id_column is None:
        id_column = _infer_id(frame, explicit, label_column)
    if label_column is None and infer_label:
        label_column = _infer_label(frame, explicit, id_column, other_columns)

    columns: list[ColumnInfo] = []
    for name in frame.columns:
        col = frame[name]
        is_num = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        present = col.dropna()
        info = ColumnInfo(name=str(name), role="", reason="", dtype="number" if is_num else "text",
                          n_missing=int(col.isna().sum()), n_distinct=int(present.nunique()))
        if name == id_column:
            info.role = "id"
            info.reason = "set by --id-column" if id_given else "unique values, named like an identifier"
        elif name == label_column:
            info.role, info.reason = "label", "known segment"
        elif name in explicit:
            info.role, info.reason = explicit[name]
        else:
            info.role, info.reason = _infer_role(col, is_num, name in integer_columns, n)
        if info.role in FEATURE_ROLES and info.n_distinct == 0:
            raise DataError(f"file {source!r}, column {name!r}: every value is missing, but the config makes it "
                            f"a {info.role} feature; fill it or move it to 'exclude'")
        if info.role == "numeric" and not is_num:
            bad = present[~present.map(_is_number)]
            raise DataError(f"file {source!r}, column {name!r}: value {bad.iloc[0]!r} is not a number, but the column "
                            "is set as numeric; fix the value, add it to --na-values, or make the column categorical")
        if info.role == "ordinal":
            seen = set(_as_text(present))
            unknown = sorted(seen - set(ordinal[name]))
            if unknown:
                raise DataError(f"file {source!r}, column {name!r}: value {unknown[0]!r} is not in its declared order "
                                f"{ordinal[name]}; add it to the order in the config")
        if info.role in ("categorical", "ordinal", "label"):
            info.categories = sorted(set(_as_text(present)))
        if info.role == "numeric":
            info.minimum = float(present.min()) if len(present) else None
            info.maximum = float(present.max()) if len(present) else None
        columns.append(info)

    schema = Schema(columns=columns, id_column=id_column, label_column=label_column,
                    ordinal_orders={k: list(v) for k, v in ordinal.items()})
    if not schema.feature_columns:
        raise DataError(f"file {source!r}: no usable feature column (roles: "
                        + ", ".join(f"{c.name}={c.role}" for c in columns)
                        + "); set roles with --config or check the delimiter")
    return schema


def _infer_id(frame: pd.DataFrame, explicit: dict, label_column: str | None) -> str | None:
    candidates = []
    for name in frame.columns:
        if name in explicit or name == label_column:
            continue
        col = frame[name]
        if col.isna().any() or not col.is_unique:
            continue
        if _ID_NAME.search(str(name)):
            candidates.append(name)
    return candidates[0] if len(candidates) == 1 else None


def _infer_label(frame: pd.DataFrame, explicit: dict, id_column: str | None,
                 other_columns: Iterable[str] | None) -> str | None:
    def usable(name: str) -> bool:
        col = frame[name]
        k = col.dropna().nunique()
        return (name not in explicit and name != id_column and 2 <= k <= MAX_LABEL_CLASSES
                and col.isna().mean() < 0.5)
    if other_columns is not None:
        other = set(other_columns)
        absent = [c for c in frame.columns if c not in other and usable(c)]
        if len(absent) == 1:
            return absent[0]
    named = [c for c in frame.columns if str(c).strip().lower() in _LABEL_NAMES and usable(c)]
    return named[0] if len(named) == 1 else None


def _infer_role(col: pd.Series, is_num: bool, is_integer: bool, n: int) -> tuple[str, str]:
    present = col.dropna()
    k = present.nunique()
    if k == 0:
        return "excluded", "every value is missing"
    if k == 1:
        return "excluded", f"constant (only {present.iloc[0]!r})"
    if pd.api.types.is_bool_dtype(col):
        return "categorical", "true/false values"
    if is_num:
        if is_integer and k <= MAX_INTEGER_CATEGORIES:
            return "categorical", f"whole numbers with only {k} distinct values (codes or flags)"
        return "numeric", "numbers"
    text = present.astype(str)
    if _looks_like_dates(text):
        return "excluded", "date-like text (derive features such as tenure from it yourself)"
    if k > MAX_CATEGORIES and k > 0.5 * len(present):
        return "excluded", f"near-unique text ({k} distinct values in {len(present)} rows): an identifier or free text"
    if k > MAX_CATEGORIES:
        return "excluded", f"too many categories ({k} > {MAX_CATEGORIES}); group them or set the role in the config"
    return "categorical", f"text with {k} distinct values"


_DATE_RE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2})?)?$")


def _looks_like_dates(text: pd.Series) -> bool:
    sample = text.head(200)
    return bool(len(sample)) and sample.str.strip().str.match(_DATE_RE).mean() >= 0.9


def _as_text(values: pd.Series) -> list[str]:
    return [category_text(v) for v in values]


def category_text(value: Any) -> str:
    """The canonical text of a category value: whole floats lose their '.0'."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)
