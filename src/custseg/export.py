"""A saved model as one ONNX graph, and scoring with onnxruntime.

Needs the ``onnx`` extra (``pip install "custseg[onnx]"``). :func:`export_onnx` writes
one graph from the raw customer columns to the scores, joined with
:func:`onnx.compose.merge_models` from three parts made by maintained converters:

1. preprocessing (imputation, category codes, scaling): the fitted preprocessor as
   stock scikit-learn parts (``ColumnTransformer`` of ``SimpleImputer`` /
   ``OrdinalEncoder`` branches, ``StandardScaler``), converted by skl2onnx;
2. the autoencoder, exported by ``torch.onnx.export``: latent features and the
   per-row reconstruction error;
3. the nearest centroid: squared distances computed as K-Means computes them (in
   float64), ``ArgMin``, and the cluster -> segment mapping (``LabelEncoder``).

Graph inputs: one per feature column, named as the column, shape ``[N, 1]``: numeric
columns ``float`` (float32, NaN = missing; the autoencoder computes in float32 anyway), categorical and ordinal columns ``string`` (the
category as text, ``""`` = missing; whole numbers written without ``.0``). Outputs:
``cluster`` (int64), ``distance`` (to the nearest centroid), ``distances`` (to every
centroid), ``latent``, ``reconstruction_error`` and, when the model maps clusters to
known segments, ``segment`` (string). Everything a run of onnxruntime alone needs is in
the file; the model's schema and manifest checksum are in its metadata.

:func:`predict_onnx_file` is ``custseg predict --runtime onnx``: the same reading and
checks as ``custseg predict``, the same output columns, scored by onnxruntime.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .exceptions import ConfigError, DataError, ModelFormatError
from .io.atomic import merge_into, staging_dir
from .io.reading import LoadedTable, read_table
from .persistence import MANIFEST, LoadedModel, load_model
from .schema import Schema, category_text
from .io.writing import FLOAT_FORMAT
from .workflow import PredictResult, _check_ids, prediction_ids

__all__ = ["export_onnx", "ExportResult", "OnnxSegmenter", "predict_onnx_file", "OPSET", "ML_OPSET"]

OPSET = 17
ML_OPSET = 3
_IR_VERSION = 8  # what opset 17 needs; every part is set to it so that onnx.compose can join them
#: rows per onnxruntime call when scoring a table
BATCH_ROWS = 65_536


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401 - checked here so that a missing runtime is one clear error
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("ONNX export needs the 'onnx' extra: pip install \"custseg[onnx]\"") from None
    return onnx


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    size_bytes: int
    inputs: list[str]
    outputs: list[str]


# -- the three parts ------------------------------------------------------------------------------
def _kinds(model: LoadedModel) -> dict[str, str]:
    pre = model.pipeline.preprocessor_
    return {str(name): pre.kinds_[name] for name in pre.feature_names_in_}


def _stock_preprocessing(pre, kinds: dict[str, str]):
    """The fitted preprocessor as the stock scikit-learn parts skl2onnx converts, from its fitted numbers.

    Per column: ``SimpleImputer(median)`` for numbers; ``OrdinalEncoder`` over the training
    categories (unseen and missing -> NaN) then ``SimpleImputer(constant = the mode's code)``
    for categories; then one ``StandardScaler``. They are rebuilt from the preprocessor's
    readable state (``medians_``, ``categories_``, ``modes_``, ``mean_``, ``scale_``) rather
    than taken from its insides, whose arrangement need not be one skl2onnx can convert
    (an imputer over strings with NaN as the missing value, for one).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    branches, seed = [], {}
    for name, kind in kinds.items():
        if kind == "numeric":
            branches.append((name, SimpleImputer(strategy="median"), [name]))
            seed[name] = [float(pre.medians_[name])]  # the median of one value is that value
        else:
            cats = [str(c) for c in pre.categories_[name]]
            mode_code = float(cats.index(str(pre.modes_[name])))
            branches.append((name, Pipeline([
                ("encode", OrdinalEncoder(categories=[cats], handle_unknown="use_encoded_value",
                                          unknown_value=np.nan, dtype=np.float64)),
                ("impute", SimpleImputer(strategy="constant", fill_value=mode_code))]), [name]))
            seed[name] = np.asarray([cats[0]], dtype=object)
    columns = ColumnTransformer(branches, remainder="drop").fit(pd.DataFrame(seed))
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(pre.mean_, dtype="float64")
    scaler.scale_ = np.asarray(pre.scale_, dtype="float64")
    scaler.var_ = scaler.scale_ ** 2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(kinds), np.int64(1)
    return Pipeline([("columns", columns), ("scale", scaler)])


def _preprocessing_part(pre, kinds: dict[str, str]):
    """skl2onnx's conversion of the preprocessing; input one tensor per column, output 'features'."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    # float32: onnxruntime's Imputer has no float64 kernel, and the autoencoder reads float32 anyway
    types = [(name, FloatTensorType([None, 1]) if kind == "numeric" else StringTensorType([None, 1]))
             for name, kind in kinds.items()]
    return convert_sklearn(_stock_preprocessing(pre, kinds), initial_types=types,
                           target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
                           final_types=[("features", FloatTensorType([None, len(kinds)]))])


def _autoencoder_part(embedder):
    """torch.onnx.export of the encoder and the reconstruction error; input 'features' (float32, as the embedder reads)."""
    import onnx
    import torch

    module = embedder.module_.eval()

    class _Scores(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            latent = self.net.encode(x)
            error = (self.net.decode(latent) - x).pow(2).mean(dim=1)
            return latent, error

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter: the dynamo one needs onnxscript, and this network is a few Linear layers
        warnings.simplefilter("ignore")
        torch.onnx.export(_Scores(module), (torch.zeros(2, embedder.n_features_in_, dtype=torch.float32),), buffer,
                          dynamo=False, input_names=["features"], output_names=["latent", "reconstruction_error"],
                          dynamic_axes={"features": {0: "N"}, "latent": {0: "N"}, "reconstruction_error": {0: "N"}},
                          opset_version=OPSET)
    return onnx.load_from_string(buffer.getvalue())


def _centroid_part(centers: np.ndarray, mapping: dict[int, str] | None):
    """Nearest centroid in float64, as :func:`custseg.clustering.assign_to_centroids` computes it."""
    from onnx import TensorProto, helper

    k, d = centers.shape
    centers = np.asarray(centers, dtype="float64")
    inits = [helper.make_tensor("centers_t", TensorProto.DOUBLE, [d, k], centers.T.copy()),
             helper.make_tensor("center_sq", TensorProto.DOUBLE, [1, k], (centers ** 2).sum(axis=1)),
             helper.make_tensor("minus_two", TensorProto.DOUBLE, [], [-2.0]),
             helper.make_tensor("zero", TensorProto.DOUBLE, [], [0.0]),
             helper.make_tensor("axis_1", TensorProto.INT64, [1], [1])]
    nodes = [
        helper.make_node("Cast", ["latent"], ["z"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["z", "z"], ["z_sq"]),
        helper.make_node("ReduceSum", ["z_sq", "axis_1"], ["row_sq"], keepdims=1),
        helper.make_node("MatMul", ["z", "centers_t"], ["dot"]),
        helper.make_node("Mul", ["dot", "minus_two"], ["dot2"]),
        helper.make_node("Add", ["row_sq", "dot2"], ["partial"]),
        helper.make_node("Add", ["partial", "center_sq"], ["sq"]),
        helper.make_node("ArgMin", ["sq"], ["nearest"], axis=1, keepdims=1, select_last_index=0),
        helper.make_node("GatherElements", ["sq", "nearest"], ["nearest_sq"], axis=1),
        helper.make_node("Max", ["nearest_sq", "zero"], ["nearest_sq_pos"]),
        helper.make_node("Sqrt", ["nearest_sq_pos"], ["distance_2d"]),
        helper.make_node("Squeeze", ["distance_2d", "axis_1"], ["distance"]),
        helper.make_node("Squeeze", ["nearest", "axis_1"], ["cluster"]),
        helper.make_node("Max", ["sq", "zero"], ["sq_pos"]),
        helper.make_node("Sqrt", ["sq_pos"], ["distances"]),
    ]
    outputs = [helper.make_tensor_value_info("cluster", TensorProto.INT64, [None]),
               helper.make_tensor_value_info("distance", TensorProto.DOUBLE, [None]),
               helper.make_tensor_value_info("distances", TensorProto.DOUBLE, [None, k])]
    if mapping is not None:
        nodes.append(helper.make_node("LabelEncoder", ["cluster"], ["segment"], domain="ai.onnx.ml",
                                      keys_int64s=list(range(k)), values_strings=[mapping[c] for c in range(k)],
                                      default_string=""))
        outputs.append(helper.make_tensor_value_info("segment", TensorProto.STRING, [None]))
    graph = helper.make_graph(nodes, "nearest_centroid",
                              [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [None, d])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid("ai.onnx.ml", ML_OPSET)])


def _same_versions(model, opsets: dict[str, int]):
    """Give a part the IR version and opsets of the others: onnx.compose joins only equal ones."""
    from onnx import helper

    model.ir_version = _IR_VERSION
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    return model


def build_onnx(model: LoadedModel):
    """The whole segmenter as one :class:`onnx.ModelProto` (see the module docstring)."""
    onnx = _onnx()
    from onnx import compose

    pipeline = model.pipeline
    pre = pipeline.preprocessor_
    if not hasattr(pipeline.embedder_, "module_") or pipeline.preprocessor == "passthrough":
        raise ModelFormatError("only models of the reference design (preset 'reference') can be exported to ONNX; "
                               "the mixed-type ensemble is scored with 'custseg predict'")
    pre_onx = _preprocessing_part(pre, _kinds(model))
    opsets = {"": OPSET, "ai.onnx.ml": ML_OPSET}
    parts = [_same_versions(p, opsets) for p in
             (pre_onx, _autoencoder_part(pipeline.embedder_), _centroid_part(pipeline.cluster_centers_,
                                                                              pipeline.mapping_))]
    front = compose.add_prefix(parts[0], prefix="pre_", rename_inputs=False, rename_outputs=False)
    joined = compose.merge_models(front, parts[1], io_map=[("features", "features")],
                                  outputs=["latent", "reconstruction_error"])
    # keep the latent as an output while feeding it on
    joined = compose.merge_models(
        compose.add_prefix(joined, prefix="ae_", rename_inputs=False, rename_outputs=False), parts[2],
        io_map=[("latent", "latent")],
        outputs=["cluster", "distance", "distances", *(["segment"] if pipeline.mapping_ is not None else []),
                 "reconstruction_error"])
    return _with_passthrough(joined, pipeline.cluster_centers_.shape[1])


def _with_passthrough(onx, latent_dim: int):
    """Expose the latent features (fed to the centroid part inside the graph) as an output too."""
    from onnx import TensorProto, helper

    onx.graph.output.append(helper.make_tensor_value_info("latent", TensorProto.FLOAT, [None, latent_dim]))
    return onx


def export_onnx(model_dir: str | Path, path: str | Path) -> ExportResult:
    """Write the model in ``model_dir`` as one ONNX file at ``path`` (atomically).

    The model's schema, its feature kinds and its manifest checksum go into the file's
    metadata, so the graph alone says what it expects and which model it is.

    Returns
    -------
    ExportResult
    """
    onnx = _onnx()
    model = load_model(model_dir)
    onx = build_onnx(model)
    digest = hashlib.sha256((Path(model_dir) / MANIFEST).read_bytes()).hexdigest()
    meta = {"custseg_model_sha256": digest, "custseg_feature_kinds": json.dumps(_kinds(model)),
            "custseg_schema": json.dumps(None if model.schema is None else model.schema.to_dict()),
            "custseg_na_values": json.dumps(list(model.settings.get("data", {}).get("na_values", []))),
            "custseg_categories": json.dumps({str(k): [str(c) for c in v]
                                              for k, v in model.pipeline.preprocessor_.categories_.items()}),
            "custseg_cluster_names": json.dumps({str(k): v for k, v in (model.cluster_names or {}).items()})}
    for key, value in meta.items():
        entry = onx.metadata_props.add()
        entry.key, entry.value = key, value
    onx.producer_name, onx.doc_string = "custseg", "Customer segmentation: raw columns -> cluster, distances, segment"
    onnx.checker.check_model(onx, full_check=True)
    data = onx.SerializeToString()
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--onnx {str(path)!r} is a folder; give a file name such as segmenter.onnx")
    with staging_dir(path) as staged:
        (staged / path.name).write_bytes(data)
        merge_into(staged, path.parent if str(path.parent) else ".")
    return ExportResult(path=path, size_bytes=len(data), inputs=[i.name for i in onx.graph.input],
                        outputs=[o.name for o in onx.graph.output])


# -- scoring with onnxruntime ------------------------------------------------------------------------
class OnnxSegmenter:
    """An exported graph in an onnxruntime session, scoring tables as ``custseg predict`` does.

    Parameters
    ----------
    path : str or path
        A file written by :func:`export_onnx`.
    threads : int, default=1
        Intra-op threads of the session.
    """

    def __init__(self, path: str | Path, threads: int = 1):
        _onnx()
        import onnxruntime as ort

        path = Path(path)
        if path.is_dir():
            raise DataError(f"--runtime onnx scores with an ONNX file, and {str(path)!r} is a folder; write one "
                            f"with 'custseg export --model {path} --onnx segmenter.onnx' and give --model "
                            "segmenter.onnx")
        if not path.is_file():
            raise DataError(f"ONNX file {str(path)!r} does not exist; write it with 'custseg export --onnx' "
                            "and give its path with --model")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for foreign or damaged files
            raise ModelFormatError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}); "
                                   "export it again with 'custseg export'") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "custseg_feature_kinds" not in meta:
            raise ModelFormatError(f"{str(path)!r} was not written by 'custseg export'; export the model again")
        self.kinds: dict[str, str] = json.loads(meta["custseg_feature_kinds"])
        schema = json.loads(meta.get("custseg_schema", "null"))
        self.schema: Schema | None = Schema.from_dict(schema) if schema else None
        self.model_sha256 = meta.get("custseg_model_sha256")
        self.na_values: list[str] = json.loads(meta.get("custseg_na_values", "[]"))
        self.categories: dict[str, list[str]] = json.loads(meta.get("custseg_categories", "{}"))
        self.cluster_names = {int(k): v for k, v in json.loads(meta.get("custseg_cluster_names", "{}")).items()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The graph's inputs from a table as :func:`~custseg.io.reading.read_table` gives it."""
        feeds = {}
        for name, kind in self.kinds.items():
            col = frame[name]
            if kind == "numeric":
                values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float32", na_value=np.nan)
            else:
                codes, uniques = pd.factorize(col, use_na_sentinel=True)
                text = np.array([category_text(v) for v in uniques] + [""], dtype=object)
                values = text[codes]
            feeds[name] = values.reshape(-1, 1)
        return feeds

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per row: Cluster, [Predicted_Segment,] Distance_To_Centroid, Reconstruction_Error."""
        parts = []
        for start in range(0, len(frame), BATCH_ROWS):
            chunk = frame.iloc[start:start + BATCH_ROWS]
            got = dict(zip(self.outputs, self.session.run(None, self.feeds(chunk))))
            part = pd.DataFrame({"Cluster": got["cluster"].astype(int)})
            if "segment" in got:
                part["Predicted_Segment"] = got["segment"].astype(object)
            part["Distance_To_Centroid"] = got["distance"]
            part["Reconstruction_Error"] = got["reconstruction_error"].astype("float64")
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def predict_table(self, table: LoadedTable, id_column: str | None = None) -> PredictResult:
        """Check and score a loaded table; the same columns as :func:`custseg.workflow.predict_table`."""
        frame, schema = table.frame, self.schema
        extra: list[str] = []
        if schema is not None:
            extra = schema.check(frame, table.source, table.line_of)
        missing = [c for c in self.kinds if c not in frame.columns]
        if missing:
            raise DataError(f"file {table.source!r}: columns are missing: {', '.join(map(repr, missing))}")
        id_name, ids, notice = prediction_ids(frame, schema, id_column, table.source)
        if id_name != "Row":
            _check_ids(table, id_name)
            extra = [c for c in extra if c != id_name]
        scores = self.score(frame)
        if self.cluster_names:
            scores.insert(1, "Segment_Name", [self.cluster_names.get(int(c), "") for c in scores["Cluster"]])
        out = pd.concat([pd.DataFrame({id_name: ids.to_numpy()}), scores], axis=1)
        return PredictResult(table=out, extra_columns=extra, unseen_categories=self.unseen_categories(frame),
                             id_column=id_name, id_notice=notice)

    def unseen_categories(self, frame: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Categories never seen in training, per column, with their counts (they take the training mode)."""
        report = {}
        for name, cats in self.categories.items():
            text = frame[name].dropna().map(category_text)
            unseen = text[~text.isin(cats)]
            if len(unseen):
                report[name] = {str(k): int(v) for k, v in unseen.value_counts().sort_index().items()}
        return report


def predict_onnx_file(onnx_path: str | Path, input_path: str | Path, output_path: str | Path,
                      na_values: Sequence[str] = (), id_column: str | None = None) -> PredictResult:
    """``custseg predict --runtime onnx``: score a table file with an exported graph, write the CSV atomically."""
    segmenter = OnnxSegmenter(onnx_path, threads=min(4, os.cpu_count() or 1))
    na = list(dict.fromkeys([*segmenter.na_values, *na_values]))
    result = segmenter.predict_table(read_table(input_path, na_values=na), id_column=id_column)
    output_path = Path(output_path)
    if output_path.is_dir():
        raise DataError(f"--output {str(output_path)!r} is a folder; give a file name such as predictions.csv")
    with staging_dir(output_path) as staged:
        result.table.to_csv(staged / output_path.name, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        merge_into(staged, output_path.parent if str(output_path.parent) else ".")
    return result
