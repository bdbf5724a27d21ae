"""Saving and loading fitted models as safetensors weights and JSON, nothing executable.

A model folder holds:

``manifest.json``
    format name and version, the versions of custseg, torch, scikit-learn and numpy
    that wrote it, and the SHA-256 of every other file.
``autoencoder.safetensors``
    the network's weights (safetensors: tensors only, no code).
``autoencoder.json``, ``preprocessor.json``, ``clustering.json``
    the rest of the fitted state as plain JSON; ``clustering.json`` also holds the
    pipeline's parameters, the nested preprocessor, embedder and clusterer as class name
    + parameters, so the loaded pipeline has the saved ``get_params()`` and a ``clone``
    of it trains the saved configuration, and the training rows' ``labels_``.

    Two designs are saved: the reference (a :class:`CustomerPreprocessor` and an
    :class:`AutoencoderEmbedder`, K-Means), and the mixed-type ensemble (``"passthrough"``,
    a :class:`MixedAutoencoderEmbedder` whose input encoding is in ``autoencoder.json``,
    and K-Means or a :class:`ConsensusKMeans`, whose state is ``clustering.json``'s
    ``clusterer``). ``autoencoder.json`` names its class for the mixed design;
    ``preprocessor.json`` is ``{"passthrough": true}`` there.
``schema.json``, ``settings.json``
    column roles seen in training, and the run's settings.
``monitoring.json`` (when written by ``custseg train``)
    the confidence and novelty model (:class:`~custseg.monitoring.CustomerMonitor`).

:func:`load_model` checks the manifest first and refuses any folder whose format it
does not know or whose files do not match their checksums. Nothing in it executes
code from the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import sklearn
import torch
from sklearn.preprocessing import FunctionTransformer

from ._version import __version__
from .io.writing import MODEL_MARKER, write_model_folder
from .clustering import ConsensusKMeans
from .embedders.autoencoder import AutoencoderEmbedder, json_params, params_from_json
from .embedders.mixed import MixedAutoencoderEmbedder
from .exceptions import ModelFormatError
from .monitoring import CustomerMonitor
from .pipeline import SegmentationPipeline
from .preprocessing import CustomerPreprocessor
from .schema import Schema

__all__ = ["save_model", "load_model", "LoadedModel", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "custseg-model"
FORMAT_VERSION = 1
MANIFEST = MODEL_MARKER


@dataclass
class LoadedModel:
    """A model read back from disk."""

    pipeline: SegmentationPipeline
    schema: Schema | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    monitor: CustomerMonitor | None = None
    #: cluster -> its descriptive segment name, when the training run computed them
    cluster_names: dict[int, str] = field(default_factory=dict)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_files(pipeline: SegmentationPipeline, schema: Schema | None = None,
                settings: dict[str, Any] | None = None,
                cluster_names: dict[Any, str] | None = None, monitor: CustomerMonitor | None = None) -> dict[str, bytes]:
    """The bytes of every file of a model folder, manifest included.

    ``cluster_names`` (cluster -> segment name) is saved as ``cluster_names.json`` so
    that predictions carry the name next to the number; ``monitor`` (confidence and
    novelty, :mod:`custseg.monitoring`) as ``monitoring.json``.
    """
    reference = isinstance(pipeline.embedder_, AutoencoderEmbedder) and \
        isinstance(pipeline.preprocessor_, CustomerPreprocessor)
    mixed = isinstance(pipeline.embedder_, MixedAutoencoderEmbedder) and pipeline.preprocessor == "passthrough"
    clusterer = getattr(pipeline, "clusterer_", None)
    if not (reference or mixed) or not (clusterer is None or isinstance(clusterer, ConsensusKMeans)):
        raise TypeError("only pipelines with a CustomerPreprocessor and an AutoencoderEmbedder, or 'passthrough' and "
                        "a MixedAutoencoderEmbedder, clustered by K-Means or ConsensusKMeans, can be saved")
    if reference:
        meta, weights = pipeline.embedder_.get_state()
        preprocessor = pipeline.preprocessor_.to_dict()
    else:
        meta = {"class": "MixedAutoencoderEmbedder", **pipeline.embedder_.to_dict()}
        weights = pipeline.embedder_.state_tensors()
        preprocessor = {"passthrough": True}
    clustering = {
        "params": _pipeline_params(pipeline),
        "cluster_centers": pipeline.cluster_centers_.tolist(),
        "labels": pipeline.labels_.tolist(),
        "inertia": pipeline.inertia_,
        "n_iter": pipeline.n_iter_,
        "mapping": None if pipeline.mapping_ is None else {str(k): v for k, v in pipeline.mapping_.items()},
    }
    if clusterer is not None:  # absent for K-Means, so reference folders keep their bytes
        clustering["clusterer"] = {"class": "ConsensusKMeans", **clusterer.to_dict()}
    files = {
        "autoencoder.safetensors": safetensors.torch.save(weights, metadata={"format": FORMAT_NAME}),
        "autoencoder.json": _json_bytes(meta),
        "preprocessor.json": _json_bytes(preprocessor),
        "clustering.json": _json_bytes(clustering),
        "schema.json": _json_bytes(schema.to_dict() if schema is not None else None),
        "settings.json": _json_bytes(settings or {}),
    }
    if cluster_names:
        files["cluster_names.json"] = _json_bytes({str(k): str(v) for k, v in cluster_names.items()})
    if monitor is not None:
        files["monitoring.json"] = _json_bytes(monitor.to_dict())
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "versions": {"custseg": __version__, "torch": torch.__version__.split("+")[0],
                     "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    }
    files[MANIFEST] = _json_bytes(manifest)
    return files


#: the classes a saved pipeline's ``preprocessor`` / ``embedder`` parameter may be rebuilt as
_PARAMETER_CLASSES = {"CustomerPreprocessor": CustomerPreprocessor, "AutoencoderEmbedder": AutoencoderEmbedder,
                      "MixedAutoencoderEmbedder": MixedAutoencoderEmbedder, "ConsensusKMeans": ConsensusKMeans}


def _pipeline_params(pipeline: SegmentationPipeline) -> dict[str, Any]:
    """The pipeline's own parameters, the nested estimators as class name + their parameters.

    These are the parameters as given (``pipeline.embedder``, not the fitted
    ``embedder_``), so a loaded pipeline has the same ``get_params()`` and ``clone``
    of it trains the same configuration.
    """
    params = json_params(pipeline)
    for name in ("clusterer", "fit_sample"):  # K-Means, fitted on every row: model folders keep their bytes
        if params.get(name) is None:
            params.pop(name, None)
    for name in ("preprocessor", "embedder", "clusterer"):
        est = params.get(name)
        if est is None or (name == "preprocessor" and est == "passthrough"):
            continue
        if type(est).__name__ not in _PARAMETER_CLASSES or type(est) is not _PARAMETER_CLASSES[type(est).__name__]:
            raise TypeError(f"the pipeline's {name} parameter is a {type(est).__name__}; only "
                            f"{', '.join(_PARAMETER_CLASSES)} can be saved")
        params[name] = {"class": type(est).__name__, "params": json_params(est)}
    return params


def _pipeline_from_params(params: dict[str, Any]) -> SegmentationPipeline:
    params = dict(params)
    for name in ("preprocessor", "embedder", "clusterer"):
        spec = params.get(name)
        if spec is None or (name == "preprocessor" and spec == "passthrough"):
            continue
        cls = _PARAMETER_CLASSES.get(spec.get("class")) if isinstance(spec, dict) else None
        if cls is None:
            raise ModelFormatError(f"clustering.json names an unknown {name} {spec!r}; retrain")
        params[name] = cls(**params_from_json(spec["params"]))
    return SegmentationPipeline(**params)


def save_model(pipeline: SegmentationPipeline, path: str | os.PathLike, *, schema: Schema | None = None,
               settings: dict[str, Any] | None = None, monitor: CustomerMonitor | None = None) -> Path:
    """Save a fitted pipeline (and its monitor) to folder ``path``, atomically (see :mod:`custseg.io.writing`)."""
    return write_model_folder(path, model_files(pipeline, schema, settings, monitor=monitor))


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load a model folder written by :func:`save_model`.

    Raises
    ------
    ModelFormatError
        If the folder is missing, is of another format or version, or a file is
        missing, edited or truncated.
    """
    folder = Path(path)
    where = str(folder)
    if not folder.exists():
        raise ModelFormatError(f"model folder {where!r} does not exist; run 'custseg train' first or fix --model")
    if not folder.is_dir():
        raise ModelFormatError(f"{where!r} is not a folder; --model takes the folder 'custseg train' wrote")
    manifest = _read_json(folder / MANIFEST, where)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{where!r} is not a custseg model folder (manifest format "
                               f"{manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                               "give a folder written by 'custseg train'")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"model folder {where!r} has format version {version!r}, but custseg {__version__} reads version "
            f"{FORMAT_VERSION} only; retrain with this version or use the custseg that wrote it "
            f"({manifest.get('versions', {}).get('custseg', 'unknown')})")
    expected = manifest.get("files")
    if not isinstance(expected, dict):
        raise ModelFormatError(f"model folder {where!r}: manifest.json has no file list; the folder is damaged, retrain")
    blobs: dict[str, bytes] = {}
    for name, digest in expected.items():
        file = folder / name
        if not isinstance(name, str) or os.sep in name or "/" in name or name in ("", ".", "..") \
                or not file.is_file():
            raise ModelFormatError(f"model folder {where!r}: file {name!r} is missing; retrain or restore the folder")
        _refuse_link(file, where)
        data = file.read_bytes()
        if _sha256(data) != digest:
            raise ModelFormatError(f"model folder {where!r}: file {name!r} was edited or truncated (checksum "
                                   "does not match manifest.json); retrain or restore the folder")
        blobs[name] = data
    try:
        model = _assemble(blobs, manifest)
        _validate_values(model, blobs)
        return model
    except ModelFormatError as exc:
        if where in str(exc):
            raise
        raise ModelFormatError(f"model folder {where!r}: {exc}") from None
    except Exception as exc:  # a consistent but foreign or hand-made folder
        raise ModelFormatError(f"model folder {where!r} cannot be read ({type(exc).__name__}: {exc}); retrain") from None


