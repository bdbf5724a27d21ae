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
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError
from .atomic import (check_output_folders, commit_outputs, merge_into, output_lock, recover, staging_dir,
                     swap_directory)

__all__ = ["FLOAT_FORMAT", "csv_bytes", "csv_rows", "format_general", "json_bytes", "write_csv_blocks", "write_files",
           "write_model_folder", "write_into", "write_run"]

#: Six significant digits: every metric reads the same, and the same run gives the same bytes.
FLOAT_FORMAT = "%.6g"
#: the file only a custseg model folder holds; a folder without it is never replaced
MODEL_MARKER = "manifest.json"
#: text the csv module quotes (a carriage return is left to pandas: the rule for it varies by version)
_NEEDS_QUOTES = r'[,"\n]'


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table as custseg writes every CSV: no index, :data:`FLOAT_FORMAT`, ``\\n`` line ends, UTF-8."""
    return frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n").encode("utf-8")


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
              results: Mapping[str, bytes]) -> dict[str, list[Path]]:
    """Write a training run: the model folder (swapped whole) and the results (merged file by file).

    Both are staged completely and then committed together under a lock
    (:func:`custseg.io.atomic.commit_outputs`): after a failure or a kill at any point the
    pair is the old one or the new one, never a mix.
    """
    models_dir, results_dir = Path(models_dir), Path(results_dir)
    check_output_folders(models_dir, results_dir, marker=MODEL_MARKER)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(models_dir, results_dir))
        recover(models_dir, results_dir)  # a run killed mid-commit is completed before this one starts
        staged_models = stack.enter_context(staging_dir(models_dir))
        staged_results = stack.enter_context(staging_dir(results_dir))
        write_files(staged_models, model)
        write_files(staged_results, results)
        moved = commit_outputs(staged_models, models_dir, staged_results, results_dir)
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
        with open(staged / path.name, "wb") as fh:
            for block in blocks:
                if header:
                    fh.write(csv_bytes(block.iloc[:0]))
                    header = False
                fh.write(csv_rows(block, FLOAT_FORMAT))
                rows += len(block)
            fh.flush()
            os.fsync(fh.fileno())
        merge_into(staged, path.parent if str(path.parent) else ".")
    return rows


def csv_rows(frame: pd.DataFrame, float_format: str = "%.6g") -> bytes:
    """The rows of ``frame`` as ``frame.to_csv(index=False, header=False, float_format=..., lineterminator="\\n")``.

    >>> csv_rows(pd.DataFrame({"ID": ["a", "b"], "x": [1234567.0, float("nan")], "k": [1, 2]}))
    b'a,1.23457e+06,1\\nb,,2\\n'
    """
    columns = []
    for name in frame.columns:
        col = frame[name]
        if col.dtype == np.dtype(bool):  # as str() writes them
            columns.append(pa.array(["False", "True"]).take(col.to_numpy(dtype="int8")))
        elif pd.api.types.is_float_dtype(col):
            columns.append(format_general(col.to_numpy(dtype="float64"), float_format))
        elif pd.api.types.is_integer_dtype(col) and not pd.api.types.is_bool_dtype(col):
            columns.append(pa.array(col.to_numpy()).cast(pa.string()))
        elif pd.api.types.is_string_dtype(col):
            try:
                text = pa.array(col.to_numpy(dtype=object), type=pa.string(), from_pandas=True).fill_null("")
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: let pandas write it
                return _pandas_rows(frame, float_format)
            if pc.any(pc.match_substring(text, "\r")).as_py():  # the csv module's rule for it varies by version
                return _pandas_rows(frame, float_format)
            quote = pc.match_substring_regex(text, _NEEDS_QUOTES)
            if pc.any(quote).as_py():  # as the csv module's QUOTE_MINIMAL: in quotes, quotes doubled
                quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
                text = pc.if_else(quote, quoted, text)
            columns.append(text)
        else:
            return _pandas_rows(frame, float_format)
    if len(columns) < 2 or len(frame) == 0:  # one column: an empty value would be quoted
        return _pandas_rows(frame, float_format)
    rows = pc.binary_join_element_wise(*columns, pa.scalar("", pa.string()), ",")
    # the empty last element leaves a trailing ','; replace it by the line end
    rows = pc.binary_join_element_wise(pc.utf8_slice_codeunits(rows, 0, -1), pa.scalar("", pa.string()), "\n")
    rows = rows.cast(pa.large_string())
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset: rows.offset + len(rows) + 1]
    return rows.buffers()[2].to_pybytes()[offsets[0]: offsets[-1]]


def _pandas_rows(frame: pd.DataFrame, float_format: str) -> bytes:
    return frame.to_csv(index=False, header=False, float_format=float_format, lineterminator="\n").encode("utf-8")


def format_general(values: np.ndarray, float_format: str = "%.6g") -> pa.Array:
    """``float_format % v`` of every value, '' for NaN, as ``to_csv`` writes them.

    >>> format_general(np.array([0.000123456789, 5.0, np.nan, 123456789.0])).to_pylist()
    ['0.000123457', '5', '', '1.23457e+08']
    """
    # A vectorised rounding to significant digits (numpy, then pyarrow's int -> string
    # cast and string kernels) was measured slower here than Python's own '%' per value,
    # which is also exact by construction.
    values = np.asarray(values, dtype="float64")
    text = [float_format % x for x in values.tolist()]
    if np.isnan(values).any():
        for i in np.flatnonzero(np.isnan(values)):
            text[i] = ""
    return pa.array(text, type=pa.string())
