"""Scoring on a Dask cluster: the same model, the same checks, many partitions at once.

Needs the ``distributed`` extra (``pip install "custseg[distributed]"``). Nothing here is
distributed by hand: Dask schedules, custseg only gives it one function per partition.

* :func:`score_dask` scores a Dask DataFrame the user already has (``map_partitions``);
* :func:`score_files` reads and scores one file per partition, with the same door
  (:func:`~custseg.io.reading.read_table`) and the same checks as ``custseg predict``,
  so errors name the part file and its line;
* :func:`profile_dask` profiles the segments of a scored Dask table on the cluster:
  per-partition sums combined exactly (sizes, shares, means, counts, Cohen's d,
  effects), quartiles approximate (merged per-partition percentiles);
* :func:`predict_dask` is ``custseg predict --engine dask``: score a glob of files on a
  cluster (a :class:`~distributed.LocalCluster` when no scheduler is given) and write one
  CSV per input part, plus ``segment_profiles.csv`` and ``scoring.json``, atomically.

Each worker loads the model folder once (checksums verified by
:func:`~custseg.persistence.load_model`) and keeps it for every later partition; the
folder must be readable by the workers at the same path (a shared filesystem on a
real cluster). The manifest's checksum travels with the task, so a worker that finds
another model at that path refuses it instead of scoring with it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .exceptions import ConfigError, DataError, ModelFormatError
from .io.atomic import staging_dir, swap_directory
from .io.reading import read_table, table_from_frame
from .persistence import MANIFEST, LoadedModel, load_model
from .profiling import SegmentProfile, cramers_v
from .schema import Schema, category_text, text_columns_of
from .io.writing import FLOAT_FORMAT
from .workflow import predict_table

__all__ = ["score_dask", "score_files", "profile_dask", "predict_dask", "DaskPredictResult", "model_digest",
           "QUANTILES_APPROXIMATE"]

#: The quartiles of :func:`profile_dask` are merged from per-partition percentiles: approximate.
QUANTILES_APPROXIMATE = True
#: marks an output folder as written by predict_dask (the only kind it replaces)
SCORING_MARKER = "scoring.json"
_PERCENTILES = np.linspace(0, 100, 101)


def _dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("Dask scoring needs the 'distributed' extra: pip install \"custseg[distributed]\"") from None
    return dask, dd


# -- the model, once per worker ------------------------------------------------------------------
def model_digest(model_dir: str | Path) -> str:
    """SHA-256 of a model folder's manifest: it names every file's checksum, so it names the model."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        load_model(model_dir)  # raises the one-line error that explains what is wrong with the folder
    return hashlib.sha256(path.read_bytes()).hexdigest()


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _worker_model(model_dir: str, digest: str) -> LoadedModel:
    """The model of ``model_dir``, loaded and verified once per worker process."""
    key = (str(Path(model_dir).resolve()), digest)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            if model_digest(model_dir) != digest:
                raise ModelFormatError(f"model folder {model_dir!r} on this worker is not the model the client "
                                       "loaded (manifest checksum differs); give every worker the same folder")
            model = load_model(model_dir)  # verifies every file against the manifest
            _MODELS[key] = model
    return model


# -- scoring partitions ------------------------------------------------------------------------------
def _scored(model: LoadedModel, table, first_row: int, with_features: bool, id_column: str | None) -> pd.DataFrame:
    result = predict_table(model.pipeline, model.schema, table, id_column=id_column,
                           segment_names=model.cluster_names, monitor=model.monitor)
    out = result.table
    if result.id_column == "Row":
        # customers without IDs are numbered through the whole input, as one table would be
        out["Row"] = np.arange(first_row, first_row + len(out))
    if with_features and model.schema is not None:
        for name in model.schema.feature_columns:
            col = table.frame[name].to_numpy()
            out[name] = col.astype("float64") if model.schema.column(name).role == "numeric" else col.astype(object)
    return out


@dataclass(frozen=True)
class _ScoreFile:
    """Read one file and score it on a worker (a picklable callable for ``dd.from_map``)."""

    model_dir: str
    digest: str
    na_values: tuple[str, ...]
    with_features: bool
    id_column: str | None = None

    def __call__(self, path: str, first_row: int) -> pd.DataFrame:
        model = _worker_model(self.model_dir, self.digest)
        na = list(dict.fromkeys([*model.settings.get("data", {}).get("na_values", []), *self.na_values]))
        table = read_table(path, na_values=na, text_columns=text_columns_of(model.schema, self.id_column))
        return _scored(model, table, first_row, self.with_features, self.id_column)


