"""Reading a big table block by block, each block typed as :func:`read_table` types the whole table.

:class:`TableStream` sniffs a CSV file's dialect and header with the robust reader of
:mod:`custseg.io.reading` (preamble, byte-order mark, delimiter detection, header
checks), then reads the rest in blocks of about ``chunk_rows`` rows with pyarrow's
multi-threaded parser, or a Parquet file batch by batch
(``pyarrow.parquet.ParquetFile.iter_batches``). Memory is bounded by the block, not the
table.

Whether a column is numeric is, for :func:`read_table`, a decision about the whole
column (all values numbers, zero-padded codes kept as text, decimal commas). A stream
decides it on what it has read so far, keeps the facts that decision rests on, and at
the end says which columns were emitted with a typing that the whole table would not
have had *and* whose values would read differently (``'1.0'`` against ``'1'``):
:meth:`TableStream.changed_columns`. A caller that cares reads again with those
decisions fixed (``kinds=``). Values that cannot be numbers where they must be are
found per block; a block that pyarrow cannot parse, or whose rows do not line up with
its lines, is parsed again by the precise reader, which names line, column and value.

Files that cannot be streamed (gzip, UTF-16, lines ending in the delimiter, old Mac
line ends) are read whole with :func:`read_table` and given as one block.
"""

from __future__ import annotations

import csv
import io
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError
from .reading import (_FORMATTED_NUMBER, DEFAULT_NA_VALUES, MAX_ABS_VALUE, LoadedTable, TextColumns, _check_header,
                      _decode, _detect_delimiter, _large_fields, _preamble, data_rows, formatted_parts, read_table,
                      text_rule)

__all__ = ["TableStream", "CHUNK_ROWS", "read_ahead", "read_table_in_blocks"]

#: rows per block by default (peak memory of predict at 1 M rows: about 0.8 GB with 200,000)
CHUNK_ROWS = 100_000
_SNIFF_BYTES = 1 << 20
#: Python's str.strip() on ASCII text strips these
_ASCII_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
#: numbers whose text is their canonical text as a category ('12', '-3'): no '.0', no leading zero
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,14})$"
#: every text pandas' to_numeric reads as a number looks like this (ASCII)
_NUMBER_LIKE = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$|^[-+]?(?i:inf|infinity|nan)$"


@dataclass
class ColumnFacts:
    """What decides a column's type in :func:`read_table`, summed over the blocks read so far."""

    n_present: int = 0
    all_digits: bool = True
    min_len: float = math.inf
    max_len: int = 0
    leading_zero: bool = False
    all_numeric: bool = True
    any_decimal_comma: bool = False
    all_int_or_decimal_comma: bool = True
    #: every value reads as a formatted amount ('$1,200', '12%'), with these units, some with thousands separators
    all_formatted: bool = True
    units: frozenset = frozenset()
    thousands: bool = False
    #: (line, value) of the first infinite or too large number
    first_bad: tuple[int, str] | None = None
    #: some cell holds only spaces (read_table notes such numeric columns as stored as text)
    blank: bool = False

    def merge(self, other: "ColumnFacts") -> "ColumnFacts":
        return ColumnFacts(
            n_present=self.n_present + other.n_present, all_digits=self.all_digits and other.all_digits,
            min_len=min(self.min_len, other.min_len), max_len=max(self.max_len, other.max_len),
            leading_zero=self.leading_zero or other.leading_zero,
            all_numeric=self.all_numeric and other.all_numeric,
            any_decimal_comma=self.any_decimal_comma or other.any_decimal_comma,
            all_int_or_decimal_comma=self.all_int_or_decimal_comma and other.all_int_or_decimal_comma,
            all_formatted=self.all_formatted and other.all_formatted, units=self.units | other.units,
            thousands=self.thousands or other.thousands, first_bad=self.first_bad or other.first_bad,
            blank=self.blank or other.blank)

    def kind(self, delimiter: str | None) -> str | None:
        """'numeric', 'text', or None if no value is present (either reads the same)."""
        if not self.n_present:
            return None
        if self.all_digits and (self.max_len > 15 or (self.min_len == self.max_len >= 2 and self.leading_zero)):
            return "text"  # codes: kept as text so that no digit is lost
        if self.all_numeric or self.decimal_commas(delimiter) or self.formatted(delimiter):
            return "numeric"
        return "text"

    def formatted(self, delimiter: str | None) -> bool:
        """read_table's last try on a CSV column: amounts of one unit ('$1,200'), see ``_formatted_numbers``."""
        return (delimiter is not None and not self.all_numeric and not self.decimal_commas(delimiter)
                and self.all_formatted and len(self.units) == 1 and (self.units != {""} or self.thousands))

    def comma_read(self, delimiter: str | None) -> bool:
        """The numbers were read with decimal commas or as formatted amounts (read_table notes the column)."""
        return self.decimal_commas(delimiter) or self.formatted(delimiter)

    def decimal_commas(self, delimiter: str | None) -> bool:
        return (not self.all_numeric and delimiter not in (",", None) and self.any_decimal_comma
                and self.all_int_or_decimal_comma)


