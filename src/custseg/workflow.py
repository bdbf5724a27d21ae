"""custseg's jobs as library functions: train, report, predict, select k, compare.

Data flows one way through them: load (:func:`load_tables`: read, infer and check the
schema) -> preprocess, embed, cluster (the pipeline) -> evaluate
(:mod:`custseg.evaluation`) -> profile (:mod:`custseg.profiling`) -> draw
(:mod:`custseg.report.plots`) -> write (:mod:`custseg.io.writing`, the only writer).

:func:`train` computes every output of a run in memory and writes nothing; its
:class:`TrainResult` is what :func:`write_training_outputs` writes and what the report
is rendered from (:func:`render_run_report`). :func:`load_run` rebuilds the same
:class:`TrainResult` from a model folder and a results folder, so ``custseg report``
renders the same page without the training table. :func:`predict_file` scores a table
with a saved model, with confidence and novelty columns (:mod:`custseg.monitoring`);
:func:`drift_tables` compares two tables. The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ._version import __version__
from .clustering import mapping_table
from .config import RunConfig
from .evaluation.comparison import ComparisonResult, compare_methods
from .evaluation.methods import build_pipeline
from .evaluation.metrics import external_metrics, internal_metrics
from .embedders.inference import torch_threads
from .evaluation.selection import MIN_STABILITY, KSelection, select_k
from .exceptions import ConfigError, DataError
from .io.atomic import check_output_file, recover
from .io.chunks import CHUNK_ROWS, TableStream, read_ahead, read_table_in_blocks
from .io.datasets import resolve_default_path
from .io.reading import LoadedTable, columns_frame, missing_report, read_table
from .io.writing import csv_bytes, json_bytes, write_csv_blocks, write_into, write_run
from .monitoring import (DRIFT_COLUMNS, CustomerMonitor, DriftReport, NoveltySummary, classifier_two_sample_test,
                         confidence_by_segment, drift_markdown, drift_report, extreme_customers)
from .persistence import load_model, model_files
from .pipeline import FIT_SLICE_ROWS, SegmentationPipeline, sample_rows
from .profiling import (SegmentDescription, SegmentProfile, cluster_characteristics, describe_segments,
                        profile_heatmap_data, profile_segments, segments_markdown)
from .report.html import REPORT_FIGURES, render_report
from .report.maps import pca_coordinates, stratified_sample, tsne_coordinates
from .report import plots
from .report.plots import plot_comparison, plot_k_selection, render_png
from .schema import _PREFERRED_ID, Schema, infer_schema, text_columns_of

__all__ = ["TrainResult", "train", "large_table_plan", "write_training_outputs", "render_run_report", "load_run", "write_report",
           "rebuild_report", "PredictResult", "predict_table", "predict_file", "load_tables", "build_pipeline",
           "cluster_characteristics", "KSelectionRun", "run_k_selection", "check_scan_folder", "write_k_selection",
           "run_comparison", "write_comparison", "RESULT_TABLES", "fit_monitor", "clustering_space", "score_frame", "drift_tables",
           "write_drift", "score_chunks", "StreamReport", "TypingChanged"]

#: fewer training rows than this leave the k scan and the metrics undefined
MIN_TRAIN_ROWS = 3
#: Training tables with more rows than this take the large-table path (:func:`large_table_plan`);
#: smaller ones (the shipped 8,068 rows) are computed exactly as the settings say, on every row.
LARGE_TABLE_ROWS = 50_000
#: On the large-table path: rows the autoencoder (or the ensemble) is fitted on, as a table of that
#: size would be (its settings, batch included, unchanged: a table just above the threshold is fitted
#: as one at it); rows K-Means (n_init initialisations, or the ensemble's consensus clustering) is
#: fitted on (the same rows: one draw seeded by the run's seed, :func:`custseg.pipeline.sample_rows`,
#: which the monitor and the consensus space's principal components use too) and the k scan (its own
#: draw); rows the silhouettes are computed on, and points drawn in the PCA figure.
LARGE_FIT_SAMPLE = 50_000
LARGE_CLUSTER_SAMPLE = 50_000
LARGE_SILHOUETTE_SAMPLE = 10_000
LARGE_PLOT_POINTS = 20_000
#: The tables of a results folder (``<name>.csv``), in the order a run writes them.
RESULT_TABLES = ("clustering_metrics", "k_selection", "training_history", "training_results",
                 "cluster_characteristics", "cluster_segment_crosstab", "segment_profiles",
                 "test_predictions_detailed", "submission", "maps", "calibration", "drift",
                 "confidence_by_segment", "uncertain_customers", "unusual_customers")
#: Columns that must hold numbers when a results table is read back.
_NUMERIC_COLUMNS = {
    "clustering_metrics": ["value"],
    "k_selection": ["k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz", "stability"],
    "training_history": ["epoch", "loss", "val_loss", "lr"],
    "maps": ["Cluster", "pca_1", "pca_2", "tsne_1", "tsne_2"],
    "cluster_segment_crosstab": ["Cluster", "Size", "Purity"],
    "test_predictions_detailed": ["Cluster", "Distance_To_Centroid", "Reconstruction_Error"],
    "training_results": ["Cluster"],
    "calibration": ["bin_low", "bin_high", "count"],
    "drift": ["statistic", "p_value", "psi", "effect"],
    "confidence_by_segment": ["customers", "mean", "q25", "median", "q75", "below_half"],
}
#: Columns read back as text: segments and IDs (a segment called 'true' is not a boolean), reasons.
_TEXT_COLUMNS = ("ID", "True_Segment", "Predicted_Segment", "Segmentation", "Segment_Name", "Cluster",
                 "Second_Segment", "Reason")
#: How many customers the report lists as the most uncertain and the most unusual.
N_EXTREME_CUSTOMERS = 10


@dataclass
class TrainResult:
    """Everything a training run produced, in memory.

    :func:`train` fills every field; :func:`load_run` rebuilds all but the tables read
    from the customers (``train_table``, ``test_table``, ``profile``, ``k_selection``,
    ``drift``) from the folders a run wrote.
    """

    pipeline: SegmentationPipeline
    schema: Schema | None
    config: RunConfig
    #: table name -> DataFrame (``results/<name>.csv``)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: figure name -> PNG bytes (``results/plots/<name>.png``)
    figures: dict[str, bytes] = field(default_factory=dict)
    #: file name -> text (segments.md)
    texts: dict[str, str] = field(default_factory=dict)
    descriptions: list[SegmentDescription] = field(default_factory=list)
    #: ``run_summary.json``
    summary: dict[str, Any] = field(default_factory=dict)
    train_table: pd.DataFrame | None = None
    test_table: pd.DataFrame | None = None
    profile: SegmentProfile | None = None
    k_selection: KSelection | None = None
    #: confidence and novelty of scored customers (``monitoring.json`` in the model folder)
    monitor: CustomerMonitor | None = None
    #: how the test table differs from the training table, when there is one
    drift: DriftReport | None = None
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
    # the ID column keeps its text, so IDs come out as they went in ('00123'): the one given, or one named
    # plainly as an ID ('ID', 'customer_id'); looser ID-like names ('Family_Number') may be numeric features
    train_t = _read_training_table(data.train, data.na_values,
                                   lambda name: name == data.id_column or bool(_PREFERRED_ID.match(str(name).strip())))
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
    if test_t is not None:
        # read again as the model reads a table: its text columns typed as in training (a test table whose
        # codes '01'..'07' hold one '4' must not read them all as numbers), its IDs as written
        test_t = read_table(data.test, na_values=data.na_values, text_columns=schema.text_columns())
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


#: training tables from this size on are parsed in blocks by pyarrow (the same LoadedTable, see read_table_in_blocks)
BLOCK_READ_BYTES = 4 << 20


def _read_training_table(path, na_values, text_columns) -> LoadedTable:
    try:
        big = Path(path).stat().st_size >= BLOCK_READ_BYTES
    except (OSError, TypeError):
        big = False  # read_table names what is wrong with the path
    read = read_table_in_blocks if big else read_table
    return read(path, na_values=na_values, text_columns=text_columns)


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


def large_table_plan(n_rows: int, config: RunConfig) -> dict[str, Any] | None:
    """What a training table of ``n_rows`` computes on every row and what on a sample; None if it is small.

    Up to :data:`LARGE_TABLE_ROWS` rows nothing is sampled (the reference path). Above it,
    the autoencoder (every member of an ensemble) is fitted on a random sample of
    :data:`LARGE_FIT_SAMPLE` rows, as a table of that size would be, and then encodes every
    row (the confidence model, the novelty percentiles and an ensemble's principal components
    are fitted on the same rows; every row is scored); K-Means (or the consensus clustering)
    is fitted on a random sample and then assigns every row; silhouettes, the k scan and the
    PCA figure use samples; the preprocessing,
    profiles, tables, the other metrics and the PCA coordinates use every row. The plan is
    written to ``run_summary.json`` (``large_table``) and shown in the report.
    """
    if n_rows <= LARGE_TABLE_ROWS:
        return None
    ensemble = config.autoencoder.n_members > 1
    return {
        "rows": n_rows,
        "threshold_rows": LARGE_TABLE_ROWS,
        "all_rows": ["preprocessing", "encoding", "cluster assignment", "profiles and tables",
                     "Davies-Bouldin, Calinski-Harabasz, inertia", "PCA coordinates", "test scoring"],
        "autoencoder_sample_rows": LARGE_FIT_SAMPLE,
        "kmeans_sample_rows": LARGE_CLUSTER_SAMPLE,
        "k_scan_sample_rows": LARGE_CLUSTER_SAMPLE,
        "silhouette_sample_rows": LARGE_SILHOUETTE_SAMPLE,
        "pca_figure_points": LARGE_PLOT_POINTS,
        "tsne_points": config.plots.tsne_max_points or None,
        "note": (f"large table ({n_rows:,} rows > {LARGE_TABLE_ROWS:,}): the autoencoder"
                 + (f"s ({config.autoencoder.n_members} members)" if ensemble else "")
                 + f" trained on {LARGE_FIT_SAMPLE:,} random rows ("
                 + ("the confidence model, the novelty scores' percentiles and the principal components of the "
                    "consensus space" if ensemble else "the confidence model and the novelty scores' percentiles")
                 + " fitted on the same rows) and every row encoded; "
                 + ("the consensus clustering" if ensemble else f"K-Means ({config.clustering.n_init} initialisations)")
                 + f" and the k scan were fitted on {LARGE_CLUSTER_SAMPLE:,} random rows and every row assigned; "
                 f"silhouettes on {LARGE_SILHOUETTE_SAMPLE:,} rows, the PCA figure on {LARGE_PLOT_POINTS:,} points; "
                 "profiles, tables and the other metrics on every row"),
    }


def train(config: RunConfig, *, progress: Callable[[dict], None] | None = None,
          echo: Callable[[str], None] = _noop, tables: tuple | None = None) -> TrainResult:
    """Fit the segmentation described by ``config`` and compute every output in memory.

    Parameters
    ----------
    config : RunConfig
        Validated settings (a :class:`~custseg.config.RunConfig` checks itself when built).
    progress : callable, optional
        Called after every autoencoder epoch with its history record.
    echo : callable, optional
        Receives one-line status messages.
    tables : tuple, optional
        ``(train, test, schema)`` as returned by :func:`load_tables`, if already loaded.
    """
    started = time.perf_counter()
    train_t, test_t, schema = tables if tables is not None else load_tables(config)
    frame = train_t.frame
    k = config.clustering.n_clusters
    label = schema.label_column
    y = frame[label].map(lambda v: v if pd.isna(v) else _id_text(v)) if label else None
    if config.autoencoder.guidance_weight > 0 and (y is None or not y.notna().any()):
        raise DataError(f"file {train_t.source!r} has no known segments, but guidance (--guided, preset "
                        f"{config.preset!r}) learns from them; name the segment column with --label-column, or "
                        "train without --guided")
    pipeline = build_pipeline(config, schema)
    large = large_table_plan(len(frame), config)
    if large is not None:
        pipeline.set_params(cluster_sample=large["kmeans_sample_rows"], fit_sample=large["autoencoder_sample_rows"])
    # One BLAS/OpenMP thread for every K-Means of the run: for 8 latent features the Lloyd
    # iterations are too short to share, and on a busy machine two OpenMP threads spin-wait
    # for each other (measured: 2.8 s with one thread, 27 s with two under load). It also
    # makes the clusters independent of the machine's core count (same seed, same bytes).
    with threadpool_limits(limits=1):
        pipeline.fit(frame, y, progress=progress)
    used = np.unique(pipeline.labels_)
    if len(used) < k:  # K-Means can leave a centre without customers; reporting it as a segment would be false
        raise DataError(f"file {train_t.source!r}: only {len(used)} of the {k} clusters received customers (the "
                        f"customers' latent features allow no more distinct groups); give --clusters {len(used)}")
    # a large table's monitor learns from the rows the autoencoder was fitted on (every row is scored):
    # the pipeline drew them with the same int seed (build_pipeline's random_state is config.seed)
    rows = None if large is None else sample_rows(len(frame), large["autoencoder_sample_rows"], config.seed)
    result = TrainResult(pipeline=pipeline, schema=schema, config=config, train_table=frame,
                         test_table=None if test_t is None else test_t.frame,
                         monitor=fit_monitor(pipeline, schema, frame, y, sample=rows,
                                             threshold=config.monitoring.unusual_percentile,
                                             random_state=config.seed))
    if large is not None:
        result.notices.append(large["note"])
    if config.autoencoder.guidance_weight > 0 and getattr(pipeline.embedder_, "classes_", None) is None:
        result.notices.append("guidance learned nothing: the rows the ensemble was fitted on hold fewer than two "
                              "known segments, so it trained as an unguided one")
    if k == 1:
        result.notices.append("--clusters 1 puts every customer in one segment: the segments describe the whole "
                              "table and the cluster metrics are undefined (n/a)")
    echo(f"autoencoder ({config.preset} preset): {len(pipeline.embedder_.history_)} epochs"
         + (f", best {best_epoch(pipeline)}" if best_epoch(pipeline) is not None else "")
         + (f", {pipeline.embedder_.n_members} members" if getattr(pipeline.embedder_, "n_members", 1) > 1 else ""))

    if rows is None:
        space, space_name = clustering_space(pipeline, pipeline.transform(frame), random_state=config.seed)
    else:
        space, space_name = _clustering_space_in_slices(pipeline, frame, rows, random_state=config.seed)
    clusters = pipeline.labels_
    ids = _ids(frame, schema)
    known = y.to_numpy().astype(object) if y is not None else None
    if known is not None and not pd.notna(known).any():
        known = None

    # The t-SNE map needs only the clustering space: compute it on a second thread (openTSNE's
    # gradient runs mostly outside the GIL) while this thread, limited to one BLAS/OpenMP thread so the two
    # do not fight over the two cores, does everything else. The map is the longest single piece
    # (about 5 CPU-s on 1,500 customers); the rest of this block takes about as long.
    with ThreadPoolExecutor(max_workers=1) as pool, threadpool_limits(limits=1):
        tsne_job = pool.submit(tsne_coordinates, space, clusters, max_points=config.plots.tsne_max_points,
                               perplexity=config.plots.tsne_perplexity, random_state=config.seed)
        metrics = _evaluate(result, space, space_name, known, large)
        echo(f"k-means: k={config.clustering.n_clusters}, silhouette {metrics['silhouette']:.3f}"
             + (f", NMI {metrics['nmi']:.3f}, mapped accuracy {metrics['mapped_accuracy']:.3f}"
                if known is not None else ""))
        _profile(result, known)
        train_novelty = _row_tables(result, ids, known)
        test_info, test_scored = _score_test(result, test_t, ids)
        result.summary = _summary(result, metrics, train_t, test_info)
        _monitoring(result, test_t, train_novelty, test_scored)
        pca_xy, pca_var = pca_coordinates(space, random_state=config.seed)
        # the figures that need neither the t-SNE map nor the k scan
        draw = config.plots.figures
        early = _draw_early(result, known, pca_xy, pca_var, large) if draw else {}
        if test_t is not None:  # the drift's classifier test needs only the two tables
            _add_drift_classifier(result, classifier_two_sample_test(frame, test_t.frame, schema,
                                                                     random_state=config.seed))
        result.k_selection = _k_scan(config, space, space_name, large)
        result.tables["k_selection"] = result.k_selection.to_frame()
        # every figure but the t-SNE map, before waiting for it
        early |= _draw_scan_and_monitoring(result) if draw else {}
        tsne_idx, tsne_xy = tsne_job.result()
    # the tables in the order a run writes them, whichever thread finished first
    result.tables = {name: result.tables[name] for name in [*RESULT_TABLES, *result.tables] if name in result.tables}
    result.tables["maps"] = _maps_table(ids, clusters, pca_xy, tsne_idx, tsne_xy)
    result.figures = _draw(result, known, early, tsne_idx, tsne_xy) if draw else {}
    if large is not None:
        result.summary["large_table"] = large
    result.summary["cluster_names"] = {str(c): n for c, n in cluster_names(result).items()}
    result.summary["tsne_points"] = int(len(tsne_idx))
    result.summary["duration_seconds"] = round(time.perf_counter() - started, 1)
    result.summary["segments"] = [dataclasses.asdict(d) for d in result.descriptions]
    return result


#: With an ensemble, the share of the consensus space's variance kept by :func:`clustering_space`.
CONSENSUS_SPACE_VARIANCE = 0.995


def clustering_space(pipeline: SegmentationPipeline, latent: np.ndarray,
                     random_state: int = 0) -> tuple[np.ndarray, str]:
    """The space a run's cluster metrics, k scan and maps describe, and its short name.

    For one autoencoder, its latent features (``"latent"``). For a consensus of an
    ensemble (a clusterer with ``consensus_space``), the space the consensus clusters in,
    every member's standardized latent block side by side (320 features for 40 members),
    reduced to the principal components that hold :data:`CONSENSUS_SPACE_VARIANCE` of its
    variance (``"consensus"``). The members encode the same customers, so their blocks are
    nearly redundant: on the shipped data 12 of 320 components hold 99.4% of the variance.
    Distances there, and so silhouettes, K-Means and t-SNE neighbours, are those of the
    full space within that share, at a small part of the cost (the k scan took 25 CPU
    seconds on the 320 features, under 2 on the components).
    """
    if not _consensus(pipeline):
        return latent, "latent"
    wide = pipeline.clusterer_.consensus_space(latent)
    return _consensus_pca(random_state).fit_transform(wide), "consensus"


def _consensus(pipeline: SegmentationPipeline) -> bool:
    """Whether the pipeline clusters an ensemble by consensus (:func:`clustering_space` is then its PCA)."""
    clusterer = getattr(pipeline, "clusterer_", None)
    return clusterer is not None and hasattr(clusterer, "consensus_space") and getattr(clusterer, "n_members", 1) > 1


def _consensus_pca(random_state: int):
    from sklearn.decomposition import PCA  # scikit-learn is loaded by the pipeline already

    return PCA(n_components=CONSENSUS_SPACE_VARIANCE, svd_solver="covariance_eigh", random_state=random_state)


def _clustering_space_in_slices(pipeline: SegmentationPipeline, frame: pd.DataFrame, rows: np.ndarray,
                                random_state: int = 0) -> tuple[np.ndarray, str]:
    """:func:`clustering_space` of a large table, computed a slice of rows at a time.

    An ensemble's principal components are fitted on the sample ``rows`` (those the
    ensemble was fitted on) and every row projected on them: the consensus space of every
    row at once (1,000,000 x 320 float64, 2.6 GB) is never held.
    """
    parts = [frame.iloc[start:start + FIT_SLICE_ROWS] for start in range(0, len(frame), FIT_SLICE_ROWS)]
    if not _consensus(pipeline):
        return np.vstack([pipeline.transform(part) for part in parts]), "latent"
    wide = pipeline.clusterer_.consensus_space
    pca = _consensus_pca(random_state).fit(wide(pipeline.transform(frame.iloc[rows])))
    return np.vstack([pca.transform(wide(pipeline.transform(part))) for part in parts]), "consensus"


def _evaluate(result: TrainResult, space: np.ndarray, space_name: str, known: np.ndarray | None,
              large: dict | None = None) -> dict[str, float]:
    """Metrics of the clustering (``clustering_metrics``) in ``space``; silhouette on a sample for a large table."""
    pipeline, config = result.pipeline, result.config
    clusters = pipeline.labels_
    metrics = internal_metrics(space, clusters, random_state=config.seed,
                               sample_size=large["silhouette_sample_rows"] if large else None)
    metrics["inertia"] = pipeline.inertia_
    if known is not None:
        labelled = pd.notna(known)
        metrics.update(external_metrics(clusters[labelled], known[labelled].astype(str), pipeline.mapping_))
    result.tables["clustering_metrics"] = pd.DataFrame(
        {"metric": list(metrics), "value": list(metrics.values()),
         "space": ["latent" if m == "inertia" else space_name if m in ("silhouette", "davies_bouldin",
                                                                        "calinski_harabasz") else "labels"
                   for m in metrics]})
    result.tables["training_history"] = training_history(pipeline)
    return metrics


def _k_scan(config: RunConfig, latent: np.ndarray, space_name: str = "latent",
            large: dict | None = None) -> KSelection:
    """The k scan of a run (``k_selection``), on a random sample of a large table."""
    ks = config.k_selection
    if large is not None and len(latent) > large["k_scan_sample_rows"]:
        rows = np.random.default_rng(config.seed).choice(len(latent), large["k_scan_sample_rows"], replace=False)
        latent = latent[np.sort(rows)]
    # train calls this inside its one-BLAS/OpenMP-thread limit
    selection = select_k(latent, range(ks.k_min, min(ks.k_max, len(latent) - 1) + 1),
                         n_resamples=ks.n_resamples, n_init=ks.n_init, random_state=config.seed,
                         silhouette_sample=ks.silhouette_sample or None)
    selection.settings.update(space=_SPACE_NAMES[space_name], seed=config.seed)
    return selection


#: what ``k_selection``'s settings say the scan was made on, by :func:`clustering_space`'s name
_SPACE_NAMES = {"latent": "autoencoder latent features",
                "consensus": "principal components of the ensemble's consensus space (standardized members' "
                             "latent features side by side)"}


def best_epoch(pipeline: SegmentationPipeline) -> int | None:
    """The epoch whose weights the embedder kept (None when it keeps the last: no early stopping)."""
    return getattr(pipeline.embedder_, "best_epoch_", None)


def training_history(pipeline: SegmentationPipeline) -> pd.DataFrame:
    """The embedder's history with the columns every run writes (epoch, loss, val_loss, lr first).

    The mixed-type autoencoder has no validation split and a constant learning rate: its
    ``val_loss`` is empty, its ``lr`` the learning rate, and its reconstruction and
    guidance parts follow.
    """
    history = pipeline.embedder_.history_.copy()
    if "val_loss" not in history:
        history.insert(2, "val_loss", np.nan)
    if "lr" not in history:
        history.insert(3, "lr", float(pipeline.embedder_.learning_rate))
    return history


def _profile(result: TrainResult, known: np.ndarray | None) -> None:
    """What sets each segment apart, in numbers (``segment_profiles``) and in words (``segments.md``)."""
    schema = result.schema
    result.profile = profile_segments(result.train_table, result.pipeline.labels_, numeric=schema.names("numeric"),
                                      categorical=schema.names("categorical") + schema.names("ordinal"),
                                      known_segments=known)
    result.descriptions = describe_segments(result.profile)


def _row_tables(result: TrainResult, ids: pd.Series, known: np.ndarray | None) -> NoveltySummary | None:
    """The per-customer and per-cluster tables, in the order a run writes them.

    Returns what the monitor's guards saw on the training rows.
    """
    pipeline, schema, frame = result.pipeline, result.schema, result.train_table
    clusters = pipeline.labels_
    training_results = pd.DataFrame({"ID": ids.to_numpy()})
    if known is not None:
        training_results["True_Segment"] = known
    training_results["Cluster"] = clusters
    if pipeline.mapping_ is not None:
        training_results["Predicted_Segment"] = [pipeline.mapping_[c] for c in clusters]
    if pipeline.agreement_ is not None:  # an ensemble: the share of its members that agree, per customer
        training_results["Agreement"] = pipeline.agreement_
    novelty = None
    if result.monitor is not None:
        scored, novelty = score_frame(pipeline, frame, result.monitor)
        monitor_columns = [c for c in scored.columns if c not in _PIPELINE_COLUMNS]
        training_results = pd.concat([training_results, scored[monitor_columns].reset_index(drop=True)], axis=1)
    result.tables["training_results"] = training_results
    result.tables["cluster_characteristics"] = cluster_characteristics(frame, clusters, schema, pipeline.mapping_)
    if known is not None:
        labelled = pd.notna(known)
        result.tables["cluster_segment_crosstab"] = mapping_table(
            clusters[labelled], known[labelled].astype(str), pipeline.mapping_)
    result.tables["segment_profiles"] = result.profile.to_frame()
    result.texts["segments.md"] = segments_markdown(result.descriptions)
    return novelty


def _score_test(result: TrainResult, test_t: LoadedTable | None,
                ids: pd.Series) -> tuple[dict[str, Any], PredictResult | None]:
    """The new customers assigned to segments (``test_predictions_detailed``, ``submission``)."""
    if test_t is None:
        return {}, None
    pipeline, schema = result.pipeline, result.schema
    scored = predict_table(pipeline, schema, test_t,
                           segment_names={int(d.segment): d.name for d in result.descriptions},
                           monitor=result.monitor)
    scored.table = scored.table.rename(columns={scored.id_column: "ID"})
    result.tables["test_predictions_detailed"] = scored.table
    if pipeline.mapping_ is not None:
        result.tables["submission"] = scored.table[["ID", "Predicted_Segment"]].rename(
            columns={"Predicted_Segment": "Segmentation"})
    info = {"rows": len(test_t.frame), "extra_columns": scored.extra_columns,
            "novelty": None if scored.novelty is None else scored.novelty.to_dict(),
            "unseen_categories": scored.unseen_categories,
            "missing": missing_report(test_t.frame).to_dict(orient="records")}
    if schema.id_column is not None:
        info["ids_in_train"] = int(test_t.frame[schema.id_column].map(_id_text).isin(set(ids)).sum())
    return info, scored


# -- monitoring: confidence, novelty, drift ------------------------------------------------------------------
def _monitoring(result: TrainResult, test_t: LoadedTable | None, train_novelty: NoveltySummary | None,
                test_scored: PredictResult | None) -> None:
    """Calibration, novelty counts, the customers the report lists and, with a test table, its drift.

    Every table the report shows from here is kept as it reads back from its CSV
    (:func:`_as_written`), so ``custseg report`` renders the same page from the files.
    """
    monitor = result.monitor
    if monitor is None:
        return
    n_clusters = len(result.pipeline.cluster_centers_)
    soft = monitor.soft_
    info: dict[str, Any] = {"temperature": soft.temperature_,
                            "calibration_error_out_of_fold": soft.calibration_error_,
                            "unusual_above": float(monitor.novelty_.threshold),
                            "train": None if train_novelty is None else train_novelty.to_dict(),
                            "test": None if test_scored is None or test_scored.novelty is None
                            else test_scored.novelty.to_dict()}
    if soft.calibration_ is not None:
        result.tables["calibration"] = _as_written(soft.calibration_, "calibration", n_clusters)
    # the report describes the new customers if there are any, else the training ones
    if test_scored is not None:
        scored, frame, who = result.tables["test_predictions_detailed"], result.test_table, "new customers"
    else:
        scored, frame, who = result.tables["training_results"], result.train_table, "training customers"
    attributes = frame[[c for c in result.schema.feature_columns if c in frame.columns]].reset_index(drop=True)
    column = "Segment_Probability" if "Segment_Probability" in scored else "Confidence"
    unusual = scored["Unusual"].to_numpy(dtype=bool)
    info["shown"] = {"who": who, "column": column, "customers": len(scored), "unusual": int(unusual.sum())}
    keep = [c for c in ("Second_Segment", "Second_Cluster") if c in scored]
    tables = {
        "confidence_by_segment": confidence_by_segment(scored, column),
        "uncertain_customers": extreme_customers(scored, attributes, column, n=N_EXTREME_CUSTOMERS, largest=False,
                                                 keep=keep),
        "unusual_customers": extreme_customers(scored.assign(Reason=scored["Reason"].astype(object).fillna("")),
                                               attributes, "Novelty", n=N_EXTREME_CUSTOMERS, keep=["Reason"]),
    }
    result.tables.update({name: _as_written(table, name, n_clusters) for name, table in tables.items()})
    if test_t is not None:
        train_scored = result.tables["training_results"]
        segment = "Predicted_Segment" if "Predicted_Segment" in scored else "Cluster"
        # the classifier test runs later in train, after the figures; _add_drift_classifier adds it
        drift = drift_report(result.train_table, test_t.frame, result.schema,
                             reference_segments=train_scored[segment].to_numpy(),
                             new_segments=scored[segment].to_numpy(), classifier=False,
                             random_state=result.config.seed)
        result.drift = drift
        result.tables["drift"] = _as_written(drift.features[DRIFT_COLUMNS], "drift", n_clusters)
        info["drift"] = {"drifted_features": drift.drifted_features, "classifier": drift.classifier,
                         "segment_shift": drift.segment_test, "returning": drift.returning,
                         "psi_threshold": drift.settings["psi_threshold"]}
        result.texts["drift.md"] = drift_markdown(drift)
    result.summary["monitoring"] = info


def _add_drift_classifier(result: TrainResult, classifier: dict[str, Any]) -> None:
    """The classifier two-sample test into the drift report and summary."""
    if result.drift is None:
        return
    result.drift.classifier = classifier
    result.texts["drift.md"] = drift_markdown(result.drift)
    result.summary["monitoring"]["drift"]["classifier"] = classifier


def _as_written(table: pd.DataFrame, name: str, n_clusters: int) -> pd.DataFrame:
    """``table`` as :func:`load_run` reads it back from its CSV: the numbers the report shows either way."""
    return _parse_result_table(io.BytesIO(csv_bytes(table)), f"{name}.csv", name, n_clusters)


def _summary(result: TrainResult, metrics: dict, train_t: LoadedTable, test_info: dict) -> dict[str, Any]:
    """``run_summary.json``: versions, settings, data, schema, training and metrics."""
    pipeline, config, frame = result.pipeline, result.config, result.train_table
    history = result.tables["training_history"]
    return {
        "custseg_version": __version__,
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": config.to_dict(),
        "data": {
            "train": {"path": str(config.data.train), "absolute_path": str(Path(config.data.train).resolve()),
                      "rows": len(frame), "columns": len(frame.columns),
                      "missing": missing_report(frame).to_dict(orient="records"),
                      "delimiter": train_t.delimiter, "numeric_from_text": train_t.numeric_from_text},
            "test": {"path": str(config.data.test) if config.data.test else None,
                     "absolute_path": str(Path(config.data.test).resolve()) if config.data.test else None,
                     **test_info},
        },
        "schema": result.schema.to_dict(),
        "preset": config.preset,
        "autoencoder": {"preset": config.preset, "kind": config.autoencoder.kind, "epochs": len(history),
                        "best_epoch": best_epoch(pipeline),
                        "stopped_early": bool(getattr(pipeline.embedder_, "stopped_early_", False)),
                        "best_val_loss": _none_if_nan(history["val_loss"].min()),
                        "members": int(getattr(pipeline.embedder_, "n_members", 1)),
                        "guidance_weight": float(getattr(pipeline.embedder_, "guidance_weight", 0.0))},
        "agreement": None if pipeline.agreement_ is None else {
            "mean": float(np.mean(pipeline.agreement_)),
            "share_at_least_0.9": float(np.mean(pipeline.agreement_ >= 0.9))},
        "metrics": {k_: _none_if_nan(v) for k_, v in metrics.items()},
        "mapping": None if pipeline.mapping_ is None else {str(c): s for c, s in pipeline.mapping_.items()},
    }


def _maps_table(ids: pd.Series, clusters: np.ndarray, pca_xy: np.ndarray, tsne_idx: np.ndarray,
                tsne_xy: np.ndarray) -> pd.DataFrame:
    """``maps``: each customer's PCA coordinates, and t-SNE ones for the customers in its sample."""
    maps = pd.DataFrame({"ID": ids.to_numpy(), "Cluster": clusters, "pca_1": pca_xy[:, 0], "pca_2": pca_xy[:, 1],
                         "tsne_1": np.nan, "tsne_2": np.nan})
    maps.loc[tsne_idx, "tsne_1"] = tsne_xy[:, 0]
    maps.loc[tsne_idx, "tsne_2"] = tsne_xy[:, 1]
    return maps


