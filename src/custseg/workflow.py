"""The two jobs of the command line, as library functions: train and predict.

:func:`train` reads the tables, fits the pipeline and computes every table and figure
in memory, writing nothing. :func:`write_training_outputs` then writes them all, at
once and atomically (:mod:`custseg.atomic`). :func:`predict_file` scores a table with a
saved model. The CLI is a thin layer over these three.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ._version import __version__
from .io.atomic import (check_output_file, check_output_folders, commit_outputs, merge_into, output_lock, recover,
                        staging_dir)
from .embedders.autoencoder import AutoencoderEmbedder
from .clustering import assign_to_centroids, mapping_table
from .evaluation.selection import scan_k
from .config import RunConfig
from .exceptions import DataError
from .io.datasets import resolve_default_path
from .io.reading import LoadedTable, missing_report, read_table
from .report.maps import pca_coordinates, tsne_coordinates
from .evaluation.metrics import external_metrics, internal_metrics
from .monitoring import CustomerMonitor, NoveltySummary, classifier_two_sample_test
from .persistence import load_model, model_files, save_model, write_files, MANIFEST
from .pipeline import SegmentationPipeline
from .preprocessing import CustomerPreprocessor
from .profiling import describe_segments, profile_segments, segments_markdown
from .report.html import build_report
from .schema import Schema, infer_schema

__all__ = ["TrainResult", "train", "write_training_outputs", "PredictResult", "predict_table", "predict_file",
           "load_tables", "cluster_characteristics"]

FLOAT_FORMAT = "%.6g"
#: fewer training rows than this leave the k scan and the metrics undefined
MIN_TRAIN_ROWS = 3


@dataclass
class TrainResult:
    """Everything a training run produced, in memory."""

    pipeline: SegmentationPipeline
    schema: Schema
    config: RunConfig
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: figure name -> PNG bytes
    figures: dict[str, bytes] = field(default_factory=dict)
    #: file name -> text (segments.md)
    texts: dict[str, str] = field(default_factory=dict)
    descriptions: list = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    train_table: pd.DataFrame | None = None
    test_table: pd.DataFrame | None = None
    #: confidence and novelty of scored customers (monitoring.json in the model folder)
    monitor: CustomerMonitor | None = None
    #: how the test table differs from the training table (DriftReport), if there is one
    drift: Any = None
    #: sentences that change what the results mean (one cluster...), for the user even under --quiet
    notices: list[str] = field(default_factory=list)


def _noop(*_args, **_kwargs) -> None:
    return None


def load_tables(config: RunConfig, *, strict: bool = False) -> tuple[LoadedTable, LoadedTable | None, Schema]:
    """Read the training (and test) table, infer the schema, and check both tables against it.

    Every check of the input happens here, before any training, so a bad table fails
    in a second with one message. ``strict`` makes the schema's label warnings errors.
    """
    data = config.data
    # the default tables come from the package when custseg runs outside a clone of the repository
    data.train, data.test = resolve_default_path(data.train), resolve_default_path(data.test)
    train_t = read_table(data.train, na_values=data.na_values)
    k = config.clustering.n_clusters
    needed = max(k + 1, MIN_TRAIN_ROWS)
    if len(train_t.frame) < needed:
        n = len(train_t.frame)
        fix = f"give more rows or --clusters {n - 1} or fewer" if n >= MIN_TRAIN_ROWS else "give more rows"
        raise DataError(f"file {train_t.source!r} has {n} customer{'s' if n != 1 else ''}, but training {k} "
                        f"cluster{'s' if k != 1 else ''} needs at least {needed}; {fix}")
    test_t = read_table(data.test, na_values=data.na_values) if data.test else None
    schema = infer_schema(
        train_t.frame, id_column=data.id_column, label_column=data.label_column, infer_label=data.infer_label,
        numeric=data.numeric, categorical=data.categorical, ordinal=data.ordinal, exclude=data.exclude,
        integer_columns=train_t.integer_columns,
        other_columns=None if test_t is None else list(test_t.frame.columns), source=train_t.source,
        line_of=train_t.line_of, strict=strict)
    for table in (train_t, test_t):
        if table is not None and schema.id_column is not None:
            _check_ids(table, schema.id_column)
    distinct = len(train_t.frame[schema.feature_columns].drop_duplicates())
    if distinct < k:
        raise DataError(f"file {train_t.source!r}: its {len(train_t.frame)} customers are only {distinct} different "
                        f"ones in the feature columns ({', '.join(schema.feature_columns)}), fewer than the {k} "
                        f"clusters asked for; give --clusters {distinct} or fewer, or more varied customers")
    if test_t is not None:
        schema.check(test_t.frame, test_t.source, test_t.line_of)
    return train_t, test_t, schema


def _check_ids(table: LoadedTable, id_column: str) -> None:
    if id_column not in table.frame.columns:
        raise DataError(f"file {table.source!r}: the id column {id_column!r} is missing; "
                        "add it, or set another column with --id-column")
    ids = table.frame[id_column]
    if ids.isna().any():
        pos = int(np.argmax(ids.isna().to_numpy()))
        raise DataError(f"file {table.source!r}, line {table.line_of(pos)}, column {id_column!r}: the ID is empty; "
                        "give every customer an ID")
    dup = ids.duplicated(keep="first")
    if dup.any():
        pos = int(np.argmax(dup.to_numpy()))
        first = int(np.argmax((ids == ids.iloc[pos]).to_numpy()))
        raise DataError(f"file {table.source!r}, column {id_column!r}: ID {_id_text(ids.iloc[pos])!r} appears on "
                        f"line {table.line_of(first)} and again on line {table.line_of(pos)} "
                        f"({int(dup.sum())} duplicate ID{'s' if dup.sum() != 1 else ''} in all); remove the duplicates")


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _ids(frame: pd.DataFrame, schema: Schema) -> pd.Series:
    if schema.id_column is None:
        return pd.Series(np.arange(1, len(frame) + 1), index=frame.index, name="ID")
    return frame[schema.id_column].map(_id_text).rename("ID")


def build_pipeline(config: RunConfig, schema: Schema) -> SegmentationPipeline:
    """The pipeline a run's settings describe."""
    ae = config.autoencoder
    return SegmentationPipeline(
        preprocessor=CustomerPreprocessor(numeric=schema.names("numeric"), categorical=schema.names("categorical"),
                                          ordinal=schema.ordinal_orders or None),
        embedder=AutoencoderEmbedder(
            hidden_dims=tuple(ae.hidden_dims), latent_dim=ae.latent_dim, dropout=ae.dropout,
            learning_rate=ae.learning_rate, batch_size=ae.batch_size, max_epochs=ae.max_epochs,
            patience=ae.patience, lr_factor=ae.lr_factor, lr_patience=ae.lr_patience, min_lr=ae.min_lr,
            validation_fraction=ae.validation_fraction, n_threads=ae.n_threads, random_state=config.seed),
        n_clusters=config.clustering.n_clusters, n_init=config.clustering.n_init,
        max_iter=config.clustering.max_iter, random_state=config.seed)