@dataclass
class _Column:
    """One column of one block, typed both ways where it can be."""

    text: pa.Array | None     # stripped text, null where missing (None: made on demand from ``floats``)
    numbers: np.ndarray | None  # float64 if every present value is a number (decimal commas read)
    facts: ColumnFacts
    #: some value's text differs from the text of its number ('1.0', '007', '1e3')
    ambiguous: bool
    #: the numbers were read with decimal commas
    comma_numbers: bool = False
    floats: pa.Array | None = None
    #: per value: an NA token (distinct values only, see ``_type_distinct``)
    missing: np.ndarray | None = None
    #: the file holds the values as text (a CSV, a Parquet string column), not as typed numbers
    stored_as_text: bool = True

    def text_values(self) -> pa.Array:
        if self.text is None:  # repr of each float, as read_table writes a Parquet float column
            self.text = pa.array([None if v is None or math.isnan(v) else repr(float(v))
                                  for v in self.floats.to_pylist()], type=pa.string())
        return self.text


@dataclass
class _State:
    """Per column: what was emitted so far."""

    facts: ColumnFacts = field(default_factory=ColumnFacts)
    emitted_numeric_ambiguous: bool = False
    emitted_text_ambiguous: bool = False
    #: a ``text_columns`` column whose text was emitted as it is (numbers or not)
    kept_text: bool = False