def _draw_early(result: TrainResult, known: np.ndarray | None, pca_xy: np.ndarray, pca_var: np.ndarray,
                large: dict | None = None) -> dict[str, bytes]:
    """The figures that need neither the t-SNE map nor the k scan (the PCA map of a large table on a sample)."""
    pipeline, config = result.pipeline, result.config
    clusters = pipeline.labels_
    names = cluster_names(result)
    dpi = config.plots.dpi
    pca_clusters, pca_known = clusters, known
    if large is not None:
        shown = stratified_sample(clusters, large["pca_figure_points"], random_state=config.seed)
        pca_xy, pca_clusters, pca_known = pca_xy[shown], clusters[shown], None if known is None else known[shown]
    return {
        "training_history": render_png(
            plots.plot_training_history(result.tables["training_history"], best_epoch(pipeline)), dpi),
        "clusters_pca": render_png(plots.plot_maps(
            pca_xy, pca_clusters, names, "PCA", pca_known,
            axis_labels=(f"PC 1 ({pca_var[0]:.0%} of variance)", f"PC 2 ({pca_var[1]:.0%} of variance)")), dpi),
        "cluster_distribution": render_png(plots.plot_cluster_distribution(clusters, names, known), dpi),
        "segment_profiles": render_png(plots.plot_profile_heatmap(
            profile_heatmap_data(result.profile), {d.segment: d.name for d in result.descriptions}), dpi,
            tight=True),
    }