def train(config: RunConfig, *, progress: Callable[[dict], None] | None = None,
          echo: Callable[[str], None] = _noop, tables: tuple | None = None) -> TrainResult:
    """Fit the segmentation described by ``config`` and compute every output in memory.

    Parameters
    ----------
    config : RunConfig
    progress : callable, optional
        Called after every autoencoder epoch with its history record.
    echo : callable, optional
        Receives one-line status messages.
    tables : tuple, optional
        ``(train, test, schema)`` as returned by :func:`load_tables`, if already loaded.
    """
    started = time.perf_counter()
    config.validate()
    train_t, test_t, schema = tables if tables is not None else load_tables(config)
    frame = train_t.frame
    k = config.clustering.n_clusters
    if len(frame) < k:
        raise DataError(f"file {train_t.source!r} has {len(frame)} customers, fewer than the {k} clusters asked for; "
                        "give more rows or a smaller --clusters")
    label = schema.label_column
    y = frame[label].map(lambda v: v if pd.isna(v) else _id_text(v)) if label else None
    pipeline = build_pipeline(config, schema)
    pipeline.fit(frame, y, progress=progress)
    used = np.unique(pipeline.labels_)
    if len(used) < k:  # K-Means can leave a centre without customers; reporting it as a segment would be false
        raise DataError(f"file {train_t.source!r}: only {len(used)} of the {k} clusters received customers (the "
                        f"customers' latent features allow no more distinct groups); give --clusters {len(used)}")
    result = TrainResult(pipeline=pipeline, schema=schema, config=config, train_table=frame,
                         test_table=None if test_t is None else test_t.frame,
                         monitor=fit_monitor(pipeline, schema, frame, y, random_state=config.seed))
    if k == 1:
        result.notices.append("--clusters 1 puts every customer in one segment: the segments describe the whole "
                              "table and the cluster metrics are undefined (n/a)")
    echo(f"autoencoder: {len(pipeline.embedder_.history_)} epochs, best {pipeline.embedder_.best_epoch_}")

    features = pipeline.preprocessor_.transform(frame)
    latent = np.asarray(pipeline.embedder_.transform(features), dtype="float64")
    clusters = pipeline.labels_
    ids = _ids(frame, schema)
    known = y.to_numpy().astype(object) if y is not None else None
    has_known = known is not None and pd.notna(known).any()

    # The t-SNE map is the slowest picture and needs only the latent features: compute it
    # on a second thread (openTSNE releases the GIL) while this thread, limited to one
    # BLAS/OpenMP thread so the two do not fight over the two cores, does everything else.
    with ThreadPoolExecutor(max_workers=1) as pool, threadpool_limits(limits=1):
        tsne_job = pool.submit(tsne_coordinates, latent, clusters, max_points=config.plots.tsne_max_points,
                               perplexity=config.plots.tsne_perplexity, random_state=config.seed)
        # the drift's classifier test needs only the two tables: it follows the t-SNE map on the second thread
        drift_job = None if test_t is None else pool.submit(
            classifier_two_sample_test, frame, test_t.frame, schema, random_state=config.seed)
        _evaluate(result, latent, ids, known if has_known else None, test_t, echo)
        result.summary["data"]["train"].update(delimiter=train_t.delimiter,
                                               numeric_from_text=train_t.numeric_from_text)
        _draw(result, latent, ids, known if has_known else None)
        tsne_idx, tsne_xy = tsne_job.result()
        if drift_job is not None:
            _add_drift_classifier(result, drift_job.result())
    _draw_tsne(result, known if has_known else None, tsne_idx, tsne_xy)
    result.summary["duration_seconds"] = round(time.perf_counter() - started, 1)
    return result