class TableStream:
    """A CSV or Parquet table read in blocks of about ``chunk_rows`` rows.

    Iterating gives one :class:`~custseg.io.reading.LoadedTable` per block, its rows in
    file order with their line numbers; text columns are pandas categoricals.

    Parameters
    ----------
    path : str or path-like
    na_values : sequence of str
        Extra tokens read as missing, as for :func:`read_table`.
    chunk_rows : int
        Rows per block (about).
    kinds : dict, optional
        Column -> 'numeric' or 'text', fixing the typing of those columns (from
        :meth:`final_kinds` of an earlier pass).
    text_columns : collection of str, or a function of the column name
        Columns kept as the text the file holds, as for :func:`read_table`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "customers.csv"
    >>> _ = f.write_text("ID;Age\\n1;30\\n2;\\n3;41\\n")
    >>> [len(block.frame) for block in TableStream(f, chunk_rows=2)]
    [2, 1]
    """

    def __init__(self, path: str | os.PathLike, na_values=(), chunk_rows: int = CHUNK_ROWS,
                 kinds: dict[str, str] | None = None, text_columns: TextColumns = ()):
        self.path = Path(path)
        self.source = str(path)
        self.na_tokens = DEFAULT_NA_VALUES | {str(t).strip() for t in na_values}
        self._na_set = pa.array(sorted(self.na_tokens), type=pa.string())
        self.chunk_rows = max(1, int(chunk_rows))
        self.forced = dict(kinds or {})
        self.text_columns = text_columns
        self._keep_text = text_rule(text_columns)
        self.columns: list[str] = []
        self.delimiter: str | None = None
        self.states: dict[str, _State] = {}
        self.rows = 0
        #: share of the file read so far (bytes), for progress bars
        self.fraction = 0.0
        with _large_fields():  # a header or first lines with fields longer than the csv module's 128 KiB
            self._mode = self._sniff()

    # -- sniffing -------------------------------------------------------------------------------
    def _sniff(self) -> str:
        """'parquet', 'csv' (streamed), or 'whole' (read at once by read_table)."""
        p, source = self.path, self.source
        if not p.is_file():
            read_table(p)  # raises the reader's message (missing file, a folder, ...)
        try:
            with open(p, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except OSError:
            read_table(p)
            raise
        if head.startswith(b"PAR1") or (p.suffix.lower() in {".parquet", ".pq"} and head.strip()):
            import pyarrow.parquet as pq

            try:
                self._parquet = pq.ParquetFile(p)
            except Exception:  # pyarrow raises many types for damaged files
                raise DataError(f"file {source!r} is not a readable Parquet file; re-export it, or give a CSV "
                                "file") from None
            self.columns = [str(c) for c in self._parquet.schema_arrow.names]
            _check_header(self.columns, source)
            return "parquet"
        if not head.strip() or head.startswith((b"\x1f\x8b", b"\xff\xfe", b"\xfe\xff")):
            return "whole"
        if len(head) == _SNIFF_BYTES:
            head = head[: head.rfind(b"\n") + 1]  # whole lines only, so no character is cut
        if not head or head.count(b"\r") != head.count(b"\r\n"):
            return "whole"
        text = _decode(head, source)
        skip, declared = _preamble(text)
        if not text.strip():
            return "whole"
        delimiter = declared or _detect_delimiter(text, skip, source)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                            strict=False)
        try:
            for _ in range(skip):
                next(reader)
            header = [h.strip() for h in next(reader)]
        except (csv.Error, StopIteration):
            return "whole"
        if len(header) > 1 and not header[-1]:
            return "whole"  # lines ending with the delimiter: the reader drops that column
        if len(header) == 1:
            return "whole"  # an empty line is a missing value there, not a blank line to skip
        _check_header(header, source)
        self.columns, self.delimiter, self._header_lines = header, delimiter, reader.line_num
        offset = 0
        for _ in range(reader.line_num):
            end = head.find(b"\n", offset)
            if end < 0:  # the header is the file's last line, without a line end: read_table says what is wrong
                return "whole"
            offset = end + 1
        self._data_offset = offset
        self._bytes_per_row = max(8, len(head) - offset) / max(1, text.count("\n") - reader.line_num)
        return "csv"

    # -- blocks -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LoadedTable]:
        if self._mode == "whole":
            yield from self._whole()
            return
        blocks = self._parquet_blocks() if self._mode == "parquet" else self._csv_blocks()
        for columns, lines in blocks:
            if not len(lines):
                continue
            self.rows += len(lines)
            yield self._typed_block(columns, lines)
        if self.rows == 0:
            raise DataError(f"file {self.source!r} has a header but no data rows; give a table with customers in it")

    def _whole(self) -> Iterator[LoadedTable]:
        table = read_table(self.path, na_values=sorted(self.na_tokens - DEFAULT_NA_VALUES),
                           text_columns=self.text_columns)
        self.columns, self.delimiter = list(table.frame.columns), table.delimiter
        self.rows, self.fraction = len(table.frame), 1.0
        yield table

    def _csv_blocks(self) -> Iterator[tuple[dict[str, pa.Array], np.ndarray]]:
        import pyarrow.csv as pacsv

        size = max(1, self.path.stat().st_size)
        target = int(self.chunk_rows * self._bytes_per_row) + 1
        parse = pacsv.ParseOptions(delimiter=self.delimiter, quote_char='"', double_quote=True, escape_char=False,
                                   newlines_in_values=True, ignore_empty_lines=True)
        read = pacsv.ReadOptions(column_names=self.columns, use_threads=True)
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns},
                                       strings_can_be_null=False, quoted_strings_can_be_null=False)
        line = self._header_lines + 1
        done = self._data_offset
        with open(self.path, "rb") as fh:
            fh.seek(self._data_offset)
            buffer = b""
            while True:
                more = fh.read(target)
                buffer += more
                cut = len(buffer) if not more else _record_end(buffer)
                if cut == 0:
                    if not more:
                        break
                    continue  # one record longer than a block: read on
                block, buffer = buffer[:cut], buffer[cut:]
                n_lines = block.count(b"\n") + (not block.endswith(b"\n"))
                try:
                    if b"\x00" in block or b"\r" in block:
                        raise pa.ArrowInvalid("left to the precise reader")
                    table = pacsv.read_csv(io.BytesIO(block), read_options=read, parse_options=parse,
                                           convert_options=convert)
                    if table.num_rows != n_lines:  # blank lines or values over several lines
                        raise pa.ArrowInvalid("rows do not line up with lines")
                    columns = {c: table.column(i).combine_chunks() for i, c in enumerate(self.columns)}
                    lines = np.arange(line, line + n_lines)
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    columns, lines = self._precise_block(block, line)
                line += block.count(b"\n")
                done += len(block)
                self.fraction = done / size
                yield columns, lines
                if not more and not buffer:
                    break

    def _precise_block(self, block: bytes, first_line: int) -> tuple[dict[str, pa.Array], np.ndarray]:
        """Parse a block with the reader of read_table: its errors name line, column and value."""
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = first_line + block[: exc.start].count(b"\n")
            raise DataError(f"file {self.source!r} is not UTF-8 text: byte 0x{block[exc.start]:02x} on line {at}; "
                            "save the file as UTF-8 (e.g. 'iconv -f latin1 -t utf-8')") from None
        if "\x00" in text:
            at = first_line + text[: text.index("\x00")].count("\n")
            raise DataError(f"file {self.source!r}, line {at}: a NUL byte (binary data), not CSV text; "
                            "give a CSV (UTF-8) or Parquet file, or remove the NUL bytes")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, quotechar='"',
                            doublequote=True, skipinitialspace=False, strict=False)
        with _large_fields():
            rows, lines = data_rows(reader, self.columns, self.source, self.delimiter, line_offset=first_line - 1)
        columns = {c: pa.array([r[j] for r in rows], type=pa.string()) for j, c in enumerate(self.columns)}
        return columns, np.asarray(lines, dtype="int64")

    def _parquet_blocks(self) -> Iterator[tuple[dict[str, pa.Array], np.ndarray]]:
        start, total = 0, max(1, self._parquet.metadata.num_rows)
        try:
            for batch in self._parquet.iter_batches(batch_size=self.chunk_rows):
                n = batch.num_rows
                columns = {c: batch.column(i) for i, c in enumerate(self.columns)}
                yield columns, np.arange(start + 2, start + 2 + n)
                start += n
                self.fraction = start / total
        except (OSError, pa.ArrowException):
            raise DataError(f"file {self.source!r} is not a readable Parquet file; re-export it, or give a CSV "
                            "file") from None

    # -- typing -------------------------------------------------------------------------------
    def _typed_block(self, columns: dict[str, pa.Array], lines: np.ndarray) -> LoadedTable:
        out: dict[str, object] = {}
        for name in self.columns:
            col = _type_column(columns[name], self.delimiter, self._na_set)
            state = self.states.setdefault(name, _State())
            if col.facts.first_bad is not None:
                pos, value = col.facts.first_bad
                col.facts.first_bad = (int(lines[pos]), value)
            state.facts = state.facts.merge(col.facts)
            kind = self.forced.get(name) or state.facts.kind(self.delimiter)
            # the file's text, as read_table keeps it: a Parquet column of numbers stays numbers
            if col.stored_as_text and self._keep_text(name):
                kind = "text"
                state.kept_text = True
            if kind == "numeric" and col.numbers is not None:
                state.emitted_numeric_ambiguous |= col.ambiguous
                out[name] = col.numbers
            elif kind == "numeric" and col.facts.n_present == 0:
                out[name] = np.full(len(lines), np.nan)
            else:
                if col.numbers is not None:
                    state.emitted_text_ambiguous |= col.ambiguous
                out[name] = _categorical(col.text_values())
        frame = pd.DataFrame(out, index=pd.RangeIndex(len(lines)))
        return LoadedTable(frame=frame, source=self.source, delimiter=self.delimiter, line_numbers=lines)

    # -- after the last block --------------------------------------------------------------------
    def final_kinds(self) -> dict[str, str]:
        """Column -> 'numeric' or 'text', as read_table decides on the whole table."""
        return {n: "text" if s.kept_text else self.forced.get(n) or s.facts.kind(self.delimiter) or "text"
                for n, s in self.states.items()}

    def changed_columns(self, relevant) -> list[str]:
        """Columns of ``relevant`` some of whose values were emitted otherwise than the whole table reads them."""
        if self._mode == "whole":
            return []
        kinds = self.final_kinds()
        return [n for n in self.columns if n in relevant and n in self.states and n not in self.forced
                and not self.states[n].kept_text and (
            (kinds[n] == "text" and self.states[n].emitted_numeric_ambiguous)
            or (kinds[n] == "numeric" and self.states[n].emitted_text_ambiguous))]

    def check_numbers(self, columns=None) -> None:
        """Refuse an infinite or too large number in a column that is numeric in the whole table.

        ``columns``: check only these, as typed so far (before a block reaches a model that
        cannot hold such a number); after the last block, every column.
        """
        kinds = self.final_kinds()
        for name in self.columns if columns is None else [c for c in self.columns if c in columns]:
            bad = self.states[name].facts.first_bad if name in self.states else None
            if bad is not None and kinds.get(name) == "numeric":
                line, value = bad
                what = ("not a finite number" if value.strip().lower().lstrip("+-") in ("inf", "infinity")
                        else f"too large for the model (abs > {MAX_ABS_VALUE:.0e})")
                raise DataError(f"file {self.source!r}, line {line}, column {name!r}: value {value!r} is {what}; "
                                "replace it with a real value or leave the cell empty")