@dataclass(frozen=True)
class _ScoreFrame:
    """Score one partition of a Dask DataFrame on a worker."""

    model_dir: str
    digest: str
    with_features: bool
    meta: pd.DataFrame
    id_column: str | None = None

    def __call__(self, part: pd.DataFrame, offsets: Sequence[int], partition_info: dict | None = None) -> pd.DataFrame:
        model = _worker_model(self.model_dir, self.digest)
        number = 0 if partition_info is None else int(partition_info["number"])
        if len(part) == 0:
            return self.meta
        na = model.settings.get("data", {}).get("na_values", [])
        table = table_from_frame(part, f"partition {number}", na, first_line=offsets[number] + 2,
                                 text_columns=text_columns_of(model.schema, self.id_column))
        return _scored(model, table, offsets[number] + 1, self.with_features, self.id_column)


def score_dask(frame, model_dir: str | Path, *, with_features: bool = False, id_column: str | None = None):
    """Score every partition of a Dask DataFrame with a saved model.

    Parameters
    ----------
    frame : dask.dataframe.DataFrame
        Customers, with the model's feature columns (any dtypes: each partition is
        checked and typed as ``custseg predict`` reads a Parquet file).
    model_dir : str or path
        Model folder written by ``custseg train``, readable by every worker.
    with_features : bool, default=False
        Also keep the model's feature columns, as read (what :func:`profile_dask` needs).
    id_column : str, optional
        As ``custseg predict --id-column``.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy: the columns ``custseg predict`` writes, one row per input row, in input
        order. Rows of a table without an ID column are numbered 1..n (column ``Row``)
        through the whole table, which costs one pass to count the rows of each partition.

    Raises
    ------
    CustsegError
        When computed, the first error of any partition, as ``custseg predict`` words it
        (``partition N, line L`` where it names the file and line).
    """
    digest = model_digest(model_dir)
    model = load_model(model_dir)
    # the output's columns (the ID column's name among them) from the first rows, scored here
    head = frame.head(5, npartitions=-1)
    meta = _scored(model, table_from_frame(head, "partition 0", model.settings.get("data", {}).get("na_values", []),
                                           text_columns=text_columns_of(model.schema, id_column)),
                   1, with_features, id_column).iloc[:0]
    offsets = [0] * frame.npartitions
    if meta.columns[0] == "Row":
        sizes = frame.map_partitions(len).compute()
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    return frame.map_partitions(_ScoreFrame(str(model_dir), digest, with_features, meta, id_column), offsets,
                                meta=meta, align_dataframes=False)


def _count_rows(path: str, na_values: tuple[str, ...]) -> int:
    return len(read_table(path, na_values=list(na_values)).frame)


def score_files(paths: Sequence[str | Path], model_dir: str | Path, *, na_values: Sequence[str] = (),
                with_features: bool = False, id_column: str | None = None):
    """Read and score files on the cluster, one partition per file, in the order given.

    Every file is read by :func:`~custseg.io.reading.read_table` on a worker and checked as
    ``custseg predict`` checks its input, so an error names the file, line, column and value.
    The first file is also read here, to learn the output's columns.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy scores as :func:`score_dask` gives them.
    """
    dask, dd = _dask()
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no input files to score; give --input a file or a pattern such as 'parts/*.parquet'")
    digest = model_digest(model_dir)
    score = _ScoreFile(str(model_dir), digest, tuple(na_values), with_features, id_column)
    meta = score(paths[0], 1).iloc[:0]
    first_rows = [1] * len(paths)
    if meta.columns[0] == "Row":
        counts = dask.compute(*[dask.delayed(_count_rows)(p, tuple(na_values)) for p in paths])
        first_rows = (np.concatenate([[0], np.cumsum(counts)[:-1]]) + 1).astype(int).tolist()
    return dd.from_map(score, paths, first_rows, meta=meta, divisions=[None] * (len(paths) + 1),
                       label="custseg-score", enforce_metadata=False)


# -- profiles combined over partitions -----------------------------------------------------------------
def _moments(x: np.ndarray) -> np.ndarray:
    """count, mean, sum of squared deviations of ``x`` (NaN already removed)."""
    n = len(x)
    if n == 0:
        return np.array([0.0, 0.0, 0.0])
    mean = float(x.mean())
    return np.array([float(n), mean, float(((x - mean) ** 2).sum())])


def _merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chan et al.'s pairwise combination: exact, and stable where sums of squares are not."""
    na, nb = a[0], b[0]
    if na == 0:
        return b.copy()
    if nb == 0:
        return a.copy()
    n = na + nb
    delta = b[1] - a[1]
    return np.array([n, a[1] + delta * nb / n, a[2] + b[2] + delta ** 2 * na * nb / n])


