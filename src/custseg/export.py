"""A saved model as one ONNX graph, and scoring with onnxruntime.

Needs the ``onnx`` extra (``pip install "custseg[onnx]"``). :func:`export_onnx` writes
one graph from the raw customer columns to the scores, joined with
:func:`onnx.compose.merge_models` from three parts made by maintained converters:

1. preprocessing, converted by skl2onnx from stock scikit-learn parts rebuilt from the
   model's fitted numbers: for the reference design a ``ColumnTransformer`` of
   ``SimpleImputer`` / ``OrdinalEncoder`` branches and a ``StandardScaler``; for the
   mixed-type ensemble (presets ``mixed`` and ``guided``) the blocks of its
   :class:`~custseg.embedders.mixed.MixedInputEncoder`: ``SimpleImputer`` + ``StandardScaler``,
   ``MissingIndicator`` (skl2onnx has no converter for it; one is registered through its
   ``update_registered_converter``), ``SimpleImputer`` + ``OneHotEncoder(handle_unknown="ignore")``;
2. the network, exported by ``torch.onnx.export``: latent features and the per-row
   reconstruction error; for an ensemble clustered by consensus also the consensus space
   (every member's standardized block, float64), the consensus cluster, the members'
   agreement and the latent distances, computed with the rows along the last axis;
3. the clusters, as nodes: the nearest centroid (squared distances computed as K-Means
   computes them, in float64, ``ArgMin``) in the latent space (the reference design, an
   ensemble of one); the cluster -> segment mapping (``LabelEncoder``).

Graph inputs: one per feature column, named as the column, shape ``[N, 1]``: numeric
columns ``float`` (float32, NaN = missing; the autoencoder computes in float32 anyway), categorical and ordinal columns ``string`` (the
category as text, ``""`` = missing; whole numbers written without ``.0``). Outputs:
``cluster`` (int64), ``distance`` (latent distance to the cluster's centre), ``distances``
(to every centre), ``latent``, ``reconstruction_error``, when the model maps clusters to
known segments ``segment`` (string) and, for an ensemble clustered by consensus,
``agreement`` and ``consensus``. Everything a run of onnxruntime alone needs is in
the file; the model's schema and manifest checksum are in its metadata.

:func:`predict_onnx_file` is ``custseg predict --runtime onnx``: the same reading and
checks as ``custseg predict``, the same output columns, scored by onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .clustering import ConsensusKMeans
from .embedders.mixed import MixedAutoencoderEmbedder, reconstruction_loss
from .exceptions import ConfigError, DataError, ModelFormatError
from .io.atomic import merge_into, staging_dir
from .io.reading import LoadedTable, read_table
from .persistence import MANIFEST, LoadedModel, load_model
from .schema import Schema, category_text, text_columns_of
from .io.writing import FLOAT_FORMAT
from .workflow import PredictResult, _check_ids, prediction_ids, scoring_threads

__all__ = ["export_onnx", "ExportResult", "OnnxSegmenter", "predict_onnx_file", "scoring_graph", "OPSET", "ML_OPSET"]

OPSET = 17
ML_OPSET = 3
_IR_VERSION = 8  # what opset 17 needs; every part is set to it so that onnx.compose can join them
#: rows whose graph inputs are built at once when scoring a table
BATCH_ROWS = 65_536
#: rows per onnxruntime call: the ensemble's activations of 512 rows stay in the CPU's caches (of 65,536
#: rows, its elementwise steps wait on memory; benchmarks/README.md, "ONNX against torch")
SESSION_ROWS = 512
#: the outputs OnnxSegmenter.score reads (its session holds only the part of the graph that computes them)
_SCORED = ("cluster", "segment", "agreement", "distance", "reconstruction_error")


def _onnx():
    try:
        import onnx
        import onnx.utils  # noqa: F401 - the Extractor of OnnxSegmenter
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


# -- the parts ---------------------------------------------------------------------------------------------
def _mixed_encoder(model: LoadedModel):
    """The mixed-type ensemble's input encoding, or None for a model of the reference design."""
    embedder = model.pipeline.embedder_
    return embedder.encoder_ if isinstance(embedder, MixedAutoencoderEmbedder) else None


