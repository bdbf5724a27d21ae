"""The one place custseg writes files: CSV, PNG, JSON, HTML and model folders.

Everything else computes data and hands it here. Tables become CSV with one number
format (:data:`FLOAT_FORMAT`), summaries become JSON, figures arrive as PNG bytes
(:func:`custseg.report.plots.render_png`), the report as HTML text, a model folder as
the bytes of its files (:func:`custseg.persistence.model_files`). Every write goes
through :mod:`custseg.io.atomic`: staged beside the target, then moved into place, so
a failure leaves the targets as they were.

Predictions of big tables are written block by block (:func:`write_csv_blocks`), with
:func:`csv_rows`: the bytes ``to_csv`` writes, formatted column by column with pyarrow's
string kernels instead of pandas' per-cell writer; text holding the delimiter, a quote
or a line break is quoted as the csv module quotes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError
from .atomic import (check_output_folders, checkpoint, commit_outputs, held_interrupts, merge_into, output_lock,
                     recover, staging_dir, swap_directory)

__all__ = ["FLOAT_FORMAT", "csv_bytes", "csv_rows", "format_general", "json_bytes", "write_csv_blocks", "write_files",
           "write_model_folder", "write_into", "write_run"]

#: Six significant digits: every metric reads the same, and the same run gives the same bytes.
FLOAT_FORMAT = "%.6g"
#: the file only a custseg model folder holds; a folder without it is never replaced
MODEL_MARKER = "manifest.json"
#: text the csv module quotes (a carriage return is left to pandas: the rule for it varies by version)
_NEEDS_QUOTES = r'[,"\n]'


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table as custseg writes every CSV: no index, :data:`FLOAT_FORMAT`, ``\\n`` line ends, UTF-8.

    The rows are those of :func:`csv_rows` (the same bytes as ``to_csv``, faster on the
    million-row tables of a large training run).
    """
    header = frame.iloc[:0].to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n").encode("utf-8")
    return header + (csv_rows(frame, FLOAT_FORMAT) if len(frame) else b"")


def json_bytes(data: Any) -> bytes:
    """Indented JSON in the order given; NumPy numbers become plain numbers and NaN becomes null."""
    return (json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_files(folder: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) into ``folder``, each flushed to disk.

    Only for a folder that is not yet visible (a staging folder): the files appear one by one.
    """
    folder = Path(folder)
    for name, data in files.items():
        checkpoint()  # a Ctrl-C held back while outputs are written stops here, before anything is moved
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_model_folder(path: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Replace model folder ``path`` by one holding ``files``, whole or not at all."""
    with staging_dir(path) as staged:
        write_files(staged, files)
        swap_directory(staged, path, marker=MODEL_MARKER)
    return Path(path)


def write_into(folder: str | os.PathLike, files: Mapping[str, bytes]) -> list[Path]:
    """Put ``files`` (relative path -> bytes) into ``folder``; other files there are left alone.

    All are staged first, then each is moved into place atomically.
    """
    folder = Path(folder)
    # the same lock as a training run's: compare, select-k and drift writing into a results folder
    # another run is writing to are refused instead of mixing their files
    with output_lock(folder), staging_dir(folder) as staged:
        write_files(staged, files)
        try:
            return merge_into(staged, folder)
        except PermissionError as exc:
            raise DataError(f"cannot write into folder {str(folder)!r} ({exc.strerror}); "
                            "fix its permissions or choose another folder") from None


def write_run(models_dir: str | os.PathLike, model: Mapping[str, bytes], results_dir: str | os.PathLike,
              results: Mapping[str, bytes], retire: Iterable[str] = ()) -> dict[str, list[Path]]:
    """Write a training run: the model folder (swapped whole) and the results (merged file by file).

    Both are staged completely and then committed together under a lock
    (:func:`custseg.io.atomic.commit_outputs`): after a failure or a kill at any point the
    pair is the old one or the new one, never a mix. ``retire``: the files a run may write
    (relative paths); those of them this run does not write are the replaced run's, and go
    with it.
    """
    models_dir, results_dir = Path(models_dir), Path(results_dir)
    check_output_folders(models_dir, results_dir, marker=MODEL_MARKER)
    # Ctrl-C from here on is acted on where the outcome is known: before the commit (nothing changed),
    # between its moves (rolled back) or after it (the new run is in place, and the user is told so)
    with held_interrupts(), contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(models_dir, results_dir))
        recover(models_dir, results_dir)  # a run killed mid-commit is completed before this one starts
        staged_models = stack.enter_context(staging_dir(models_dir))
        staged_results = stack.enter_context(staging_dir(results_dir))
        write_files(staged_models, model)
        write_files(staged_results, results)
        moved = commit_outputs(staged_models, models_dir, staged_results, results_dir, retire=retire)
    return {"models": sorted(models_dir.iterdir()), "results": moved}


