"""Validated settings for a custseg run, read from TOML, built on a named preset.

A :class:`RunConfig` groups every setting of ``custseg train``. It starts from a
*preset* (:data:`PRESETS`; :data:`DEFAULT_PRESET`, ``mixed``, when none is named), then a
TOML file (:func:`load_config`) and the command line (:meth:`RunConfig.with_overrides`)
are laid over it. Every value is checked once, here, by pydantic: types, finite
numbers, ranges. An unknown key is reported with a "did you mean" hint, the way skorch
reports unknown parameters, and every error is one line naming the file (or option)
and the setting.

Example
-------
>>> from custseg.config import RunConfig
>>> cfg = RunConfig.from_preset()  # the default preset, 'mixed'
>>> cfg.preset, cfg.autoencoder.kind, cfg.autoencoder.n_members, cfg.clustering.n_clusters
('mixed', 'mixed', 40, 7)
>>> RunConfig.from_preset("reference").autoencoder.hidden_dims  # the reference design
(16, 12)
>>> cfg.with_overrides(n_clusters=4).clustering.n_clusters
4
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import tomllib
from importlib import resources
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, field_validator
from pydantic import Strict

from .exceptions import ConfigError

__all__ = [
    "DataConfig",
    "AutoencoderConfig",
    "ClusteringConfig",
    "KSelectionConfig",
    "PlotConfig",
    "MonitoringConfig",
    "RunConfig",
    "PRESETS",
    "register_preset",
    "DEFAULT_PRESET",
    "run_config",
    "GUIDANCE_WEIGHT",
    "preset_values",
    "load_config",
    "SHIPPED_TRAIN",
    "SHIPPED_TEST",
]

SHIPPED_TRAIN = "data/raw/Train.csv"
SHIPPED_TEST = "data/raw/Test.csv"
#: the largest seed numpy's legacy and new generators both accept
MAX_SEED = 2**32 - 1

# Integers and finite floats only: a TOML ``true`` is not 1, ``inf`` and ``nan`` are no setting.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _section(doc: str) -> ConfigDict:
    return ConfigDict(extra="forbid", validate_assignment=True, title=doc)


class _Settings(BaseModel):
    """A section of settings; setting an attribute checks it like reading it from a file does."""

    # No __init__ wrapper: pydantic calls a custom __init__ for nested sections too, so a
    # ConfigError raised there would reach the outer validation as a plain ValueError.
    # Build from data with RunConfig.from_dict to get ConfigError for every bad value.

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise self._error(exc) from None

    def _error(self, exc: ValidationError) -> ConfigError:
        section = self.model_config.get("title")
        error = exc.errors()[0]
        if section != "settings":
            error = {**error, "loc": (section, *error["loc"])}
        return ConfigError(_message(error, "settings", {}))


class DataConfig(_Settings):
    """Where the tables are and what their columns mean.

    Roles left empty are inferred from the data (see :mod:`custseg.schema`).
    """

    model_config = _section("data")

    train: StrictStr = SHIPPED_TRAIN
    #: new customers to assign after training; the shipped Test.csv is the test table of
    #: the shipped Train.csv only (see :func:`_merge_data`), and ``test = ""`` turns it off
    test: StrictStr | None = SHIPPED_TEST
    id_column: StrictStr | None = None
    label_column: StrictStr | None = None
    #: set to false to treat the table as unlabelled even if a label could be inferred
    infer_label: StrictBool = True
    na_values: list[StrictStr] = Field(default_factory=list)
    numeric: list[StrictStr] = Field(default_factory=list)
    categorical: list[StrictStr] = Field(default_factory=list)
    #: column -> its categories from lowest to highest
    ordinal: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict)
    exclude: list[StrictStr] = Field(default_factory=list)


class AutoencoderConfig(_Settings):
    """The autoencoder and how it is trained (reference design by default)."""

    model_config = _section("autoencoder")

    #: "reference": the label-encoded 16-12-8 design; "mixed": the mixed-type autoencoder
    #: (standardized numbers, missing-value indicators, one-hot categories), an ensemble of
    #: ``n_members`` clustered by consensus (dropout, patience, the learning-rate schedule and
    #: validation_fraction are the reference design's only)
    kind: Literal["reference", "mixed"] = "reference"
    n_members: Annotated[Int, Field(ge=1, le=10_000)] = 1
    categorical_loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    #: weight of the known-segment head in the mixed autoencoder's loss (0 = unsupervised)
    guidance_weight: Annotated[Float, Field(ge=0.0, le=1000.0)] = 0.0
    hidden_dims: tuple[Annotated[Int, Field(ge=1, le=65536)], ...] = (16, 12)
    latent_dim: Annotated[Int, Field(ge=1, le=65536)] = 8
    dropout: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.2
    learning_rate: Annotated[Float, Field(gt=0.0, le=10.0)] = 0.001
    batch_size: Annotated[Int, Field(ge=1, le=2**24)] = 32
    max_epochs: Annotated[Int, Field(ge=1, le=1_000_000)] = 100
    patience: Annotated[Int, Field(ge=0, le=1_000_000)] = 15
    lr_factor: Annotated[Float, Field(gt=0.0, lt=1.0)] = 0.5
    lr_patience: Annotated[Int, Field(ge=0, le=1_000_000)] = 5
    min_lr: Annotated[Float, Field(ge=0.0, le=10.0)] = 1e-6
    validation_fraction: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.2
    #: at most four per core: more only slows torch down, and a typo (1000) would stall the machine
    n_threads: Annotated[Int, Field(ge=1)] = 1

    @field_validator("hidden_dims", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("n_threads")
    @classmethod
    def _threads_within_machine(cls, value: int) -> int:
        limit = max_threads()
        if value > limit:
            raise ValueError(f"le={limit}")
        return value


class ClusteringConfig(_Settings):
    """K-Means on the latent features."""

    model_config = _section("clustering")

    n_clusters: Annotated[Int, Field(ge=1, le=100_000)] = 7
    n_init: Annotated[Int, Field(ge=1, le=100_000)] = 50
    max_iter: Annotated[Int, Field(ge=1, le=10_000_000)] = 500


class KSelectionConfig(_Settings):
    """The scan of k written to ``k_selection.csv`` (by ``train`` and ``select-k`` alike)."""

    model_config = _section("k_selection")

    k_min: Annotated[Int, Field(ge=2, le=100_000)] = 2
    k_max: Annotated[Int, Field(ge=2, le=100_000)] = 12
    n_init: Annotated[Int, Field(ge=1, le=100_000)] = 10
    #: silhouette on a random sample of this many rows (0 = all rows)
    silhouette_sample: Annotated[Int, Field(ge=0)] = 2000
    #: bootstrap fits per k for the stability (1 = not measured)
    n_resamples: Annotated[Int, Field(ge=1, le=1000)] = 1


class PlotConfig(_Settings):
    """Figures."""

    model_config = _section("plots")

    #: t-SNE map drawn on a sample of at most this many rows, stratified by cluster (0 = all)
    tsne_max_points: Annotated[Int, Field(ge=0)] = 1500
    tsne_perplexity: Annotated[Float, Field(gt=0.0, le=10_000.0)] = 30.0
    dpi: Annotated[Int, Field(ge=10, le=1200)] = 120
    #: ``custseg train`` draws the figures (``results/plots/*.png``, and the report's pictures); ``false``
    #: (``--no-figures``) computes every table, the maps' coordinates included, and draws nothing: for a
    #: scheduled retraining nobody looks at, it saves most of a small table's run (matplotlib's text
    #: layout; ~3 s on the shipped data). ``select-k``, ``compare`` and ``drift`` draw their one figure
    #: regardless.
    figures: StrictBool = True


class MonitoringConfig(_Settings):
    """Confidence and novelty of scored customers (:mod:`custseg.monitoring`)."""

    model_config = _section("monitoring")

    #: a customer is ``Unusual`` when its Novelty is above this percentile of the training customers'
    #: (99: about 1 in 100 training customers); ``custseg predict --unusual-above`` overrides it per call
    unusual_percentile: Annotated[Float, Field(gt=0.0, lt=100.0)] = 99.0


class RunConfig(_Settings):
    """Every setting of ``custseg train``.

    ``RunConfig()`` holds the base values every preset is laid over: the reference design,
    preset ``reference``. A run that names no preset (the command line, a config file
    without ``preset``, :meth:`from_dict`, :meth:`from_preset`) gets :data:`DEFAULT_PRESET`.
    """

    model_config = _section("settings")

    seed: Annotated[Int, Field(ge=0, le=MAX_SEED)] = 42
    models_dir: StrictStr = "models"
    results_dir: StrictStr = "results"
    data: DataConfig = Field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    k_selection: KSelectionConfig = Field(default_factory=KSelectionConfig)
    plots: PlotConfig = Field(default_factory=PlotConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    #: the preset (see :data:`PRESETS`) the other settings were laid over
    preset: StrictStr = "reference"

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError("unknown preset")
        return value

    @classmethod
    def from_preset(cls, name: str | None = None) -> "RunConfig":
        """The settings of preset ``name`` (see :data:`PRESETS`; :data:`DEFAULT_PRESET` if None)."""
        name = DEFAULT_PRESET if name is None else name
        return cls.from_dict({"preset": name}, source=f"preset {name!r}")

    def validate(self) -> "RunConfig":  # type: ignore[override]  # pydantic v1's classmethod name
        """Check every value again (after attributes were set one by one) and the relations between them.

        Raises
        ------
        ConfigError
            Naming the setting and the value.
        """
        _validated(type(self), self.model_dump(), "settings")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> "RunConfig":
        """Build from a nested dict laid over its preset, rejecting unknown keys, wrong types and ranges."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: the settings must be a table, got {values!r}")
        _check_keys(cls, values, source, prefix="")
        preset = values.get("preset", DEFAULT_PRESET)
        base = preset_values(preset, source)
        return _validated(cls, _merge(base, values), source)

    def with_overrides(self, *, source: str = "the command line", names: Mapping[str, str] | None = None,
                       **overrides: Any) -> "RunConfig":
        """A copy with ``overrides`` laid over these settings, validated.

        Parameters
        ----------
        source : str
            What gave the overrides, for error messages.
        names : mapping, optional
            Override key -> the name the user knows it by (``{"n_clusters": "--clusters"}``),
            used in error messages instead of the setting's path.
        **overrides
            Short names (:data:`OVERRIDES`: ``train``, ``n_clusters``, ``seed``, ...) or
            ``section__key`` paths. ``None`` (and an empty ``na_values``) means "not given";
            ``na_values`` are added to the configured ones; ``no_label=True`` turns label
            inference off and clears ``label_column``.

        Raises
        ------
        ConfigError
            For an unknown key, contradicting overrides, or a value of the wrong type or range.
        """
        names = dict(names or {})
        given = {k: v for k, v in overrides.items() if v is not None and not (k == "na_values" and not v)}
        if given.pop("no_label", False):
            if given.get("label_column") is not None:
                raise ConfigError(f"{names.get('no_label', 'no_label')} and {names.get('label_column', 'label_column')} "
                                  "contradict each other; give one of them")
            given["infer_label"], given["label_column"] = False, _CLEAR
        values: dict[str, Any] = {}
        renamed: dict[str, str] = {}
        for key, value in given.items():
            path = OVERRIDES.get(key) or key.replace("__", ".")
            _check_path(path, source, key)
            if key in names:
                renamed[path] = names[key]
            section, _, name = path.rpartition(".")
            target = values.setdefault(section, {}) if section else values
            target[name] = value
        current = self.model_dump()
        if "na_values" in values.get("data", {}):
            values["data"]["na_values"] = list(dict.fromkeys([*current["data"]["na_values"],
                                                              *values["data"]["na_values"]]))
        if values.get("data", {}).get("label_column") is _CLEAR:
            values["data"]["label_column"] = None
        return _validated(type(self), _merge(current, values), source, renamed)


