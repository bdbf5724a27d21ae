"""Reading customer tables from CSV or Parquet, with checks at the boundary.

:func:`read_table` is the one door through which files enter custseg. It detects the
delimiter (comma, semicolon, tab, pipe), accepts UTF-8 with or without a byte-order
mark, reads Parquet, turns missing-value tokens into missing values, reads numbers
written as text (blank cells included) as numbers, and rejects what it cannot read
with a :class:`~custseg.exceptions.DataError` that names the file, the line, the
column and the value, and says how to fix it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataError

__all__ = ["LoadedTable", "read_table", "DEFAULT_NA_VALUES", "missing_report"]

#: Tokens read as missing in every file (compared after stripping spaces).
DEFAULT_NA_VALUES = frozenset(
    {"", "NA", "N/A", "n/a", "na", "NaN", "nan", "NAN", "null", "NULL", "Null", "None", "none", "#N/A", "<NA>"}
)
_DELIMITERS = [",", ";", "\t", "|"]
_PARQUET_MAGIC = b"PAR1"
#: Larger magnitudes than this are refused: squaring them in the scaler overflows float64.
MAX_ABS_VALUE = 1e150


@dataclass
class LoadedTable:
    """A table read from disk, with what was learned while reading it.

    Attributes
    ----------
    frame : pandas.DataFrame
        Numeric columns as float64, every other column as strings (object) with NaN
        for missing cells. The index is 0..n-1.
    source : str
        The path it came from, for error messages.
    delimiter : str or None
        The detected delimiter (None for Parquet).
    integer_columns : list of str
        Numeric columns whose values are all whole numbers written without a decimal point.
    numeric_from_text : dict
        Numeric columns that were stored as text, with a note on why (e.g. blank cells).
    line_numbers : numpy.ndarray
        For each row, its line number in the file (header is line 1), for error messages.
    """

    frame: pd.DataFrame
    source: str
    delimiter: str | None = None
    integer_columns: list[str] = field(default_factory=list)
    numeric_from_text: dict[str, str] = field(default_factory=dict)
    line_numbers: np.ndarray | None = None

    def line_of(self, row: int) -> int:
        """File line number of row position ``row`` (1-based; the header is line 1)."""
        if self.line_numbers is None:
            return row + 2
        return int(self.line_numbers[row])


def read_table(path: str | os.PathLike, na_values: list[str] | tuple[str, ...] = ()) -> LoadedTable:
    """Read a customer table from a CSV or Parquet file.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` / ``.tsv`` / ``.txt`` file (delimiter detected) or a Parquet file.
    na_values : sequence of str
        Extra tokens to read as missing, besides :data:`DEFAULT_NA_VALUES`.

    Returns
    -------
    LoadedTable

    Raises
    ------
    DataError
        If the file is missing, unreadable, binary, not UTF-8, empty, has duplicate
        or empty column names, or rows whose number of fields differs from the header.
    """
    source = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"file {source!r} does not exist; check the path")
    if p.is_dir():
        raise DataError(f"{source!r} is a directory, not a table; give the path of a CSV or Parquet file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except PermissionError:
        raise DataError(f"file {source!r} cannot be read (permission denied); fix its permissions") from None
    except OSError as exc:
        raise DataError(f"file {source!r} cannot be read ({exc.strerror}); check the path") from None
    na_tokens = DEFAULT_NA_VALUES | {str(t).strip() for t in na_values}
    if raw.startswith(_PARQUET_MAGIC) or p.suffix.lower() in {".parquet", ".pq"}:
        return _read_parquet(p, source, na_tokens)
    return _read_csv_bytes(raw, source, na_tokens)


def _read_parquet(p: Path, source: str, na_tokens: frozenset[str]) -> LoadedTable:
    try:
        frame = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise DataError(f"file {source!r} is not a readable Parquet file ({type(exc).__name__}); "
                        "re-export it, or give a CSV file") from None
    _check_header([str(c) for c in frame.columns], source)
    if len(frame) == 0:
        raise DataError(f"file {source!r} has a header but no data rows; give a table with customers in it")
    frame.columns = [str(c) for c in frame.columns]
    text = pd.DataFrame(
        {c: _column_as_text(frame[c]) for c in frame.columns}, index=pd.RangeIndex(len(frame))
    )
    return _typed_table(text, source, None, na_tokens, np.arange(len(frame)) + 2, from_text={
        c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    })


def _column_as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else str(bool(v)))
    if pd.api.types.is_integer_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else str(int(v)))
    if pd.api.types.is_float_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else repr(float(v)))
    return series.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def _read_csv_bytes(raw: bytes, source: str, na_tokens: frozenset[str]) -> LoadedTable:
    if not raw.strip():
        raise DataError(f"file {source!r} is empty; give a table with a header row and customers in it")
    if b"\x00" in raw[:65536]:
        raise DataError(f"file {source!r} holds binary data (NUL bytes), not a CSV table; "
                        "give a CSV (UTF-8) or Parquet file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"file {source!r} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line}; "
            "save the file as UTF-8 (e.g. 'iconv -f latin1 -t utf-8')"
        ) from None
    delimiter = _detect_delimiter(text, source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                        skipinitialspace=False, strict=False)
    try:
        header = next(reader)
    except StopIteration:  # pragma: no cover - guarded by the empty check
        raise DataError(f"file {source!r} is empty") from None
    header = [h.strip() for h in header]
    _check_header(header, source)
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != width:
                shown = delimiter.replace("\t", "\\t")
                raise DataError(
                    f"file {source!r}, line {line}: {len(fields)} fields where the header has {width} "
                    f"(delimiter {shown!r}); the line is truncated, or has an unquoted {shown!r} inside a value. "
                    "Fix or remove that line"
                )
            rows.append(fields)
            lines.append(line)
    except csv.Error as exc:
        raise DataError(f"file {source!r}, line {reader.line_num}: cannot parse CSV ({exc}); fix the quoting") from None
    if not rows:
        raise DataError(f"file {source!r} has a header but no data rows; give a table with customers in it")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return _typed_table(frame, source, delimiter, na_tokens, np.asarray(lines), from_text=set(header))


def _detect_delimiter(text: str, source: str) -> str:
    sample_lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    header = sample_lines[0]
    try:
        dialect = csv.Sniffer().sniff("\n".join(sample_lines[:20]), delimiters="".join(_DELIMITERS))
        if dialect.delimiter in _DELIMITERS and dialect.delimiter in header:
            return dialect.delimiter
    except csv.Error:
        pass
    # Fall back on the delimiter that splits the header into the most fields and
    # gives the same count on the following lines.
    best, best_score = ",", 0
    for delim in _DELIMITERS:
        counts = [len(next(csv.reader([ln], delimiter=delim))) for ln in sample_lines[:20]]
        if counts[0] > 1 and all(c == counts[0] for c in counts):
            if counts[0] > best_score:
                best, best_score = delim, counts[0]
    return best


def _check_header(header: list[str], source: str) -> None:
    empty = [i + 1 for i, h in enumerate(header) if not str(h).strip()]
    if len(header) <= 1 and not empty:
        # A single column is allowed only if it is a real name; such a table has no features anyway.
        pass
    if empty:
        raise DataError(f"file {source!r}: column {empty[0]} of the header has no name; name every column")
    seen: dict[str, int] = {}
    for name in header:
        seen[name] = seen.get(name, 0) + 1
    dups = [n for n, c in seen.items() if c > 1]
    if dups:
        raise DataError(f"file {source!r}: duplicate column name {dups[0]!r} in the header; "
                        "rename one of them so every column name is unique")


def _typed_table(text: pd.DataFrame, source: str, delimiter: str | None, na_tokens: frozenset[str],
                 lines: np.ndarray, from_text: set[str]) -> LoadedTable:
    """Turn a frame of strings into numbers where every non-missing value is a number."""
    out: dict[str, pd.Series] = {}
    integer_columns: list[str] = []
    numeric_from_text: dict[str, str] = {}
    for name in text.columns:
        col = text[name]
        stripped = col.map(lambda v: v.strip() if isinstance(v, str) else v)
        missing = stripped.isna() | stripped.isin(na_tokens)
        values = stripped.where(~missing, None)
        present = values[~missing]
        numbers = pd.to_numeric(present, errors="coerce") if len(present) else present
        if len(present) and not numbers.isna().any():
            numbers = numbers.astype("float64")
            bad = ~np.isfinite(numbers.to_numpy()) | (np.abs(numbers.to_numpy()) > MAX_ABS_VALUE)
            if bad.any():
                pos = int(np.flatnonzero(~missing.to_numpy())[np.argmax(bad)])
                raise DataError(
                    f"file {source!r}, line {int(lines[pos])}, column {name!r}: value {present.iloc[int(np.argmax(bad))]!r} "
                    f"is {'not a finite number' if not np.isfinite(numbers.iloc[int(np.argmax(bad))]) else 'too large (abs > 1e150)'}; "
                    "replace it with a real value or leave the cell empty"
                )
            series = pd.Series(np.nan, index=text.index, dtype="float64")
            series[~missing] = numbers.to_numpy()
            out[name] = series
            if all("." not in s and "e" not in s.lower() for s in present) and np.all(np.mod(numbers, 1) == 0):
                integer_columns.append(name)
            if name in from_text and (col.map(lambda v: isinstance(v, str) and v != "" and not v.strip())).any():
                numeric_from_text[name] = "stored as text; blank cells read as missing"
        else:
            out[name] = values.astype(object).where(~missing, np.nan)
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(text)))
    return LoadedTable(frame=frame, source=source, delimiter=delimiter, integer_columns=integer_columns,
                       numeric_from_text=numeric_from_text, line_numbers=lines)


def missing_report(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values per column: count and share, in table order.

    >>> missing_report(pd.DataFrame({"a": [1.0, None], "b": ["x", "y"]}))
      column  missing  share
    0      a        1    0.5
    1      b        0    0.0
    """
    counts = frame.isna().sum()
    return pd.DataFrame({
        "column": list(frame.columns),
        "missing": counts.to_numpy().astype(int),
        "share": (counts / max(len(frame), 1)).to_numpy().round(4),
    })