def _kinds(model: LoadedModel) -> dict[str, str]:
    encoder = _mixed_encoder(model)
    if encoder is not None:
        ordinal = encoder.ordinal or {}
        return {str(name): "numeric" if name in encoder.numeric_ else "ordinal" if name in ordinal else "categorical"
                for name in encoder.feature_names_in_}
    pre = model.pipeline.preprocessor_
    return {str(name): pre.kinds_[name] for name in pre.feature_names_in_}


def _categories(model: LoadedModel) -> dict[str, list[str]]:
    encoder = _mixed_encoder(model)
    categories = encoder.categories_ if encoder is not None else model.pipeline.preprocessor_.categories_
    return {str(k): [str(c) for c in v] for k, v in categories.items()}


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


def _stock_mixed_encoding(encoder):
    """The mixed-type input encoding as stock scikit-learn parts skl2onnx converts, from its fitted numbers.

    The same blocks in the same order as :class:`~custseg.embedders.mixed.MixedInputEncoder`:
    ``SimpleImputer(median)`` + ``StandardScaler`` over the numeric columns; one
    ``MissingIndicator`` per column that had missing values in training (NaN for numbers,
    ``""`` for categories, as the graph receives them); per categorical column
    ``SimpleImputer(constant = the mode)`` + ``OneHotEncoder(handle_unknown="ignore")`` (an
    unseen category is all zeros). Rebuilt from the encoder's JSON state rather than taken
    from its ``transformer_``, whose category imputer looks for NaN in strings, which
    skl2onnx cannot convert.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    state = encoder.to_dict()
    numeric = list(encoder.numeric_)
    branches = []
    if numeric:
        branches.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                              ("scale", StandardScaler())]), numeric))
    for name in encoder.indicator_columns_:
        branches.append((f"missing={name}", MissingIndicator(features="all", missing_values=(
            np.nan if name in numeric else "")), [name]))
    for name, mode in zip(encoder.categorical_, state.get("modes", [])):
        cats = [str(c) for c in encoder.categories_[name]]
        branches.append((f"{name}=", Pipeline([
            ("impute", SimpleImputer(strategy="constant", missing_values="", fill_value=str(mode))),
            ("encode", OneHotEncoder(categories=[np.asarray(cats, dtype=object)], handle_unknown="ignore",
                                     sparse_output=False))]), [name]))
    seed = pd.DataFrame({name: ([0.0, np.nan] if name in numeric else
                                np.asarray([encoder.categories_[name][0], ""], dtype=object))
                         for name in encoder.feature_names_in_})
    columns = ColumnTransformer(branches, remainder="drop", sparse_threshold=0.0).fit(seed)
    if numeric:  # the learned numbers are the encoder's, not the seed table's
        imputer, scaler = (step for _, step in columns.named_transformers_["numeric"].steps)
        imputer.statistics_ = np.asarray(state["medians"], dtype="float64")
        scaler.mean_ = np.asarray(state["mean"], dtype="float64")
        scaler.scale_ = np.asarray(state["scale"], dtype="float64")
        scaler.var_ = scaler.scale_ ** 2
    return columns


def _register_missing_indicator() -> None:
    """Teach skl2onnx sklearn's ``MissingIndicator`` (one column, ``features="all"``), which it has no converter for.

    Registered through skl2onnx's own extension point (``update_registered_converter``);
    the converter is the two nodes the indicator is: "is missing" and a cast to 0/1.
    """
    from onnx import TensorProto
    from skl2onnx import update_registered_converter
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.impute import MissingIndicator

    def shape(operator):
        operator.outputs[0].type = FloatTensorType([operator.inputs[0].get_first_dimension(), 1])

    def convert(scope, operator, container):
        source, flag = operator.inputs[0], scope.get_unique_variable_name("is_missing")
        if isinstance(source.type, StringTensorType):
            # the graph's inputs carry a missing category as ""; strings have no Equal before opset 19
            container.add_node("LabelEncoder", [source.full_name], [flag], op_domain="ai.onnx.ml", op_version=2,
                               keys_strings=[""], values_int64s=[1], default_int64=0,
                               name=scope.get_unique_operator_name("LabelEncoder"))
        else:
            container.add_node("IsNaN", [source.full_name], [flag], name=scope.get_unique_operator_name("IsNaN"))
        container.add_node("Cast", [flag], [operator.outputs[0].full_name], to=TensorProto.FLOAT,
                           name=scope.get_unique_operator_name("Cast"))

    update_registered_converter(MissingIndicator, "CustsegMissingIndicator", shape, convert)


def _preprocessing_part(model: LoadedModel, kinds: dict[str, str]):
    """skl2onnx's conversion of the preprocessing; input one tensor per column, output 'features'."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    encoder = _mixed_encoder(model)
    if encoder is not None:
        _register_missing_indicator()
        stock, width = _stock_mixed_encoding(encoder), len(encoder.get_feature_names_out())
    else:
        stock, width = _stock_preprocessing(model.pipeline.preprocessor_, kinds), len(kinds)
    # float32: onnxruntime's Imputer has no float64 kernel, and the autoencoder reads float32 anyway
    types = [(name, FloatTensorType([None, 1]) if kind == "numeric" else StringTensorType([None, 1]))
             for name, kind in kinds.items()]
    return convert_sklearn(stock, initial_types=types, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
                           final_types=[("features", FloatTensorType([None, width]))])