def _evaluate(result: TrainResult, latent: np.ndarray, ids: pd.Series, known, test_t, echo) -> None:
    """Metrics, the k scan, and the per-row and per-cluster tables."""
    pipeline, config, schema, frame = result.pipeline, result.config, result.schema, result.train_table
    clusters = pipeline.labels_
    has_known = known is not None
    k = config.clustering.n_clusters
    # -- metrics ------------------------------------------------------------------------------
    metrics = internal_metrics(latent, clusters, random_state=config.seed)
    metrics["inertia"] = pipeline.inertia_
    if has_known:
        labelled = pd.notna(known)
        metrics.update(external_metrics(clusters[labelled], known[labelled].astype(str), pipeline.mapping_))
    result.tables["clustering_metrics"] = pd.DataFrame(
        {"metric": list(metrics), "value": list(metrics.values()),
         "space": ["latent" if m in ("silhouette", "davies_bouldin", "calinski_harabasz", "inertia") else "labels"
                   for m in metrics]})
    ks = config.k_selection
    k_table = scan_k(latent, range(ks.k_min, min(ks.k_max, len(frame) - 1) + 1), n_init=ks.n_init,
                     random_state=config.seed, silhouette_sample=ks.silhouette_sample or None)
    result.tables["k_selection"] = k_table
    echo(f"k-means: k={k}, silhouette {metrics['silhouette']:.3f}"
         + (f", NMI {metrics['nmi']:.3f}, mapped accuracy {metrics['mapped_accuracy']:.3f}" if has_known else ""))

    # -- per-row tables ------------------------------------------------------------------------------
    history = pipeline.embedder_.history_.copy()
    result.tables["training_history"] = history
    training_results = pd.DataFrame({"ID": ids.to_numpy()})
    if has_known:
        training_results["True_Segment"] = known
    training_results["Cluster"] = clusters
    if pipeline.mapping_ is not None:
        training_results["Predicted_Segment"] = [pipeline.mapping_[c] for c in clusters]
    novelty = None
    if result.monitor is not None:
        scored, novelty = score_frame(pipeline, frame, result.monitor)
        monitor_columns = [c for c in scored.columns if c not in _PIPELINE_COLUMNS]
        training_results = pd.concat([training_results, scored[monitor_columns].reset_index(drop=True)], axis=1)
    result.tables["training_results"] = training_results
    result.tables["cluster_characteristics"] = cluster_characteristics(frame, clusters, schema, pipeline.mapping_)
    if has_known:
        result.tables["cluster_segment_crosstab"] = mapping_table(
            clusters[pd.notna(known)], known[pd.notna(known)].astype(str), pipeline.mapping_)

    profile = profile_segments(frame, clusters, numeric=schema.names("numeric"),
                               categorical=schema.names("categorical") + schema.names("ordinal"),
                               known_segments=known)
    result.descriptions = describe_segments(profile)
    result.tables["segment_profiles"] = profile.to_frame()
    result.texts["segments.md"] = segments_markdown(result.descriptions)

    test_info: dict[str, Any] = {}
    if test_t is not None:
        scored = predict_table(pipeline, schema, test_t,
                               segment_names={int(d.segment): d.name for d in result.descriptions},
                               monitor=result.monitor)
        scored.table = scored.table.rename(columns={scored.id_column: "ID"})
        result.tables["test_predictions_detailed"] = scored.table
        if pipeline.mapping_ is not None:
            result.tables["submission"] = scored.table[["ID", "Predicted_Segment"]].rename(
                columns={"Predicted_Segment": "Segmentation"})
        test_info = {"rows": len(test_t.frame), "extra_columns": scored.extra_columns,
                     "novelty": None if scored.novelty is None else scored.novelty.to_dict(),
                     "unseen_categories": scored.unseen_categories,
                     "missing": missing_report(test_t.frame).to_dict(orient="records")}
        if schema.id_column is not None:
            test_info["ids_in_train"] = int(test_t.frame[schema.id_column].map(_id_text).isin(set(ids)).sum())

    result.summary = {
        "custseg_version": __version__,
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": config.to_dict(),
        "data": {
            "train": {"path": str(config.data.train), "absolute_path": str(Path(config.data.train).resolve()),
                      "rows": len(frame), "columns": len(frame.columns),
                      "missing": missing_report(frame).to_dict(orient="records")},
            "test": {"path": str(config.data.test) if config.data.test else None,
                     "absolute_path": str(Path(config.data.test).resolve()) if config.data.test else None,
                     **test_info},
        },
        "schema": schema.to_dict(),
        "autoencoder": {"epochs": len(history), "best_epoch": pipeline.embedder_.best_epoch_,
                        "stopped_early": pipeline.embedder_.stopped_early_,
                        "best_val_loss": _none_if_nan(history["val_loss"].min())},
        "metrics": {k_: _none_if_nan(v) for k_, v in metrics.items()},
        "mapping": None if pipeline.mapping_ is None else {str(c): s for c, s in pipeline.mapping_.items()},
    }
    _monitoring_outputs(result, test_t, novelty, test_info.get("novelty"))


