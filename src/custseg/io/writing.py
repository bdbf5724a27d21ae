"""CSV text of scored tables, fast, and byte for byte what pandas' ``to_csv`` writes.

``DataFrame.to_csv(float_format="%.6g")`` goes through a per-cell Python writer. :func:`csv_rows`
formats each float column with ``%`` in one list comprehension and joins the columns
and lines with pyarrow's string kernels; text holding the delimiter, a quote or a line
break is quoted as the csv module quotes it. Anything else (a carriage return in a value,
columns of other types, one column) is written by pandas itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["csv_rows", "format_general"]

_NEEDS_QUOTES = r'[,"\n]'


def csv_rows(frame: pd.DataFrame, float_format: str = "%.6g") -> bytes:
    """The rows of ``frame`` as ``frame.to_csv(index=False, header=False, float_format=..., lineterminator="\\n")``.

    >>> csv_rows(pd.DataFrame({"ID": ["a", "b"], "x": [1234567.0, float("nan")], "k": [1, 2]}))
    b'a,1.23457e+06,1\\nb,,2\\n'
    """
    columns = []
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_float_dtype(col):
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
