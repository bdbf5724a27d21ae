"""Writing output folders so that a failed or interrupted run loses nothing.

Everything is first written into a hidden staging folder beside the target. Only
when all of it is there is it moved into place:

* a model folder is swapped whole (rename the old one aside, rename the new one in,
  then remove the old one), so ``models/`` is never a mix of two runs;
* a results folder receives its files one by one with ``os.replace`` (atomic per
  file), so files of the user's own in that folder are left alone.

If anything fails before that point, the staging folder is removed and the
targets are exactly as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..exceptions import DataError

__all__ = ["staging_dir", "swap_directory", "merge_into", "atomic_write_text"]


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden folder beside ``target``, removed on exit whatever happens."""
    target = Path(target)
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=parent))
    except OSError as exc:
        raise DataError(f"cannot create output folder beside {str(target)!r} ({exc.strerror}); "
                        "choose a writable location") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def swap_directory(staged: Path, target: str | os.PathLike, *, marker: str) -> None:
    """Replace folder ``target`` by ``staged``.

    ``target`` must be absent, empty, or hold ``marker`` (a file only our own
    folders have); anything else is refused rather than deleted.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"{str(target)!r} exists and is not a folder; give another --models-dir")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).exists():
        raise DataError(f"folder {str(target)!r} is not empty and holds no custseg model ({marker} missing); "
                        "refusing to replace it: give another --models-dir")
    backup = None
    if target.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.resolve().parent))
        os.rmdir(backup)
        os.replace(target, backup)
    try:
        os.replace(staged, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def merge_into(staged: Path, target: str | os.PathLike) -> list[Path]:
    """Move every file of ``staged`` into ``target`` (same relative paths), one atomic replace each."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"{str(target)!r} exists and is not a folder; give another --results-dir")
    moved = []
    for src in sorted(p for p in staged.rglob("*") if p.is_file()):
        dest = target / src.relative_to(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        moved.append(dest)
    return moved


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