@dataclass
class _Partial:
    """What one partition contributes to the profile: sums and counts, merged by addition."""

    sizes: dict[int, int] = field(default_factory=dict)
    #: (feature, segment) -> [count, mean, M2]
    moments: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    #: (feature, segment) -> (percentiles, weight)
    sketches: dict[tuple[str, int], list[tuple[np.ndarray, float]]] = field(default_factory=dict)
    missing: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (feature, segment, value) -> count
    counts: dict[tuple[str, int, str], int] = field(default_factory=dict)
    whole: dict[str, bool] = field(default_factory=dict)


def _partial(part: pd.DataFrame, numeric: list[str], categorical: list[str]) -> _Partial:
    out = _Partial()
    labels = part["Cluster"].to_numpy()
    segments = np.unique(labels)
    for s in segments:
        out.sizes[int(s)] = int((labels == s).sum())
    for f in numeric:
        x = part[f].to_numpy(dtype="float64")
        present = ~np.isnan(x)
        out.whole[f] = bool(np.all(np.mod(x[present], 1) == 0))
        for s in segments:
            inside = x[(labels == s) & present]
            out.moments[(f, int(s))] = _moments(inside)
            out.missing[(f, int(s))] = int(((labels == s) & ~present).sum())
            if len(inside):
                out.sketches[(f, int(s))] = [(np.percentile(inside, _PERCENTILES), float(len(inside)))]
    for f in categorical:
        values = part[f].map(lambda v: v if pd.isna(v) else category_text(v))
        present = values.notna().to_numpy()
        for s in segments:
            out.missing[(f, int(s))] = int(((labels == s) & ~present).sum())
        grouped = pd.DataFrame({"s": labels[present], "v": values[present].to_numpy()}).value_counts()
        for (s, v), k in grouped.items():
            out.counts[(f, int(s), str(v))] = int(k)
    return out


def _merge(a: _Partial, b: _Partial) -> _Partial:
    for s, n in b.sizes.items():
        a.sizes[s] = a.sizes.get(s, 0) + n
    for key, m in b.moments.items():
        a.moments[key] = _merge_moments(a.moments.get(key, np.zeros(3)), m)
    for key, sk in b.sketches.items():
        a.sketches.setdefault(key, []).extend(sk)
    for key, n in b.missing.items():
        a.missing[key] = a.missing.get(key, 0) + n
    for key, n in b.counts.items():
        a.counts[key] = a.counts.get(key, 0) + n
    for f, w in b.whole.items():
        a.whole[f] = a.whole.get(f, True) and w
    return a


def _merged_quantiles(sketches: list[tuple[np.ndarray, float]]) -> dict[str, float]:
    """Median and quartiles from per-partition percentiles, each point weighted by its partition's size."""
    if not sketches:
        return {"median": np.nan, "q1": np.nan, "q3": np.nan}
    if len(sketches) == 1:  # one partition: its own percentiles are exact
        p = sketches[0][0]
        return {"median": float(p[50]), "q1": float(p[25]), "q3": float(p[75])}
    points = np.concatenate([p for p, _ in sketches])
    weights = np.concatenate([np.full(len(p), w / len(p)) for p, w in sketches])
    order = np.argsort(points, kind="stable")
    points, weights = points[order], weights[order]
    cum = (np.cumsum(weights) - weights / 2) / weights.sum()
    q1, median, q3 = np.interp([0.25, 0.5, 0.75], cum, points)
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


def _cohens_d_from_moments(inside: np.ndarray, rest: np.ndarray) -> float:
    """:func:`custseg.profiling.cohens_d` from counts, means and sums of squared deviations."""
    n1, n2 = inside[0], rest[0]
    if n1 == 0 or n2 == 0 or n1 + n2 < 3:
        return np.nan
    diff = float(inside[1] - rest[1])
    sd = float(np.sqrt((inside[2] + rest[2]) / (n1 + n2 - 2)))
    if sd == 0:
        return 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    return diff / sd


