"""Column roles: which columns are the id, the known segment, and the features.

:func:`infer_schema` looks at a training table and gives each column a role with the
reason for it; any role can be set explicitly (flags or the TOML config), and
explicit settings always win. The resulting :class:`Schema` is saved with the model
and :meth:`Schema.check` validates every table that is scored later.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .exceptions import DataError, SchemaError

__all__ = ["ColumnInfo", "Schema", "infer_schema", "ROLES"]

ROLES = ("id", "label", "numeric", "categorical", "ordinal", "excluded")
FEATURE_ROLES = ("numeric", "categorical", "ordinal")

# names of identifiers: 'ID', 'client_id', 'Account No', 'cust.key'; in camel case 'customerID', 'AccountNo'
# (case-sensitive there, so that 'Paid' or 'Valid' are not identifiers)
_ID_NAME = re.compile(r"(^|[_\s.-])(id|key|number|no)$|^(id|uuid|guid)$", re.IGNORECASE)
_ID_NAME_CAMEL = re.compile(r"[a-z](ID|Id|No|Number|Key)$")
_LABEL_NAMES = {"segmentation", "segment", "segments", "label", "class", "target", "y"}
#: integer columns with at most this many distinct values are read as categories (codes, flags)
MAX_INTEGER_CATEGORIES = 5
#: a label (known segment) has at most this many classes
MAX_LABEL_CLASSES = 50
#: text columns with more distinct values than this and than half the rows are excluded
MAX_CATEGORIES = 50
#: a text column whose values are all different is excluded as free text from this many rows on
MIN_ROWS_UNIQUE_TEXT = 10
#: a text column whose values are numbers but for at most this share (and a few distinct words)
#: is a numeric column with typos or a missing-value token, and is reported rather than guessed
MAX_TEXT_SHARE_IN_NUMBERS = 0.1
#: names that make a column the id among several unique, id-like columns
_PREFERRED_ID = re.compile(r"^(id|customer[_\s-]?id|cust[_\s-]?id|client[_\s-]?id|user[_\s-]?id)$", re.IGNORECASE)


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
    #: what the user must hear about the table even under --quiet (rare label values);
    #: not saved with the model
    warnings: list[str] = field(default_factory=list, compare=False)

    def exclusion_notes(self) -> list[str]:
        """One sentence per column left out of the model, with the reason.

        Printed even under ``--quiet``: a column of amounts written as text
        ("45,600 EUR") dropped without a word would be a silent wrong result.
        """
        return [f"column {c.name!r} is not used by the model: {c.reason}" for c in self.columns
                if c.role == "excluded"]

    def names(self, role: str) -> list[str]:
        """Columns with ``role``, in table order."""
        return [c.name for c in self.columns if c.role == role]

    @property
    def feature_columns(self) -> list[str]:
        """Every feature column (numeric, categorical, ordinal), in table order."""
        return [c.name for c in self.columns if c.role in FEATURE_ROLES]

    def text_columns(self, id_column: str | None = None) -> Callable[[str], bool]:
        """Which columns of a table to be scored are read as the text the file holds (a test of a name).

        A feature column whose values were text in training (codes such as ``'01'..'07'``)
        stays text whatever the new table holds: were a file's column typed from its own
        values, one row written ``4`` would turn every ``'04'`` of that file into the unseen
        category ``'4'``, and the other customers' segments would depend on it. The ID
        column (the training one, ``id_column``, or any column named like an identifier)
        keeps its text too, so IDs come out as they went in (``'00123'``, ``'458989.0'``).
        """
        text = {c.name for c in self.columns if c.role in FEATURE_ROLES and c.dtype == "text"}
        ids = {c for c in (id_column, self.id_column) if c}
        features = set(self.feature_columns)

        def keep(name: str) -> bool:
            return name in text or name in ids or (name not in features and _named_like_id(str(name)))

        return keep

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

        * A missing feature column is an error naming it (and a near spelling present).
        * Extra columns are ignored: they are returned, to be listed to the user.
        * A numeric column holding text is an error naming the line, the column and
          the value. A numeric column that is entirely missing is fine (imputed).
        * Categories never seen in training are not an error: the preprocessor maps
          each to its column's training mode, and
          :meth:`~custseg.preprocessing.CustomerPreprocessor.unseen_categories` counts them.

        Parameters
        ----------
        frame : DataFrame
            The table as :func:`custseg.loading.read_table` returns it.
        source : str
            File name for error messages.
        line_of : callable, optional
            Row position -> line number in the file.

        Returns
        -------
        list of str
            Columns unknown to the schema, in table order.

        Raises
        ------
        SchemaError
        """
        required = self.feature_columns
        missing = [c for c in required if c not in frame.columns]
        if missing:
            hints = "".join(_did_you_mean(c, [x for x in frame.columns if x not in required], " ({!r} is there)")
                            for c in missing)
            raise SchemaError(
                f"file {source!r}: columns are missing: {', '.join(repr(c) for c in missing)}{hints}; "
                f"the model needs {', '.join(required)}: add the missing ones (empty cells are fine, they are "
                "imputed)"
            )
        for name in self.names("numeric"):
            col = frame[name]
            if not pd.api.types.is_numeric_dtype(col):
                bad = ~_number_mask(col)
                if not bad.any():  # every cell missing: read as text, imputed like any missing number
                    continue
                pos = int(np.argmax(bad))
                line = line_of(pos) if line_of else pos + 2
                raise SchemaError(
                    f"file {source!r}, line {line}, column {name!r}: value {col.iloc[pos]!r} is not a number, "
                    "but the model reads this column as numeric; fix the value, leave the cell empty, or add "
                    "the token to --na-values"
                )
        known = set(required) | {self.id_column, self.label_column} | {c.name for c in self.columns}
        return [c for c in frame.columns if c not in known]