def _draw_scan_and_monitoring(result: TrainResult) -> dict[str, bytes]:
    """The k selection figure and the monitoring figures (they need the k scan and the drift test)."""
    dpi = result.config.plots.dpi
    return {"optimal_clusters": render_png(
        plots.plot_k_selection(result.k_selection, chosen_k=result.config.clustering.n_clusters), dpi),
        **_draw_monitoring(result, dpi)}


def _draw(result: TrainResult, known: np.ndarray | None, early: dict[str, bytes], tsne_idx: np.ndarray,
          tsne_xy: np.ndarray) -> dict[str, bytes]:
    """Every figure of a run, as PNG bytes by name, in run order: ``early`` (all the others) and the t-SNE map."""
    clusters = result.pipeline.labels_
    dpi = result.config.plots.dpi
    sampled = "every customer" if len(tsne_idx) == len(clusters) else "stratified sample"
    tsne = render_png(plots.plot_maps(
        tsne_xy, clusters[tsne_idx], cluster_names(result), "t-SNE", None if known is None else known[tsne_idx],
        axis_labels=(f"t-SNE 1 ({len(tsne_idx):,} customers, {sampled})", "t-SNE 2")), dpi)
    order = ["training_history", "optimal_clusters", "clusters_pca", "cluster_distribution", "clusters_tsne",
             "segment_profiles"]
    figures = {**early, "clusters_tsne": tsne}
    return {name: figures[name] for name in [*order, *figures] if name in figures}


