"""Reading customer tables from CSV or Parquet, with checks at the boundary.

:func:`read_table` is the one door through which files enter custseg. It detects the
delimiter (comma, semicolon, tab, pipe) with a real CSV parser, so delimiters inside
quoted values do not count; accepts UTF-8 with or without a byte-order mark, UTF-16
with one (Excel's "Unicode text"), gzip-compressed files, Excel's ``sep=;`` first line
and lines that all end with the delimiter; reads Parquet (recognised by its content);
turns missing-value tokens into missing values (``NaN`` is one: it never becomes a
number); reads numbers written as text as numbers (blank cells, and decimal commas in
files not separated by commas), noting each such column; and rejects what it cannot
read with a :class:`~custseg.exceptions.DataError` that names the file, the line, the
column and the value, and says how to fix it.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import gzip
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Union

import numpy as np
import pandas as pd

from ..exceptions import DataError

__all__ = ["LoadedTable", "read_table", "read_table_bytes", "table_from_frame", "columns_frame", "is_in", "text_rule",
           "DEFAULT_NA_VALUES", "missing_report"]

#: Tokens read as missing in every file (compared after stripping spaces).
DEFAULT_NA_VALUES = frozenset(
    {"", "NA", "N/A", "n/a", "na", "NaN", "nan", "NAN", "null", "NULL", "Null", "None", "none", "#N/A", "<NA>"}
)
_DELIMITERS = [",", ";", "\t", "|"]
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
#: other formats people give by mistake: first bytes -> what it is
_FOREIGN_MAGIC = {
    b"PK\x03\x04": "a ZIP archive or an Excel .xlsx workbook",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook",
    b"SQLite format 3": "an SQLite database",
    b"%PDF": "a PDF document",
}
#: how many lines the delimiter is detected on
_SNIFF_LINES = 100
# a number written with a decimal comma, as semicolon-separated exports from Excel do: 1,5 or -0,25
_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")
#: Larger magnitudes than this are refused with an error naming the cell. The network
#: computes in float32 (1e40 is infinite there) and the profiles round through int64
#: (whole numbers above ~9.2e18 overflow); 1e15 is still exact in float64 and is far
#: beyond any amount a customer table holds.
MAX_ABS_VALUE = 1e15
#: Longest field the CSV parser accepts: the csv module's default (128 KiB) raised a bare
#: ``csv.Error``; longer values are read, then handled as text (and truncated in plots).
MAX_FIELD_CHARS = 2**31 - 1
# formatted amounts: optional sign, currency before or after, thousands separators,
# percent. "$1,200", "45,600 EUR", "12%", "-3.5 %", "EUR 1.200,50" is NOT accepted
# (a decimal comma with thousands dots is ambiguous next to "1.200" = 1.2).
_CURRENCY = r"(?:[$\u20ac\u00a3\u00a5]|EUR|USD|GBP|CHF|JPY|INR|CAD|AUD)"
_FORMATTED_NUMBER = re.compile(
    rf"^(?P<sign1>[-+]?)\s*(?P<pre>{_CURRENCY})?\s*(?P<sign2>[-+]?)"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    rf"\s*(?P<post>{_CURRENCY}|%)?$", re.IGNORECASE)


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
        For each row, its (first) line number in the file, for error messages; for
        Parquet, the row's position + 2, the line it would have in a CSV with a header.
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


def read_table(path: str | os.PathLike, na_values: list[str] | tuple[str, ...] = (),
               text_columns: "TextColumns" = ()) -> LoadedTable:
    """Read a customer table from a CSV or Parquet file.

    Parameters
    ----------
    path : str or path-like
        A delimited text file (comma, semicolon, tab or pipe, detected; gzip-compressed
        is fine; UTF-8 with or without a byte-order mark, or UTF-16 with one) or a
        Parquet file (recognised by its content, whatever its name).
    na_values : sequence of str
        Extra tokens to read as missing, besides :data:`DEFAULT_NA_VALUES`. The strings
        ``NaN`` and ``nan`` are among those: they mean missing, never a number;
        ``inf`` is refused.
    text_columns : collection of str, or a function of the column name
        Columns kept as the text the file holds even if every value reads as a number:
        a model's category columns and its ID column (``'04'`` stays ``'04'``, ``'007'``
        stays ``'007'``). Applies to text in the file; a Parquet column of numbers stays numbers.

    Returns
    -------
    LoadedTable

    Raises
    ------
    DataError
        If the file is missing, unreadable, binary, not UTF-8, empty, has duplicate
        or empty column names, rows whose number of fields differs from the header,
        or a number that is infinite or too large. The message names the file, the
        line, the column and the value, and says how to fix it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "customers.csv"
    >>> _ = f.write_text('ID;Age;Income\\n1;30;" "\\n2;unknown;1200\\n3;41;900\\n')
    >>> table = read_table(f, na_values=["unknown"])
    >>> table.delimiter, table.frame["Age"].tolist()
    (';', [30.0, nan, 41.0])
    >>> table.numeric_from_text
    {'Income': 'stored as text; blank cells read as missing'}
    """
    source = str(path)
    p = Path(path)
    if not p.exists():
        hint = ""
        if p.parent.is_dir():
            close = difflib.get_close_matches(p.name, [c.name for c in p.parent.iterdir()], n=1)
            hint = f" (did you mean {str(p.parent / close[0])!r}?)" if close else ""
        raise DataError(f"file {source!r} does not exist{hint}; check the path")
    if p.is_dir():
        raise DataError(f"{source!r} is a directory, not a table; give the path of a CSV or Parquet file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except PermissionError:
        raise DataError(f"file {source!r} cannot be read (permission denied); fix its permissions") from None
    except OSError as exc:
        raise DataError(f"file {source!r} cannot be read ({exc.strerror}); check the path") from None
    return read_table_bytes(raw, source, na_values, parquet=p.suffix.lower() in {".parquet", ".pq"},
                            text_columns=text_columns)


def read_table_bytes(raw: bytes, source: str, na_values: list[str] | tuple[str, ...] = (), *,
                     parquet: bool = False, text_columns: "TextColumns" = ()) -> LoadedTable:
    """Read a table from the bytes of a file, exactly as :func:`read_table` reads the file.

    For tables that arrive without a file on disk (an HTTP upload); errors name ``source``.
    ``parquet`` says the name ends in ``.parquet`` (content that does not start with
    Parquet's magic bytes is then reported as a damaged Parquet file). ``text_columns``: as
    for :func:`read_table`.
    """
    na_tokens = DEFAULT_NA_VALUES | {str(t).strip() for t in na_values}
    if raw.startswith(_PARQUET_MAGIC) or (parquet and raw.strip()):
        return _read_parquet(raw, source, na_tokens, text_columns)
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile):
            raise DataError(f"file {source!r} is gzip-compressed but damaged (truncated?); "
                            "compress it again, or give the plain CSV") from None
    with _large_fields():
        return _read_csv_bytes(raw, source, na_tokens, text_columns)


@contextlib.contextmanager
def _large_fields():
    """Let the csv module read fields longer than its 128 KiB default, then restore the limit."""
    previous = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_parquet(raw: bytes, source: str, na_tokens: frozenset[str], text_columns: "TextColumns" = ()) -> LoadedTable:
    try:
        frame = pd.read_parquet(io.BytesIO(raw))
        stored, order = _stored_index_columns(raw)
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise DataError(f"file {source!r} is not a readable Parquet file ({type(exc).__name__}); "
                        "re-export it, or give a CSV file") from None
    if stored and frame.index.nlevels == len(stored):
        # pandas writes a DataFrame's index (an ID column set as the index, say) as columns of the file and
        # read_parquet puts them back into the index: they are columns of the table here, as the streamed
        # blocks of the same file (io.chunks) read them, under the names the file stores them by
        frame = frame.reset_index()
        frame.columns = [*stored, *frame.columns[len(stored):]]
        frame = frame[[c for c in order if c in frame.columns]]
    return table_from_frame(frame, source, na_tokens, text_columns=text_columns)


def _stored_index_columns(raw: bytes) -> tuple[list[str], list[str]]:
    """The index columns a Parquet file stores as columns (pandas' metadata; none for a default RangeIndex,
    which is metadata only), and the file's column order."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(io.BytesIO(raw))
    metadata = schema.pandas_metadata or {}
    return [c for c in metadata.get("index_columns", []) if isinstance(c, str)], list(schema.names)


def table_from_frame(frame: pd.DataFrame, source: str, na_values: "frozenset[str] | list[str] | tuple[str, ...]" = (),
                     first_line: int = 2, text_columns: "TextColumns" = ()) -> LoadedTable:
    """Check and type a table that is already in memory, exactly as :func:`read_table` reads a Parquet file.

    For the tables that do not come from a file custseg opens: a Dask partition, the
    records of an HTTP request. Values are read through their text, so a number sent as
    ``"42"`` and one sent as ``42`` give the same table, and errors name ``source``,
    the line (row position + ``first_line``), the column and the value.

    Parameters
    ----------
    frame : DataFrame
    source : str
        What to call the table in error messages.
    na_values : sequence of str
        Extra tokens read as missing, besides :data:`DEFAULT_NA_VALUES`.
    first_line : int, default=2
        The "line" of the first row (2: as if a header line came first).
    text_columns : collection of str, or a function of the column name
        As for :func:`read_table`: columns whose text values stay text.
    """
    na_tokens = DEFAULT_NA_VALUES | {str(t).strip() for t in na_values}
    names = [str(c) for c in frame.columns]
    _check_header(names, source)
    n = len(frame)
    if n == 0:
        raise DataError(f"file {source!r} has a header but no data rows; give a table with customers in it")
    # one column at a time by position, and dtypes read once: a request of one customer is a dozen
    # columns of one value, where every pandas call costs about what the values do
    series = [frame.iloc[:, i] for i in range(len(names))]
    numeric = [pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype) for s in series]
    stored_as_text = {name for name, is_number in zip(names, numeric) if not is_number}
    lines = np.arange(n) + first_line
    # A column of numbers needs no round trip through text (the slow part of reading): it
    # is checked and kept as it is, with the result the text would give.
    check_numbers = not _numeric_tokens(na_tokens)
    numbers = {}
    for name, s, is_number in zip(names, series, numeric):
        plain = _plain_numbers(s) if check_numbers and is_number else None
        if plain is not None:
            numbers[name] = plain
    # the caller's frame is left as it was: a Dask partition or a request may be reused
    text = {name: _column_as_text(s).to_numpy() for name, s in zip(names, series) if name not in numbers}
    columns, integer_columns, numeric_from_text = _typed_columns(
        text, n, source, None, na_tokens, lines, from_text=stored_as_text, typed_file=True,
        keep_text=text_rule(text_columns))
    for name in names:
        if name not in numbers:
            continue
        values, is_int = numbers[name]
        finite = np.isfinite(values) | np.isnan(values)
        bad = ~finite | (np.abs(np.where(np.isfinite(values), values, 0.0)) > MAX_ABS_VALUE)
        if bad.any():
            pos = int(np.argmax(bad))
            what = "not a finite number" if not finite[pos] else f"too large (abs > {MAX_ABS_VALUE:.0e})"
            raise DataError(f"file {source!r}, line {int(lines[pos])}, column {name!r}: value "
                            f"{repr(float(values[pos]))!r} is {what}; replace it with a real value or leave the "
                            "cell empty")
        if np.isnan(values).all():  # as the text path reads a column with nothing in it
            columns[name] = np.full(n, np.nan, dtype=object)
            continue
        columns[name] = values
        if is_int:
            integer_columns.append(name)
    order = {name: i for i, name in enumerate(names)}
    return LoadedTable(frame=columns_frame({name: columns[name] for name in names}, pd.RangeIndex(n)),
                       source=source, delimiter=None,
                       integer_columns=sorted(integer_columns, key=order.__getitem__),
                       numeric_from_text=numeric_from_text, line_numbers=lines)