def write_csv_blocks(path: str | os.PathLike, blocks: Iterable[pd.DataFrame]) -> int:
    """Write the tables ``blocks`` gives as one CSV file (header of the first), each as it comes; rows written.

    The file is staged beside ``path`` and renamed onto it once the last block is in, so a
    failure at any point (an error raised by ``blocks`` included) leaves an earlier file
    at ``path`` as it was. The bytes are those :func:`csv_bytes` gives for the blocks
    concatenated.
    """
    path = Path(path)
    rows, header = 0, True
    with staging_dir(path) as staged:
        # a block is formatted on a second thread while ``blocks`` makes the next one (numpy and
        # pyarrow release the GIL); at most one formatted block waits to be written
        with open(staged / path.name, "wb") as fh, ThreadPoolExecutor(max_workers=1) as formatter:
            pending = None
            for block in blocks:
                if header:
                    fh.write(csv_bytes(block.iloc[:0]))
                    header = False
                if pending is not None:
                    fh.write(pending.result())
                pending = formatter.submit(csv_rows, block, FLOAT_FORMAT)
                rows += len(block)
            if pending is not None:
                fh.write(pending.result())
            fh.flush()
            os.fsync(fh.fileno())
        merge_into(staged, path.parent if str(path.parent) else ".")
    return rows


def csv_rows(frame: pd.DataFrame, float_format: str = "%.6g") -> bytes:
    """The rows of ``frame`` as ``frame.to_csv(index=False, header=False, float_format=..., lineterminator="\\n")``.

    >>> csv_rows(pd.DataFrame({"ID": ["a", "b"], "x": [1234567.0, float("nan")], "k": [1, 2]}))
    b'a,1.23457e+06,1\\nb,,2\\n'
    """
    if not frame.columns.is_unique or isinstance(frame.columns, pd.MultiIndex):
        return _pandas_rows(frame, float_format)
    columns = []
    for name in frame.columns:
        col = frame[name]
        if col.dtype == np.dtype(bool):  # as str() writes them
            columns.append(pa.array(["False", "True"]).take(col.to_numpy(dtype="int8")))
        elif pd.api.types.is_float_dtype(col):
            columns.append(format_general(col.to_numpy(dtype="float64", na_value=np.nan), float_format))
        elif pd.api.types.is_integer_dtype(col) and not pd.api.types.is_bool_dtype(col):
            columns.append(pa.array(col.array).cast(pa.string()).fill_null(""))  # <NA> written as nothing
        elif pd.api.types.is_string_dtype(col):
            try:
                if hasattr(col.array, "__arrow_array__"):  # pandas' Arrow-backed text: no copy of the characters
                    text = pa.array(col.array).cast(pa.string())
                    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
                else:
                    text = pa.array(col.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
                text = text.fill_null("")
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: let pandas write it
                return _pandas_rows(frame, float_format)
            text = _csv_text(text)
            if text is None:
                return _pandas_rows(frame, float_format)
            columns.append(text)
        else:
            return _pandas_rows(frame, float_format)
    if len(columns) < 2 or len(frame) == 0:  # one column: an empty value would be quoted
        return _pandas_rows(frame, float_format)
    # the line end joined to the last column: one pass over it instead of a second one over the rows
    columns[-1] = pc.binary_join_element_wise(columns[-1], pa.scalar("", pa.string()), "\n")
    rows = pc.binary_join_element_wise(*columns, ",")
    rows = rows.cast(pa.large_string())
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset: rows.offset + len(rows) + 1]
    return rows.buffers()[2].to_pybytes()[offsets[0]: offsets[-1]]