def _draw_monitoring(result: TrainResult, dpi: int) -> dict[str, bytes]:
    """Reliability of the segment probability, confidence per segment, drift per feature."""
    figures = {}
    scored = result.tables.get("training_results")
    if "calibration" in result.tables:
        figures["reliability"] = render_png(plots.plot_reliability(
            result.tables["calibration"], title="Segment_Probability on out-of-fold training rows"), dpi)
    if scored is not None and "Confidence" in scored:
        label = "Segment_Probability" if "Segment_Probability" in scored else "Confidence"
        group = "Predicted_Segment" if "Predicted_Segment" in scored else "Cluster"
        figures["confidence"] = render_png(plots.plot_confidence(scored[label], scored[group], label=label), dpi)
    if result.drift is not None:
        figures["drift"] = render_png(plots.plot_drift(
            result.drift.features, psi_threshold=result.drift.settings["psi_threshold"]), dpi)
    return figures


def cluster_names(result: TrainResult) -> dict[int, str]:
    """Legend name of each cluster: its id and its short descriptive name."""
    if result.descriptions:
        return {int(d.segment): f"{d.segment}: {d.name}" for d in result.descriptions}
    return {c: f"Cluster {c}" for c in range(len(result.pipeline.cluster_centers_))}


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
_PIPELINE_COLUMNS = ("Cluster", "Predicted_Segment", "Agreement", "Distance_To_Centroid", "Reconstruction_Error")


def fit_monitor(pipeline: SegmentationPipeline, schema: Schema, frame: pd.DataFrame, y=None, *,
                threshold: float = 99.0, random_state: int = 0, sample: np.ndarray | None = None) -> CustomerMonitor:
    """Fit the confidence and novelty model of a fitted pipeline on its training rows (see :mod:`custseg.monitoring`).

    With ``sample`` (row positions) the scores it learns from are those rows' (a large table's
    fitted sample); the ranges and categories that count as seen are still every row's.
    """
    seen = None if sample is None else frame[schema.feature_columns]
    if sample is not None:
        frame, y = frame.iloc[sample], None if y is None else np.asarray(y, dtype=object)[sample]
    features = pipeline.preprocessor_.transform(frame)
    latent, error = pipeline.latent_and_error(features)
    clusters = pipeline.assign_latent(latent)[0]
    segments = None if y is None else np.asarray(y, dtype=object)
    # in the space where each customer's cluster is the nearest centre (a consensus ensemble's, not its
    # latent space): the most probable cluster is then the assigned one
    monitor = CustomerMonitor(numeric=schema.names("numeric"),
                              categorical=schema.names("categorical") + schema.names("ordinal"),
                              threshold=threshold, random_state=random_state, space="assignment")
    return monitor.fit(frame[schema.feature_columns], pipeline.assignment_space(latent), error, clusters,
                       pipeline.assignment_centers_, segments, pipeline.mapping_, seen=seen)


def score_frame(pipeline: SegmentationPipeline, frame: pd.DataFrame, monitor: CustomerMonitor | None = None,
                probabilities: bool = False, threads: int = 1) -> tuple[pd.DataFrame, NoveltySummary | None]:
    """The pipeline's scores of ``frame`` and, with a monitor, its confidence and novelty columns.

    Without a monitor this is ``pipeline.score_table(frame)``. With one, the features and
    latent features are computed once and shared by both. ``threads`` > 1 scores a big
    frame's slices side by side (the same numbers: each slice is computed on its own).
    """
    if monitor is None:
        return pipeline.score_table(frame), None
    columns, summary = _score_columns(pipeline, frame, monitor, probabilities, threads)
    return columns_frame(columns, frame.index), summary