def _monitoring_outputs(result: TrainResult, test_t, train_novelty, test_novelty) -> None:
    """Calibration of the segment probability, novelty counts and, with a test table, its drift from training."""
    from .monitoring import drift_markdown, drift_report

    monitor, summary = result.monitor, result.summary
    if monitor is None:
        return
    soft = monitor.soft_
    info: dict[str, Any] = {"temperature": soft.temperature_, "calibration_error_out_of_fold": soft.calibration_error_,
                            "unusual_above": monitor.threshold,
                            "train": None if train_novelty is None else train_novelty.to_dict(),
                            "test": test_novelty}
    if soft.calibration_ is not None:
        result.tables["calibration"] = soft.calibration_
    if test_t is not None:
        train_scored = result.tables["training_results"]
        test_scored = result.tables["test_predictions_detailed"]
        column = "Predicted_Segment" if "Predicted_Segment" in test_scored else "Cluster"
        drift = drift_report(result.train_table, test_t.frame, result.schema,
                             reference_segments=train_scored[column].to_numpy(),
                             new_segments=test_scored[column].to_numpy(), classifier=False,
                             random_state=result.config.seed)
        result.drift = drift
        result.tables["drift"] = drift.features
        info["drift"] = {"drifted_features": drift.drifted_features, "classifier": drift.classifier,
                         "segment_shift": drift.segment_test, "returning": drift.returning}
        result.texts["drift.md"] = drift_markdown(drift)
    summary["monitoring"] = info


def _add_drift_classifier(result: TrainResult, classifier: dict[str, Any]) -> None:
    """The classifier two-sample test, computed on the second thread, into the drift report and summary."""
    from .monitoring import drift_markdown

    if result.drift is None:
        return
    result.drift.classifier = classifier
    result.texts["drift.md"] = drift_markdown(result.drift)
    result.summary["monitoring"]["drift"]["classifier"] = classifier


def _draw(result: TrainResult, latent: np.ndarray, ids: pd.Series, known) -> None:
    """The PCA map and every figure but the t-SNE map, rendered to PNG bytes."""
    from .report.plots import plot_cluster_distribution, plot_k_selection, plot_maps, plot_training_history

    pipeline, config = result.pipeline, result.config
    clusters = pipeline.labels_
    names = cluster_names(result)
    pca_xy, pca_var = pca_coordinates(latent, random_state=config.seed)
    result.tables["maps"] = pd.DataFrame({"ID": ids.to_numpy(), "Cluster": clusters, "pca_1": pca_xy[:, 0],
                                          "pca_2": pca_xy[:, 1], "tsne_1": np.nan, "tsne_2": np.nan})
    dpi = config.plots.dpi
    result.figures["training_history"] = render_png(
        plot_training_history(pipeline.embedder_.history_, pipeline.embedder_.best_epoch_), dpi)
    result.figures["optimal_clusters"] = render_png(
        plot_k_selection(result.tables["k_selection"], chosen_k=config.clustering.n_clusters), dpi)
    result.figures["clusters_pca"] = render_png(plot_maps(
        pca_xy, clusters, names, "PCA", known,
        axis_labels=(f"PC 1 ({pca_var[0]:.0%} of variance)", f"PC 2 ({pca_var[1]:.0%} of variance)")), dpi)
    result.figures["cluster_distribution"] = render_png(plot_cluster_distribution(clusters, names, known), dpi)
    _draw_monitoring(result, dpi)
    result.summary["cluster_names"] = {str(c): n for c, n in names.items()}