def read_table_in_blocks(path: str | os.PathLike, na_values=(), chunk_rows: int = CHUNK_ROWS,
                         text_columns: TextColumns = ()) -> LoadedTable:
    """The table in ``path`` exactly as :func:`read_table` reads it, parsed in blocks by pyarrow.

    For big training tables: :func:`read_table` builds every row in Python (a third of the
    time of training on a million rows, and its memory peak). The fast path takes plain CSV
    files; whatever it does not reproduce itself (Parquet, gzip and the other whole-file
    cases, decimal commas, formatted amounts, blank cells in a numeric column, any error)
    is read by :func:`read_table`, so the result, or the error message, is always its own.
    """
    def precise() -> LoadedTable:
        return read_table(path, na_values=na_values, text_columns=text_columns)

    stream = TableStream(path, na_values=na_values, chunk_rows=chunk_rows, text_columns=text_columns)
    if stream._mode != "csv":
        return precise()
    try:
        blocks = list(stream)
        stream.check_numbers()
        kinds = stream.final_kinds()
        if any(isinstance(b.frame[c].dtype, pd.CategoricalDtype) != (kinds[c] == "text")
               for b in blocks for c in b.frame):
            # a column typed by its first blocks otherwise than by the whole table: read again, typing fixed
            blocks = list(TableStream(path, na_values=na_values, chunk_rows=chunk_rows, kinds=kinds,
                                      text_columns=text_columns))
    except DataError:
        return precise()  # its message, from the precise reader
    facts = {c: state.facts for c, state in stream.states.items()}
    if any(kinds[c] == "numeric" and (f.comma_read(stream.delimiter) or f.blank) for c, f in facts.items()):
        return precise()  # read_table's notes on these columns
    frame = pd.concat([b.frame for b in blocks], ignore_index=True)
    for c in frame.columns:
        if kinds[c] == "text":  # as read_table's text columns: str objects, NaN where missing
            frame[c] = frame[c].astype(object).where(frame[c].notna(), np.nan)
    integer = [c for c in frame.columns if kinds[c] == "numeric" and facts[c].n_present
               and facts[c].all_int_or_decimal_comma]
    return LoadedTable(frame=frame, source=stream.source, delimiter=stream.delimiter, integer_columns=integer,
                       line_numbers=np.concatenate([b.line_numbers for b in blocks]))