def _csv_text(text: pa.Array) -> pa.Array | None:
    """A text column as the csv module writes it (QUOTE_MINIMAL), or None if pandas must write it."""
    data = _characters(text)
    if b"\r" in data:  # the csv module's rule for it varies by version
        return None
    if b"," not in data and b'"' not in data and b"\n" not in data:  # the usual case: one scan of the bytes
        return text
    # a column of names or reasons holds a few distinct texts: quote those, then spread them
    encoded = text.dictionary_encode()
    values = encoded.dictionary
    quote = pc.match_substring_regex(values, _NEEDS_QUOTES)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(quote, quoted, values).take(encoded.indices)


def _characters(text: pa.Array) -> bytes:
    """The characters of a string array, all values one after the other."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset: text.offset + len(text) + 1]
    return text.buffers()[2].to_pybytes()[offsets[0]: offsets[-1]] if len(text) and text.buffers()[2] else b""


def _pandas_rows(frame: pd.DataFrame, float_format: str) -> bytes:
    return frame.to_csv(index=False, header=False, float_format=float_format, lineterminator="\n").encode("utf-8")


def format_general(values: np.ndarray, float_format: str = "%.6g") -> pa.Array:
    """``float_format % v`` of every value, '' for NaN, as ``to_csv`` writes them.

    >>> format_general(np.array([0.000123456789, 5.0, np.nan, 123456789.0, -0.5])).to_pylist()
    ['0.000123457', '5', '', '1.23457e+08', '-0.5']
    """
    values = np.asarray(values, dtype="float64")
    match = _GENERAL.fullmatch(float_format)
    if match is not None and sys.byteorder == "little":
        return _format_general_vectorised(values, int(match.group(1)), float_format)
    text = [float_format % x for x in values.tolist()]
    for i in np.flatnonzero(np.isnan(values)):
        text[i] = ""
    return pa.array(text, type=pa.string())


#: '%.1g' .. '%.6g': formatted by whole arrays (each result fits the 12 characters of an Arrow string view)
_GENERAL = re.compile(r"%\.([1-6])g")
_POW10 = np.array([float(10 ** k) for k in range(23)])  # exact: 10**22 < 2**53 * 2**22
#: the low k bytes of a 64-bit word, k = 0..8
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
#: '0.', '0.0', '0.00', '0.000' (by length) as little-endian words
_ZERO_POINT = np.array([int.from_bytes(b"0.000"[:z].ljust(8, b"\0"), "little") for z in range(6)], dtype=np.uint64)
_VIEW_INLINE = 12


def _format_general_vectorised(values: np.ndarray, p: int, float_format: str) -> pa.Array:
    """'%.{p}g' % v of each value, computed on whole arrays with the same bytes as Python.

    Python rounds the exact binary value to p significant digits. Here the value is scaled
    by an exact power of ten (one rounding, relative error 2**-53) and rounded; where the
    scaled value is too close to a half for that error, and for zeros, infinities and
    exponents from 100 on, Python formats the value itself. The text is then assembled
    in 64-bit words (one character a byte) by shifts and masks, no Python per value, and
    handed to Arrow as string views (4-byte length, 12 characters inline).

    Per value on this machine: about a third of Python's '%' (which holds the GIL; numpy
    releases it, so this overlaps with the other work of a block).
    """
    n = len(values)
    u64 = np.uint64
    magnitude = np.abs(values)
    ok = np.isfinite(magnitude) & (magnitude > 0)
    safe = np.where(ok, magnitude, 1.0)
    # exponent of the first significant digit: log10's guess, checked by having p digits before the point
    e = np.floor(np.log10(safe)).astype(np.int64)
    for _ in range(3):
        shift = p - 1 - e
        power = _POW10[np.minimum(np.abs(shift), 22)]
        with np.errstate(over="ignore"):  # the branch np.where does not take may overflow
            scaled = np.where(shift >= 0, safe * power, safe / power)
        up, down = scaled >= 10.0 ** p, scaled < 10.0 ** (p - 1)
        if not (up | down).any():
            break
        e += up.astype(np.int64) - down.astype(np.int64)
    ok &= ~(up | down) & (np.abs(shift) <= 22)
    ok &= np.abs(scaled - np.floor(scaled) - 0.5) > scaled * 1e-15  # not near a tie
    rounded = np.rint(scaled)
    carry = rounded >= 10.0 ** p  # 999999.7 -> '1e+06'
    e += carry
    ok &= np.abs(e) < 100
    e = np.where(ok, e, 0)
    m = np.where(ok & ~carry, rounded, 10.0 ** (p - 1)).astype(np.int64)
    # the p digits as one word, first digit in the lowest byte; nd = digits without the trailing zeros
    word = np.zeros(n, dtype=u64)
    nd = np.full(n, p, dtype=np.int64)
    trailing = np.ones(n, dtype=bool)
    for i in range(p - 1, -1, -1):
        m, digit = np.divmod(m, 10)
        word |= (digit + 48).astype(u64) << u64(8 * i)
        trailing &= digit == 0
        nd -= trailing
    bits = lambda k: u64(8) * np.asarray(k, dtype=u64)  # noqa: E731  (a byte count as a shift)
    # 0 <= e < p: the digits, a point after the first e + 1 if more follow
    q = np.clip(e + 1, 1, p)
    point = nd > q
    fraction = (word >> bits(q)) & _LOW_BYTES[np.clip(nd - q, 0, 8)]
    plain = (word & _LOW_BYTES[q]) | np.where(point, (u64(46) << bits(q)) | (fraction << bits(q + 1)), u64(0))
    plain_len = np.maximum(nd, q) + point
    # -4 <= e < 0: '0.' and -e - 1 zeros before the digits (up to 11 characters: two words)
    z = np.clip(1 - e, 2, 5)
    head = word & _LOW_BYTES[nd]
    small_lo, small_hi, small_len = _ZERO_POINT[z] | (head << bits(z)), head >> bits(8 - z), z + nd
    # otherwise d.ddddde+XX
    rest = ((word >> u64(8)) & _LOW_BYTES[np.maximum(nd - 1, 0)]) << u64(16)
    mantissa = (word & u64(0xFF)) | np.where(nd > 1, u64(46 << 8) | rest, u64(0))
    mantissa_len = nd + (nd > 1)
    ae = np.abs(e).astype(u64)
    suffix = (u64(ord("e")) | (np.where(e < 0, u64(ord("-")), u64(ord("+"))) << u64(8))
              | ((u64(48) + ae // u64(10)) << u64(16)) | ((u64(48) + ae % u64(10)) << u64(24)))
    sci_lo, sci_hi, sci_len = mantissa | (suffix << bits(mantissa_len)), suffix >> bits(8 - mantissa_len), mantissa_len + 4
    is_plain, is_small = (e >= 0) & (e < p), (e < 0) & (e >= -4)
    lo = np.where(is_plain, plain, np.where(is_small, small_lo, sci_lo))
    hi = np.where(is_plain, u64(0), np.where(is_small, small_hi, sci_hi))
    length = np.where(is_plain, plain_len, np.where(is_small, small_len, sci_len))
    negative = np.signbit(values)
    hi = np.where(negative, (hi << u64(8)) | (lo >> u64(56)), hi)
    lo = np.where(negative, (lo << u64(8)) | u64(45), lo)
    length = length + negative
    # the rest as Python writes it: '' for NaN; zeros, infinities, values near a tie, exponents from 100
    nan = np.isnan(values)
    lo[nan], hi[nan], length[nan] = 0, 0, 0
    long_rows, long_text = [], []
    for i in np.flatnonzero(~ok & ~nan).tolist():
        text = (float_format % values[i]).encode("ascii")
        if len(text) > _VIEW_INLINE:
            long_rows.append(i)
            long_text.append(text.decode("ascii"))
            text = b""
        padded = text.ljust(16, b"\0")
        lo[i], hi[i], length[i] = int.from_bytes(padded[:8], "little"), int.from_bytes(padded[8:], "little"), len(text)
    views = np.empty((n, 2), dtype=u64)
    views[:, 0] = length.astype(u64) | (lo << u64(32))
    views[:, 1] = (lo >> u64(32)) | (hi << u64(32))
    if hasattr(pa, "string_view"):  # pyarrow >= 16
        text = pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views)]).cast(pa.string())
    else:
        chars = views.view(np.uint8).reshape(n, 16)[:, 4:]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(length, out=offsets[1:])
        text = pa.StringArray.from_buffers(n, pa.py_buffer(offsets),
                                           pa.py_buffer(chars[np.arange(_VIEW_INLINE) < length[:, None]].tobytes()))
    if long_rows:
        mask = np.zeros(n, dtype=bool)
        mask[long_rows] = True
        text = pc.replace_with_mask(text, pa.array(mask), pa.array(long_text, type=pa.string()))
    return text
