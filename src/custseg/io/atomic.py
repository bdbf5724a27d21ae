"""Writing output folders so that a failed or interrupted run loses nothing.

Everything is first written into a hidden staging folder beside the target. Only
when all of it is there is it moved into place:

* a model folder is swapped whole (rename the old one aside, rename the new one in,
  then remove the old one), so ``models/`` is never a mix of two runs;
* a results folder receives its files one by one with ``os.replace`` (atomic per
  file), so files of the user's own in that folder are left alone.

If anything fails before that point, the staging folder is removed and the
targets are exactly as they were.

A training run writes a model folder and a results folder that belong together.
:func:`commit_outputs` makes the pair crash safe with a journal: once both are
staged completely, a journal naming every move is written beside the model folder
(atomically, fsynced); then the moves are made; then the journal is removed. A run
killed (even ``kill -9``) before the journal exists leaves old+old; killed after,
the next command that opens the model folder (:func:`recover`: train, predict,
report, load_model) completes the moves, giving new+new. Leftover staging and
backup folders are removed at the same time.

:func:`output_lock` takes an exclusive ``fcntl.flock`` on a hidden lock file beside
each target, so a second run into the same folders fails at once with a clear
message instead of overwriting the first one's files.

Folders and files are created with the user's umask (``mkdtemp``/``mkstemp`` alone
would give 0700/0600).

For tests, the environment variable ``CUSTSEG_SWAP_DELAY`` (seconds, float) sleeps
before every move of a commit, widening the window in which a kill lands mid-swap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..exceptions import DataError

__all__ = ["staging_dir", "swap_directory", "merge_into", "atomic_write_text", "commit_outputs", "recover",
           "output_lock", "check_output_folders", "check_output_file"]

_UMASK_LOCK = threading.Lock()
#: lock files this process holds, with how many nested output_lock() calls hold each
_HELD: dict[Path, int] = {}


def _umask() -> int:
    """The process umask (read by setting it and putting it back; guarded against other threads)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden folder beside ``target``, removed on exit whatever happens."""
    target = Path(target)
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=parent))
        os.chmod(path, 0o777 & ~_umask())  # it becomes the model folder: the user's umask, not 0700
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
    commit_outputs(staged, target)


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise DataError(f"cannot write {str(path)!r} ({exc.strerror}); make the folder writable or choose "
                        "another one") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make report.html private
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the pair swap, its journal, the lock ---------------------------------------------------------------------


def _journal_path(models_dir: Path) -> Path:
    return models_dir.absolute().parent / f".{models_dir.name}.journal.json"


def _lock_path(target: Path) -> Path:
    return target.absolute().parent / f".{target.name}.lock"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pause() -> None:
    delay = os.environ.get("CUSTSEG_SWAP_DELAY")
    if delay:
        time.sleep(float(delay))
    checkpoint()


#: one entry per :func:`held_interrupts` block running: whether a signal came while it ran
_SIGNALS_HELD: list[dict] = []


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while outputs are committed, so the user is never told the wrong thing.

    A signal that arrives is acted on at the block's checkpoints (:func:`checkpoint`:
    while the files are staged, and between the moves of a commit, which then rolls back
    and raises ``KeyboardInterrupt``: the earlier outputs are as they were), never in the
    middle of a move or of a roll-back. One that arrives after the last move raises
    ``KeyboardInterrupt`` at the end of the block, when :func:`commit_count` already counts
    the commit. Only in the main thread (signal handlers live there); elsewhere the block
    runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"pending": False}

    def hold(signum, frame):
        state["pending"] = True

    # a signal the process ignores (nohup, a background job) or that C code handles is left as it is
    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) not in (signal.SIG_IGN, None)}
    _SIGNALS_HELD.append(state)
    try:
        yield
    finally:
        _SIGNALS_HELD.remove(state)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state["pending"]:
        raise KeyboardInterrupt


_commits = 0


def commit_count() -> int:
    """Commits :func:`commit_outputs` has completed in this process (the CLI tells a Ctrl-C that came after
    its command's outputs were in place from one that stopped the command before)."""
    return _commits


def checkpoint() -> None:
    """Raise ``KeyboardInterrupt`` here if a signal held by :func:`held_interrupts` is waiting."""
    if threading.current_thread() is threading.main_thread() and _SIGNALS_HELD and _SIGNALS_HELD[-1]["pending"]:
        _SIGNALS_HELD[-1]["pending"] = False
        raise KeyboardInterrupt


def commit_outputs(staged_models: Path, models_dir: str | os.PathLike, staged_results: Path | None = None,
                   results_dir: str | os.PathLike | None = None, retire: Iterable[str] = ()) -> list[Path]:
    """Move a staged model folder (and a staged results folder) into place as one crash-safe step.

    The model folder is swapped whole; the results files are moved in one by one (the
    user's other files in that folder stay). ``retire`` names results files (relative
    paths) of the run being replaced that this one does not write (a test table's scores,
    figures): they are moved aside with the replaced files, so the folder never pairs the
    new model with the old run's outputs. The previous versions are kept aside until every
    move is done. Returns the result files moved in.
    """
    checkpoint()  # the last moment to stop before anything is moved
    models_dir = Path(models_dir).absolute()
    token = Path(staged_models).name.rsplit("-", 1)[-1]
    journal: dict = {
        "models": {"staged": str(Path(staged_models).absolute()), "target": str(models_dir),
                   "backup": str(models_dir.parent / f".{models_dir.name}.previous-{token}")},
    }
    files: list[str] = []
    if staged_results is not None and results_dir is not None:
        results_dir = Path(results_dir).absolute()
        if results_dir.exists() and not results_dir.is_dir():
            raise DataError(f"{str(results_dir)!r} exists and is not a folder; give another --results-dir")
        files = sorted(str(p.relative_to(staged_results)) for p in Path(staged_results).rglob("*") if p.is_file())
        journal["results"] = {"staged": str(Path(staged_results).absolute()), "target": str(results_dir),
                              "backup": str(results_dir.parent / f".{results_dir.name}.previous-{token}"),
                              "files": files,
                              "retire": sorted(rel for rel in set(retire) - set(files)
                                               if (results_dir / rel).is_file())}
    path = _journal_path(models_dir)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(journal, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # the commit point: from here on the next run completes the moves
    _fsync_dir(path.parent)
    try:
        _roll_forward(journal, pause=True)
    except BaseException:
        # interrupted in Python (Ctrl-C, SIGTERM, a full disk): put the old pair back now. Only a hard
        # kill skips this, and then the journal and the staged folders are still there for recover().
        _roll_back(journal)
        path.unlink(missing_ok=True)
        for part in ("models", "results"):  # what is left of the backups: the folders of nested files
            backup = Path(journal[part]["backup"]) if part in journal else None
            if backup is not None and backup.is_dir() and not any(p.is_file() for p in backup.rglob("*")):
                shutil.rmtree(backup, ignore_errors=True)
        raise
    path.unlink()
    _fsync_dir(path.parent)
    global _commits
    _commits += 1  # the new outputs are in place: what follows only tidies up
    _discard(journal)
    return [Path(journal["results"]["target"]) / f for f in files] if "results" in journal else []


def _roll_forward(journal: dict, pause: bool = False) -> None:
    """Make every move the journal names that is not yet made (idempotent)."""
    m = journal["models"]
    staged, target, backup = Path(m["staged"]), Path(m["target"]), Path(m["backup"])
    if staged.exists():
        if target.exists() or target.is_symlink():
            if pause:
                _pause()
            os.replace(target, backup)
        if pause:
            _pause()
        os.replace(staged, target)
    r = journal.get("results")
    if r is None:
        return
    staged, target, backup = Path(r["staged"]), Path(r["target"]), Path(r["backup"])
    for rel in r["files"]:
        src, dest = staged / rel, target / rel
        if not src.exists():
            continue  # moved before the interruption
        if pause:
            _pause()
        if dest.exists():
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(dest, backup / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    for rel in r.get("retire", []):  # journals of older versions have none
        if (target / rel).exists():
            if pause:
                _pause()
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / rel, backup / rel)
    _fsync_dir(target)


def _roll_back(journal: dict) -> None:
    """Undo the moves of an interrupted :func:`_roll_forward` (the staged files go back to staging)."""
    r = journal.get("results")
    if r is not None:
        staged, target, backup = Path(r["staged"]), Path(r["target"]), Path(r["backup"])
        for rel in r["files"]:
            src, dest, old = staged / rel, target / rel, backup / rel
            if not src.exists() and dest.exists():
                src.parent.mkdir(parents=True, exist_ok=True)
                os.replace(dest, src)
            if old.exists():
                os.replace(old, dest)
        for rel in r.get("retire", []):
            if (backup / rel).exists() and not (target / rel).exists():
                os.replace(backup / rel, target / rel)
    m = journal["models"]
    staged, target, backup = Path(m["staged"]), Path(m["target"]), Path(m["backup"])
    if not staged.exists() and target.exists():
        os.replace(target, staged)
    if backup.exists() and not target.exists():
        os.replace(backup, target)


def _discard(journal: dict) -> None:
    for part in ("models", "results"):
        if part in journal:
            for key in ("backup", "staged"):
                shutil.rmtree(journal[part][key], ignore_errors=True)


def recover(*targets: str | os.PathLike) -> None:
    """Finish a commit a killed run left half done, and remove leftover staging folders.

    ``targets[0]`` is the model folder (its journal lies beside it); every target gets
    its leftover ``.NAME.staging-*`` and ``.NAME.previous-*`` folders removed. Skipped
    while another run holds the lock on them (that run is still writing).
    """
    paths = [Path(t).absolute() for t in targets if t is not None]
    if not paths or not (_journal_path(paths[0]).exists() or any(
            next(t.parent.glob(f".{t.name}.{kind}-*"), None) for t in paths if t.parent.is_dir()
            for kind in ("staging", "previous"))):
        return  # nothing to repair: take no lock, create no file
    try:
        with output_lock(*paths, wait=False):
            journal_file = _journal_path(paths[0])
            if journal_file.exists():
                try:
                    journal = json.loads(journal_file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    journal = None  # written through a temporary file, so only foreign damage gets here
                if journal is not None:
                    _roll_forward(journal)
                    for part in ("models", "results"):
                        if part in journal:
                            paths.append(Path(journal[part]["target"]))
                journal_file.unlink(missing_ok=True)
            for target in dict.fromkeys(paths):
                if not target.parent.is_dir():
                    continue
                for leftover in target.parent.glob(f".{target.name}.staging-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
                for leftover in target.parent.glob(f".{target.name}.previous-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
    except (DataError, OSError):
        return  # busy or not writable: nothing to repair from here


@contextlib.contextmanager
def output_lock(*targets: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on each target folder for the duration of a run.

    Raises
    ------
    DataError
        If another custseg run holds one of the locks (``wait=False``).
    """
    handles = []
    mine = []
    try:
        for target in sorted({Path(t).absolute() for t in targets if t is not None}):
            lock = _lock_path(target)
            if lock in _HELD:  # this process holds it already (the CLI around the library): reentrant
                _HELD[lock] += 1
                mine.append(lock)
                continue
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                fh = open(lock, "a+b")
            except OSError as exc:
                raise DataError(f"cannot create the lock file {str(lock)!r} ({exc.strerror}); "
                                f"choose a writable location instead of {str(target)!r}") from None
            handles.append(fh)
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise DataError(f"another custseg run is writing to {str(target)!r} (lock {str(lock)!r} is held); "
                                "wait for it to finish, or give another folder") from None
            _HELD[lock] = 1
            mine.append(lock)
        yield
    finally:
        for lock in mine:
            _HELD[lock] -= 1
            if not _HELD[lock]:
                del _HELD[lock]
        for fh in handles:
            fh.close()  # closing releases the lock; the file stays (removing it would race)


def check_output_folders(models_dir: str | os.PathLike | None, results_dir: str | os.PathLike | None,
                         *, marker: str) -> None:
    """Refuse output folders that a run would fail on (or harm) only after its expensive work.

    Raises
    ------
    DataError
        If the model and results folders are the same folder or one lies inside the
        other (the next run would replace the user's results with a model), if one of
        them is an existing file, if the model folder holds files that are not a
        custseg model, or if a folder cannot be created.
    """
    named = {"--models-dir": models_dir, "--results-dir": results_dir}
    resolved = {flag: Path(p).resolve() for flag, p in named.items() if p is not None}
    if len(resolved) == 2:
        m, r = resolved["--models-dir"], resolved["--results-dir"]
        if m == r or m in r.parents or r in m.parents:
            how = "the same folder" if m == r else "inside one another"
            raise DataError(f"--models-dir {str(models_dir)!r} and --results-dir {str(results_dir)!r} are {how}; "
                            "a model folder is replaced whole on every run, so give two separate folders")
    for flag, path in named.items():
        if path is None:
            continue
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DataError(f"{flag} {str(path)!r} exists and is not a folder; give another {flag}")
        if flag == "--models-dir" and path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
            raise DataError(f"folder {str(path)!r} is not empty and holds no custseg model ({marker} missing); "
                            "refusing to replace it: give another --models-dir")
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise DataError(f"{flag} {str(path)!r} cannot be written ({str(parent)!r} is not a writable folder); "
                            f"choose another {flag}")


def check_output_file(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output file that is an input (it would be overwritten) or cannot be written.

    ``inputs`` maps the flag of each input to its path, for the message.
    """
    out = Path(output)
    try:
        _check_output_file(out, inputs)
    except OSError as exc:  # a name too long for the file system, a path through a file, ...
        raise DataError(f"--output {str(out)!r} cannot be written ({exc.strerror or exc}); "
                        "choose another --output") from None


def _check_output_file(out: Path, inputs: dict[str, str | os.PathLike | None]) -> None:
    if out.is_dir():
        raise DataError(f"--output {str(out)!r} is a folder; give a file name such as predictions.csv")
    for flag, path in inputs.items():
        if path is not None and Path(path).exists() and out.exists() and os.path.samefile(out, path):
            raise DataError(f"--output {str(out)!r} is the same file as {flag}; writing would destroy the input: "
                            "give another --output")
        if path is not None and Path(path).resolve() == out.resolve():
            raise DataError(f"--output {str(out)!r} is the same file as {flag}; give another --output")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"--output {str(out)!r} cannot be written ({str(parent)!r} is not writable); "
                        "choose another --output")