def _number_mask(col: pd.Series) -> np.ndarray:
    """Per cell: missing, or a finite number as :func:`custseg.loading.read_table` reads one."""
    numbers = pd.to_numeric(col.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    numbers = numbers.to_numpy(dtype="float64", na_value=np.nan)
    return col.isna().to_numpy() | np.isfinite(numbers)


def _did_you_mean(name: str, options: Iterable[Any], template: str = " (did you mean {!r}?)") -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    if not close:
        lowered = {str(o).lower(): str(o) for o in options}
        close = [lowered[str(name).lower()]] if str(name).lower() in lowered else []
    return template.format(close[0]) if close else ""


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
    line_of: Callable[[int], int] | None = None,
    strict: bool = False,
) -> Schema:
    """Give every column of ``frame`` a role, with the reason.

    Explicit settings always win; the rest is inferred:

    * **id**: the one column named like an identifier (``ID``, ``customerID``,
      ``client_id``...) whose values are (nearly) all different. Duplicates or empty IDs
      in it are then reported by :func:`custseg.workflow.load_tables`.
    * **label** (known segment): the one column absent from the test table
      (``other_columns``), else the one named ``Segmentation``, ``segment``, ``label``,
      ``class``, ``target`` or ``y``; with 2 to 50 classes. ``infer_label=False``
      infers none.
    * **numeric**: numbers, except whole numbers with at most 5 distinct values.
    * **categorical**: text with at most 50 distinct values, true/false values, and
      whole numbers with at most 5 distinct values (codes, flags).
    * **excluded**: constant or entirely missing columns, date-like text, near-unique
      text (names, free text, unused identifiers), row numbers, and text with too
      many categories.

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
    line_of : callable, optional
        Row position -> line number in the file, for error messages.
    strict : bool
        Make the label warnings (rare values, near-duplicate spellings such as ``a``
        next to ``A``) errors.

    Raises
    ------
    DataError
        If a column named in the settings is not in the table or is given two roles,
        a feature set in the settings is entirely missing, a numeric column set in the
        settings holds text, a text column is numbers but for a few words (which are
        named, with their line), the label has fewer than 2 classes, or no feature
        column is left.

    Examples
    --------
    >>> df = pd.DataFrame({"CustomerID": ["C1", "C2", "C3", "C4"], "Age": [23.0, 41.0, 35.0, 58.0],
    ...                    "Plan": ["basic", "pro", "basic", "pro"]})
    >>> infer_schema(df).roles_table()[["column", "role"]].values.tolist()
    [['CustomerID', 'id'], ['Age', 'numeric'], ['Plan', 'categorical']]
    """
    ordinal = dict(ordinal or {})
    columns_text = ", ".join(map(str, frame.columns))
    explicit: dict[str, tuple[str, str]] = {}
    for role, names in (("numeric", numeric), ("categorical", categorical), ("ordinal", ordinal), ("excluded", exclude)):
        for name in names:
            if name in explicit:
                raise DataError(f"column {name!r} is given two roles in the config ({explicit[name][0]} and {role}); "
                                "give it one")
            explicit[name] = (role, "set in config")
    for name, why in ((id_column, "the id column (--id-column)"), (label_column, "the label column (--label-column)")):
        if name is not None and name not in frame.columns:
            raise DataError(f"file {source!r}: column {name!r} given as {why} is not in the table"
                            f"{_did_you_mean(name, frame.columns)}; its columns are {columns_text}")
    for name in explicit:
        if name not in frame.columns:
            raise DataError(f"file {source!r}: column {name!r} named in the config is not in the table"
                            f"{_did_you_mean(name, frame.columns)}; its columns are {columns_text}")
    for name, what in ((id_column, "id"), (label_column, "label")):
        if name is not None and name in explicit:
            raise DataError(f"column {name!r} is the {what} column and is also set as {explicit[name][0]} in the "
                            "config; give it one role")
    if id_column is not None and id_column == label_column:
        raise DataError(f"column {id_column!r} is given as both the id and the label column; give it one role")
    if label_column is not None:
        _check_label(frame[label_column], label_column, source)
    integer_columns = set(integer_columns)
    n = len(frame)

    id_reason = "set explicitly"
    if id_column is None:
        id_column, id_reason = _infer_id(frame, explicit, label_column)
    label_reason = "known segment (set explicitly)"
    if label_column is None and infer_label:
        label_column, label_reason = _infer_label(frame, explicit, id_column, other_columns)
        if label_column is None:
            _refuse_unsure_label(frame, explicit, id_column, source)
    label_warnings = _label_typos(frame[label_column], label_column, source) if label_column is not None else []
    if label_warnings and strict:
        raise DataError(label_warnings[0] + " (--strict makes this an error)")

    columns: list[ColumnInfo] = []
    for name in frame.columns:
        col = frame[name]
        is_num = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        present = col.dropna()
        info = ColumnInfo(name=str(name), role="", reason="", dtype="number" if is_num else "text",
                          n_missing=int(col.isna().sum()), n_distinct=int(present.nunique()))
        if name == id_column:
            info.role = "id"
            info.reason = id_reason
        elif name == label_column:
            info.role, info.reason = "label", label_reason
        elif name in explicit:
            info.role, info.reason = explicit[name]
        else:
            if not is_num:
                _refuse_numbers_with_words(col, str(name), source, line_of)
            info.role, info.reason = _infer_role(col, is_num, name in integer_columns, n, str(name))
        if info.role in FEATURE_ROLES and info.n_distinct == 0:
            raise DataError(f"file {source!r}, column {name!r}: every value is missing, but the config makes it "
                            f"a {info.role} feature; fill it or move it to 'exclude'")
        if info.role == "numeric" and not is_num:
            bad_pos = int(np.argmax(~_number_mask(col)))
            line = line_of(bad_pos) if line_of else bad_pos + 2
            raise DataError(f"file {source!r}, line {line}, column {name!r}: value {col.iloc[bad_pos]!r} is not a "
                            "number, but the config sets the column as numeric; fix the value, add it to "
                            "--na-values, or make the column categorical")
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
                    ordinal_orders={k: list(v) for k, v in ordinal.items()}, warnings=label_warnings)
    if not schema.feature_columns:
        raise DataError(f"file {source!r}: no usable feature column (roles: "
                        + ", ".join(f"{c.name}={c.role}" for c in columns)
                        + "); check the delimiter, or set roles with --config ([data] numeric / categorical)")
    return schema