def _score_columns(pipeline: SegmentationPipeline, frame: pd.DataFrame, monitor: CustomerMonitor,
                   probabilities: bool = False, threads: int = 1) -> tuple[dict[str, np.ndarray], NoveltySummary]:
    """:func:`score_frame`'s columns as arrays, for a caller that adds its own and builds one table."""
    if len(frame) <= SCORE_ROWS:
        return _score_slice(pipeline, frame, monitor, probabilities)
    # a row's scores do not depend on the rows scored with it (streaming blocks of 7 give the bytes of the
    # whole table, tested), so a big block is scored in slices: the latent features and the ensemble's
    # temporaries of 100,000 rows took 1.7 GB
    def part(start: int) -> tuple[dict[str, np.ndarray], NoveltySummary]:
        return _score_slice(pipeline, frame.iloc[start:start + SCORE_ROWS], monitor, probabilities)

    starts = range(0, len(frame), SCORE_ROWS)
    if threads > 1 and _embedder_threads(pipeline) == 1:
        # the network's kernels and numpy's release the GIL: two slices at once take the two cores
        # (torch set to one thread here, so that no worker changes the process-wide setting)
        with torch_threads(1), ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(part, starts))
    else:
        results = [part(start) for start in starts]
    summary = None
    for _, novelty in results:  # in row order, as one pass would count them
        summary = novelty if summary is None else summary + novelty
    return {name: np.concatenate([columns[name] for columns, _ in results]) for name in results[0][0]}, summary


def _embedder_threads(pipeline: SegmentationPipeline) -> int:
    """The torch threads the pipeline's network runs on (1 unless configured otherwise)."""
    return int(getattr(pipeline.embedder_, "n_threads", 1) or 1)


def scoring_threads() -> int:
    """Threads that score slices of a big table side by side: the CPUs this process may use, at most 2.

    Two is what the streaming reader and the writer's formatting leave room for; more slices
    at once would hold more memory for little gain.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(2, available))


#: Rows scored at once by :func:`score_frame` (latent features of the default 40-member ensemble:
#: 8,192 x 320 float64 = 21 MB, and a few temporaries of that size; two slices at once with two
#: threads). Per row as fast as 16,384 (1,000,000 rows: 0.93 GB peak against 1.0 GB).
SCORE_ROWS = 8_192


def _score_slice(pipeline: SegmentationPipeline, frame: pd.DataFrame, monitor: CustomerMonitor,
                 probabilities: bool) -> tuple[dict[str, np.ndarray], NoveltySummary]:
    """:func:`_score_columns` of a slice of rows."""
    features = pipeline.preprocessor_.transform(frame)
    # The network computes in float32. A value it cannot represent is imputed like a missing one (0 after
    # scaling) so the row can be scored at all; the monitor's guards flag the row Unusual and name the value.
    # (an embedder that encodes the table itself gets the table: its encoder imputes and scales)
    if isinstance(features, np.ndarray):
        unrepresentable = ~(np.abs(features) <= np.finfo(np.float32).max)
        if unrepresentable.any():
            features = np.where(unrepresentable, 0.0, features)
    with np.errstate(over="ignore", invalid="ignore"):
        # the monitor works in the latent space or in the clusters' own (the consensus space)
        out, where = pipeline.score_features(features, space=monitor.space == "assignment")
    # the guards read the monitored columns of the frame by name: no copy of them is needed
    monitored, summary = monitor.score_columns(frame, where, out["Reconstruction_Error"], out["Cluster"],
                                               probabilities=probabilities)
    out.update(monitored)
    return out, summary


def prediction_ids(frame: pd.DataFrame, schema: Schema | None, id_column: str | None = None,
                   source: str = "input") -> tuple[str, pd.Series, str | None]:
    """The column that identifies the customers of a table to be scored: ``(name, values, notice)``.

    The given ``id_column`` wins; then the ID column seen in training; then the one
    column of ``frame`` named like an identifier with all values different. Without any,
    customers are numbered 1..n in table order (column ``Row``) and ``notice`` says so:
    renumbered IDs must never pass for real ones.
    """
    named = _named_id_column(frame.columns, schema, id_column, source)
    if named is not None:
        return named, frame[named].map(_id_text), None
    candidates = _id_candidates(frame.columns, schema)
    found = _pick_id([c for c in candidates if frame[c].notna().all() and frame[c].is_unique])
    if found is not None:
        return found, frame[found].map(_id_text), _guessed_id_notice(found, schema)
    return "Row", pd.Series(np.arange(1, len(frame) + 1), index=frame.index), _numbered_notice(source, schema,
                                                                                              len(frame))


def _named_id_column(columns, schema: Schema | None, id_column: str | None, source: str) -> str | None:
    """The ID column the user gave (it must exist) or the training one if the table has it; else None."""
    if id_column is not None:
        if id_column not in columns:
            from .schema import _did_you_mean

            raise DataError(f"file {source!r}: --id-column {id_column!r} is not in the table"
                            f"{_did_you_mean(id_column, columns)}; its columns are {', '.join(map(str, columns))}")
        return id_column
    trained = schema.id_column if schema is not None else None
    return trained if trained is not None and trained in columns else None


def _id_candidates(columns, schema: Schema | None) -> list[str]:
    """Columns named like an identifier that are no feature nor the label."""
    from .schema import _named_like_id

    used = set(schema.feature_columns) | {schema.label_column} if schema is not None else set()
    return [c for c in columns if c not in used and _named_like_id(str(c))]


def _pick_id(valid: list[str]) -> str | None:
    """Of the candidates with every value present and different, the one to use (None if not exactly one)."""
    from .schema import _PREFERRED_ID

    if len(valid) > 1:
        valid = [c for c in valid if _PREFERRED_ID.match(str(c).strip())]
    return valid[0] if len(valid) == 1 else None


def _guessed_id_notice(found: str, schema: Schema | None) -> str:
    trained = schema.id_column if schema is not None else None
    was = f"the model was trained with {trained!r}" if trained else "the model names no ID column"
    return f"IDs taken from column {found!r} ({was}); give --id-column to choose another"


def _numbered_notice(source: str, schema: Schema | None, n_rows: int) -> str:
    trained = schema.id_column if schema is not None else None
    why = (f"the ID column {trained!r} of the training table is not in it" if trained
           else "the model names no ID column and none was found")
    return (f"file {source!r} has no ID column ({why}): customers are numbered 1..{n_rows} in table order in "
            "column 'Row'; give --id-column to use one of its columns")


def predict_table(pipeline: SegmentationPipeline, schema: Schema | None, table: LoadedTable,
                  id_column: str | None = None, segment_names: dict[int, str] | None = None,
                  monitor: CustomerMonitor | None = None, *, probabilities: bool = False,
                  strict: bool = False) -> PredictResult:
    """Score a loaded table: its ID column, Cluster, Segment_Name, Predicted_Segment, Distance_To_Centroid,
    Reconstruction_Error.

    The first column keeps the table's own ID column name and values (see :func:`prediction_ids`);
    the output has exactly one row per input row, in input order. For a table in a file,
    :func:`score_chunks` gives the same rows block by block in bounded memory.

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
    out, novelty = _scored_rows(pipeline, frame, id_name, ids, segment_names, monitor, probabilities)
    # the monitor's guards already found the unseen categories; without one, ask the preprocessor
    unseen = novelty.unseen_categories if novelty is not None else pipeline.unseen_categories(frame)
    if strict:
        _check_strict(table.source, out, novelty, table.line_of)
    if len(out) != len(frame):  # the promise of this function; cheap to keep checking
        raise DataError(f"file {table.source!r}: {len(frame)} rows in but {len(out)} scored; please report this bug")
    return PredictResult(table=out, extra_columns=extra, unseen_categories=unseen, id_column=id_name,
                         id_notice=notice, novelty=novelty)


def _scored_rows(pipeline: SegmentationPipeline, frame: pd.DataFrame, id_name: str, ids: pd.Series,
                 segment_names: dict[int, str] | None, monitor: CustomerMonitor | None = None,
                 probabilities: bool = False, threads: int = 1) -> tuple[pd.DataFrame, NoveltySummary | None]:
    """The output rows of predict for ``frame`` (ID column first, then the scores) and the monitor's summary."""
    if monitor is None:  # a model folder from before the monitor
        out, novelty = pipeline.score_table(frame).reset_index(drop=True), None
    else:
        columns, novelty = _score_columns(pipeline, frame, monitor, probabilities, threads)
        out = columns_frame(columns)
    if segment_names:
        clusters = out["Cluster"].to_numpy()
        names = np.array([segment_names.get(c, "") for c in range(int(clusters.max(initial=0)) + 1)], dtype=object)
        out.insert(1, "Segment_Name", names[clusters])
    out.insert(0, id_name, ids.to_numpy(), allow_duplicates=True)
    return out, novelty


def _check_strict(source: str, out: pd.DataFrame, novelty: NoveltySummary | None, line_of) -> None:
    """With --strict: any data problem the monitor's guards found is an error naming its first line."""
    if novelty is None or not novelty.problems():
        return
    flagged = ((out["Reason"] != "") & ~out["Reason"].str.startswith("novelty above")).to_numpy()
    where = ""
    if flagged.any():
        pos = int(np.argmax(flagged))
        where = f", line {line_of(pos)}: {out['Reason'].iloc[pos]}"
    raise DataError(f"file {source!r}{where}; " + "; ".join(novelty.problems())
                    + " (--strict); fix or remove these customers, or score without --strict")


