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
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ._version import __version__
from .io.atomic import (check_output_file, check_output_folders, commit_outputs, merge_into, output_lock, recover,
                        staging_dir)
from .embedders.autoencoder import AutoencoderEmbedder
from .clustering import mapping_table
from .evaluation.selection import scan_k
from .config import RunConfig
from .exceptions import DataError
from .io.chunks import CHUNK_ROWS, TableStream
from .io.datasets import resolve_default_path
from .io.reading import LoadedTable, missing_report, read_table
from .io.writing import csv_rows
from .report.maps import pca_coordinates, tsne_coordinates
from .evaluation.metrics import external_metrics, internal_metrics
from .persistence import load_model, model_files, save_model, write_files, MANIFEST
from .pipeline import SegmentationPipeline
from .preprocessing import CustomerPreprocessor
from .profiling import describe_segments, profile_segments, segments_markdown
from .report.html import build_report
from .schema import Schema, category_text, infer_schema

__all__ = ["TrainResult", "train", "write_training_outputs", "PredictResult", "predict_table", "predict_file",
           "score_chunks", "StreamReport", "TypingChanged", "load_tables", "cluster_characteristics"]

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
                         test_table=None if test_t is None else test_t.frame)
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
        _evaluate(result, latent, ids, known if has_known else None, test_t, echo)
        result.summary["data"]["train"].update(delimiter=train_t.delimiter,
                                               numeric_from_text=train_t.numeric_from_text)
        _draw(result, latent, ids, known if has_known else None)
        tsne_idx, tsne_xy = tsne_job.result()
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
                               segment_names={int(d.segment): d.name for d in result.descriptions})
        scored.table = scored.table.rename(columns={scored.id_column: "ID"})
        result.tables["test_predictions_detailed"] = scored.table
        if pipeline.mapping_ is not None:
            result.tables["submission"] = scored.table[["ID", "Predicted_Segment"]].rename(
                columns={"Predicted_Segment": "Segmentation"})
        test_info = {"rows": len(test_t.frame), "extra_columns": scored.extra_columns,
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
    result.summary["cluster_names"] = {str(c): n for c, n in names.items()}


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
                  id_column: str | None = None, segment_names: dict[int, str] | None = None) -> PredictResult:
    """Score a loaded table: its ID column, Cluster, Segment_Name, Predicted_Segment, Distance_To_Centroid,
    Reconstruction_Error.

    The first column keeps the table's own ID column name and values (see :func:`prediction_ids`);
    the output has exactly one row per input row, in input order. For a table in a file,
    :func:`score_chunks` gives the same rows block by block in bounded memory.
    """
    frame = table.frame
    extra: list[str] = []
    if schema is not None:
        extra = schema.check(frame, table.source, table.line_of)
    id_name, ids, notice = prediction_ids(frame, schema, id_column, table.source)
    if id_name != "Row":
        _check_ids(table, id_name)
        extra = [c for c in extra if c != id_name]
    unseen = pipeline.preprocessor_.unseen_categories(frame)
    out = _scored_rows(pipeline, frame, id_name, ids, segment_names)
    if len(out) != len(frame):  # the promise of this function; cheap to keep checking
        raise DataError(f"file {table.source!r}: {len(frame)} rows in but {len(out)} scored; please report this bug")
    return PredictResult(table=out, extra_columns=extra, unseen_categories=unseen, id_column=id_name,
                         id_notice=notice)


def _scored_rows(pipeline: SegmentationPipeline, frame: pd.DataFrame, id_name: str, ids: pd.Series,
                 segment_names: dict[int, str] | None) -> pd.DataFrame:
    """The output rows of predict for ``frame``: ID column first, then the pipeline's scores."""
    scores = pipeline.score_table(frame).reset_index(drop=True)
    if segment_names:
        clusters = scores["Cluster"].to_numpy()
        names = np.array([segment_names.get(c, "") for c in range(int(clusters.max(initial=0)) + 1)], dtype=object)
        scores.insert(1, "Segment_Name", names[clusters])
    return pd.concat([pd.DataFrame({id_name: ids.to_numpy()}), scores], axis=1)