def columns_frame(columns: Mapping[str, np.ndarray], index: pd.Index | None = None) -> pd.DataFrame:
    """The DataFrame of ``columns`` (arrays of one length, in order), built in one step.

    An object array stays an object column: pandas would read one of strings as its string
    dtype, and custseg's tables keep text as Python objects (converting a million strings
    to Arrow text and back costs more than scoring them). ``index`` defaults to 0..n-1.
    """
    if index is None:
        index = pd.RangeIndex(len(next(iter(columns.values()))) if columns else 0)
    return pd.DataFrame({name: pd.Series(values, index=index, dtype=object, copy=False)
                         if values.dtype == object else values for name, values in columns.items()}, index=index)


#: columns to keep as text (see :func:`read_table`): their names, or a test of a name
TextColumns = Union[Collection[str], Callable[[str], bool]]


def text_rule(text_columns: TextColumns) -> Callable[[str], bool]:
    """``text_columns`` as a test of a column name."""
    if callable(text_columns):
        return text_columns
    names = frozenset(str(c) for c in text_columns)
    return names.__contains__


def _numeric_tokens(na_tokens: frozenset[str]) -> bool:
    """Whether a missing-value token is a number (then numbers must be compared as text)."""
    for token in na_tokens:
        try:
            if math.isfinite(float(token)):
                return True
        except ValueError:
            pass
    return False