class _Clear:
    """Marks an override that sets a setting to None (None itself means "not given")."""


_CLEAR = _Clear()

#: short override names of :meth:`RunConfig.with_overrides` -> the setting they set
OVERRIDES = {
    "train": "data.train", "test": "data.test", "id_column": "data.id_column", "label_column": "data.label_column",
    "infer_label": "data.infer_label", "na_values": "data.na_values", "n_clusters": "clustering.n_clusters",
    "k_min": "k_selection.k_min", "k_max": "k_selection.k_max", "seed": "seed", "models_dir": "models_dir",
    "results_dir": "results_dir",
}

#: What to do about a bad value of a setting, after the "must be ... Got ..." sentence.
_HINTS = {
    "clustering.n_clusters": "give the number of segments, e.g. {name} 5",
    "seed": "give a whole number from 0 to 4294967295",
}


def max_threads() -> int:
    """The most threads a setting may ask for: four per core of this machine."""
    return 4 * (os.cpu_count() or 1)


# -- presets ------------------------------------------------------------------------------------------------
def _packaged_presets() -> dict[str, Any]:
    """Every ``presets/<name>.toml`` shipped with the package, by name (read lazily, see :func:`preset_values`)."""
    folder = resources.files("custseg") / "presets"
    return {entry.name[:-5]: entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


#: The preset of a run that names none: the mixed-type autoencoder ensemble with consensus K-Means, the
#: best autoencoder-based method without the known segments that ``custseg compare`` measures on the
#: shipped data (see the README's "Does the autoencoder help?"). ``preset = "reference"`` (``--preset
#: reference``) is the reference design, unchanged.
DEFAULT_PRESET = "mixed"

#: name -> settings laid under a config (a dict, or a packaged TOML file read on first use).
#: Extend with :func:`register_preset`.
PRESETS: dict[str, Any] = _packaged_presets()


def register_preset(name: str, values: Mapping[str, Any]) -> None:
    """Add (or replace) preset ``name``: nested settings such as ``{"autoencoder": {"latent_dim": 4}}``.

    The values are checked now, so a bad preset fails where it is defined.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a preset needs a name; got {name!r}")
    _check_keys(RunConfig, values, f"preset {name!r}", prefix="")
    if "preset" in values:
        raise ConfigError(f"preset {name!r} cannot name another preset")
    _validated(RunConfig, _merge(RunConfig().model_dump(), dict(values)), f"preset {name!r}")
    PRESETS[name] = dict(values)


def preset_values(name: str, source: str = "settings") -> dict[str, Any]:
    """The full settings of preset ``name`` (defaults with the preset laid over them), as a nested dict."""
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown preset {name!r}{hint}; known presets: {', '.join(sorted(PRESETS))}")
    values = PRESETS[name]
    if not isinstance(values, Mapping):  # a packaged TOML file
        where = f"preset {name!r} ({values.name})"
        try:
            values = tomllib.loads(values.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from None
        _check_keys(RunConfig, values, where, prefix="")
        PRESETS[name] = values
    return _merge(RunConfig().model_dump(), {**copy.deepcopy(dict(values)), "preset": name})


#: the weight of the known-segment head that ``--guided`` sets (best measured on the shipped data)
GUIDANCE_WEIGHT = 2.0


def run_config(path: str | os.PathLike | None = None, *, preset: str | None = None, guided: bool = False,
               names: Mapping[str, str] | None = None, **overrides: Any) -> RunConfig:
    """The settings of a run: a config file (or none) over a preset, ``guided`` and ``overrides`` on top.

    Parameters
    ----------
    path : path, optional
        TOML file of settings (see :func:`load_config`).
    preset : str, optional
        The preset the settings are laid over; the file's ``preset``, else ``"guided"`` when
        ``guided``, else :data:`DEFAULT_PRESET`.
    guided : bool
        Turn guidance by the known segments on: ``autoencoder.guidance_weight`` becomes
        :data:`GUIDANCE_WEIGHT` unless the settings already give a weight. Needs the mixed-type
        autoencoder (presets ``mixed`` and ``guided``).
    names, **overrides
        As in :meth:`RunConfig.with_overrides`.

    Raises
    ------
    ConfigError
        For an unknown preset, contradicting presets, or ``guided`` on the reference design.
    """
    if path is not None:
        if guided and preset is None and not _names_a_preset(path):
            preset = "guided"  # as without a file: --guided means preset 'guided' unless a preset is named
        base = load_config(path, preset)
    else:
        base = RunConfig.from_preset(preset or ("guided" if guided else DEFAULT_PRESET))
    if guided:
        if base.autoencoder.kind != "mixed":
            raise ConfigError(f"--guided needs the mixed-type autoencoder, but preset {base.preset!r} is the "
                              "reference design; give --preset mixed (or leave --preset out)")
        if base.autoencoder.guidance_weight == 0:
            overrides["autoencoder__guidance_weight"] = GUIDANCE_WEIGHT
    return base.with_overrides(names=names, **overrides)


def _names_a_preset(path: str | os.PathLike) -> bool:
    """Whether the TOML file at ``path`` says ``preset = ...`` (False if it cannot be read: load_config then
    says why)."""
    try:
        with open(path, "rb") as handle:
            return "preset" in tomllib.load(handle)
    except (OSError, ValueError):
        return False


# -- reading ------------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, preset: str | None = None) -> RunConfig:
    """Read a TOML file of settings over its preset (``preset = "..."``; :data:`DEFAULT_PRESET` if absent).

    ``preset``, if given, is the preset the file's settings are laid over (as ``--preset``
    does); a file naming another preset contradicts it.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not TOML, names an unknown setting or preset, or
        holds a value of the wrong type or range.
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {where!r} does not exist; check the path given to --config") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {where!r} is a directory; give the path of a .toml file") from None
    except PermissionError:
        raise ConfigError(f"config file {where!r} cannot be read (permission denied); fix its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {where!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where!r} is not valid TOML: {exc}") from None
    if preset is not None:
        if values.get("preset", preset) != preset:
            raise ConfigError(f"config file {where!r} names preset {values['preset']!r} but --preset gives "
                              f"{preset!r}; give the preset in one place")
        values = {**values, "preset": preset}
    return RunConfig.from_dict(values, source=where)