def score_chunks(model, path: str | Path, *, na_values: list[str] | tuple[str, ...] = (), id_column: str | None = None,
                 chunk_rows: int = CHUNK_ROWS, probabilities: bool = False, strict: bool = False,
                 kinds: dict[str, str] | None = None, report: "StreamReport | None" = None,
                 threads: int = 1, _id_choice: Any = None) -> Iterator[pd.DataFrame]:
    """Score the table in ``path`` block by block: one scored DataFrame per block, in input order.

    The rows are those :func:`predict_table` gives for the whole table (the table's own
    ID column, or ``Row`` numbers 1..n, then Cluster, Segment_Name, ...). Each block is
    checked as :func:`predict_table` checks a whole table (schema, text in numeric
    columns, empty IDs, each error naming line, column and value); checks that need the
    whole table (row count, duplicate IDs across blocks, too large numbers, which column
    is the ID column when it is guessed) run after the last block, so a consumer must not
    treat its output as final before the generator is exhausted.

    Parameters
    ----------
    model : LoadedModel
        As :func:`custseg.persistence.load_model` returns it.
    path : str or Path
        CSV or Parquet table.
    na_values : sequence of str
        Extra missing-value tokens (besides those the model was trained with).
    id_column : str, optional
        Column holding the customer IDs (as ``--id-column``).
    probabilities, strict : bool
        As for :func:`predict_table` (with --strict, the first block with a data problem
        raises, naming its first such line; the counts given are that block's).
    chunk_rows : int
        Rows per block; memory grows with it, not with the table.
    kinds : dict, optional
        Column typing fixed in advance (see :class:`~custseg.io.chunks.TableStream`).
    report : StreamReport, optional
        Filled with what was noticed (rows, ID column and notice, extra columns, unseen
        categories, progress).
    threads : int, default=1
        Slices of a block scored side by side (:func:`score_frame`); the output is the same.

    Raises
    ------
    TypingChanged
        If the whole table turned out to type a column, or to choose a guessed ID column,
        otherwise than the first blocks did, in a way that changes their output (rare: e.g.
        IDs written ``1.0`` in a column that later holds text); score again with
        ``kinds=exc.kinds`` (:func:`predict_file` does).

    Examples
    --------
    >>> model = load_model("models")                              # doctest: +SKIP
    >>> for scored in score_chunks(model, "customers.parquet"):   # doctest: +SKIP
    ...     scored.to_csv(...)
    """
    report = report if report is not None else StreamReport()
    pipeline, schema = model.pipeline, model.schema
    na = list(dict.fromkeys([*model.settings.get("data", {}).get("na_values", []), *na_values]))
    # the model's category columns and the ID column as the file writes them (see Schema.text_columns)
    stream = TableStream(path, na_values=na, chunk_rows=chunk_rows, kinds=kinds,
                         text_columns=text_columns_of(schema, id_column))
    numeric = set(schema.names("numeric")) if schema is not None else set()
    # the category columns the model encodes (a mixed-type embedder encodes the table itself)
    texts = set(getattr(pipeline.preprocessor_, "categories_", None)
                or (schema.names("categorical") + schema.names("ordinal") if schema is not None else []))
    id_name: str | None = None   # None: rows numbered 1..n
    candidates: list[str] = []   # guessed ID columns, checked over the whole table at the end
    hashes: dict[str, list[np.ndarray]] = {}
    complete: dict[str, bool] = {}
    report.rows = 0
    for block in read_ahead(iter(stream)):  # the next block is parsed while this one is scored
        frame = block.frame
        if report.rows == 0:
            named = _named_id_column(frame.columns, schema, id_column, block.source)
            if named is None:
                candidates = _id_candidates(frame.columns, schema)
                id_name = _id_choice[0] if _id_choice is not None else _pick_id(
                    [c for c in candidates if frame[c].notna().all() and frame[c].is_unique])
            else:
                id_name = named
            report.id_column = id_name if id_name is not None else "Row"
            hashes = {c: [] for c in dict.fromkeys([*candidates, *([id_name] if id_name else [])])}
            complete = dict.fromkeys(hashes, True)
        if schema is not None:
            # numbers that are not numbers: as text, so the check names the value as the file has it
            checked = frame.assign(**{c: frame[c].astype(object) for c in numeric
                                      if c in frame and isinstance(frame[c].dtype, pd.CategoricalDtype)})
            extra = schema.check(checked, block.source, block.line_of)
            if report.rows == 0:
                report.extra_columns = [c for c in extra if c != id_name]
        for name in hashes:
            values = _id_texts(frame[name])
            if values.isna().any():
                if name == id_name and not candidates:  # given or trained: an empty ID is an error
                    pos = int(np.argmax(values.isna().to_numpy()))
                    raise DataError(f"file {block.source!r}, line {block.line_of(pos)}, column {name!r}: the ID is "
                                    "empty; give every customer an ID")
                complete[name] = False
            hashes[name].append(_id_hashes(values))
            if name == id_name:
                ids = values
        if id_name is None:
            ids = pd.Series(np.arange(report.rows + 1, report.rows + len(frame) + 1))
        stream.check_numbers(numeric)  # float32 cannot hold them: named before the network meets them
        scored, novelty = _scored_rows(pipeline, frame, report.id_column, ids, model.cluster_names, model.monitor,
                                       probabilities, threads)
        if strict:
            _check_strict(block.source, scored, novelty, block.line_of)
        if novelty is not None:
            report.novelty = novelty if report.novelty is None else report.novelty + novelty
        unseen = novelty.unseen_categories if novelty is not None else pipeline.unseen_categories(frame)
        for column, counts in unseen.items():
            tally = report.unseen_categories.setdefault(column, {})
            for value, n in counts.items():
                tally[value] = tally.get(value, 0) + n
        report.rows += len(frame)
        report.fraction = stream.fraction
        yield scored
    stream.check_numbers()
    changed = stream.changed_columns(texts | set(hashes))
    if changed:
        raise TypingChanged(stream.final_kinds(), changed)
    if candidates and _id_choice is None:  # a guessed ID column: is it the one the whole table gives?
        valid = [c for c in candidates
                 if complete[c] and _duplicate(path, hashes[c], stream, c) is None]
        final = _pick_id(valid)
        if final != id_name:
            raise TypingChanged(stream.final_kinds(), [], id_choice=(final,))
    elif id_name is not None and not candidates:
        duplicate = _duplicate(path, hashes[id_name], stream, id_name)
        if duplicate is not None:
            raise DataError(duplicate)
    if report.rows != stream.rows:
        raise DataError(f"file {stream.source!r}: {stream.rows} rows read but {report.rows} scored; "
                        "this is a bug in custseg, please report it")
    if id_name is None:
        report.id_notice = _numbered_notice(stream.source, schema, report.rows)
    elif candidates:
        report.id_notice = _guessed_id_notice(id_name, schema)
    # in the preprocessor's column order, values sorted, as predict_table reports them
    report.unseen_categories = {c: dict(sorted(report.unseen_categories[c].items()))
                                for c in getattr(pipeline.preprocessor_, "kinds_", None) or sorted(report.unseen_categories)
                                if c in report.unseen_categories}


@dataclass
class StreamReport:
    """What a streaming predict noticed: rows scored, ID column, extra columns, unseen categories, share read."""

    rows: int = 0
    extra_columns: list[str] = field(default_factory=list)
    unseen_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    fraction: float = 0.0
    #: name of the output's first column: the table's own ID column, or "Row" (row numbers)
    id_column: str = "ID"
    #: a sentence for the user when the IDs are not the training ID column (or there are none)
    id_notice: str | None = None
    #: the monitor's guards over every block (None: the model has no monitor)
    novelty: NoveltySummary | None = None


class TypingChanged(DataError):
    """The whole table types a column (or picks its ID column) otherwise than its first blocks did.

    Score again with ``kinds`` (and, for a guessed ID column, the choice in ``id_choice``).
    """

    def __init__(self, kinds: dict[str, str], columns: list[str], id_choice: tuple[str | None] | None = None):
        what = (f"the typing of column(s) {', '.join(map(repr, columns))}" if columns
                else "the column holding the IDs")
        super().__init__(f"{what} changed while streaming")
        self.kinds = kinds
        self.columns = columns
        self.id_choice = id_choice


def _id_texts(ids: pd.Series) -> pd.Series:
    """The ID of each row as predict writes it (whole numbers without '.0'), NaN where missing."""
    if isinstance(ids.dtype, pd.CategoricalDtype):  # a streamed block's text: each distinct value once
        categories = ids.cat.categories
        texts = (categories.to_numpy(dtype=object) if pd.api.types.infer_dtype(categories) == "string"
                 else np.array([_id_text(v) for v in categories], dtype=object))  # str: already its text
        return pd.Series(np.append(texts, np.nan)[ids.cat.codes.to_numpy()], index=ids.index, dtype=object)
    if not pd.api.types.is_numeric_dtype(ids):
        return ids.map(lambda v: v if pd.isna(v) else _id_text(v)).astype(object)
    values = ids.to_numpy(dtype="float64")
    whole = np.isfinite(values) & (np.mod(values, 1) == 0) & (np.abs(values) < 2 ** 53)
    if whole.all():
        return pd.Series(values.astype(np.int64).astype(str).astype(object))
    return ids.map(lambda v: v if pd.isna(v) else _id_text(v)).astype(object)


def _id_hashes(ids: pd.Series) -> np.ndarray:
    """64-bit hashes of ID texts (:func:`_id_texts`): the streamed pass and :func:`_duplicate`'s second
    pass must hash alike, so both call this."""
    return pd.util.hash_array(ids.to_numpy(dtype=object))