def score_chunks(model, path: str | Path, *, na_values: list[str] | tuple[str, ...] = (), id_column: str | None = None,
                 chunk_rows: int = CHUNK_ROWS, kinds: dict[str, str] | None = None,
                 report: "StreamReport | None" = None, _id_choice: Any = None) -> Iterator[pd.DataFrame]:
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
    chunk_rows : int
        Rows per block; memory grows with it, not with the table.
    kinds : dict, optional
        Column typing fixed in advance (see :class:`~custseg.io.chunks.TableStream`).
    report : StreamReport, optional
        Filled with what was noticed (rows, ID column and notice, extra columns, unseen
        categories, progress).

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
    stream = TableStream(path, na_values=na, chunk_rows=chunk_rows, kinds=kinds)
    numeric = set(schema.names("numeric")) if schema is not None else set()
    texts = set(pipeline.preprocessor_.categories_)
    id_name: str | None = None   # None: rows numbered 1..n
    candidates: list[str] = []   # guessed ID columns, checked over the whole table at the end
    hashes: dict[str, list[np.ndarray]] = {}
    complete: dict[str, bool] = {}
    report.rows = 0
    for block in stream:
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
            hashes[name].append(pd.util.hash_array(values.to_numpy(dtype=object)))
            if name == id_name:
                ids = values
        if id_name is None:
            ids = pd.Series(np.arange(report.rows + 1, report.rows + len(frame) + 1))
        stream.check_numbers(numeric)  # float32 cannot hold them: named before the network meets them
        for column, counts in pipeline.preprocessor_.unseen_categories(frame).items():
            tally = report.unseen_categories.setdefault(column, {})
            for value, n in counts.items():
                tally[value] = tally.get(value, 0) + n
        scored = _scored_rows(pipeline, frame, report.id_column, ids, model.cluster_names)
        report.rows += len(frame)
        report.fraction = stream.fraction
        yield scored
    stream.check_numbers()
    changed = stream.changed_columns(texts | set(hashes))
    if changed:
        raise TypingChanged(stream.final_kinds(), changed)
    if candidates and _id_choice is None:  # a guessed ID column: is it the one the whole table gives?
        valid = [c for c in candidates
                 if complete[c] and _duplicate(path, np.concatenate(hashes[c]), stream, c) is None]
        final = _pick_id(valid)
        if final != id_name:
            raise TypingChanged(stream.final_kinds(), [], id_choice=(final,))
    elif id_name is not None and not candidates:
        duplicate = _duplicate(path, np.concatenate(hashes[id_name]), stream, id_name)
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
                                for c in pipeline.preprocessor_.kinds_ if c in report.unseen_categories}


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
    if not pd.api.types.is_numeric_dtype(ids):  # text (categories: mapped once per distinct value)
        return ids.map(lambda v: v if pd.isna(v) else _id_text(v)).astype(object)
    values = ids.to_numpy(dtype="float64")
    whole = np.isfinite(values) & (np.mod(values, 1) == 0) & (np.abs(values) < 2 ** 53)
    if whole.all():
        return pd.Series(values.astype(np.int64).astype(str).astype(object))
    return ids.map(lambda v: v if pd.isna(v) else _id_text(v)).astype(object)


def _duplicate(path, hashes: np.ndarray, stream: TableStream, id_column: str) -> str | None:
    """The error for duplicate IDs over the whole table, from 64-bit hashes, or None if every ID differs.

    A hash match is checked on the IDs themselves (read again), so a collision is no duplicate.
    """
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
                             kinds=stream.final_kinds()):
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
                 chunk_rows: int = CHUNK_ROWS, progress: Callable[[StreamReport], None] | None = None) -> StreamReport:
    """Score the table in ``input_path`` with the model in ``model_dir``, writing ``output_path`` as it goes.

    The table is read and scored in blocks of ``chunk_rows`` rows (memory bounded by
    the block, not the table, see :func:`score_chunks`); the output, the same bytes as
    :func:`predict_table` followed by ``to_csv`` gives, is written to a hidden file
    beside ``output_path`` and renamed onto it at the end, so an interrupted or failed
    run leaves any earlier output as it was. The output may not be the input or the model.

    Parameters
    ----------
    id_column : str, optional
        Column holding the customer IDs (default: the training ID column, else one named like an ID).
    progress : callable, optional
        Called after each block with the :class:`StreamReport` so far.

    Returns
    -------
    StreamReport
    """
    check_output_file(output_path, {"--input": input_path, "--model": None})
    recover(model_dir)
    model = load_model(model_dir)
    output_path = Path(output_path)
    kinds, id_choice = None, None
    for _attempt in range(3):
        report = StreamReport()
        try:
            with staging_dir(output_path) as staged:
                staged_file = staged / output_path.name
                with open(staged_file, "wb") as fh:
                    header = True
                    for scored in score_chunks(model, input_path, na_values=na_values, id_column=id_column,
                                               chunk_rows=chunk_rows, kinds=kinds, report=report,
                                               _id_choice=id_choice):
                        if header:
                            fh.write((",".join(scored.columns) + "\n").encode("utf-8"))
                            header = False
                        fh.write(csv_rows(scored, FLOAT_FORMAT))
                        if progress is not None:
                            progress(report)
                merge_into(staged, output_path.parent if str(output_path.parent) else ".")
            return report
        except TypingChanged as exc:  # rare: score again as the whole table reads
            kinds, id_choice = exc.kinds, exc.id_choice or id_choice
    raise AssertionError("unreachable: the third pass has every typing and the ID column fixed")


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
                        cluster_names={int(d.segment): d.name for d in result.descriptions})
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