def _torch_part(module, example: "torch.Tensor", outputs: list[str]):
    """``torch.onnx.export`` of ``module`` (input 'features', every axis 0 is the rows)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter: the dynamo one needs onnxscript, and these networks are a few matrix products
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, input_names=["features"],
                          output_names=outputs, dynamic_axes={name: {0: "N"} for name in ["features", *outputs]},
                          opset_version=OPSET)
    return onnx.load_from_string(buffer.getvalue())


def _autoencoder_part(embedder):
    """torch.onnx.export of the encoder and the reconstruction error; input 'features' (float32, as the embedder reads)."""
    import torch

    class _Scores(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            latent = self.net.encode(x)
            # the mean over each row's features with the rows along the last axis: onnxruntime reduces a row's
            # contiguous values differently by their memory alignment, so a customer's error depended on its
            # position in the table
            error = (self.net.decode(latent) - x).t().pow(2).mean(dim=0)
            return latent, error

    return _torch_part(_Scores(embedder.module_), torch.zeros(2, embedder.n_features_in_, dtype=torch.float32),
                       ["latent", "reconstruction_error"])


def _ensemble_part(embedder, clusterer: ConsensusKMeans | None, centers: np.ndarray | None = None):
    """torch.onnx.export of the batched ensemble: latent features, reconstruction error and, with a consensus,
    the consensus space, the consensus cluster, the members' agreement and the latent distances.

    Computed as :class:`~custseg.embedders.mixed.MixedAutoencoderEmbedder`,
    :class:`~custseg.clustering.ConsensusKMeans` and
    :meth:`~custseg.pipeline.SegmentationPipeline.assign_latent` compute them: the members' latent
    features side by side (float32, as the network gives them); the reconstruction loss of the
    training (:func:`~custseg.embedders.mixed.reconstruction_loss`) averaged over the members; every
    member's block standardized in float64 (the consensus space); per member, the nearest of its own
    cluster centres there, ranked by ``|c|^2 - 2 z.c`` (``clustering._nearest_member_centers``); the
    nearest consensus centre, ranked as scikit-learn's ``pairwise_distances_argmin_min`` ranks it; the
    latent distance to the assigned cluster's centre computed directly, and to every centre as
    K-Means computes distances.
    """
    import torch

    encoder = embedder.encoder_
    width = len(encoder.get_feature_names_out())

    class _Ensemble(torch.nn.Module):
        """The ensemble with the rows along the last axis: ``(1, members * features, rows)``.

        Each member's layer is then one group of a 1x1 convolution (``groups=members``), which
        onnxruntime computes as one matrix product per member with the bias and the ReLU fused
        in; in the rows-first layout of :class:`~custseg.embedders.mixed.BatchedAutoencoder`
        every bias, ReLU and transpose was a pass of its own over the activations. Everything
        after the network stays in that layout too: a sum over a row's values then runs along a
        strided axis, in the same order wherever the row sits in the call (onnxruntime sums a row's
        contiguous values differently by their memory alignment), and the only transposes left are
        those of the ``latent`` and ``consensus`` outputs, which scoring does not ask for
        (:class:`OnnxSegmenter` runs the part of the graph its outputs need).
        """

        def __init__(self, net):
            super().__init__()
            self.members, self.layers = net.n_members, {}
            for side, params in (("encoder", net.encoder), ("decoder", net.decoder)):
                self.layers[side] = len(params) // 2
                for i in range(self.layers[side]):
                    w, b = params[2 * i].detach(), params[2 * i + 1].detach()  # (M, in, out), (M, 1, out)
                    members, fan_in, fan_out = w.shape
                    self.register_buffer(f"{side}_w{i}", w.permute(0, 2, 1).reshape(members * fan_out, fan_in, 1))
                    self.register_buffer(f"{side}_b{i}", b.reshape(members * fan_out))
            if clusterer is not None:
                def f64(values):
                    return torch.from_numpy(np.ascontiguousarray(values, dtype="float64"))

                k = clusterer.n_clusters
                member_centers = f64(clusterer.member_centers_)  # (M, k, L)
                self.register_buffer("mean", f64(clusterer.block_mean_[:, :, None]))
                self.register_buffer("scale", f64(clusterer.block_scale_[:, :, None]))
                self.register_buffer("member_centers", member_centers)
                self.register_buffer("member_centers_sq", member_centers.pow(2).sum(-1).unsqueeze(2))  # (M, k, 1)
                consensus = f64(clusterer.consensus_centers_)  # (k, M * L)
                self.register_buffer("consensus_centers", consensus)
                self.register_buffer("consensus_centers_sq", consensus.pow(2).sum(1, keepdim=True))  # (k, 1)
                self.register_buffer("slots", torch.arange(self.members).unsqueeze(1) * k)  # (M, 1)
                self.register_buffer("relabel", torch.from_numpy(
                    np.asarray(clusterer.member_relabel_, dtype="int64").ravel()))
                latent_centers = f64(centers)  # (k, M * L)
                self.register_buffer("latent_centers", latent_centers)
                self.register_buffer("latent_centers_t", latent_centers.t().contiguous())
                self.register_buffer("cluster_ids", torch.arange(k).unsqueeze(1))  # (k, 1)
                self.register_buffer("latent_centers_sq", latent_centers.pow(2).sum(1, keepdim=True))  # (k, 1)

        def _run(self, side: str, h, first_shared: bool):
            n = self.layers[side]
            for i in range(n):
                # the encoder's first layer reads the one shared table: an ordinary convolution
                groups = 1 if (first_shared and i == 0) else self.members
                h = torch.nn.functional.conv1d(h, getattr(self, f"{side}_w{i}"), getattr(self, f"{side}_b{i}"),
                                               groups=groups)
                if i < n - 1:
                    h = torch.relu(h)
            return h

        def forward(self, x):
            rows = x.t().unsqueeze(0)  # (1, features, rows)
            z = self._run("encoder", rows, first_shared=True)  # (1, members * latent, rows)
            out = self._run("decoder", z, first_shared=False)  # (1, members * features, rows)
            out = out.reshape(self.members, -1, out.shape[-1])  # (members, features, rows)
            error = reconstruction_loss(out, rows, encoder.blocks_, embedder.categorical_loss, dim=1).mean(0)
            z = z.reshape(-1, z.shape[-1])  # (members * latent, rows)
            latent = z.t()  # (rows, members * latent)
            if clusterer is None:
                return latent, error
            n = z.shape[-1]
            zd = z.double()
            zs = (zd.reshape(self.members, -1, n) - self.mean) / self.scale  # (members, latent, rows)
            # each member's nearest own centre, matched to the consensus numbering
            member = torch.baddbmm(self.member_centers_sq, self.member_centers, zs, alpha=-2.0).argmin(1)
            matched = self.relabel[member + self.slots]  # (members, rows)
            wide = zs.reshape(-1, n)  # the consensus space, (members * latent, rows)
            # the consensus cluster ranked exactly as scikit-learn's pairwise_distances_argmin_min ranks it
            # (ConsensusKMeans.predict): max(0, (|x|^2 - 2 x.c) + |c|^2). With the row's own norm left out, large
            # values kept apart centres whose distances that sum rounds to a tie (the first of them wins)
            dot = torch.mm(self.consensus_centers, wide) * -2.0
            ranked = ((wide * wide).sum(0) + dot) + self.consensus_centers_sq
            cluster = ranked.clamp_min(0.0).argmin(0)
            agreement = (matched == cluster).double().mean(0)
            # the latent distance to the assigned cluster's centre, computed directly; the centres are picked by a
            # product with the clusters one-hot (exact: one term of each sum is the centre, the others 0), as a
            # Gather along the rows-last axis took onnxruntime longer than the whole encoder
            onehot = (cluster.unsqueeze(0) == self.cluster_ids).double()  # (k, rows)
            offset = zd - torch.mm(self.latent_centers_t, onehot)
            distance = (offset * offset).sum(0).sqrt()
            sq = ((zd * zd).sum(0) + torch.mm(self.latent_centers, zd) * -2.0) + self.latent_centers_sq
            distances = sq.clamp_min(0.0).sqrt().t()  # (rows, k), as K-Means computes distances
            return latent, error, wide.t(), cluster, agreement, distance, distances

    outputs = ["latent", "reconstruction_error"]
    if clusterer is not None:
        outputs += ["consensus", "cluster", "agreement", "distance", "distances"]
    return _torch_part(_Ensemble(embedder.module_), torch.zeros(2, width, dtype=torch.float32), outputs)


def _segment_nodes(mapping: dict[int, str] | None, k: int):
    """The cluster -> known segment lookup (``LabelEncoder``) and its output, if the model has a mapping."""
    from onnx import TensorProto, helper

    if mapping is None:
        return [], []
    return ([helper.make_node("LabelEncoder", ["cluster"], ["segment"], domain="ai.onnx.ml",
                              keys_int64s=list(range(k)), values_strings=[mapping[c] for c in range(k)],
                              default_string="")],
            [helper.make_tensor_value_info("segment", TensorProto.STRING, [None])])


def _as_model(nodes, name: str, inputs, outputs, inits):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid("ai.onnx.ml", ML_OPSET)])


def _centroid_part(centers: np.ndarray, mapping: dict[int, str] | None):
    """Nearest centroid in float64, as :func:`custseg.clustering.assign_to_centroids` computes it.

    scikit-learn's ``pairwise_distances_argmin_min`` ranks the centres by
    ``max(0, (|x|^2 - 2 x.c) + |c|^2)`` and takes the square root of the least; the graph does the
    same, with the rows along the last axis (``(latent, rows)``): a row's squared norm is then a
    sum over a strided axis, the same whatever the row's position in the call (onnxruntime sums
    contiguous values differently by their memory alignment; with 3 or 5 latent features a
    customer's distance depended on where it sat).
    """
    from onnx import TensorProto, helper

    k, d = centers.shape
    centers = np.asarray(centers, dtype="float64")
    inits = [helper.make_tensor("centers", TensorProto.DOUBLE, [k, d], centers.copy()),
             helper.make_tensor("center_sq", TensorProto.DOUBLE, [k, 1], (centers ** 2).sum(axis=1)),
             helper.make_tensor("minus_two", TensorProto.DOUBLE, [], [-2.0]),
             helper.make_tensor("zero", TensorProto.DOUBLE, [], [0.0]),
             helper.make_tensor("axis_0", TensorProto.INT64, [1], [0])]
    nodes = [
        helper.make_node("Cast", ["latent"], ["z"], to=TensorProto.DOUBLE),
        helper.make_node("Transpose", ["z"], ["z_t"], perm=[1, 0]),  # (latent, rows)
        helper.make_node("Mul", ["z_t", "z_t"], ["z_sq"]),
        helper.make_node("ReduceSum", ["z_sq", "axis_0"], ["row_sq"], keepdims=1),  # (1, rows)
        helper.make_node("MatMul", ["centers", "z_t"], ["dot"]),  # (k, rows)
        helper.make_node("Mul", ["dot", "minus_two"], ["dot2"]),
        helper.make_node("Add", ["row_sq", "dot2"], ["partial"]),
        helper.make_node("Add", ["partial", "center_sq"], ["sq"]),
        helper.make_node("Max", ["sq", "zero"], ["sq_pos"]),
        helper.make_node("ArgMin", ["sq_pos"], ["nearest"], axis=0, keepdims=1, select_last_index=0),
        helper.make_node("GatherElements", ["sq_pos", "nearest"], ["nearest_sq"], axis=0),
        helper.make_node("Sqrt", ["nearest_sq"], ["distance_2d"]),
        helper.make_node("Squeeze", ["distance_2d", "axis_0"], ["distance"]),
        helper.make_node("Squeeze", ["nearest", "axis_0"], ["cluster"]),
        helper.make_node("Sqrt", ["sq_pos"], ["distances_t"]),
        helper.make_node("Transpose", ["distances_t"], ["distances"], perm=[1, 0]),
    ]
    outputs = [helper.make_tensor_value_info("cluster", TensorProto.INT64, [None]),
               helper.make_tensor_value_info("distance", TensorProto.DOUBLE, [None]),
               helper.make_tensor_value_info("distances", TensorProto.DOUBLE, [None, k])]
    segment, segment_out = _segment_nodes(mapping, k)
    return _as_model(nodes + segment, "nearest_centroid",
                     [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [None, d])],
                     outputs + segment_out, inits)


def _segment_part(mapping: dict[int, str], k: int):
    """The cluster -> known segment lookup alone (the ensemble's graph computes the cluster itself)."""
    from onnx import TensorProto, helper

    nodes, outputs = _segment_nodes(mapping, k)
    return _as_model(nodes, "segment", [helper.make_tensor_value_info("cluster", TensorProto.INT64, [None])],
                     outputs, [])


def _same_versions(model, opsets: dict[str, int]):
    """Give a part the IR version and opsets of the others: onnx.compose joins only equal ones."""
    from onnx import helper

    model.ir_version = _IR_VERSION
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    return model


def build_onnx(model: LoadedModel):
    """The whole segmenter as one :class:`onnx.ModelProto` (see the module docstring)."""
    _onnx()
    from onnx import compose

    pipeline = model.pipeline
    embedder, clusterer = pipeline.embedder_, pipeline.clusterer_
    mixed = isinstance(embedder, MixedAutoencoderEmbedder)
    if not mixed and (not hasattr(embedder, "module_") or pipeline.preprocessor == "passthrough"):
        raise ModelFormatError("only models of the reference design or the mixed-type ensemble can be exported "
                               f"to ONNX; this model's embedder is a {type(embedder).__name__}")
    if clusterer is not None and (not isinstance(clusterer, ConsensusKMeans) or clusterer.consensus != "latent"):
        raise ModelFormatError("only the latent consensus (ConsensusKMeans(consensus='latent'), what 'custseg "
                               "train' fits) can be exported to ONNX; this model's clusterer is "
                               f"{type(clusterer).__name__}({getattr(clusterer, 'consensus', '')!r}); score it "
                               "with 'custseg predict'")
    centers, mapping = pipeline.cluster_centers_, pipeline.mapping_
    if not mixed:
        middle, tail = _autoencoder_part(embedder), _centroid_part(centers, mapping)
    elif clusterer is None:
        middle, tail = _ensemble_part(embedder, None), _centroid_part(centers, mapping)
    else:
        middle = _ensemble_part(embedder, clusterer, centers)
        tail = None if mapping is None else _segment_part(mapping, len(centers))
    opsets = {"": OPSET, "ai.onnx.ml": ML_OPSET}
    front, middle = (_same_versions(p, opsets) for p in (_preprocessing_part(model, _kinds(model)), middle))
    # skl2onnx names its graph with a fresh uuid, which merge_models copies into the joined graph's name and
    # doc string: fixed names make the same model export to the same bytes
    front.graph.name, middle.graph.name = "preprocessing", "network"
    joined = compose.merge_models(compose.add_prefix(front, prefix="pre_", rename_inputs=False,
                                                     rename_outputs=False),
                                  middle, io_map=[("features", "features")],
                                  outputs=[o.name for o in middle.graph.output])
    if tail is not None:
        tail = _same_versions(tail, opsets)
        ends = {o.name: o for o in joined.graph.output}
        handed_on = [i.name for i in tail.graph.input]
        joined = compose.merge_models(
            compose.add_prefix(joined, prefix="ae_", rename_inputs=False, rename_outputs=False), tail,
            io_map=[(name, name) for name in handed_on],
            outputs=[*(o.name for o in tail.graph.output), *(name for name in ends if name not in handed_on)])
        # what the tail reads is fed on inside the graph and is an output too
        joined.graph.output.extend(ends[name] for name in handed_on if name in _OUTPUT_ORDER)
    # the outputs in the order of predict's columns, then the features (merge_models lists the first part's first)
    ordered = sorted(joined.graph.output, key=lambda o: _OUTPUT_ORDER.index(o.name))
    del joined.graph.output[:]
    joined.graph.output.extend(ordered)
    return joined


_OUTPUT_ORDER = ["cluster", "segment", "agreement", "distance", "distances", "reconstruction_error", "latent",
                 "consensus"]


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
            "custseg_categories": json.dumps(_categories(model)),
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
def _checked(value, container: type, item: type):
    """``value`` if it is a ``container`` (list or dict) whose items (a dict's values) are ``item``s, else TypeError."""
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(value, container) or not all(isinstance(v, item) for v in items):
        raise TypeError(f"expected a {container.__name__} of {item.__name__}")
    return value


def _metadata(meta: dict[str, str], key: str, default: str | None, container: type, item: type):
    """The JSON value of an exported file's metadata entry ``key``, checked to be what export_onnx writes."""
    return _checked(json.loads(meta[key] if default is None else meta.get(key, default)), container, item)


def scoring_graph(proto):
    """The part of an exported graph that computes the columns of ``predict`` (:data:`_SCORED`).

    onnxruntime runs every node of a graph whichever outputs a call asks for, so scoring with the
    whole graph would also compute the latent features, the consensus space and the distances to
    every centre (a quarter of the default ensemble's node time).
    """
    onnx = _onnx()
    wanted = [o.name for o in proto.graph.output if o.name in _SCORED]
    return onnx.utils.Extractor(proto).extract_model([i.name for i in proto.graph.input], wanted)


class OnnxSegmenter:
    """An exported graph in an onnxruntime session, scoring tables as ``custseg predict`` does.

    Parameters
    ----------
    path : str or path
        A file written by :func:`export_onnx`.
    threads : int, default=1
        Slices of rows scored side by side, each in one onnxruntime thread (the answers are the
        same for any number: a slice is computed on its own; onnxruntime's own threads cost
        more than they gained on calls of a few hundred rows).
    """

    def __init__(self, path: str | Path, threads: int = 1):
        onnx = _onnx()
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
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.log_severity_level = 4  # a file onnxruntime refuses is one error line below, not its own log too
        self.threads = max(1, int(threads))
        again = "export the model again with 'custseg export'"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"ONNX file {str(path)!r} cannot be read ({exc.strerror or type(exc).__name__}); check "
                            "that it is a file you may read") from None
        try:
            proto = onnx.load_from_string(data)
            if not proto.graph.node:  # protobuf reads an empty file (or one of zero fields) as an empty model
                raise ValueError("no graph")
        except Exception as exc:  # protobuf raises its own types for foreign or damaged files
            raise ModelFormatError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}); "
                                   f"{again}") from None
        meta = {entry.key: entry.value for entry in proto.metadata_props}
        if "custseg_feature_kinds" not in meta:
            raise ModelFormatError(f"{str(path)!r} was not written by 'custseg export'; {again}")
        try:
            self.kinds: dict[str, str] = _metadata(meta, "custseg_feature_kinds", None, dict, str)
            schema = json.loads(meta.get("custseg_schema", "null"))
            self.schema: Schema | None = Schema.from_dict(schema) if schema else None
            self.na_values: list[str] = _metadata(meta, "custseg_na_values", "[]", list, str)
            self.categories: dict[str, list[str]] = {
                name: _checked(values, list, str)
                for name, values in _metadata(meta, "custseg_categories", "{}", dict, list).items()}
            self.cluster_names = {int(k): v for k, v in
                                  _metadata(meta, "custseg_cluster_names", "{}", dict, str).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelFormatError(f"{str(path)!r}: its custseg metadata is damaged ({type(exc).__name__}); "
                                   f"{again}") from None
        self.model_sha256 = meta.get("custseg_model_sha256")
        self.outputs = [o.name for o in proto.graph.output]
        # what each input holds, as the metadata says the feeds are built: float for numbers, text otherwise
        inputs = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
        expected = {name: onnx.TensorProto.FLOAT if kind == "numeric" else onnx.TensorProto.STRING
                    for name, kind in self.kinds.items()}
        missing = [name for name in ("cluster", "distance", "reconstruction_error") if name not in self.outputs]
        if missing or inputs != expected:
            what = (f"it has no output {', '.join(map(repr, missing))}" if missing else
                    f"its inputs ({', '.join(map(repr, inputs))}) are not the columns and types its metadata "
                    f"names ({', '.join(f'{n}: {k}' for n, k in self.kinds.items())})")
            raise ModelFormatError(f"{str(path)!r} is not a whole graph of 'custseg export': {what}; {again}")
        try:
            self.session = ort.InferenceSession(scoring_graph(proto).SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for graphs it cannot run
            raise ModelFormatError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}); "
                                   f"{again}") from None

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
        wanted = [name for name in _SCORED if name in self.outputs]
        # onnxruntime releases the GIL while it computes: slices scored side by side take the CPUs
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(self.threads)) if self.threads > 1 else None
            for start in range(0, len(frame), BATCH_ROWS):
                feeds = self.feeds(frame.iloc[start:start + BATCH_ROWS])
                calls = range(0, min(BATCH_ROWS, len(frame) - start), SESSION_ROWS)
                run = functools.partial(self._run, feeds, wanted)
                outputs = list(pool.map(run, calls) if pool is not None else map(run, calls))
                got = {name: np.concatenate([out[i] for out in outputs]) for i, name in enumerate(wanted)}
                part = pd.DataFrame({"Cluster": got["cluster"].astype(int)})
                if "segment" in got:
                    part["Predicted_Segment"] = got["segment"].astype(object)
                if "agreement" in got:
                    part["Agreement"] = got["agreement"]
                part["Distance_To_Centroid"] = got["distance"]
                part["Reconstruction_Error"] = got["reconstruction_error"].astype("float64")
                parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def _run(self, feeds: dict[str, np.ndarray], wanted: list[str], at: int) -> list[np.ndarray]:
        """The ``wanted`` outputs of rows ``at`` to ``at + SESSION_ROWS`` of ``feeds``.

        Every call sees exactly SESSION_ROWS rows (a short slice padded with copies of its first row):
        onnxruntime's kernels round differently for other shapes, and a customer's numbers must not
        depend on the table it came in (as the torch path's fixed tiles, :mod:`custseg.embedders.inference`).
        """
        rows = {name: values[at:at + SESSION_ROWS] for name, values in feeds.items()}
        short = SESSION_ROWS - len(next(iter(rows.values())))
        if short:
            rows = {name: np.concatenate([values, np.repeat(values[:1], short, axis=0)])
                    for name, values in rows.items()}
        return [out[:SESSION_ROWS - short] for out in self.session.run(wanted, rows)]

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
    segmenter = OnnxSegmenter(onnx_path, threads=scoring_threads())
    na = list(dict.fromkeys([*segmenter.na_values, *na_values]))
    result = segmenter.predict_table(read_table(input_path, na_values=na,
                                                text_columns=text_columns_of(segmenter.schema, id_column)),
                                     id_column=id_column)
    output_path = Path(output_path)
    if output_path.is_dir():
        raise DataError(f"--output {str(output_path)!r} is a folder; give a file name such as predictions.csv")
    with staging_dir(output_path) as staged:
        result.table.to_csv(staged / output_path.name, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        merge_into(staged, output_path.parent if str(output_path.parent) else ".")
    return result