def _merge(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` laid over ``base`` section by section; the one rule on the default test table applied."""
    merged = copy.deepcopy(base)
    for key, value in values.items():
        if key == "data" and isinstance(value, Mapping):
            merged["data"] = _merge_data(merged.get("data", {}), value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _merge_data(current: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The data section with ``given`` laid over it.

    The shipped Test.csv is the test table of the shipped Train.csv only: giving another
    training table without a test table means no test table (so the shipped customers are
    never scored against a model of other ones), and ``test = ""`` turns it off.
    """
    merged = {**current, **given}
    if "train" in given and "test" not in given and current.get("test") == SHIPPED_TEST:
        merged["test"] = None
    if merged.get("test") == "":
        merged["test"] = None
    return merged


def _check_keys(model: type[BaseModel], values: Any, source: str, prefix: str) -> None:
    """Unknown keys, all of them at once, each with a "did you mean" hint."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'settings'} must be a table, got {values!r}")
    fields = model.model_fields
    unknown = [key for key in values if key not in fields]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            hints.append(f"{prefix + str(key)!r}{hint}")
        raise ConfigError(f"{source}: unknown setting {', '.join(hints)}; known settings in "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
    for key, value in values.items():
        sub = _submodel(fields[key].annotation)
        if sub is not None:
            _check_keys(sub, value, source, prefix=f"{prefix}{key}.")


def _check_path(path: str, source: str, key: str) -> None:
    model: type[BaseModel] | None = RunConfig
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            raise ConfigError(f"{source}: unknown setting {key!r}; known short names: {', '.join(OVERRIDES)}")
        model = _submodel(model.model_fields[part].annotation)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


# -- validation and its messages ----------------------------------------------------------------------------
def _validated(model: type[RunConfig], values: dict[str, Any], source: str,
               names: Mapping[str, str] | None = None) -> RunConfig:
    try:
        config = model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0], source, names or {})) from None
    ks = config.k_selection
    if ks.k_max < ks.k_min:
        names = names or {}
        raise ConfigError(_sentence(source, "k_selection.k_max", names,
                                    f"an int >= {ks.k_min} ({names.get('k_selection.k_min', 'k_selection.k_min')})",
                                    ks.k_max))
    ae = config.autoencoder
    if ae.kind == "reference" and (ae.guidance_weight > 0 or ae.n_members > 1):
        setting = "autoencoder.guidance_weight" if ae.guidance_weight > 0 else "autoencoder.n_members"
        raise ConfigError(f"{source}: {(names or {}).get(setting, setting)} applies to the mixed-type autoencoder "
                          f"only, but autoencoder.kind is 'reference'; use preset 'mixed' (or 'guided'), or set "
                          f"kind = \"mixed\"")
    return config


def _field_of(loc: tuple) -> tuple[str, Any]:
    """The dotted name of the setting an error is about, and its pydantic field."""
    model: Any = RunConfig
    parts, info = [], None
    for part in loc:
        if not isinstance(part, str) or model is None or part not in model.model_fields:
            break
        parts.append(part)
        info = model.model_fields[part]
        model = _submodel(info.annotation)
    return ".".join(parts), info


def _bounds(metadata: list) -> list[str]:
    out = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return out


def _expected(info: Any) -> str:
    """What a setting must be, read from its annotation and bounds."""
    text = str(info.annotation)
    if "tuple" in text:
        return "a list of integers >= 1"
    if text.startswith("dict"):
        return "a table of column = [categories from lowest to highest]"
    if text.startswith("list"):
        return "a list of strings"
    if "bool" in text:
        return "true or false"
    if "str" in text:
        return "a string"
    bounds = _bounds(info.metadata)
    if "int" in text:
        return "an int" + (" " + " and ".join(bounds) if bounds else "")
    return "a finite number" + (" " + " and ".join(bounds) if bounds else "")


def _message(error: dict, source: str, names: Mapping[str, str]) -> str:
    name, info = _field_of(tuple(error["loc"]))
    expected = _expected(info) if info is not None else error["msg"]
    if name == "autoencoder.n_threads" and error["type"] == "value_error":
        expected = f"an int >= 1 and <= {max_threads()} (four per core of this machine)"
    if name == "preset" and error["type"] == "value_error":
        expected = f"one of the known presets ({', '.join(sorted(PRESETS))})"
    return _sentence(source, name, names, expected, error.get("input"))


def _sentence(source: str, name: str, names: Mapping[str, str], expected: str, value: Any) -> str:
    shown = _shown(value)
    hint = _HINTS.get(name, "")
    if name in names:
        text = f"{names[name]} must be {expected}. Got {shown} instead"
        hint = hint.format(name=names[name])
    else:
        text = f"{source}: setting {name!r} must be {expected}. Got {shown} instead"
        hint = "" if "{name}" in hint else hint
    return text + (f"; {hint}" if hint else ".")


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