def _combined(moments: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(3)
    for m in moments:
        total = _merge_moments(total, m)
    return total


def _profile(p: _Partial, numeric: list[str], categorical: list[str]) -> SegmentProfile:
    segments = sorted(p.sizes)
    n = sum(p.sizes.values())
    sizes = pd.DataFrame({"segment": segments, "size": [p.sizes[s] for s in segments]})
    sizes["share"] = sizes["size"] / n
    num_rows, cat_rows, feat_rows, overall_num, overall_cat = [], [], [], [], []
    zero = np.zeros(3)
    for f in numeric:
        per = {s: p.moments.get((f, s), zero) for s in segments}
        everyone = _combined(list(per.values()))
        all_sketches = [sk for s in segments for sk in p.sketches.get((f, s), [])]
        overall_num.append({"feature": f, "mean": everyone[1] if everyone[0] else np.nan,
                            **_merged_quantiles(all_sketches),
                            "n_missing": sum(p.missing.get((f, s), 0) for s in segments)})
        for s in segments:
            inside = per[s]
            rest = _combined([per[t] for t in segments if t != s])
            num_rows.append({"segment": s, "feature": f, "mean": inside[1] if inside[0] else np.nan,
                             **_merged_quantiles(p.sketches.get((f, s), [])),
                             "cohens_d": _cohens_d_from_moments(inside, rest)})
            # point-biserial correlation of membership and value, from the same sums
            effect = 0.0
            if everyone[0] >= 2 and inside[0] and rest[0] and everyone[2] > 0:
                n_all = everyone[0]
                effect = abs(float((inside[1] - rest[1]) * np.sqrt(inside[0] * rest[0]) / n_all
                                   / np.sqrt(everyone[2] / n_all)))
            feat_rows.append({"segment": s, "feature": f, "kind": "numeric", "effect": effect,
                              "n_missing": p.missing.get((f, s), 0)})
    for f in categorical:
        cats = sorted({v for (g, _, v) in p.counts if g == f})
        table = np.array([[p.counts.get((f, s, c), 0) for c in cats] for s in segments], dtype="int64")
        table = table.reshape(len(segments), len(cats))
        overall_counts = table.sum(axis=0)
        overall_share = overall_counts / max(overall_counts.sum(), 1)
        overall_cat += [{"feature": f, "value": c, "count": int(k), "share": float(q)}
                        for c, k, q in zip(cats, overall_counts, overall_share)]
        for i, s in enumerate(segments):
            counts, rest_counts = table[i], overall_counts - table[i]
            n_in, n_rest = counts.sum(), rest_counts.sum()
            for c, k, k_rest, p_all in zip(cats, counts, rest_counts, overall_share):
                share = k / n_in if n_in else np.nan
                # the indicator of value c: mean k/n, sum of squared deviations k (1 - k/n)
                inside = np.array([n_in, k / n_in if n_in else 0.0, k * (1 - k / n_in) if n_in else 0.0])
                rest = np.array([n_rest, k_rest / n_rest if n_rest else 0.0,
                                 k_rest * (1 - k_rest / n_rest) if n_rest else 0.0])
                cat_rows.append({"segment": s, "feature": f, "value": c, "count": int(k), "share": share,
                                 "share_overall": float(p_all), "lift": share / p_all,
                                 "cohens_d": _cohens_d_from_moments(inside, rest)})
            feat_rows.append({"segment": s, "feature": f, "kind": "categorical",
                              "effect": cramers_v(np.vstack([counts, rest_counts])),
                              "n_missing": p.missing.get((f, s), 0)})
    return SegmentProfile.from_rows(n, numeric, categorical, sizes, num_rows, cat_rows, feat_rows, overall_num,
                                    overall_cat, whole_number_features=[f for f in numeric if p.whole.get(f, False)])


def _profile_parts(parts: list, numeric: list[str], categorical: list[str]):
    """A lazy SegmentProfile from delayed scored partitions: one partial per partition, merged in a tree."""
    dask, _ = _dask()
    partials = [dask.delayed(_partial)(part, numeric, categorical) for part in parts]
    while len(partials) > 1:  # pairwise, so no single task holds every partial
        partials = [dask.delayed(_merge)(*partials[i:i + 2]) if i + 1 < len(partials) else partials[i]
                    for i in range(0, len(partials), 2)]
    return dask.delayed(_profile)(partials[0], numeric, categorical)


def profile_dask(scored, *, numeric: Sequence[str], categorical: Sequence[str]) -> SegmentProfile:
    """Profile the segments of a scored Dask table on the cluster.

    Parameters
    ----------
    scored : dask.dataframe.DataFrame
        With a ``Cluster`` column and the feature columns (``score_dask(..., with_features=True)``).
    numeric, categorical : sequence of str
        Feature columns, as for :func:`~custseg.profiling.profile_segments`.

    Returns
    -------
    SegmentProfile
        The same tables as :func:`~custseg.profiling.profile_segments` gives on the whole
        table (no known-segment composition): sizes, shares, means, counts, shares and
        lifts of categories, Cohen's d and effects are exact (combined from per-partition
        counts, means and sums of squared deviations); medians and quartiles are
        approximate (:data:`QUANTILES_APPROXIMATE`): merged from each partition's
        percentiles, weighted by its size.
    """
    return _profile_parts(scored.to_delayed(), list(numeric), list(categorical)).compute()


# -- the command ------------------------------------------------------------------------------------
@dataclass
class DaskPredictResult:
    """What ``custseg predict --engine dask`` did."""

    rows: int
    files: list[Path]
    parts: list[str]
    profile: SegmentProfile | None
    scheduler: str
    workers: int


def _input_files(pattern: str | Path) -> list[str]:
    pattern = str(pattern)
    if Path(pattern).is_dir():
        files = sorted(str(p) for p in Path(pattern).iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = sorted(glob.glob(pattern))
    if not files:
        raise DataError(f"--input {pattern!r} matches no file; give a file, a folder, or a pattern such as "
                        "'parts/*.parquet' (quoted, so the shell does not expand it)")
    return files


def _client(scheduler: str | None, n_workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("Dask scoring needs the 'distributed' extra: pip install \"custseg[distributed]\"") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise DataError(f"cannot reach the Dask scheduler at {scheduler!r} ({type(exc).__name__}); check "
                            "--scheduler, or leave it out to start a local cluster") from None
    if n_workers < 1:
        raise ConfigError(f"--workers must be an int >= 1. Got {n_workers} instead.")
    # one thread per worker process: scoring is numpy/torch work that holds the GIL in places
    # dashboard on any free port: None would still take 8787 and warn when it is taken
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)  # the command prints its own one-line summary
    return Client(cluster), cluster


def predict_dask(model_dir: str | Path, input: str | Path, output: str | Path, *, scheduler: str | None = None,
                 n_workers: int = 2, na_values: Sequence[str] = (), profile: bool = True,
                 id_column: str | None = None) -> DaskPredictResult:
    """Score files on a Dask cluster and write the results into folder ``output``, atomically.

    ``output`` receives ``part-00000.csv``, ... (one per input file, in sorted order, each
    exactly what ``custseg predict`` writes for that part), ``segment_profiles.csv`` (see
    :func:`profile_dask`) and ``scoring.json`` (model checksum, inputs, rows). An existing
    ``output`` is replaced only if an earlier run wrote it.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); a local cluster of
        ``n_workers`` processes when None.
    """
    dask, _ = _dask()
    files = _input_files(input)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {str(output)!r} is a file; with --engine dask give a folder, such as out/")
    digest = model_digest(model_dir)
    model = load_model(model_dir)
    schema: Schema | None = model.schema
    numeric = schema.names("numeric") if schema else []
    categorical = (schema.names("categorical") + schema.names("ordinal")) if schema else []
    client, cluster = _client(scheduler, n_workers)
    try:
        with staging_dir(output) as staged:
            with_features = profile and schema is not None
            scored = score_files(files, model_dir, na_values=na_values, with_features=with_features,
                                 id_column=id_column)
            features = set(schema.feature_columns) if with_features else set()
            columns = [c for c in scored.columns if c not in features]
            names = [f"part-{i:05d}.csv" for i in range(len(files))]
            parts = scored.to_delayed()  # once: writing and profiling share each partition's scoring
            writes = [dask.delayed(_write_part)(part, columns, str(staged / name)) for part, name in zip(parts, names)]
            jobs = [dask.delayed(sum)(writes)]
            if profile and schema is not None:
                jobs.append(_profile_parts(parts, numeric, categorical))
            done = dask.compute(*jobs)
            rows, seg_profile = int(done[0]), (done[1] if len(done) > 1 else None)
            if seg_profile is not None:
                seg_profile.to_frame().to_csv(staged / "segment_profiles.csv", index=False,
                                              float_format=FLOAT_FORMAT, lineterminator="\n")
            summary = {"model": str(model_dir), "model_manifest_sha256": digest, "rows": rows,
                       "parts": dict(zip(names, files)), "quantiles": "approximate (merged per-part percentiles)"}
            (staged / SCORING_MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            swap_directory(staged, output, marker=SCORING_MARKER)
        workers = len(client.nthreads())
        address = client.scheduler.address if client.scheduler else ""
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return DaskPredictResult(rows=rows, files=sorted(output.iterdir()), parts=files, profile=seg_profile,
                             scheduler=scheduler or f"local ({address})", workers=workers)


def _write_part(part: pd.DataFrame, columns: list[str], path: str) -> int:
    """One part's scores as ``custseg predict`` writes them (same columns, number format, line ends)."""
    part[columns].to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return len(part)