def _plain_numbers(series: pd.Series) -> tuple[np.ndarray, bool] | None:
    """(float64 values, whether integers) of a float or integer column; None where text must decide."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return None
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_integer_dtype(series):
        # integers of more than 15 digits are codes (account numbers), kept as text
        return None if np.nanmax(np.abs(values), initial=0.0) >= 1e15 else (values, True)
    return (values, False) if pd.api.types.is_float_dtype(series) else None


def _column_as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else str(bool(v)))
    if pd.api.types.is_integer_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else str(int(v)))
    if pd.api.types.is_float_dtype(series):
        return series.map(lambda v: None if pd.isna(v) else repr(float(v)))
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.na_value is not pd.NA:
        # pandas' default text columns (a request's records, a Parquet file): str values and NaN, so the
        # per-value map below would give the values as they are and None for NaN; in one call
        return pd.Series(series.to_numpy(dtype=object, na_value=None), index=series.index, dtype=object)
    return series.map(lambda v: None if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))
                      else str(v))


def _decode(raw: bytes, source: str) -> str:
    """Bytes of a text table -> str; refuses binary files and text that is not UTF-8 (or UTF-16 with a BOM)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte-order mark (Excel's "Unicode text")
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"file {source!r} starts like UTF-16 text but is damaged; save it as UTF-8") from None
    for magic, what in _FOREIGN_MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"file {source!r} is {what}, not a CSV table; export the sheet as CSV (UTF-8) "
                            "or save it as Parquet")
    nul = raw.find(b"\x00")
    if nul >= 0:  # anywhere in the file, not only near the start
        line = raw[:nul].count(b"\n") + 1
        raise DataError(f"file {source!r}, line {line}: a NUL byte (binary data), not CSV text; "
                        "give a CSV (UTF-8) or Parquet file, or remove the NUL bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"file {source!r} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line}; "
            "save the file as UTF-8 (e.g. 'iconv -f latin1 -t utf-8')"
        ) from None


