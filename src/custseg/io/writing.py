"""The one place custseg writes files: CSV, PNG, JSON, HTML and model folders.

Everything else computes data and hands it here. Tables become CSV with one number
format (:data:`FLOAT_FORMAT`), summaries become JSON, figures arrive as PNG bytes
(:func:`custseg.report.plots.render_png`), the report as HTML text, a model folder as
the bytes of its files (:func:`custseg.persistence.model_files`). Every write goes
through :mod:`custseg.io.atomic`: staged beside the target, then moved into place, so
a failure leaves the targets as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..exceptions import DataError
from .atomic import (check_output_folders, commit_outputs, merge_into, output_lock, recover, staging_dir,
                     swap_directory)

__all__ = ["FLOAT_FORMAT", "csv_bytes", "json_bytes", "write_files", "write_model_folder", "write_into",
           "write_run"]

#: Six significant digits: every metric reads the same, and the same run gives the same bytes.
FLOAT_FORMAT = "%.6g"
#: the file only a custseg model folder holds; a folder without it is never replaced
MODEL_MARKER = "manifest.json"


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
    with staging_dir(folder) as staged:
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