def _draw_monitoring(result: TrainResult, dpi: int) -> None:
    """Reliability of the segment probability, confidence per segment, drift per feature."""
    from .report.plots import _figure, plot_confidence, plot_drift, plot_reliability

    scored = result.tables.get("training_results")
    if "calibration" in result.tables:
        fig, axes = _figure(1, 1, size=(5.2, 4.4))
        plot_reliability(result.tables["calibration"], ax=axes[0])
        axes[0].set_title("Segment_Probability on out-of-fold training rows")
        fig.tight_layout()
        result.figures["reliability"] = render_png(fig, dpi)
    if scored is not None and "Confidence" in scored:
        label = "Segment_Probability" if "Segment_Probability" in scored else "Confidence"
        group = "Predicted_Segment" if "Predicted_Segment" in scored else "Cluster"
        fig, axes = _figure(1, 1)
        plot_confidence(scored[label], scored[group], ax=axes[0], label=label)
        fig.tight_layout()
        result.figures["confidence"] = render_png(fig, dpi)
    if result.drift is not None:
        fig, axes = _figure(1, 1)
        plot_drift(result.drift.features, ax=axes[0], psi_threshold=result.drift.settings["psi_threshold"])
        fig.tight_layout()
        result.figures["drift"] = render_png(fig, dpi)


def _draw_tsne(result: TrainResult, known, tsne_idx: np.ndarray, tsne_xy: np.ndarray) -> None:
    """The t-SNE map: its coordinates into maps.csv, and its figure."""
    from .report.plots import plot_maps

    clusters = result.pipeline.labels_
    maps = result.tables["maps"]
    maps.loc[tsne_idx, "tsne_1"] = tsne_xy[:, 0]
    maps.loc[tsne_idx, "tsne_2"] = tsne_xy[:, 1]
    result.figures["clusters_tsne"] = render_png(plot_maps(
        tsne_xy, clusters[tsne_idx], cluster_names(result), "t-SNE",
        None if known is None else known[tsne_idx],
        axis_labels=(f"t-SNE 1 ({len(tsne_idx):,} customers"
                     + (", stratified sample)" if len(tsne_idx) < len(clusters) else ", every customer)"), "t-SNE 2")),
        result.config.plots.dpi)
    result.summary["tsne_points"] = int(len(tsne_idx))


