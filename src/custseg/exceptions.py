"""The errors custseg raises.

Every error the library raises on purpose derives from :class:`CustsegError`.
The command line turns each of them into one ``Error: ...`` line and exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CustsegError",
    "ConfigError",
    "DataError",
    "SchemaError",
    "ModelFormatError",
    "NotFittedError",
]


class CustsegError(Exception):
    """Base class of every error custseg raises on purpose."""


class ConfigError(CustsegError, ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class DataError(CustsegError, ValueError):
    """An input table cannot be read or used as it is."""


class SchemaError(DataError):
    """A table does not match the columns a model was trained on."""


class ModelFormatError(CustsegError):
    """A saved model folder is missing, damaged, or of a format this version does not read."""


def _not_fitted_error() -> type:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(CustsegError, SklearnNotFittedError):
        """An estimator was used before ``fit``; also an sklearn ``NotFittedError``."""

    NotFittedError.__module__, NotFittedError.__qualname__ = __name__, "NotFittedError"
    return NotFittedError


def __getattr__(name: str):
    # built on first use: importing scikit-learn costs about a second, which the command
    # line's --help and option errors should not pay
    if name == "NotFittedError":
        globals()[name] = cls = _not_fitted_error()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