def _check_label(col: pd.Series, name: str, source: str) -> None:
    present = col.dropna()
    if len(present) == 0:
        raise DataError(f"file {source!r}, column {name!r}: the label column is entirely missing; "
                        "give another --label-column, or use --no-label")
    if present.map(category_text).nunique() < 2:
        raise DataError(f"file {source!r}, column {name!r}: the label column has one class only "
                        f"({category_text(present.iloc[0])!r}), so it cannot be mapped to clusters; "
                        "give a column with at least 2 known segments, or use --no-label")


def text_columns_of(schema: Schema | None, id_column: str | None = None) -> Callable[[str], bool] | tuple:
    """:meth:`Schema.text_columns` of a model's schema; none for a model saved without one."""
    return schema.text_columns(id_column) if schema is not None else ()


def _named_like_id(name: str) -> bool:
    return bool(_ID_NAME.search(name.strip()) or _ID_NAME_CAMEL.search(name.strip()))


def _infer_id(frame: pd.DataFrame, explicit: dict, label_column: str | None) -> tuple[str | None, str]:
    """The column named like an identifier whose present values are (nearly) all different, and why.

    Nearly: one with a few duplicates or empty cells is still the id, so that the
    duplicates are reported instead of the IDs being used as a feature. Without one, the
    one column of whole numbers that are all different and as dense as row numbers
    (:func:`_dense_distinct_integers`: customer numbers under any name, 'Kundennummer').
    """
    candidates = []
    for name in frame.columns:
        if name in explicit or name == label_column or not _named_like_id(str(name)):
            continue
        present = frame[name].dropna()
        # a column named plainly 'ID' (or 'customer_id'...) is the IDs even when many repeat: its duplicates
        # are then refused by name, instead of the column being dropped and the rows numbered silently
        mostly_unique = present.nunique() >= 0.9 * len(present) or bool(_PREFERRED_ID.match(str(name).strip()))
        if len(present) >= 0.9 * len(frame) and mostly_unique and len(present) > 1:
            candidates.append(name)
    if len(candidates) > 1:
        candidates = [c for c in candidates if _PREFERRED_ID.match(str(c).strip())]
    if len(candidates) == 1:
        return candidates[0], "named like an identifier, values all different"
    if candidates:
        return None, ""
    dense = [name for name in frame.columns if name not in explicit and name != label_column
             and _dense_distinct_integers(frame[name])]
    if len(dense) == 1:
        return dense[0], DENSE_ID_REASON
    return None, ""