def read_ahead(blocks: Iterator, depth: int = 1) -> Iterator:
    """The items of ``blocks``, produced by a second thread up to ``depth`` items ahead of the consumer.

    Parsing a block (pyarrow) and typing it release the GIL for most of their time, so the
    next block is read while the caller scores this one. Items come in order; an exception
    raised while producing one is raised here, where that item would have come. Closing
    this generator early (an error downstream) stops the producer.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in blocks:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            result = (done, None)
        except BaseException as exc:  # handed to the consumer, raised there
            result = (done, exc)
        while not stop.is_set():
            try:
                items.put(result, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="custseg-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _record_end(buffer: bytes) -> int:
    """Length of the longest prefix of ``buffer`` made of whole records (0 if none ends in it).

    A newline ends a record when an even number of quote characters precede it.
    """
    if b'"' not in buffer:
        return buffer.rfind(b"\n") + 1
    end = len(buffer)
    while True:
        nl = buffer.rfind(b"\n", 0, end)
        if nl < 0:
            return 0
        if buffer.count(b'"', 0, nl) % 2 == 0:
            return nl + 1
        end = nl


def _categorical(text: pa.Array) -> pd.Categorical:
    encoded = text.dictionary_encode()
    return pd.Categorical.from_codes(
        encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False),
        categories=pd.Index(encoded.dictionary.to_pylist(), dtype=object), validate=False)


def _type_column(values: pa.Array, delimiter: str | None, na_set: pa.Array) -> _Column:
    """Type one column of one block as read_table's typing reads each value."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):  # a Parquet categorical: its values, nulls included
        values = values.dictionary_decode()
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _type_numbers(values)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        # bools, dates, decimals...: the text read_table makes of them
        from .reading import _column_as_text

        series = _column_as_text(values.to_pandas())
        values = pa.array(series.tolist(), type=pa.string(), from_pandas=True)
    # Every test of a value depends on its text only: run them once per distinct text (a
    # column of categories or ages has a few dozen among 100,000 rows), then spread back.
    encoded = values.cast(pa.string()).dictionary_encode()
    rows = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    col = _type_distinct(encoded.dictionary, delimiter, na_set)
    present = ~col.missing
    col.facts.n_present = int(np.count_nonzero(present[rows[rows >= 0]]))
    if col.facts.first_bad is not None:  # the first ROW holding a bad value
        numbers = np.where(present, col.numbers, 0.0)
        bad = ~np.isfinite(numbers) | (np.abs(np.where(np.isfinite(numbers), numbers, 0.0)) > MAX_ABS_VALUE)
        at = int(np.argmax(np.append(bad, False)[rows]))
        col.facts.first_bad = (at, col.text[int(rows[at])].as_py())
    col.text = col.text.take(encoded.indices)
    if col.numbers is not None:
        col.numbers = np.append(col.numbers, np.nan)[rows]
    return col


