"""The sample customer tables shipped inside the package, as scikit-learn ships its ``load_*`` datasets.

``custseg train`` with no ``--train`` reads ``data/raw/Train.csv`` (and ``Test.csv``)
when run inside a clone of the repository, and the copies packaged here anywhere
else, so that a fresh ``pip install`` works out of the box.

>>> from custseg.io.datasets import load_customers
>>> table = load_customers("train")
>>> len(table.frame), "Segmentation" in table.frame.columns
(8068, True)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..exceptions import DataError
from .reading import LoadedTable, read_table

__all__ = ["sample_path", "load_customers", "resolve_default_path", "DEFAULT_PATHS"]

#: the relative paths the settings name by default, and the packaged file each stands for
DEFAULT_PATHS = {"data/raw/Train.csv": "Train.csv", "data/raw/Test.csv": "Test.csv"}
_FILES = {"train": "Train.csv", "test": "Test.csv"}


def sample_path(which: str = "train") -> Path:
    """Path of a packaged sample table: ``"train"`` (8,068 customers with their known
    segment ``Segmentation`` A-D) or ``"test"`` (2,627 new customers)."""
    if which not in _FILES:
        raise DataError(f"unknown sample table {which!r}; choose 'train' or 'test'")
    return Path(str(resources.files("custseg.io") / "data" / _FILES[which]))


def load_customers(which: str = "train") -> LoadedTable:
    """Read a packaged sample table (see :func:`sample_path`) with :func:`~custseg.io.reading.read_table`."""
    return read_table(sample_path(which))


def resolve_default_path(path: str | os.PathLike | None) -> str | os.PathLike | None:
    """``path`` itself, unless it is a default path that does not exist here: then the packaged copy.

    A path the user gave is never replaced, so a typo still fails with "does not exist".
    """
    if path is None or str(path) not in DEFAULT_PATHS or Path(path).exists():
        return path
    packaged = Path(str(resources.files("custseg.io") / "data" / DEFAULT_PATHS[str(path)]))
    return str(packaged) if packaged.is_file() else path