def _duplicate(path, parts: list[np.ndarray], stream: TableStream, id_column: str) -> str | None:
    """The error for duplicate IDs over the whole table, from the blocks' 64-bit hashes (``parts``, emptied
    here), or None if every ID differs.

    A hash match is checked on the IDs themselves (read again), so a collision is no duplicate.
    """
    # the usual case, every ID different, is decided on one array of the hashes (8 bytes a row: 160 MB
    # at 20 M rows), filled while the blocks' parts are let go and sorted in place
    ordered = np.empty(sum(len(p) for p in parts), dtype=np.uint64)
    at = 0
    while parts:
        part = parts.pop(0)
        ordered[at:at + len(part)] = part
        at += len(part)
    ordered.sort()
    if not (ordered[1:] == ordered[:-1]).any():
        return None
    del ordered
    # repeats: the precise path hashes the IDs again, in file order, to find their lines
    blocks = TableStream(path, na_values=sorted(stream.na_tokens), chunk_rows=stream.chunk_rows,
                         kinds=stream.final_kinds(), text_columns=stream.text_columns)
    hashes = np.concatenate([_id_hashes(_id_texts(b.frame[id_column])) for b in blocks])
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if not len(repeat):
        return None
    # for each repeated row, the first row with its hash (stable sort: file order within equal hashes)
    run_start = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]], np.arange(len(ordered)), 0))
    pairs = sorted(zip(order[repeat], order[run_start[repeat]]))
    wanted = {int(p) for pair in pairs[:50] for p in pair}
    found: dict[int, tuple[str, int]] = {}
    start = 0
    for block in TableStream(path, na_values=sorted(stream.na_tokens), chunk_rows=stream.chunk_rows,
                             kinds=stream.final_kinds(), text_columns=stream.text_columns):
        inside = [p for p in wanted if start <= p < start + len(block.frame)]
        if inside:
            ids = _id_texts(block.frame[id_column])
            for p in inside:
                found[p] = (ids.iloc[p - start], block.line_of(p - start))
        start += len(block.frame)
        if len(found) == len(wanted):
            break
    for later, first in pairs[:50]:
        (value, line), (first_value, first_line) = found[int(later)], found[int(first)]
        if value == first_value:  # not a mere hash collision
            n = len(repeat)
            return (f"file {stream.source!r}, column {id_column!r}: ID {value!r} appears on line {first_line} "
                    f"and again on line {line} ({n} duplicate ID{'s' if n != 1 else ''} in all); "
                    "remove the duplicates")
    return None


def predict_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path,
                 na_values: list[str] | tuple[str, ...] = (), id_column: str | None = None, *,
                 probabilities: bool = False, strict: bool = False,
                 unusual_above: float | None = None, chunk_rows: int = CHUNK_ROWS,
                 progress: Callable[["StreamReport"], None] | None = None,
                 threads: int | None = None) -> "StreamReport":
    """Score the table in ``input_path`` with the model in ``model_dir``, writing ``output_path`` as it goes.

    The table is read and scored in blocks of ``chunk_rows`` rows (memory bounded by
    the block, not the table, see :func:`score_chunks`); the output, the same bytes as
    :func:`predict_table` followed by ``to_csv`` gives, is written to a hidden file
    beside ``output_path`` and renamed onto it at the end, so an interrupted or failed
    run leaves any earlier output as it was. The output may not be the input or the model.
    ``progress`` is called after each block with the :class:`StreamReport` so far.

    ``probabilities``, ``strict``: see :func:`predict_table`. ``unusual_above`` replaces
    the model's training percentile above which a customer is ``Unusual`` (the run's
    ``monitoring.unusual_percentile``, 99 by default); it is checked like that setting.
    ``threads``: slices of each block scored side by side (default :func:`scoring_threads`);
    the output is the same bytes for any number.
    """
    threads = scoring_threads() if threads is None else int(threads)
    if unusual_above is not None:  # one rule for the percentile: the config's
        unusual_above = RunConfig().with_overrides(
            monitoring__unusual_percentile=unusual_above,
            names={"monitoring__unusual_percentile": "--unusual-above"}).monitoring.unusual_percentile
    check_output_file(output_path, {"--input": input_path, "--model": None})
    recover(model_dir)
    model = load_model(model_dir)
    if model.monitor is not None and unusual_above is not None:
        model.monitor.novelty_.set_params(threshold=unusual_above)
    kinds, id_choice = None, None
    for _attempt in range(3):
        report = StreamReport()

        def blocks():
            for scored in score_chunks(model, input_path, na_values=na_values, id_column=id_column,
                                       chunk_rows=chunk_rows, probabilities=probabilities, strict=strict,
                                       kinds=kinds, report=report, threads=threads, _id_choice=id_choice):
                yield scored
                if progress is not None:  # the block is written
                    progress(report)

        try:
            # BLAS and OpenMP on one thread each: on (100,000 x 8) blocks their worker threads cost more
            # than they save (the monitor's products 8x the CPU time on a busy 2-core machine), and
            # the second core is busy reading and formatting the neighbouring blocks
            with threadpool_limits(limits=1):
                write_csv_blocks(output_path, blocks())
            return report
        except TypingChanged as exc:  # rare: score again as the whole table reads
            kinds, id_choice = exc.kinds, exc.id_choice or id_choice
    raise AssertionError("unreachable: the third pass has every typing and the ID column fixed")


def _result_files(result: TrainResult) -> dict[str, bytes]:
    """The files of a results folder: tables, summary, figures, texts and the report, by relative path."""
    files = {f"{name}.csv": csv_bytes(table) for name, table in result.tables.items()}
    files["run_summary.json"] = json_bytes(result.summary)
    files.update({f"plots/{name}.png": png for name, png in result.figures.items()})
    files.update({name: text.encode("utf-8") for name, text in result.texts.items()})
    files["report.html"] = render_run_report(result).encode("utf-8")
    return files