#: rows from which all-different, densely packed whole numbers are taken for customer numbers: a measurement
#: of 100 customers all different within twice their number is a coincidence of odds below 1e-10 (a small
#: table's rank or tenure may well be)
MIN_ROWS_DENSE_ID = 100

#: why a column not named like an identifier is taken for one
DENSE_ID_REASON = "whole numbers all different and as dense as row numbers: customer numbers"


def _dense_distinct_integers(col: pd.Series, complete: bool = True) -> bool:
    """Whole numbers, all different, spanning at most twice as many numbers as there are of them: numbers
    given out one by one (customer numbers), not a measurement. Every value present (``complete``), or
    nine in ten."""
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col) or len(col) < MIN_ROWS_DENSE_ID:
        return False
    values = col.to_numpy(dtype="float64", na_value=np.nan)
    present = ~np.isnan(values)
    if not present.all() and (complete or present.sum() < 0.9 * len(values)):
        return False
    values = values[present]
    if not np.all(np.mod(values, 1) == 0):
        return False
    span = values.max() - values.min() + 1
    return span <= 2 * len(values) and len(np.unique(values)) == len(values)


def _infer_label(frame: pd.DataFrame, explicit: dict, id_column: str | None,
                 other_columns: Iterable[str] | None) -> tuple[str | None, str]:
    def usable(name: str) -> bool:
        col = frame[name]
        k = col.dropna().nunique()
        return (name not in explicit and name != id_column and 2 <= k <= MAX_LABEL_CLASSES
                and col.isna().mean() < 0.5)
    if other_columns is not None:
        other = set(other_columns)
        absent = [c for c in frame.columns if c not in other and usable(c)]
        if len(absent) == 1:
            return absent[0], "known segment: the only such column absent from the test table"
    named = [c for c in frame.columns if str(c).strip().lower() in _LABEL_NAMES and usable(c)]
    if len(named) == 1:
        return named[0], "known segment: named like one (--no-label to use none)"
    return None, ""