def _refuse_link(file: Path, where: str) -> None:
    """Never read outside the model folder: a symbolic link may point anywhere."""
    if file.is_symlink() or file.resolve().parent != file.parent.resolve():
        raise ModelFormatError(f"model folder {where!r}: {file.name!r} is a symbolic link; a model folder holds "
                               "plain files only: retrain or restore the folder")


def _validate_values(model: LoadedModel, blobs: dict[str, bytes]) -> None:
    """Check the values of a loaded model, not only its checksums.

    A folder whose files were edited and the manifest re-hashed to match passes the
    checksums; these checks make it fail instead of predicting nonsense: finite
    weights, centroids, means and positive finite scales; shapes that fit together;
    a mapping from exactly the model's clusters onto the known segments of its schema.
    """
    def bad(what: str) -> ModelFormatError:
        return ModelFormatError(f"{what}; the folder was edited or damaged: retrain or restore it")

    pipeline, pre, emb = model.pipeline, model.pipeline.preprocessor_, model.pipeline.embedder_
    mixed = isinstance(emb, MixedAutoencoderEmbedder)
    k = pipeline.n_clusters
    centres = pipeline.cluster_centers_
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or centres.ndim != 2 or centres.shape[0] != k:
        raise bad(f"clustering.json: {centres.shape[0] if centres.ndim == 2 else '?'} cluster centres for "
                  f"n_clusters={k!r}")
    if not np.isfinite(centres).all():
        raise bad("clustering.json: a cluster centre is not a finite number")
    if mixed:
        _validate_mixed(pipeline, bad)
    else:
        _validate_reference_preprocessor(pre, emb, blobs, bad)
    for name, tensor in emb.module_.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise bad(f"autoencoder.safetensors: weight {name!r} is not finite")
    if pipeline.mapping_ is not None:
        if sorted(pipeline.mapping_) != list(range(k)):
            raise bad(f"clustering.json: the mapping names clusters {sorted(pipeline.mapping_)}, the model has "
                      f"0..{k - 1}")
        schema = model.schema
        if schema is not None and schema.label_column is not None:
            known = set(schema.column(schema.label_column).categories or [])
            unknown = sorted(set(pipeline.mapping_.values()) - known)
            if known and unknown:
                raise bad(f"clustering.json: the mapping names segment {unknown[0]!r}, not a known segment "
                          f"({', '.join(sorted(known))})")
        # the confidence model keeps its own copy of the mapping (monitoring.json): a mapping
        # swapped in clustering.json alone, manifest re-hashed, disagrees with it
        soft = getattr(model.monitor, "soft_", None)
        if soft is not None and soft.mapping_ is not None and soft.mapping_ != pipeline.mapping_:
            raise bad("clustering.json and monitoring.json map the clusters to different segments")
    if model.schema is not None:
        features = set(model.schema.feature_columns)
        read = emb.encoder_.feature_names_in_ if mixed else pre.feature_names_in_
        if features != set(map(str, read)):
            raise bad(f"schema.json and {'autoencoder.json' if mixed else 'preprocessor.json'} name different "
                      "feature columns")
    labels = getattr(pipeline, "labels_", None)
    if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise bad(f"clustering.json: training label {int(labels.max() if labels.max() >= k else labels.min())} is "
                  f"not a cluster of the model (0..{k - 1})")
    if model.cluster_names and sorted(model.cluster_names) != list(range(k)):
        raise bad("cluster_names.json does not name the model's clusters")