def _type_distinct(values: pa.Array, delimiter: str | None, na_set: pa.Array) -> _Column:
    """Type distinct texts (no nulls) as read_table's typing reads each value; ``missing`` marks the NA tokens."""
    ascii_only = pc.all(pc.string_is_ascii(values)).as_py() in (True, None)
    if ascii_only:
        stripped = pc.utf8_trim(values, characters=_ASCII_SPACE)
    else:
        stripped = pa.array(pd.Series(values.to_pylist(), dtype=object).str.strip().tolist(), type=pa.string())
    missing = pc.fill_null(pc.is_in(stripped, value_set=na_set), True)
    text = pc.if_else(missing, pa.scalar(None, pa.string()), stripped)
    present = stripped.filter(pc.invert(missing))
    facts = ColumnFacts(n_present=len(present))
    facts.blank = bool(pc.any(pc.and_(pc.equal(stripped, ""), pc.not_equal(values, ""))).as_py())
    numbers = None
    ambiguous = False
    comma = False
    if len(present):
        if ascii_only:
            digits = pc.all(pc.match_substring_regex(present, r"^\d+$")).as_py()
        else:
            digits = bool(pd.Series(present.to_pylist(), dtype=object).str.fullmatch(r"\d+").all())
        lengths = pc.utf8_length(present)
        facts.all_digits = bool(digits)
        facts.min_len, facts.max_len = pc.min(lengths).as_py(), pc.max(lengths).as_py()
        facts.leading_zero = bool(pc.any(pc.starts_with(present, "0")).as_py())
        parsed = _parse_numbers(present, ascii_only, facts.max_len)
        facts.all_numeric = parsed is not None
        if parsed is None and delimiter not in (",", None):
            patterns = pd.Series(present.to_pylist(), dtype=object)
            facts.any_decimal_comma = bool(patterns.str.fullmatch(r"[-+]?\d+,\d+").any())
            facts.all_int_or_decimal_comma = bool(patterns.str.fullmatch(r"[-+]?\d+(,\d+)?").all())
            if facts.any_decimal_comma and facts.all_int_or_decimal_comma:
                parsed = pd.to_numeric(patterns.str.replace(",", ".", regex=False)).to_numpy(dtype="float64")
                comma = True
        if parsed is None and delimiter is not None and not comma:
            parts = _formatted_facts(present, ascii_only, facts)
            if parts is not None:
                parsed = parts
                comma = True  # the numbers' text is not the values' text
        elif parsed is not None:
            # plain numbers are formatted amounts without unit unless written otherwise ('1e5', '.5')
            facts.all_formatted = bool(pc.all(pc.match_substring_regex(present, r"^[-+]?\d+(\.\d+)?$")).as_py()) \
                if ascii_only else all(_FORMATTED_NUMBER.match(v) for v in present.to_pylist())
            facts.units = frozenset({""})
        if parsed is not None and not comma:
            facts.all_int_or_decimal_comma = bool(pc.all(pc.match_substring_regex(present, r"^[-+]?\d+$")).as_py()) \
                if ascii_only else bool(pd.Series(present.to_pylist(), dtype=object).str.fullmatch(r"[-+]?\d+").all())
        if parsed is not None:
            numbers = np.full(len(values), np.nan)
            where = ~missing.to_numpy(zero_copy_only=False)
            numbers[where] = parsed
            bad = ~np.isfinite(parsed) | (np.abs(np.where(np.isfinite(parsed), parsed, 0.0)) > MAX_ABS_VALUE)
            if bad.any():
                at = int(np.argmax(bad))
                facts.first_bad = (int(np.flatnonzero(where)[at]), present[at].as_py())
            ambiguous = comma or not pc.all(pc.match_substring_regex(present, _CANONICAL_INT)).as_py()
    return _Column(text=text, numbers=numbers, facts=facts, ambiguous=ambiguous, comma_numbers=comma,
                   missing=missing.to_numpy(zero_copy_only=False))