#: a label value held by fewer rows than this share of the largest class is a likely typo
RARE_LABEL_SHARE = 0.05
#: ... if it also has at most this many rows
RARE_LABEL_ROWS = 10
_LABEL_FOLD = re.compile(r"^(segment|segmentation|seg|class|group|cluster)(?=[\s_.:-]*\w)|[\s_.:-]+", re.IGNORECASE)


def _fold_label(value: str) -> str:
    """'Segment C', 'c', ' C ' -> 'c': the spellings a typo or a second export produces."""
    return _LABEL_FOLD.sub("", value.strip()).casefold()


def _label_typos(col: pd.Series, name: str, source: str) -> list[str]:
    """Warnings for label values that look like typos: near-duplicate spellings and rare values."""
    counts = col.dropna().map(category_text).value_counts()
    if counts.empty:
        return []
    out = []
    groups: dict[str, list[str]] = {}
    for value in counts.index:
        groups.setdefault(_fold_label(value), []).append(value)
    for spellings in groups.values():
        if len(spellings) > 1:
            shown = ", ".join(f"{v!r} x{int(counts[v])}" for v in spellings)
            out.append(f"file {source!r}, column {name!r}: known segments {shown} differ only in case, spaces or a "
                       "prefix; they are trained as different segments: correct the spelling")
    largest = int(counts.iloc[0])
    rare = [v for v, n in counts.items() if n <= RARE_LABEL_ROWS and n < RARE_LABEL_SHARE * largest]
    rare = [v for v in rare if not any(v in g and len(g) > 1 for g in groups.values())]
    if rare:
        shown = ", ".join(f"{v!r} ({int(counts[v])} row{'s' if counts[v] != 1 else ''})" for v in rare)
        out.append(f"file {source!r}, column {name!r}: rare known segments {shown} next to {largest} rows of "
                   f"{counts.index[0]!r}; typos? correct them or leave those cells empty")
    return out


def _refuse_unsure_label(frame: pd.DataFrame, explicit: dict, id_column: str | None, source: str) -> None:
    """A column named like the known segment that inference did not take must not silently become a feature."""
    for name in frame.columns:
        if name in explicit or name == id_column or str(name).strip().lower() not in _LABEL_NAMES:
            continue
        col = frame[name]
        k = col.dropna().nunique()
        if k < 2:
            continue  # constant or empty: excluded anyway, never a feature
        why = (f"{col.isna().mean():.0%} of it is missing" if col.isna().mean() >= 0.5
               else f"it has {k} distinct values" if k > MAX_LABEL_CLASSES
               else "another column is named like one too")
        raise DataError(f"file {source!r}: column {name!r} is named like the known segment, but {why}, so custseg "
                        f"will not guess; give --label-column {name} to use it as the known segment (missing cells "
                        "are fine), or --no-label to use it as an ordinary column")