def _read_csv_bytes(raw: bytes, source: str, na_tokens: frozenset[str], text_columns: "TextColumns" = ()) -> LoadedTable:
    if not raw.strip():
        raise DataError(f"file {source!r} is empty; give a table with a header row and customers in it")
    text = _decode(raw, source)
    if not text.strip():
        raise DataError(f"file {source!r} is empty; give a table with a header row and customers in it")
    skip, declared = _preamble(text)
    delimiter = declared or _detect_delimiter(text, skip, source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                        skipinitialspace=False, strict=False)
    try:
        for _ in range(skip):
            next(reader)
        header = next(reader)
    except csv.Error as exc:
        raise DataError(f"file {source!r}, line {reader.line_num}: cannot parse CSV ({exc}); a quoted value is "
                        "probably never closed: fix the quoting") from None
    header = [h.strip() for h in header]
    rows, lines = data_rows(reader, header, source, delimiter)
    if header and not header[-1] and len(header) > 1 and all(len(r) < len(header) or not r[-1].strip() for r in rows):
        # every line ends with the delimiter (some exports do this): drop the empty last column
        header = header[:-1]
        rows = [r[: len(header)] for r in rows]
    _check_header(header, source)
    if not rows:
        raise DataError(f"file {source!r} has a header but no data rows; give a table with customers in it")
    for fields, line in zip(rows, lines):
        if len(fields) != len(header):
            raise DataError(_field_count_message(source, line, line, fields, header, delimiter))
    cells = np.empty((len(rows), len(header)), dtype=object)
    cells[:] = rows
    lines = np.asarray(lines)
    columns, integer_columns, numeric_from_text = _typed_columns(
        {name: cells[:, j] for j, name in enumerate(header)}, len(rows), source, delimiter, na_tokens, lines,
        from_text=set(header), keep_text=text_rule(text_columns))
    return LoadedTable(frame=columns_frame({name: columns[name] for name in header}, pd.RangeIndex(len(rows))),
                       source=source, delimiter=delimiter,
                       integer_columns=integer_columns, numeric_from_text=numeric_from_text, line_numbers=lines)