def write_training_outputs(result: TrainResult, models_dir: str | Path | None = None,
                           results_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Write the model folder and the results folder of a run, atomically (see :func:`custseg.io.writing.write_run`)."""
    models_dir = Path(models_dir or result.config.models_dir)
    results_dir = Path(results_dir or result.config.results_dir)
    model = model_files(result.pipeline, result.schema, result.config.to_dict(),
                        cluster_names={int(d.segment): d.name for d in result.descriptions}, monitor=result.monitor)
    return write_run(models_dir, model, results_dir, _result_files(result), retire=TRAIN_OUTPUTS)


#: Every results file ``custseg train`` may write (relative paths): those a run does not write (no
#: test table this time, --no-figures) are the replaced run's and are retired with it.
TRAIN_OUTPUTS = (*(f"{name}.csv" for name in RESULT_TABLES), "run_summary.json", "report.html", "segments.md",
                 "drift.md", *(f"plots/{name}.png" for name in REPORT_FIGURES))


# -- the report --------------------------------------------------------------------------------------------
def render_run_report(result: TrainResult) -> str:
    """The HTML report of a run, from the run's data alone (nothing is read)."""
    return render_report(summary=result.summary, tables=result.tables, figures=result.figures,
                         descriptions=result.descriptions, schema=result.schema)


def write_report(result: TrainResult, results_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` of ``result`` into ``results_dir`` (the run's own by default), atomically."""
    folder = Path(results_dir or result.config.results_dir)
    write_into(folder, {"report.html": render_run_report(result).encode("utf-8")})
    return folder / "report.html"


def rebuild_report(models_dir: str | Path = "models", results_dir: str | Path = "results") -> Path:
    """``custseg report``: rebuild the run from its folders (:func:`load_run`) and write its report again."""
    results = Path(results_dir)
    if results.is_dir() and not os.access(results, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the report into {str(results)!r} (the folder is read-only); make it "
                        "writable or give another --results-dir")
    result = load_run(models_dir, results)
    try:
        html = render_run_report(result)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        # a results file edited by hand (or by another tool) with a value the report cannot place
        raise DataError(f"the files in {str(results)!r} hold a value the report cannot use ({type(exc).__name__}: "
                        f"{str(exc)[:80]}); run 'custseg train' again") from None
    write_into(results, {"report.html": html.encode("utf-8")})
    return results / "report.html"


def load_run(models_dir: str | Path = "models", results_dir: str | Path = "results") -> TrainResult:
    """The :class:`TrainResult` of a run, read back from the model and results folders it wrote.

    The training table is not read: everything the report shows was written by the run
    (tables, figures, ``run_summary.json`` with the segment descriptions).

    Raises
    ------
    ModelFormatError
        If the model folder is missing or damaged.
    DataError
        If ``run_summary.json`` is missing or unreadable, or a results file holds a value
        of the wrong kind.
    """
    model = load_model(models_dir)
    results = Path(results_dir)
    summary_path = results / "run_summary.json"
    if not summary_path.is_file():
        raise DataError(f"{str(summary_path)!r} does not exist; run 'custseg train' first, "
                        "or give the folder it wrote with --results-dir")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read {str(summary_path)!r} ({exc}); run 'custseg train' again") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("segments"), list):
        raise DataError(f"{str(summary_path)!r} holds no segment descriptions (written by an older custseg?); "
                        "run 'custseg train' again")
    try:
        config = RunConfig.from_dict(summary.get("settings") or model.settings or {}, source=str(summary_path))
        descriptions = [SegmentDescription(**d) for d in summary["segments"]]
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{str(summary_path)!r} cannot be read ({exc}); run 'custseg train' again") from None
    schema = model.schema if model.schema is not None else (
        Schema.from_dict(summary["schema"]) if summary.get("schema") else None)
    if not (results / "training_results.csv").is_file():
        raise DataError(f"{str(results / 'training_results.csv')!r} does not exist; run 'custseg train' first, "
                        "or give the folder it wrote with --results-dir")
    n_clusters = len(model.pipeline.cluster_centers_)
    tables = {name: table for name in RESULT_TABLES
              if (table := _read_result_table(results / f"{name}.csv", name, n_clusters)) is not None}
    # a run that drew none shows none (a PNG there now is not its own)
    figures = {name: (results / "plots" / f"{name}.png").read_bytes() for name in REPORT_FIGURES
               if config.plots.figures and (results / "plots" / f"{name}.png").is_file()}
    texts = {name: (results / name).read_text(encoding="utf-8") for name in ("segments.md", "drift.md")
             if (results / name).is_file()}
    return TrainResult(pipeline=model.pipeline, schema=schema, config=config, tables=tables, figures=figures,
                       texts=texts, descriptions=descriptions, summary=summary, monitor=model.monitor)


def _read_result_table(path: Path, name: str, n_clusters: int) -> pd.DataFrame | None:
    """A results table as the run wrote it, checked: numbers are numbers, clusters are the model's 0..k-1.

    Segments and IDs stay text (a segment called 'true' is not a boolean); only an empty
    cell is missing.
    """
    if not path.is_file():
        return None
    return _parse_result_table(path, str(path), name, n_clusters)


def _parse_result_table(source: Path | io.BytesIO, path: str, name: str, n_clusters: int) -> pd.DataFrame:
    """The checks of :func:`_read_result_table` on a file or on bytes (``path`` names it in errors)."""
    try:
        table = pd.read_csv(source, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path!r} ({type(exc).__name__}); run 'custseg train' again") from None
    for column in _NUMERIC_COLUMNS.get(name, []):
        if column in table and column != "Cluster" and not pd.api.types.is_numeric_dtype(table[column]):
            bad = pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"file {path!r}, line {row + 2}, column {column!r}: {table[column].iloc[row]!r} "
                            "is not a number; run 'custseg train' again to rewrite the results")
    if "Cluster" in table:
        clusters = pd.to_numeric(table["Cluster"], errors="coerce")
        bad = clusters.isna() | (clusters % 1 != 0) | (clusters < 0) | (clusters >= n_clusters)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"file {path!r}, line {row + 2}, column 'Cluster': {table['Cluster'].iloc[row]!r} "
                            f"is not a cluster of the model (0..{n_clusters - 1}); the file was edited: run "
                            "'custseg train' again")
        table["Cluster"] = clusters.astype(int)
    return table


# -- choosing k on a table -----------------------------------------------------------------------------
@dataclass
class KSelectionRun:
    """:func:`~custseg.evaluation.selection.select_k` on the latent space of a freshly trained autoencoder.

    Attributes
    ----------
    selection : KSelection
    business_k : int
        The number of segments asked for (the config's ``clustering.n_clusters``).
    source : str
        The training file.
    n_customers : int
    epochs : int
        Epochs the autoencoder trained for.
    seed : int
    dpi : int
        Resolution of the figure.
    """

    selection: KSelection
    business_k: int
    source: str
    n_customers: int
    epochs: int
    seed: int
    dpi: int = 120

    def summary_lines(self) -> list[str]:
        """What the command prints after the table."""
        sel = self.selection
        return [f"Recommended k={sel.recommended_k}: {sel.reason}.",
                f"Asked for: {sel.describe_k(self.business_k)}.",
                "Note: the stability is K-Means' on this one trained autoencoder (seed "
                f"{self.seed}); retraining the autoencoder with another seed moves customers between clusters "
                "far more ('custseg compare' measures that)."]


def run_k_selection(config: RunConfig, *, min_stability: float = MIN_STABILITY,
                    progress: Callable[[str], None] = _noop) -> KSelectionRun:
    """Train the reference autoencoder once (``config.seed``), then select k on its latent features.

    The autoencoder is the one ``custseg train`` fits with the same settings and seed,
    and the scan is the one ``train`` writes (``k_selection.k_min`` .. ``k_max``,
    ``n_init``, ``n_resamples``, ``silhouette_sample``), so both describe the same space
    with the same table.
    """
    config = config.model_copy(deep=True)
    config.data.test = None  # only the training table is clustered
    train_t, _, schema = load_tables(config)
    frame = train_t.frame
    ks = config.k_selection
    if ks.k_max >= len(frame):
        raise DataError(f"file {train_t.source!r} has {len(frame)} customers; k up to {ks.k_max} needs more. "
                        "Give a smaller --max")
    label = schema.label_column
    y = frame[label] if label else None
    pipeline = build_pipeline(config, schema)
    # K-Means of the pipeline itself is not needed here; one init keeps the fit short
    pipeline.set_params(n_init=1)
    # one BLAS/OpenMP thread, as in train: K-Means threads spin-wait for each other on a busy machine
    # (select_k's scan took 23.5 CPU-s with two and 13.4 with one in the tests), and the scan does not
    # depend on the machine's core count
    with threadpool_limits(limits=1):
        pipeline.fit(frame, None if y is None else y.map(lambda v: v if pd.isna(v) else _id_text(v)))
        epochs = len(pipeline.embedder_.history_)
        latent, space_name = clustering_space(pipeline, pipeline.transform(frame), random_state=config.seed)
        progress(f"autoencoder: {epochs} epochs (best {best_epoch(pipeline)}); "
                 f"scanning k={ks.k_min}..{ks.k_max} on {latent.shape[1]} {_SPACE_NAMES[space_name]}")
        selection = select_k(latent, range(ks.k_min, ks.k_max + 1), n_resamples=ks.n_resamples, n_init=ks.n_init,
                             random_state=config.seed, silhouette_sample=ks.silhouette_sample or None,
                             min_stability=min_stability, progress=progress)
    selection.settings.update(space=_SPACE_NAMES[space_name], seed=config.seed)
    return KSelectionRun(selection=selection, business_k=config.clustering.n_clusters, source=train_t.source,
                         n_customers=len(frame), epochs=epochs, seed=config.seed, dpi=config.plots.dpi)


def check_scan_folder(results_dir: str | Path) -> None:
    """Refuse a folder holding a training run's results: its ``k_selection.csv`` is that run's scan, and
    ``custseg report`` would show another network's scan as the run's."""
    if (Path(results_dir) / "run_summary.json").is_file():
        raise DataError(f"folder {str(results_dir)!r} holds the results of a training run, whose k_selection.csv "
                        "is that run's own scan; give select-k another --results-dir (by default it writes "
                        "into results/select-k)")


def write_k_selection(run: KSelectionRun, results_dir: str | Path) -> list[Path]:
    """Write ``k_selection.csv`` (the table ``train`` writes) and ``plots/k_selection.png`` into ``results_dir``
    (not a training run's results folder: :func:`check_scan_folder`)."""
    check_scan_folder(results_dir)
    png = render_png(plot_k_selection(run.selection, chosen_k=run.business_k), run.dpi)
    return write_into(results_dir, {"k_selection.csv": csv_bytes(run.selection.to_frame()),
                                    "plots/k_selection.png": png})


# -- comparing methods ---------------------------------------------------------------------------------
def run_comparison(config: RunConfig, *, n_seeds: int = 5, methods: Sequence[str] | None = None,
                   supervised: bool = True, silhouette_sample: int | None = None, held_out_folds: bool = True,
                   progress: Callable[[str], None] = _noop) -> ComparisonResult:
    """Read the tables ``config`` names and :func:`~custseg.evaluation.comparison.compare_methods` on them.

    The seeds are ``config.seed``, ``config.seed + 1``, ... (``n_seeds`` of them); k is
    ``config.clustering.n_clusters``; the autoencoder and K-Means settings are the config's.
    """
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise ConfigError(f"The 'n_seeds' parameter must be an int >= 1. Got {n_seeds!r} instead.")
    train_t, test_t, schema = load_tables(config)
    return compare_methods(train_t.frame, schema, test_frame=None if test_t is None else test_t.frame,
                           n_clusters=config.clustering.n_clusters,
                           seeds=range(config.seed, config.seed + n_seeds), methods=methods, supervised=supervised,
                           config=config, silhouette_sample=silhouette_sample, source=train_t.source,
                           held_out_folds=held_out_folds, progress=progress)


def write_comparison(result: ComparisonResult, output: str | Path, dpi: int = 120) -> list[Path]:
    """Write ``output`` (the per-run CSV) and, beside it, the ``.md`` summary and the ``.png`` figure."""
    output = Path(output)
    if output.is_dir():
        raise DataError(f"--output {str(output)!r} is a folder; give a file name such as comparison.csv")
    if output.suffix.lower() in (".md", ".png"):
        raise DataError(f"--output {str(output)!r} names the summary or the figure; give the CSV file, such as "
                        "comparison.csv (the .md and .png files are written beside it)")
    folder = output.parent if str(output.parent) else Path(".")
    return write_into(folder, {output.name: csv_bytes(result.runs),
                               output.with_suffix(".md").name: result.to_markdown().encode("utf-8"),
                               output.with_suffix(".png").name: render_png(plot_comparison(result), dpi)})


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


# -- drift between two tables -------------------------------------------------------------------------
def drift_tables(reference_path: str | Path, new_path: str | Path, *, model_dir: str | Path | None = None,
                 na_values: list[str] | tuple[str, ...] = (), random_state: int = 0) -> DriftReport:
    """Read two tables and compare them with :func:`custseg.monitoring.drift_report`.

    The column roles come from the model in ``model_dir`` if given (and both tables are
    then scored, so the shift in predicted segments is reported), else they are inferred
    from the reference table; known segments present in both tables are compared too.

    Returns
    -------
    DriftReport
    """
    ref_segments = new_segments = None
    if model_dir is not None:
        model = load_model(model_dir)
        na = list(dict.fromkeys([*model.settings.get("data", {}).get("na_values", []), *na_values]))
        schema = model.schema
        if schema is None:
            raise DataError(f"model folder {str(model_dir)!r} holds no schema; retrain it with 'custseg train'")
        # both tables read as the model reads a table (its text columns stay text in both)
        ref_t, new_t = (read_table(path, na_values=na, text_columns=schema.text_columns())
                        for path in (reference_path, new_path))
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


def write_drift(report: DriftReport, output_dir: str | Path, dpi: int = 100) -> list[Path]:
    """Write drift.csv, drift.md and plots/drift.png into ``output_dir`` (other files there are left alone)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"--output {str(output_dir)!r} is a file; give a folder for drift.csv, drift.md and the figure")
    png = render_png(plots.plot_drift(report.features, psi_threshold=report.settings.get("psi_threshold", 0.1)), dpi)
    return write_into(output_dir, {"drift.csv": csv_bytes(report.features[DRIFT_COLUMNS]),
                                   "drift.md": drift_markdown(report).encode("utf-8"), "plots/drift.png": png})