def _validate_reference_preprocessor(pre, emb, blobs: dict[str, bytes], bad) -> None:
    if not (np.isfinite(pre.mean_).all() and np.isfinite(pre.scale_).all()):
        raise bad("preprocessor.json: a mean or scale is not a finite number")
    if (pre.scale_ <= 0).any():
        raise bad(f"preprocessor.json: scale {float(pre.scale_[pre.scale_ <= 0][0])!r} is not positive")
    # the saved medians, not only the rebuilt imputers (an imputer fitted on NaN forgets its column)
    saved = json.loads(blobs["preprocessor.json"]).get("medians") or {}
    if any(not isinstance(v, (int, float)) or not np.isfinite(v) for v in [*saved.values(), *pre.medians_.values()]):
        raise bad("preprocessor.json: a median is not a finite number")
    if emb.n_features_in_ != pre.n_features_in_:
        raise bad(f"the autoencoder reads {emb.n_features_in_} features but the preprocessor gives "
                  f"{pre.n_features_in_}")


def _validate_mixed(pipeline: SegmentationPipeline, bad) -> None:
    """The mixed design's input encoding and consensus: finite numbers, positive scales, clusters in range."""
    encoder = pipeline.embedder_.encoder_
    if encoder.numeric_:
        imputer, scaler = (step for _, step in encoder.transformer_.named_transformers_["numeric"].steps)
        if not all(np.isfinite(a).all() for a in (imputer.statistics_, scaler.mean_, scaler.scale_)):
            raise bad("autoencoder.json: a median, mean or scale of the input encoding is not a finite number")
        if (scaler.scale_ <= 0).any():
            raise bad(f"autoencoder.json: scale {float(scaler.scale_[scaler.scale_ <= 0][0])!r} is not positive")
    if any(len(encoder.categories_[c]) == 0 for c in encoder.categorical_):
        raise bad("autoencoder.json: a categorical column has no categories")
    ck = pipeline.clusterer_
    if ck is None:
        return
    k = pipeline.n_clusters
    if ck.n_clusters != k or ck.n_members != pipeline.embedder_.n_members:
        raise bad(f"clustering.json: the consensus has {ck.n_clusters} clusters of {ck.n_members} members, the "
                  f"model {k} clusters of {pipeline.embedder_.n_members} members")
    arrays = (ck.member_centers_, ck.block_mean_, ck.block_scale_, ck.consensus_centers_, ck.agreement_)
    if not all(np.isfinite(a).all() for a in arrays) or (ck.block_scale_ <= 0).any():
        raise bad("clustering.json: a consensus centre, mean or scale is not a finite (positive) number")
    if ck.n_features_in_ != pipeline.cluster_centers_.shape[1]:
        raise bad(f"clustering.json: the consensus reads {ck.n_features_in_} latent features, the model has "
                  f"{pipeline.cluster_centers_.shape[1]}")
    for name in ("member_relabel_", "member_labels_", "labels_"):
        values = getattr(ck, name)
        if values.size and (values.min() < 0 or values.max() >= k):
            raise bad(f"clustering.json: consensus {name.rstrip('_')} names a cluster outside 0..{k - 1}")