def _infer_role(col: pd.Series, is_num: bool, is_integer: bool, n: int, name: str = "") -> tuple[str, str]:
    present = col.dropna()
    k = present.nunique()
    if k == 0:
        return "excluded", "every value is missing"
    if k == 1:
        return "excluded", f"constant (only {category_text(present.iloc[0])!r})"
    if pd.api.types.is_bool_dtype(col):
        return "categorical", "true/false values"
    if is_num:
        if is_integer and k <= MAX_INTEGER_CATEGORIES:
            return "categorical", f"whole numbers with only {k} distinct values (codes or flags)"
        if is_integer and k == len(present) and len(present) >= MIN_ROWS_UNIQUE_TEXT:
            if _named_like_id(name):
                return "excluded", "whole numbers all different, named like an identifier (--id-column to use it)"
            steps = np.diff(present.to_numpy())
            if len(steps) and np.all(steps == 1):
                return "excluded", "row numbers (1, 2, 3, ...)"
        if _dense_distinct_integers(col, complete=False):
            return "excluded", (f"{DENSE_ID_REASON} (--id-column to use it as the IDs, or set its role in "
                                "the config)")
        return "numeric", "numbers"
    text = present.astype(str)
    if _looks_like_dates(text):
        return "excluded", "date-like text (derive features such as tenure from it yourself)"
    if k > MAX_CATEGORIES and k > 0.5 * len(present):
        return "excluded", f"near-unique text ({k} distinct values in {len(present)} rows): an identifier or free text"
    if k == len(present) and len(present) >= MIN_ROWS_UNIQUE_TEXT:
        return "excluded", f"text all different ({k} values): an identifier or free text"
    if k > MAX_CATEGORIES:
        return "excluded", f"too many categories ({k} > {MAX_CATEGORIES}); group them or set the role in the config"
    return "categorical", f"text with {k} distinct values"


def _refuse_numbers_with_words(col: pd.Series, name: str, source: str, line_of: Callable[[int], int] | None) -> None:
    """A column of numbers with a few words in it is a numeric column with a missing-value
    token or typos: say so instead of silently making it categorical."""
    present = col.dropna()
    is_number = pd.Series(_number_mask(present), index=present.index)
    words = present[~is_number]
    if not len(words) or len(words) > MAX_TEXT_SHARE_IN_NUMBERS * len(present) or words.nunique() > 3:
        return
    numbers = pd.to_numeric(present[is_number], errors="coerce")
    if numbers.nunique() <= MAX_INTEGER_CATEGORIES:
        return  # codes with a few words among them ("1", "2", "X") are categories
    pos = int(np.flatnonzero(~_number_mask(col))[0])
    line = line_of(pos) if line_of else pos + 2
    tokens = " ".join(f"--na-values {w!r}" if " " in str(w) else f"--na-values {w}" for w in sorted(set(words)))
    raise DataError(f"file {source!r}, line {line}, column {name!r}: value {col.iloc[pos]!r} is not a number, but "
                    f"{int(is_number.sum())} of the column's {len(present)} values are; if it means missing, add "
                    f"{tokens}; otherwise fix it, or set the column as categorical in the config")


_DATE_RE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2})?)?$")


def _looks_like_dates(text: pd.Series) -> bool:
    sample = text.head(200)
    return bool(len(sample)) and sample.str.strip().str.match(_DATE_RE).mean() >= 0.9


def _as_text(values: pd.Series) -> list[str]:
    return [category_text(v) for v in values]


def category_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, texts)``: each row's code into ``texts``, the :func:`category_text` of each distinct
    value (-1: missing). One call of ``category_text`` per distinct value, not per row.

    >>> codes, texts = category_codes(pd.Series([1.0, "1", None, "b"], dtype=object))
    >>> codes.tolist(), texts.tolist()
    ([0, 1, -1, 2], ['1', '1', 'b'])
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes, np.array([category_text(v) for v in np.asarray(uniques, dtype=object)], dtype=object)


def category_text(value: Any) -> str:
    """The canonical text of a category value: whole floats lose their '.0'."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)
