"""Validated settings for a custseg run, read from TOML.

A :class:`RunConfig` groups every setting of ``custseg train``. Its defaults are
the reference design; :func:`load_config` reads a TOML file over them and rejects
unknown keys with a "did you mean" hint, the way skorch reports unknown
parameters. ``custseg train --config FILE`` uses it.

Example
-------
>>> from custseg.config import RunConfig
>>> cfg = RunConfig()
>>> cfg.autoencoder.hidden_dims, cfg.autoencoder.latent_dim, cfg.clustering.n_clusters
((16, 12), 8, 7)
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "DataConfig",
    "AutoencoderConfig",
    "ClusteringConfig",
    "KSelectionConfig",
    "PlotConfig",
    "RunConfig",
    "load_config",
]


@dataclass
class DataConfig:
    """Where the tables are and what their columns mean.

    Roles left empty are inferred from the data (see :mod:`custseg.schema`).
    """

    train: str = "data/raw/Train.csv"
    #: new customers to assign after training; a config that sets ``train`` but not
    #: ``test`` has none (so the shipped Test.csv is never scored against another table),
    #: and ``test = ""`` turns it off
    test: str | None = "data/raw/Test.csv"
    id_column: str | None = None
    label_column: str | None = None
    #: set to false to treat the table as unlabelled even if a label could be inferred
    infer_label: bool = True
    na_values: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    #: column -> its categories from lowest to highest
    ordinal: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)


@dataclass
class AutoencoderConfig:
    """The autoencoder and how it is trained (reference design by default)."""

    hidden_dims: tuple[int, ...] = (16, 12)
    latent_dim: int = 8
    dropout: float = 0.2
    learning_rate: float = 0.001
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 15
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 1e-6
    validation_fraction: float = 0.2
    n_threads: int = 1


@dataclass
class ClusteringConfig:
    """K-Means on the latent features."""

    n_clusters: int = 7
    n_init: int = 50
    max_iter: int = 500


@dataclass
class KSelectionConfig:
    """The elbow / silhouette scan written to ``k_selection.csv``."""

    k_min: int = 2
    k_max: int = 12
    n_init: int = 10
    #: silhouette on a stratified sample of this many rows (0 = all rows)
    silhouette_sample: int = 2000


@dataclass
class PlotConfig:
    """Figures."""

    #: t-SNE map drawn on a sample of at most this many rows, stratified by cluster (0 = all)
    tsne_max_points: int = 1500
    tsne_perplexity: float = 30.0
    dpi: int = 120


@dataclass
class RunConfig:
    """Every setting of ``custseg train``."""

    seed: int = 42
    models_dir: str = "models"
    results_dir: str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    k_selection: KSelectionConfig = field(default_factory=KSelectionConfig)
    plots: PlotConfig = field(default_factory=PlotConfig)

    def validate(self) -> "RunConfig":
        """Check ranges; raise :class:`ConfigError` naming the setting and the value."""
        ae, cl, ks = self.autoencoder, self.clustering, self.k_selection
        _check_int("clustering.n_clusters", cl.n_clusters, 1)
        _check_int("clustering.n_init", cl.n_init, 1)
        _check_int("clustering.max_iter", cl.max_iter, 1)
        _check_int("autoencoder.latent_dim", ae.latent_dim, 1)
        for width in ae.hidden_dims:
            _check_int("autoencoder.hidden_dims", width, 1)
        _check_int("autoencoder.batch_size", ae.batch_size, 1)
        _check_int("autoencoder.max_epochs", ae.max_epochs, 1)
        _check_int("autoencoder.patience", ae.patience, 0)
        _check_int("autoencoder.lr_patience", ae.lr_patience, 0)
        _check_int("autoencoder.n_threads", ae.n_threads, 1)
        _check_int("k_selection.k_min", ks.k_min, 2)
        _check_int("k_selection.k_max", ks.k_max, ks.k_min)
        _check_int("seed", self.seed, 0)
        _check_float("autoencoder.dropout", ae.dropout, 0.0, 1.0, high_open=True)
        _check_float("autoencoder.learning_rate", ae.learning_rate, 0.0, None, low_open=True)
        _check_float("autoencoder.lr_factor", ae.lr_factor, 0.0, 1.0, low_open=True, high_open=True)
        _check_float("autoencoder.min_lr", ae.min_lr, 0.0, None)
        _check_float("autoencoder.validation_fraction", ae.validation_fraction, 0.0, 1.0, high_open=True)
        _check_int("plots.tsne_max_points", self.plots.tsne_max_points, 0)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> "RunConfig":
        """Build from a nested dict, rejecting unknown keys and wrong types."""
        return _build(cls, values, source, prefix="").validate()


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML file of settings over the defaults.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not TOML, or names an unknown setting.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist; check the path given to --config") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory; give the path of a .toml file") from None
    except PermissionError:
        raise ConfigError(f"config file {str(path)!r} cannot be read (permission denied); fix its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return RunConfig.from_dict(values, source=str(path))


def _build(cls: type, values: Any, source: str, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'settings'} must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in values if key not in fields]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            hints.append(f"{prefix + key!r}{hint}")
        raise ConfigError(
            f"{source}: unknown setting {', '.join(hints)}; known settings in "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}"
        )
    default = cls()
    kwargs = {}
    for key, value in values.items():
        current = getattr(default, key)
        name = prefix + key
        if dataclasses.is_dataclass(current):
            kwargs[key] = _build(type(current), value, source, prefix=name + ".")
        else:
            kwargs[key] = _coerce(name, value, current, fields[key], source)
    if cls is DataConfig and ("train" in values and "test" not in values or kwargs.get("test") == ""):
        kwargs["test"] = None
    return cls(**kwargs)


def _coerce(name: str, value: Any, current: Any, fld: dataclasses.Field, source: str) -> Any:
    annotation = str(fld.type)
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: setting {name!r} must be {expected}, got {value!r}")
    if annotation.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers")
        return tuple(value)
    if annotation.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if annotation.startswith("dict"):
        if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()
        ):
            raise bad("a table of column = [categories from lowest to highest]")
        return {k: list(v) for k, v in value.items()}
    if annotation == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if annotation == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if "str" in annotation:
        if value is None or isinstance(value, str):
            return value
        raise bad("a string")
    return value


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"The {name!r} setting must be an int >= {low}. Got {value!r} instead.")


def _check_float(name: str, value: Any, low: float, high: float | None,
                 low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ConfigError(f"The {name!r} setting must be a number {lo}{hi}. Got {value!r} instead.")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