def _assemble(blobs: dict[str, bytes], manifest: dict[str, Any]) -> LoadedModel:
    weights = safetensors.torch.load(blobs["autoencoder.safetensors"])
    meta = json.loads(blobs["autoencoder.json"])
    clustering = json.loads(blobs["clustering.json"])
    pipeline = _pipeline_from_params(clustering["params"])
    if meta.get("class", "AutoencoderEmbedder") == "MixedAutoencoderEmbedder":
        if json.loads(blobs["preprocessor.json"]) != {"passthrough": True}:
            raise ModelFormatError("preprocessor.json does not match the mixed-type autoencoder; retrain")
        embedder = MixedAutoencoderEmbedder.from_dict(meta, weights)
        preprocessor = FunctionTransformer()
        latent_width = embedder.n_members * embedder.latent_dim
        feature_names = embedder.encoder_.feature_names_in_.copy()
    elif "class" not in meta:
        embedder = AutoencoderEmbedder.from_state(meta, weights)
        preprocessor = CustomerPreprocessor.from_dict(json.loads(blobs["preprocessor.json"]))
        latent_width = embedder.latent_dim_
        feature_names = preprocessor.get_feature_names_out()
    else:
        raise ModelFormatError(f"autoencoder.json names an unknown class {meta['class']!r}; retrain")
    spec = clustering.get("clusterer")
    if spec is not None and spec.get("class") != "ConsensusKMeans":
        raise ModelFormatError(f"clustering.json names an unknown clusterer {spec.get('class')!r}; retrain")
    pipeline.clusterer_ = None if spec is None else ConsensusKMeans.from_dict(spec)
    pipeline.agreement_ = None if spec is None else pipeline.clusterer_.agreement_
    pipeline.preprocessor_ = preprocessor
    pipeline.embedder_ = embedder
    pipeline.cluster_centers_ = np.asarray(clustering["cluster_centers"], dtype="float64")
    pipeline.inertia_ = float(clustering["inertia"])
    pipeline.n_iter_ = int(clustering["n_iter"])
    mapping = clustering["mapping"]
    pipeline.mapping_ = None if mapping is None else {int(k): str(v) for k, v in mapping.items()}
    if "labels" in clustering:  # folders written before labels were saved have none
        pipeline.labels_ = np.asarray(clustering["labels"], dtype=np.int64)
    pipeline.feature_names_in_ = np.asarray(feature_names, dtype=object)
    pipeline.n_features_in_ = len(pipeline.feature_names_in_)
    if pipeline.cluster_centers_.shape != (pipeline.n_clusters, latent_width):
        raise ModelFormatError("cluster centres do not match the autoencoder's latent size; retrain")
    schema_data = json.loads(blobs["schema.json"])
    schema = Schema.from_dict(schema_data) if schema_data else None
    names = json.loads(blobs["cluster_names.json"]) if "cluster_names.json" in blobs else {}
    monitor = CustomerMonitor.from_dict(json.loads(blobs["monitoring.json"])) if "monitoring.json" in blobs else None
    centers = pipeline.cluster_centers_ if monitor is None or monitor.space == "latent" else \
        pipeline.assignment_centers_
    if monitor is not None and monitor.soft_.cluster_centers_.shape != centers.shape:
        raise ModelFormatError("monitoring.json does not match the model's clusters; retrain")
    return LoadedModel(pipeline=pipeline, schema=schema, settings=json.loads(blobs["settings.json"]),
                       manifest=manifest, cluster_names={int(c): str(n) for c, n in names.items()}, monitor=monitor)


def _read_json(file: Path, where: str) -> Any:
    if file.is_symlink():
        _refuse_link(file, where)
    if not file.is_file():
        raise ModelFormatError(f"model folder {where!r} has no {file.name}; it was not written by 'custseg train' "
                               "(or is damaged): retrain")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFormatError(f"model folder {where!r}: {file.name} is not valid JSON (edited or truncated); "
                               "retrain or restore the folder") from None