def _formatted_facts(present: pa.Array, ascii_only: bool, facts: ColumnFacts) -> np.ndarray | None:
    """Numbers of a block whose values all read as formatted amounts (facts noted), else None (facts too)."""
    if ascii_only and not pc.all(pc.match_substring_regex(present, r"^[-+]?\s*[$A-Za-z]{0,3}\s*[-+]?[0-9][0-9,.]*"
                                                           r"\s*([$A-Za-z]{1,3}|%)?$")).as_py():
        facts.all_formatted = False  # cheap refusal of ordinary text
        return None
    parts = formatted_parts(present.to_pylist())
    if parts is None:
        facts.all_formatted = False
        return None
    values, facts.units, facts.thousands = parts
    return values


def _parse_numbers(present: pa.Array, ascii_only: bool, max_len: int) -> np.ndarray | None:
    """float64 of every value if pandas' to_numeric reads them all as numbers, else None.

    pyarrow's parser is used where it reads exactly what pandas reads: short ASCII
    numbers (up to 15 characters, so both round correctly), no NaN or infinity.
    """
    if ascii_only and max_len <= 15:
        try:
            fast = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            fast = None
        if fast is not None and np.isfinite(fast).all():
            return fast
    if ascii_only and not pc.all(pc.match_substring_regex(present, _NUMBER_LIKE)).as_py():
        return None  # a word: pandas would not read it either; saves a Python pass over text columns
    numbers = pd.to_numeric(pd.Series(present.to_pylist(), dtype=object), errors="coerce")
    if numbers.isna().any():
        return None
    return numbers.to_numpy(dtype="float64")


def _type_numbers(values: pa.Array) -> _Column:
    """A typed numeric column of a Parquet file: read_table reads it through its text (str / repr)."""
    present = values.drop_null()
    arr = present.to_numpy(zero_copy_only=False)
    integer = pa.types.is_integer(values.type)
    if not integer:  # float16 and float32 compared with 2**53 below would overflow
        arr = arr.astype("float64")
    facts = ColumnFacts(n_present=len(arr))
    if pa.types.is_floating(values.type):
        present_mask = ~np.isnan(arr)  # NaN is missing; read_table writes it as no value
        arr = arr[present_mask]
        facts.n_present = len(arr)
    numbers = values.to_numpy(zero_copy_only=False).astype("float64")
    if facts.n_present:
        if integer:
            facts.all_digits = bool(arr.min() >= 0)
            facts.min_len, facts.max_len = len(str(int(arr.min()))), len(str(int(arr.max())))
            facts.leading_zero = bool((arr == 0).any())
        else:
            facts.all_digits = False
        facts.all_int_or_decimal_comma = integer
        bad = ~np.isfinite(numbers) & ~np.isnan(numbers) | (np.abs(np.nan_to_num(numbers, posinf=0, neginf=0))
                                                               > MAX_ABS_VALUE)
        if bad.any():
            at = int(np.argmax(bad))
            facts.first_bad = (at, repr(float(numbers[at])) if not integer else str(values[at].as_py()))
    big = facts.n_present and np.abs(arr).max() >= 2 ** 53
    if integer:
        text = values.cast(pa.string())
        ambiguous = bool(big)
    else:
        text = None
        ambiguous = True  # '3.0' is the text of 3.0; its category is '3'
    return _Column(text=text, numbers=numbers, facts=facts, ambiguous=ambiguous, floats=values,
                   stored_as_text=False)