def data_rows(reader, header: list[str], source: str, delimiter: str,
              line_offset: int = 0) -> tuple[list[list[str]], list[int]]:
    """The data rows a csv reader positioned after the header gives, with the line each starts on.

    Blank lines are skipped, except in a one-column table, where an empty line is a
    missing value (only empty lines at the end are padding); a row whose number of
    fields differs from the header's is an error naming its line(s) (``line_offset`` is
    added to the reader's line numbers, for a reader over a part of a file). The
    streaming reader (:mod:`custseg.io.chunks`) parses a block with this when its fast
    parser finds something wrong.
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    previous = reader.line_num
    one_column = len(header) == 1
    trailing_blank = 0
    try:
        for fields in reader:
            first, line = previous + 1, reader.line_num
            previous = line
            if one_column:
                # In a one-column table a missing value IS an empty line: keep it as a row, so that
                # the row count in equals the row count out. Only empty lines at the end are padding.
                if not fields:
                    fields = [""]
                    trailing_blank += 1
                else:
                    trailing_blank = 0
            elif not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            rows.append(fields)
            lines.append(first + line_offset)
            if len(fields) != len(header) and not _trailing_delimiter(header, fields):
                raise DataError(_field_count_message(source, first + line_offset, line + line_offset, fields,
                                                     header, delimiter))
    except csv.Error as exc:
        raise DataError(f"file {source!r}, line {reader.line_num + line_offset}: cannot parse CSV ({exc}); a quoted "
                        "value is probably never closed: fix the quoting") from None
    if trailing_blank:
        del rows[-trailing_blank:], lines[-trailing_blank:]
    return rows, lines


def _trailing_delimiter(header: list[str], fields: list[str]) -> bool:
    """True if ``fields`` is a row of a file whose lines all end with the delimiter."""
    return bool(header) and not header[-1] and len(fields) == len(header) - 1


def _field_count_message(source: str, first: int, last: int, fields: list[str], header: list[str],
                         delimiter: str) -> str:
    shown = delimiter.replace("\t", "\\t")
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    base = (f"file {source!r}, {where}: {len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
            f"{len(header)} (delimiter {shown!r})")
    if first != last:
        return (base + f"; a quoted value opened on line {first} runs over {last - first + 1} lines: close the quote "
                "or remove the stray '\"'")
    raw_line = delimiter.join(fields)
    for other in _DELIMITERS:
        if other != delimiter and len(next(csv.reader([raw_line], delimiter=other))) == len(header):
            other_shown = other.replace("\t", "\\t")
            return (base + f"; that line is separated by {other_shown!r} instead: use one delimiter throughout the file")
    if len(fields) == len(header) + 1 and not fields[-1].strip():
        return base + f"; the line ends with an extra {shown!r}: remove it"
    if len(fields) < len(header):
        return base + "; the line is truncated: complete or remove it"
    return (base + f"; a value holds an unquoted {shown!r}: quote that value (\"...\") or remove the line")


def _preamble(text: str) -> tuple[int, str | None]:
    """Lines to skip before the header (blank lines, Excel's 'sep=;' line) and the delimiter such a line declares."""
    skip, declared = 0, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            skip += 1
            continue
        match = re.fullmatch(r"sep=(.|\\t)", stripped)
        if match and declared is None:
            declared = "\t" if match.group(1) in ("\t", "\\t") else match.group(1)
            skip += 1
            continue
        break
    return skip, declared


def _detect_delimiter(text: str, skip: int, source: str) -> str:
    """The delimiter that splits the header and the first lines into the same number (> 1) of fields.

    Counted with a real CSV parser, so delimiters inside quoted values do not count.
    A file whose first lines split consistently on none of them is a one-column
    table, unless its lines split on some delimiter but into different counts: then
    the delimiters are mixed, and that is an error.
    """
    sample = io.StringIO(text, newline="")
    lines = []
    for _ in range(skip):
        sample.readline()
    for line in sample:
        if line.strip():
            lines.append(line)
        if len(lines) > _SNIFF_LINES:
            break
    if len(lines) > _SNIFF_LINES:
        lines = lines[:-1]  # the last one may be cut inside a quoted value
    chunk = "".join(lines)
    best, best_score = None, (0.0, 0)
    splits = {}
    for delim in _DELIMITERS:
        counts = [len(r) for r in csv.reader(io.StringIO(chunk, newline=""), delimiter=delim, strict=False) if r]
        if not counts:
            continue
        splits[delim] = counts
        width = counts[0]
        if width < 2:
            continue
        body = counts[1:] or [width]
        consistent = float(np.mean([c == width for c in body]))
        if (consistent, width) > best_score:
            best, best_score = delim, (consistent, width)
    if best is not None and best_score[0] > 0:
        return best  # lines that disagree are reported later, with their line numbers
    # nothing splits the header and the lines alike
    header_splits = [d for d, c in splits.items() if c[0] > 1]
    body_splits = [d for d, c in splits.items() if max(c[1:], default=1) > 1]
    name = {",": "','", ";": "';'", "\t": "'\\t'", "|": "'|'"}
    if header_splits and body_splits and set(header_splits) != set(body_splits):
        raise DataError(f"file {source!r}: the header is separated by {name[header_splits[0]]} but the next lines "
                        f"by {name[body_splits[0]]}; use one delimiter throughout the file")
    if body_splits and not header_splits:
        raise DataError(f"file {source!r}: the first line is a single column but the next lines are separated by "
                        f"{name[body_splits[0]]}; remove any title line above the header, or separate the header "
                        "by the same delimiter")
    return best or ","


def _check_header(header: list[str], source: str) -> None:
    empty = [i + 1 for i, h in enumerate(header) if not str(h).strip()]
    if empty:
        hint = " (a row index written by pandas' to_csv?)" if empty[0] == 1 else ""
        raise DataError(f"file {source!r}: column {empty[0]} of the header has no name{hint}; name every column "
                        "or remove that column")
    seen: dict[str, int] = {}
    for name in header:
        seen[name] = seen.get(name, 0) + 1
    dups = [n for n, c in seen.items() if c > 1]
    if dups:
        positions = [i + 1 for i, h in enumerate(header) if h == dups[0]]
        raise DataError(f"file {source!r}: duplicate column name {dups[0]!r} in the header (columns "
                        f"{', '.join(map(str, positions))}); rename one of them so every column name is unique")


def _typed_columns(text: dict[str, np.ndarray], n: int, source: str, delimiter: str | None,
                   na_tokens: frozenset[str], lines: np.ndarray, from_text: set[str], typed_file: bool = False,
                   keep_text: Callable[[str], bool] = lambda name: False
                   ) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
    """Turn columns of strings into numbers where every non-missing value is a number.

    ``text`` maps each column name to its ``n`` cells (an object array: str, or None / NaN
    for a missing cell). Returns the typed columns (float64, or object arrays of stripped
    text with NaN for missing), the integer columns and the notes on numbers stored as text.

    The work on each value (stripping, missing-value tokens, the code test, parsing as a
    number) runs once over all columns placed end to end, and each column then decides on
    its slice: a pandas call costs about as much for one value as for thousands, and a
    request of one customer has a dozen columns.
    """
    out: dict[str, np.ndarray] = {}
    integer_columns: list[str] = []
    numeric_from_text: dict[str, str] = {}
    names = list(text)
    raw = np.concatenate([np.asarray(text[name], dtype=object) for name in names]) if names else np.empty(0, object)
    stripped = np.fromiter((v.strip() if isinstance(v, str) else v for v in raw), dtype=object, count=len(raw))
    missing = (pd.isna(stripped) | is_in(stripped, na_tokens)).reshape(len(names), n)
    # the values to test as numbers or codes: the present ones, but none of a column the caller keeps
    # as text whatever it holds (a model's categories)
    kept = np.array([name in from_text and keep_text(name) for name in names], dtype=bool).reshape(-1, 1)
    tested = ~missing & ~kept
    present_values = stripped[tested.ravel()]
    bounds = np.concatenate([[0], np.cumsum(tested.sum(axis=1))])
    codes = _code_columns(present_values, bounds)
    parsed = _parsed_numbers(present_values, bounds)
    for j, name in enumerate(names):
        miss, cells = missing[j], raw[j * n:(j + 1) * n]
        texts = stripped[j * n:(j + 1) * n].copy()
        texts[miss] = np.nan
        b0, b1 = bounds[j], bounds[j + 1]
        if b1 == b0 or codes[j] or kept[j, 0]:
            out[name] = texts
            continue
        present, numbers = present_values[b0:b1], parsed[b0:b1]
        notes = []
        if np.isnan(numbers).any() and (typed_file is False or delimiter not in (",", None)):
            # the rare columns of written-out numbers: decided on the column's own values, as before
            column_present = pd.Series(present_values[b0:b1], dtype=object)
            numbers = pd.to_numeric(column_present, errors="coerce")
            if numbers.isna().any() and delimiter not in (",", None) \
                    and column_present.str.fullmatch(_DECIMAL_COMMA.pattern).any() \
                    and column_present.str.fullmatch(r"[-+]?\d+(,\d+)?").all():
                numbers = pd.to_numeric(column_present.str.replace(",", ".", regex=False), errors="coerce")
                notes.append("decimal commas read as decimal points")
                column_present = column_present.str.replace(",", ".", regex=False)
            if numbers.isna().any() and typed_file is False:
                formatted = _formatted_numbers(column_present)
                if formatted is not None:
                    numbers, note = formatted
                    notes.append(note)
            present = column_present.to_numpy(dtype=object)
            numbers = numbers.to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(numbers).any():
            out[name] = texts
            continue
        finite = np.isfinite(numbers)
        bad = ~finite | (np.abs(np.where(finite, numbers, 0.0)) > MAX_ABS_VALUE)
        if bad.any():
            pos = int(np.flatnonzero(~miss)[int(np.argmax(bad))])
            value = cells[pos]
            infinite = bool(re.fullmatch(r"[-+]?(inf|infinity)", str(value).strip(), re.IGNORECASE))
            what = "not a finite number" if infinite else f"too large for the model (abs > {MAX_ABS_VALUE:.0e})"
            raise DataError(
                f"file {source!r}, line {int(lines[pos])}, column {name!r}: value {value!r} is {what}; "
                "replace it with a real value or leave the cell empty"
            )
        column = np.full(n, np.nan)
        column[~miss] = numbers
        out[name] = column
        if not notes and all("." not in v and "e" not in v.lower() for v in present) \
                and np.all(np.mod(numbers, 1) == 0):
            integer_columns.append(name)
        if name in from_text:
            # an empty CSV cell is the ordinary missing value; a cell of spaces, or any
            # empty string in a typed file, shows the column was kept as text
            blanks = any(isinstance(v, str) and not v.strip() and (typed_file or v != "") for v in cells)
            if typed_file:
                notes.insert(0, "stored as text in the file")
            if blanks:
                if not typed_file:
                    notes.insert(0, "stored as text")
                notes.append("blank cells read as missing")
            if notes:
                numeric_from_text[name] = "; ".join(notes)
    return out, integer_columns, numeric_from_text


def _formatted_numbers(present: pd.Series) -> tuple[pd.Series, str] | None:
    """Amounts written for people ("$1,200", "45,600 EUR", "12%") as numbers, or None.

    Only when every value parses and the column has one unit: a column mixing EUR and
    USD, or percent and plain numbers, has no single meaning and stays text (and is then
    excluded with a reason the user sees). Percent values keep their scale (12% -> 12).
    """
    if not (present.map(type) == str).all():
        return None
    parts = formatted_parts(present.tolist())
    if parts is None:
        return None
    values, units, thousands = parts
    if len(units) > 1 or (units == {""} and not thousands):
        return None
    unit = next(iter(units))
    what = ("percent signs removed (12% read as 12)" if unit == "%"
            else f"currency {unit!r} removed" if unit else "")
    note = "; ".join(x for x in ("formatted numbers parsed", what, "thousands separators removed" if thousands else "")
                     if x)
    return pd.Series(values, index=present.index, dtype="float64"), note


def formatted_parts(texts: list[str]) -> tuple[np.ndarray, frozenset[str], bool] | None:
    """(numbers, units, any thousands separator) of values that all read as formatted amounts, else None.

    The facts :func:`_formatted_numbers` decides a whole column on; the streaming reader
    sums them over its blocks.
    """
    matches = [_FORMATTED_NUMBER.match(v) for v in texts]
    if not all(matches):
        return None
    units = frozenset(((m.group("pre") or "") + (m.group("post") or "")).upper() for m in matches)
    thousands = any("," in m.group("num") for m in matches)
    values = np.array([(-1.0 if "-" in (m.group("sign1") + m.group("sign2")) else 1.0)
                       * float(m.group("num").replace(",", "")) for m in matches], dtype="float64")
    return values, units, thousands


#: text that pd.to_numeric may read as a number without a digit in it
_DIGITLESS_NUMBER = re.compile(r"[-+]?(inf|infinity|nan)", re.IGNORECASE)


def _parsed_numbers(present: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``pd.to_numeric(present, errors="coerce")`` as float64, NaN for the columns that cannot be numeric.

    A column whose first value has no digit (and is no 'inf' or 'nan') has a value that does
    not parse, so it is read as text whatever the others give: only the other columns are
    parsed. Parsing words is the slow part of ``to_numeric`` (3 us a value), and a table's
    text columns are words.
    """
    keep = np.zeros(len(present), dtype=bool)
    for j in range(len(bounds) - 1):
        b0, b1 = bounds[j], bounds[j + 1]
        first = present[b0] if b1 > b0 else None
        if b1 > b0 and not (isinstance(first, str) and not any(ch.isdigit() for ch in first)
                            and not _DIGITLESS_NUMBER.fullmatch(first)):
            keep[b0:b1] = True
    if keep.all():
        return _to_float(present)
    parsed = np.full(len(present), np.nan)
    if keep.any():
        parsed[keep] = _to_float(present[keep])
    return parsed


def _to_float(values: np.ndarray) -> np.ndarray:
    """``pd.to_numeric(values, errors="coerce")`` of an object array, as float64 with NaN."""
    if len(values) == 0:
        return np.empty(0)
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype="float64")


def _code_columns(present: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Which columns hold digits that are codes, not quantities: kept as text so that no digit is lost.

    ``present`` holds the non-missing values of all columns end to end, column ``j`` in
    ``present[bounds[j]:bounds[j + 1]]``. Zero-padded codes of one width ('000123',
    '0042') would lose their zeros as numbers, and integers of more than 15 digits
    (account numbers) would be rounded by float64.
    """
    codes = np.zeros(len(bounds) - 1, dtype=bool)
    if len(present) == 0 or not all(type(v) is str for v in present):
        return codes  # values other than text are never codes (table_from_frame and CSV give only text)
    for j in range(len(codes)):
        values = present[bounds[j]:bounds[j + 1]]
        # all() stops at the first value that is not all digits: a column of words costs one look
        # (Python loops: pandas' .str methods on object values loop in Python too, behind a fixed cost)
        if len(values) == 0 or not all(_DIGITS.fullmatch(v) for v in values):
            continue
        lengths = np.fromiter((len(v) for v in values), dtype="int64", count=len(values))
        longest, shortest = lengths.max(), lengths.min()
        codes[j] = longest > 15 or (shortest == longest >= 2 and any(v.startswith("0") for v in values))
    return codes


_DIGITS = re.compile(r"\d+")
#: below this many values, a membership test is a Python loop: pandas' hash table costs more to build
_SMALL = 512


def is_in(values: "np.ndarray | pd.Series", members: Collection) -> np.ndarray:
    """``pd.Series(values).isin(members)`` as a boolean array, without pandas' fixed cost for a few values.

    ``values`` holds hashable Python objects (text, numbers, None, NaN), as a table's column does;
    ``members`` are text or numbers (NaN as a member matches only itself below the threshold, where
    pandas matches every NaN: custseg never asks for it).
    """
    if len(values) < _SMALL:
        members = members if isinstance(members, (set, frozenset)) else set(members)
        return np.fromiter((v in members for v in values), dtype=bool, count=len(values))
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object, copy=False)
    return series.isin(members).to_numpy(dtype=bool)


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