def render_png(fig, dpi: int) -> bytes:
    """PNG bytes of a figure (no timestamp, so the same figure gives the same bytes); closes it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def cluster_names(result: TrainResult) -> dict[int, str]:
    """Legend name of each cluster: its id and its short descriptive name."""
    if result.descriptions:
        return {int(d.segment): f"{d.segment}: {d.name}" for d in result.descriptions}
    return {c: f"Cluster {c}" for c in range(len(result.pipeline.cluster_centers_))}


def cluster_characteristics(frame: pd.DataFrame, clusters: np.ndarray, schema: Schema,
                            mapping: dict | None = None) -> pd.DataFrame:
    """Per cluster: size, share, mean and median of numeric features, most frequent category and its share.

    Computed on the table as read (original units and categories, missing values left out).
    """
    clusters = np.asarray(clusters)
    rows = []
    for c in sorted(np.unique(clusters)):
        part = frame[clusters == c]
        row: dict[str, Any] = {"Cluster": int(c)}
        if mapping is not None:
            row["Predicted_Segment"] = mapping.get(int(c), "")
        row["Size"] = len(part)
        row["Share"] = round(len(part) / len(frame), 4)
        # rounded for people: 2 decimals for values in the table's units, 4 for shares
        for name in schema.feature_columns:
            col = part[name]
            if schema.column(name).role == "numeric":
                row[f"{name}_mean"] = round(float(col.mean()), 2)
                row[f"{name}_median"] = round(float(col.median()), 2)
            else:
                counts = col.dropna().map(_id_text).value_counts()
                counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
                row[f"{name}_top"] = counts.index[0] if len(counts) else ""
                row[f"{name}_top_share"] = round(float(counts.iloc[0] / counts.sum()), 4) if len(counts) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class PredictResult:
    """Scores of a table and what was noticed while scoring it."""

    table: pd.DataFrame
    extra_columns: list[str]
    unseen_categories: dict[str, dict[str, int]]
    #: name of the output's first column: the table's own ID column, or "Row" (row numbers)
    id_column: str = "ID"
    #: a sentence for the user when the IDs are not the training ID column (or there are none)
    id_notice: str | None = None
    #: what the per-column guards saw (None without a monitor)
    novelty: NoveltySummary | None = None


#: the columns of SegmentationPipeline.score_table; score_frame adds the monitor's after them
_PIPELINE_COLUMNS = ("Cluster", "Predicted_Segment", "Distance_To_Centroid", "Reconstruction_Error")


def fit_monitor(pipeline: SegmentationPipeline, schema: Schema, frame: pd.DataFrame, y=None, *,
                threshold: float = 99.0, random_state: int = 0) -> CustomerMonitor:
    """Fit the confidence and novelty model of a fitted pipeline on its training rows (see :mod:`custseg.monitoring`)."""
    features = pipeline.preprocessor_.transform(frame)
    latent = np.asarray(pipeline.embedder_.transform(features), dtype="float64")
    clusters, _ = assign_to_centroids(latent, pipeline.cluster_centers_)
    error = _reconstruction_error(pipeline, features, latent)
    segments = None if y is None else np.asarray(y, dtype=object)
    monitor = CustomerMonitor(numeric=schema.names("numeric"),
                              categorical=schema.names("categorical") + schema.names("ordinal"),
                              threshold=threshold, random_state=random_state)
    return monitor.fit(frame[schema.feature_columns], latent, error, clusters, pipeline.cluster_centers_, segments,
                       pipeline.mapping_)


def _reconstruction_error(pipeline: SegmentationPipeline, features: np.ndarray, latent: np.ndarray) -> np.ndarray:
    # decoding the latent features already computed: the same numbers as reconstruction_error(), one encode fewer
    if hasattr(pipeline.embedder_, "decode") and np.isfinite(latent).all():
        return np.mean((pipeline.embedder_.decode(latent) - features) ** 2, axis=1)
    return pipeline._reconstruction_error(features, latent)


def score_frame(pipeline: SegmentationPipeline, frame: pd.DataFrame, monitor: CustomerMonitor | None = None,
                probabilities: bool = False) -> tuple[pd.DataFrame, NoveltySummary | None]:
    """The pipeline's scores of ``frame`` and, with a monitor, its confidence and novelty columns.

    Without a monitor this is ``pipeline.score_table(frame)``. With one, the features and
    latent features are computed once and shared by both.
    """
    if monitor is None:
        return pipeline.score_table(frame), None
    features = pipeline.preprocessor_.transform(frame)
    # The network computes in float32. A value it cannot represent is imputed like a missing one (0 after
    # scaling) so the row can be scored at all; the monitor's guards flag the row Unusual and name the value.
    unrepresentable = ~(np.abs(features) <= np.finfo(np.float32).max)
    if unrepresentable.any():
        features = np.where(unrepresentable, 0.0, features)
    with np.errstate(over="ignore", invalid="ignore"):
        latent = np.asarray(pipeline.embedder_.transform(features), dtype="float64")
        clusters, dist = assign_to_centroids(latent, pipeline.cluster_centers_)
        error = _reconstruction_error(pipeline, features, latent)
    out = pd.DataFrame({"Cluster": clusters}, index=frame.index)
    if pipeline.mapping_ is not None:
        segment_of = np.array([pipeline.mapping_[c] for c in range(len(pipeline.cluster_centers_))], dtype=object)
        out["Predicted_Segment"] = pd.Series(segment_of[clusters], index=frame.index, dtype=object)
    out["Distance_To_Centroid"] = dist
    out["Reconstruction_Error"] = error
    columns = monitor.novelty_.feature_names_in_
    monitored, summary = monitor.score(frame[[c for c in columns if c in frame.columns]], latent,
                                       out["Reconstruction_Error"].to_numpy(), clusters, probabilities=probabilities)
    return pd.concat([out, monitored], axis=1), summary


def prediction_ids(frame: pd.DataFrame, schema: Schema | None, id_column: str | None = None,
                   source: str = "input") -> tuple[str, pd.Series, str | None]:
    """The column that identifies the customers of a table to be scored: ``(name, values, notice)``.

    The given ``id_column`` wins; then the ID column seen in training; then the one
    column of ``frame`` named like an identifier with all values different. Without any,
    customers are numbered 1..n in table order (column ``Row``) and ``notice`` says so:
    renumbered IDs must never pass for real ones.
    """
    if id_column is not None:
        if id_column not in frame.columns:
            from .schema import _did_you_mean

            raise DataError(f"file {source!r}: --id-column {id_column!r} is not in the table"
                            f"{_did_you_mean(id_column, frame.columns)}; its columns are "
                            f"{', '.join(map(str, frame.columns))}")
        return id_column, frame[id_column].map(_id_text), None
    trained = schema.id_column if schema is not None else None
    if trained is not None and trained in frame.columns:
        return trained, frame[trained].map(_id_text), None
    found = _find_id_column(frame, schema)
    if found is not None:
        was = f"the model was trained with {trained!r}" if trained else "the model names no ID column"
        return found, frame[found].map(_id_text), (f"IDs taken from column {found!r} ({was}); "
                                                   "give --id-column to choose another")
    why = (f"the ID column {trained!r} of the training table is not in it" if trained
           else "the model names no ID column and none was found")
    return "Row", pd.Series(np.arange(1, len(frame) + 1), index=frame.index), (
        f"file {source!r} has no ID column ({why}): customers are numbered 1..{len(frame)} in table order in "
        "column 'Row'; give --id-column to use one of its columns")


def _find_id_column(frame: pd.DataFrame, schema: Schema | None) -> str | None:
    """The one column named like an identifier, not a feature, with every value present and different."""
    from .schema import _PREFERRED_ID, _named_like_id

    used = set(schema.feature_columns) | {schema.label_column} if schema is not None else set()
    candidates = [c for c in frame.columns if c not in used and _named_like_id(str(c))
                  and frame[c].notna().all() and frame[c].is_unique]
    if len(candidates) > 1:
        candidates = [c for c in candidates if _PREFERRED_ID.match(str(c).strip())]
    return candidates[0] if len(candidates) == 1 else None


def predict_table(pipeline: SegmentationPipeline, schema: Schema | None, table: LoadedTable,
                  id_column: str | None = None, segment_names: dict[int, str] | None = None,
                  monitor: CustomerMonitor | None = None, *, probabilities: bool = False,
                  strict: bool = False) -> PredictResult:
    """Score a loaded table: its ID column, Cluster, Segment_Name, Predicted_Segment, Distance_To_Centroid,
    Reconstruction_Error.

    The first column keeps the table's own ID column name and values (see :func:`prediction_ids`);
    the output has exactly one row per input row, in input order.

    With a ``monitor`` also Confidence, Second_Cluster, Segment_Probability, Second_Segment,
    Novelty, Unusual, Reason (and P_Cluster_<c> with ``probabilities``). With ``strict``, any
    data problem a guard finds (a number far outside the training range, a value that
    overflows float32, an unseen category, a row or a column entirely empty) is a
    :class:`~custseg.exceptions.DataError` naming the first such line.
    """
    frame = table.frame
    extra: list[str] = []
    if schema is not None:
        extra = schema.check(frame, table.source, table.line_of)
    id_name, ids, notice = prediction_ids(frame, schema, id_column, table.source)
    if id_name != "Row":
        _check_ids(table, id_name)
        extra = [c for c in extra if c != id_name]
    scores, novelty = score_frame(pipeline, frame, monitor, probabilities)
    scores = scores.reset_index(drop=True)
    # the monitor's guards already found the unseen categories; without one, ask the preprocessor
    unseen = novelty.unseen_categories if novelty is not None else pipeline.preprocessor_.unseen_categories(frame)
    if strict and novelty is not None and novelty.problems():
        flagged = ((scores["Reason"] != "") & ~scores["Reason"].str.startswith("novelty above")).to_numpy()
        where = ""
        if flagged.any():
            pos = int(np.argmax(flagged))
            where = f", line {table.line_of(pos)}: {scores['Reason'].iloc[pos]}"
        raise DataError(f"file {table.source!r}{where}; " + "; ".join(novelty.problems())
                        + " (--strict); fix or remove these customers, or score without --strict")
    if segment_names:
        scores.insert(1, "Segment_Name", [segment_names.get(int(c), "") for c in scores["Cluster"]])
    out = pd.concat([pd.DataFrame({id_name: ids.to_numpy()}), scores], axis=1)
    if len(out) != len(frame):  # the promise of this function; cheap to keep checking
        raise DataError(f"file {table.source!r}: {len(frame)} rows in but {len(out)} scored; please report this bug")
    return PredictResult(table=out, extra_columns=extra, unseen_categories=unseen, id_column=id_name,
                         id_notice=notice, novelty=novelty)


def predict_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path,
                 na_values: list[str] | tuple[str, ...] = (), id_column: str | None = None, *,
                 probabilities: bool = False, strict: bool = False,
                 unusual_above: float | None = None) -> PredictResult:
    """Score the table in ``input_path`` with the model in ``model_dir`` and write ``output_path`` atomically.

    ``probabilities``, ``strict``: see :func:`predict_table`. ``unusual_above`` replaces
    the model's training percentile above which a customer is ``Unusual`` (99).
    """
    check_output_file(output_path, {"--input": input_path, "--model": None})
    recover(model_dir)
    model = load_model(model_dir)
    # the tokens the model was trained with, and any more given now
    na = list(dict.fromkeys([*model.settings.get("data", {}).get("na_values", []), *na_values]))
    monitor = model.monitor
    if monitor is not None and unusual_above is not None:
        monitor.novelty_.set_params(threshold=unusual_above)._validate_params()
    result = predict_table(model.pipeline, model.schema, read_table(input_path, na_values=na), id_column=id_column,
                           segment_names=model.cluster_names, monitor=monitor, probabilities=probabilities,
                           strict=strict)
    output_path = Path(output_path)
    with staging_dir(output_path) as staged:
        staged_file = staged / output_path.name
        result.table.to_csv(staged_file, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        merge_into(staged, output_path.parent if str(output_path.parent) else ".")
    return result


def write_training_outputs(result: TrainResult, models_dir: str | Path | None = None,
                           results_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Write the model folder and the results folder of a run, atomically.

    Both are staged completely before either target is touched; a failure before
    that leaves both as they were.
    """
    models_dir = Path(models_dir or result.config.models_dir)
    results_dir = Path(results_dir or result.config.results_dir)
    check_output_folders(models_dir, results_dir, marker=MANIFEST)
    files = model_files(result.pipeline, result.schema, result.config.to_dict(),
                        cluster_names={int(d.segment): d.name for d in result.descriptions}, monitor=result.monitor)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(models_dir, results_dir))
        recover(models_dir, results_dir)  # a run killed mid-commit is completed before this one starts
        staged_models = stack.enter_context(staging_dir(models_dir))
        staged_results = stack.enter_context(staging_dir(results_dir))
        write_files(staged_models, files)
        for name, table in result.tables.items():
            table.to_csv(staged_results / f"{name}.csv", index=False, float_format=FLOAT_FORMAT,
                         lineterminator="\n")
        (staged_results / "run_summary.json").write_text(
            json.dumps(result.summary, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
        (staged_results / "plots").mkdir()
        for name, png in result.figures.items():
            (staged_results / "plots" / f"{name}.png").write_bytes(png)
        for name, text in result.texts.items():
            (staged_results / name).write_text(text, encoding="utf-8")
        build_report(staged_models, staged_results)
        # models and results move together: after a crash at any point the pair is old+old or new+new
        moved = commit_outputs(staged_models, models_dir, staged_results, results_dir)
    return {"models": sorted(models_dir.iterdir()), "results": moved}


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    return {"custseg": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


def _none_if_nan(value: Any) -> Any:
    try:
        return None if np.isnan(value) else float(value)
    except TypeError:
        return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def drift_tables(reference_path: str | Path, new_path: str | Path, *, model_dir: str | Path | None = None,
                 na_values: list[str] | tuple[str, ...] = (), random_state: int = 0):
    """Read two tables and compare them with :func:`custseg.monitoring.drift_report`.

    The column roles come from the model in ``model_dir`` if given (and both tables are
    then scored, so the shift in predicted segments is reported), else they are inferred
    from the reference table; known segments present in both tables are compared too.

    Returns
    -------
    DriftReport
    """
    from .monitoring import drift_report

    ref_segments = new_segments = None
    if model_dir is not None:
        model = load_model(model_dir)
        na = list(dict.fromkeys([*model.settings.get("data", {}).get("na_values", []), *na_values]))
        ref_t, new_t = read_table(reference_path, na_values=na), read_table(new_path, na_values=na)
        schema = model.schema
        if schema is None:
            raise DataError(f"model folder {str(model_dir)!r} holds no schema; retrain it with 'custseg train'")
        for t in (ref_t, new_t):
            schema.check(t.frame, t.source, t.line_of)
        column = "Predicted_Segment" if model.pipeline.mapping_ is not None else "Cluster"
        ref_segments = model.pipeline.score_table(ref_t.frame)[column].to_numpy()
        new_segments = model.pipeline.score_table(new_t.frame)[column].to_numpy()
    else:
        ref_t, new_t = read_table(reference_path, na_values=na_values), read_table(new_path, na_values=na_values)
        schema = infer_schema(ref_t.frame, integer_columns=ref_t.integer_columns,
                              other_columns=list(new_t.frame.columns), source=ref_t.source, line_of=ref_t.line_of)
        schema.check(new_t.frame, new_t.source, new_t.line_of)
        label = schema.label_column
        if label is not None and label in new_t.frame.columns:
            ref_segments, new_segments = ref_t.frame[label].to_numpy(), new_t.frame[label].to_numpy()
    return drift_report(ref_t.frame, new_t.frame, schema, reference_segments=ref_segments,
                        new_segments=new_segments, random_state=random_state)


def write_drift(report, output_dir: str | Path, dpi: int = 100) -> list[Path]:
    """Write drift.csv, drift.md and plots/drift.png into ``output_dir``, atomically."""
    from .monitoring import DRIFT_COLUMNS, drift_markdown
    from .report.plots import _figure, plot_drift

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"--output {str(output_dir)!r} is a file; give a folder for drift.csv, drift.md and the figure")
    fig, axes = _figure(1, 1, size=(6.4, 4.2))
    plot_drift(report.features, ax=axes[0], psi_threshold=report.settings.get("psi_threshold", 0.1))
    fig.tight_layout()
    png = render_png(fig, dpi)
    with staging_dir(output_dir) as staged:
        report.features[DRIFT_COLUMNS].to_csv(staged / "drift.csv", index=False, float_format=FLOAT_FORMAT,
                                              lineterminator="\n")
        (staged / "drift.md").write_text(drift_markdown(report), encoding="utf-8")
        (staged / "plots").mkdir()
        (staged / "plots" / "drift.png").write_bytes(png)
        return merge_into(staged, output_dir)
