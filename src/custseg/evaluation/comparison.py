"""Does the autoencoder help? Every clustering method on the same data, k and seeds, side by side.

:func:`compare_methods` fits each method of :data:`METHODS` once per seed on the
training table and measures, for each fit:

* internal metrics (silhouette, Davies-Bouldin, Calinski-Harabasz) in the method's
  own space, and again in one common *reference space* (numeric features median-imputed
  and standardized, categorical features mode-imputed and one-hot encoded, see
  :class:`ReferenceEncoder`), because silhouettes from different spaces do not compare;
* external metrics against the known segments of the training rows: ARI, NMI, and the
  mapped accuracy (each cluster mapped to its majority segment);
* the mapped accuracy on *returning customers*: rows of the test table whose ID also
  appears in the training table with a known segment. Their cluster is predicted from
  their test-table attributes with the method fitted on the training table, mapped to a
  segment, and compared with their training segment;
* the fit time;

and, per method, the seed-to-seed stability (mean pairwise ARI between the seeds'
labelings of the training rows).

Every method is also scored on held-out folds (``held_out_*`` columns, 5-fold as below),
so every row of the table compares alike. A method that learns from the known segments
(``Method.uses_known_segments``, the guided ensemble) is never scored on rows whose
segment it saw: its ARI, NMI and mapped accuracy are held-out scores (5-fold, stratified:
fit on four folds with their segments, map the clusters on those rows, score the fifth;
ARI and NMI averaged over folds), and a returning customer is predicted by the fold model
that did not see their training row. Its silhouettes and seed-to-seed ARI come from a
fit on every row. The ``scoring`` column
says which rows were scored. A supervised classifier (gradient boosting, 5-fold
cross-validation) is added as a *ceiling*: no cluster -> segment mapping can be expected
to beat what a model trained on the segments reaches.

The methods and the reference space are in :mod:`custseg.evaluation.methods`.
:func:`custseg.workflow.run_comparison` reads the tables and runs this;
:func:`custseg.workflow.write_comparison` writes ``comparison.csv`` (one row per method
and seed), ``comparison.md`` (means and standard deviations) and ``comparison.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..clustering import map_clusters_to_segments
from ..config import RunConfig
from ..exceptions import ConfigError, DataError
from ..preprocessing import CustomerPreprocessor
from ..schema import Schema, category_text
from .methods import (GMM_N_INIT, KPROTOTYPES_N_INIT, LATENT_CLASS_N_INIT, METHODS, Method, ReferenceEncoder,
                      feature_roles)
from .metrics import external_metrics, internal_metrics, pairwise_ari

__all__ = ["returning_customers", "compare_methods", "comparison_markdown", "ComparisonResult", "SUPERVISED_NAME",
           "METRIC_COLUMNS"]

SUPERVISED_NAME = "supervised_ceiling"
CV_FOLDS = 5

METRIC_COLUMNS = ["fit_seconds", "own_silhouette", "own_davies_bouldin", "own_calinski_harabasz", "ref_silhouette",
                  "ref_davies_bouldin", "ref_calinski_harabasz", "ari", "nmi", "mapped_accuracy",
                  "returning_accuracy", "held_out_ari", "held_out_nmi", "held_out_accuracy",
                  "held_out_returning_accuracy", "stability_ari"]


def _noop(*_args, **_kwargs) -> None:
    return None


# -- returning customers ------------------------------------------------------------------------------------
def returning_customers(train_frame: pd.DataFrame, test_frame: pd.DataFrame | None, schema: Schema) -> pd.DataFrame:
    """Customers of the test table that are also in the training table with a known segment.

    IDs are compared as text (``462809.0`` and ``462809`` are the same customer).

    Returns
    -------
    DataFrame
        One row per such customer, in test-table order: ID, test_row and train_row
        (positions in the two tables) and Segment (the known segment from training).
        Empty if there is no test table, no ID column, or no label.
    """
    empty = pd.DataFrame({"ID": pd.Series(dtype=object), "test_row": pd.Series(dtype=int),
                          "train_row": pd.Series(dtype=int), "Segment": pd.Series(dtype=object)})
    id_col, label = schema.id_column, schema.label_column
    if test_frame is None or id_col is None or label is None or id_col not in test_frame.columns:
        return empty
    train_ids = train_frame[id_col].map(lambda v: None if pd.isna(v) else category_text(v))
    known = train_frame[label].notna().to_numpy() & train_ids.notna().to_numpy()
    position = {i: p for p, i in enumerate(train_ids.to_numpy()) if i is not None}
    rows = []
    for test_row, value in enumerate(test_frame[id_col].to_numpy()):
        if pd.isna(value):
            continue
        key = category_text(value)
        p = position.get(key)
        if p is not None and known[p]:
            rows.append((key, test_row, p, category_text(train_frame[label].iloc[p])))
    if not rows:
        return empty
    return pd.DataFrame(rows, columns=["ID", "test_row", "train_row", "Segment"])


# -- the comparison -------------------------------------------------------------------------------------------
@dataclass
class ComparisonResult:
    """What :func:`compare_methods` measured.

    Attributes
    ----------
    runs : DataFrame
        One row per method and seed: method, label, kind, seed, n_clusters, then
        :data:`METRIC_COLUMNS` (``own_*`` in the method's own space, ``ref_*`` in the
        reference space; ``stability_ari`` is this seed's mean ARI with the other seeds).
    summary : DataFrame
        One row per method: ``<metric>_mean`` and ``<metric>_sd`` over seeds; ``stability``
        and ``stability_sd`` over all pairs of seeds.
    methods : dict
        Method name -> :class:`Method` (the supervised ceiling is not one).
    n_customers, n_labelled, n_returning, n_clusters : int
    seeds : tuple of int
    chance_accuracy : float
        Share of the largest known segment: what mapping every customer to it scores.
    source : str
    feature_columns : list of str
    kmeans_n_init : int
        Initialisations of every K-Means fit.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    methods: dict[str, Method]
    n_customers: int
    n_labelled: int
    n_returning: int
    n_clusters: int
    seeds: tuple[int, ...]
    chance_accuracy: float
    source: str = "training table"
    feature_columns: list[str] = field(default_factory=list)
    kmeans_n_init: int = 50

    def to_markdown(self) -> str:
        """The summary as a markdown table with a caption and notes (``comparison.md``)."""
        return comparison_markdown(self)


def _seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ConfigError("The 'seeds' parameter must hold at least one seed. Got none.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"The 'seeds' parameter must hold distinct seeds. Got {list(seeds)} instead.")
    return seeds


def compare_methods(train_frame: pd.DataFrame, schema: Schema, *, test_frame: pd.DataFrame | None = None,
                    n_clusters: int = 7, seeds: Sequence[int] = (42, 43, 44, 45, 46),
                    methods: Sequence[str] | None = None, supervised: bool = True, config=None,
                    silhouette_sample: int | None = None, source: str = "training table",
                    held_out_folds: bool = True, progress: Callable[[str], None] = _noop) -> ComparisonResult:
    """Fit every method on the same table, k and seeds, and measure each fit.

    Parameters
    ----------
    train_frame : DataFrame
        The training table as :func:`custseg.loading.read_table` returns it.
    schema : Schema
        Its column roles (:func:`custseg.schema.infer_schema`); the label column gives
        the known segments.
    test_frame : DataFrame, optional
        New customers; those whose ID is in the training table are the returning customers.
    n_clusters : int, default=7
    seeds : sequence of int, default=(42, 43, 44, 45, 46)
    methods : sequence of str, optional
        Names in :data:`METHODS`; all of them if None.
    supervised : bool, default=True
        Add the supervised ceiling (needs known segments).
    config : RunConfig, optional
        Autoencoder and K-Means settings (``RunConfig()``, the reference design, if None).
        Every K-Means of the comparison uses ``clustering.n_init`` and ``max_iter``.
    silhouette_sample : int, optional
        Silhouettes on this many rows, the same rows for every method (None or 0: all rows).
    source : str
        Name of the training table, for the caption.
    held_out_folds : bool, default=True
        Also score every unsupervised method on held-out folds, as the methods that use
        the known segments are (``held_out_*`` columns; five more fits per method and seed).
        Without it those columns are NaN for the unsupervised methods; a method that uses
        the known segments is always scored held-out (it has no other honest score).
    progress : callable, optional
        Receives one line per fit.
    """
    config = config.model_copy(deep=True) if config is not None else RunConfig()
    seeds = _seeds(seeds)
    names = list(METHODS) if methods is None else list(methods)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {', '.join(map(repr, unknown))}; known methods: {', '.join(METHODS)}")
    if not names and not supervised:
        raise ConfigError("nothing to compare: give at least one method or keep the supervised ceiling")
    if not isinstance(n_clusters, (int, np.integer)) or isinstance(n_clusters, bool) or n_clusters < 2:
        raise ConfigError(f"The 'n_clusters' parameter must be an int >= 2. Got {n_clusters!r} instead.")
    if len(train_frame) <= n_clusters:
        raise DataError(f"the training table has {len(train_frame)} customers, too few for {n_clusters} clusters")
    label = schema.label_column
    if label is None:
        raise DataError("the comparison needs known segments, but the training table has no label column; "
                        "name it in a config file ([data] label_column = \"...\") given with --config")
    y = train_frame[label].map(lambda v: v if pd.isna(v) else category_text(v)).to_numpy(dtype=object)
    labelled = pd.notna(y)
    if not labelled.any():
        raise DataError(f"column {label!r} holds no known segment; the comparison needs some")
    y_known = y[labelled].astype(str)
    chance = float(pd.Series(y_known).value_counts(normalize=True).iloc[0])
    returning = returning_customers(train_frame, test_frame, schema)
    returning_test = None if returning.empty else test_frame.iloc[returning["test_row"].to_numpy()]
    reference = ReferenceEncoder(**feature_roles(schema)).fit(train_frame).transform(train_frame)
    sample = silhouette_sample or None

    rows, labelings = [], {}
    # One BLAS/OpenMP thread, as in `custseg train`: the K-Means, Gaussian-mixture and silhouette
    # steps of these data are too short to share, and on a busy two-core machine their two
    # OpenMP threads spin-wait for each other (K-Means on the features took 41 s a fit with two
    # threads under load, about 1 s with one). The clusters then do not depend on the core count.
    with threadpool_limits(limits=1):
        for name in names:
            method = METHODS[name]
            for seed in seeds:
                started = time.perf_counter()
                fitted = method.fit(train_frame, schema, n_clusters, seed, config)
                seconds = time.perf_counter() - started
                labels = np.asarray(fitted.labels, dtype=int)
                labelings[name, seed] = labels
                row = {"method": name, "label": method.label, "kind": "clustering", "seed": seed,
                       "n_clusters": n_clusters, "fit_seconds": seconds,
                       "scoring": f"held-out ({CV_FOLDS}-fold)" if method.uses_known_segments else "in-sample"}
                # one fixed sample of rows (random_state=0) for every method's silhouette
                ref = internal_metrics(reference, labels, sample_size=sample, random_state=0)
                if fitted.space is None:
                    own = dict.fromkeys(ref, np.nan)
                elif fitted.space.shape == reference.shape and np.allclose(fitted.space, reference):
                    own = ref
                else:
                    own = internal_metrics(fitted.space, labels, sample_size=sample, random_state=0)
                for metric in ("silhouette", "davies_bouldin", "calinski_harabasz"):
                    row[f"own_{metric}"], row[f"ref_{metric}"] = own[metric], ref[metric]
                row["returning_customers"] = len(returning)
                held_out = (_held_out_scores(method, train_frame, schema, y, returning, returning_test, n_clusters,
                                             seed, config) if held_out_folds or method.uses_known_segments
                            else dict.fromkeys(_HELD_OUT, np.nan))
                row.update({_HELD_OUT[m]: v for m, v in held_out.items()})
                if method.uses_known_segments:
                    row.update(held_out)
                else:
                    mapping = map_clusters_to_segments(labels[labelled], y_known)
                    row.update(external_metrics(labels[labelled], y_known, mapping))
                    row["returning_accuracy"] = np.nan
                    if returning_test is not None:
                        predicted = _mapped(fitted.predict(returning_test), mapping, y_known)
                        row["returning_accuracy"] = float(np.mean(predicted == returning["Segment"].to_numpy()))
                rows.append(row)
                progress(f"{method.label}, seed {seed}: ARI {row['ari']:.3f}, mapped accuracy "
                         f"{row['mapped_accuracy']:.3f}, held-out accuracy {row['held_out_accuracy']:.3f} "
                         f"({seconds:.1f} s a fit)")
    if supervised:
        for seed in seeds:
            row = _supervised_ceiling(train_frame, schema, y, test_frame, returning, seed)
            row["n_clusters"] = n_clusters
            row.update({column: row[m] for m, column in _HELD_OUT.items()})  # cross-validated already
            rows.append(row)
            progress(f"supervised ceiling, seed {seed}: accuracy {row['mapped_accuracy']:.3f} "
                     f"({row['fit_seconds']:.1f} s)")
    runs = pd.DataFrame(rows)
    stabilities = {}
    for name in names:
        aris = pairwise_ari([labelings[name, s] for s in seeds])
        stabilities[name] = aris
        for i, seed in enumerate(seeds):
            own = [adj for (a, b), adj in zip(_pairs(len(seeds)), aris) if i in (a, b)]
            runs.loc[(runs["method"] == name) & (runs["seed"] == seed), "stability_ari"] = (
                float(np.mean(own)) if own else np.nan)
    if "stability_ari" not in runs:
        runs["stability_ari"] = np.nan
    # reindex, not select: with the supervised ceiling alone there are no silhouette columns to select
    runs = runs.reindex(columns=["method", "label", "kind", "scoring", "seed", "n_clusters", *METRIC_COLUMNS,
                                 "returning_customers"])
    return ComparisonResult(runs=runs, summary=_summarise(runs, stabilities), methods={n: METHODS[n] for n in names},
                            n_customers=len(train_frame), n_labelled=int(labelled.sum()), n_returning=len(returning),
                            n_clusters=n_clusters, seeds=seeds, chance_accuracy=chance, source=source,
                            feature_columns=list(schema.feature_columns), kmeans_n_init=config.clustering.n_init)


def _held_out_scores(method: Method, frame: pd.DataFrame, schema: Schema, y: np.ndarray, returning: pd.DataFrame,
                     returning_test: pd.DataFrame | None, n_clusters: int, seed: int, config) -> dict[str, float]:
    """ARI, NMI, mapped accuracy and returning-customer accuracy of ``method`` on rows it did not learn from.

    Stratified folds of the labelled rows; unlabelled rows stay in every fitting part (they
    teach reconstruction only) and are never scored.
    """
    from sklearn.model_selection import StratifiedKFold

    labelled = np.flatnonzero(pd.notna(y))
    target = y[labelled].astype(str)
    n_splits = int(min(CV_FOLDS, pd.Series(target).value_counts().min()))
    if n_splits < 2:
        raise DataError(f"{method.label} is scored on held-out folds and needs at least two customers of every "
                        "known segment")
    label = schema.label_column
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    per_fold, hits, total = [], 0, 0
    ret_hits, ret_total = 0, 0
    ret_train_rows = returning["train_row"].to_numpy()
    for fit_pos, held_pos in folds.split(labelled, target):
        held = labelled[held_pos]
        fit_rows = np.setdiff1d(np.arange(len(frame)), held)
        fitted = method.fit(frame.iloc[fit_rows].reset_index(drop=True), schema, n_clusters, seed, config)
        fit_y = y[fit_rows]
        known = pd.notna(fit_y)
        mapping = map_clusters_to_segments(np.asarray(fitted.labels)[known], fit_y[known].astype(str))
        fit_known = fit_y[known].astype(str)
        # the held-out rows without their segments: nothing of theirs reaches the prediction
        clusters = np.asarray(fitted.predict(frame.iloc[held].drop(columns=[label]).reset_index(drop=True)))
        truth = y[held].astype(str)
        per_fold.append(external_metrics(clusters, truth, {c: mapping.get(c, "") for c in range(n_clusters)}))
        hits += int(np.sum(_mapped(clusters, mapping, fit_known) == truth))
        total += len(held)
        mine = np.flatnonzero(np.isin(ret_train_rows, held))
        if returning_test is not None and len(mine):
            predicted = _mapped(fitted.predict(returning_test.iloc[mine]), mapping, fit_known)
            ret_hits += int(np.sum(predicted == returning["Segment"].to_numpy()[mine]))
            ret_total += len(mine)
    return {"ari": float(np.mean([f["ari"] for f in per_fold])), "nmi": float(np.mean([f["nmi"] for f in per_fold])),
            "mapped_accuracy": hits / total,
            "returning_accuracy": ret_hits / ret_total if ret_total else np.nan}


#: :func:`_held_out_scores`' keys -> the comparison's held-out columns
_HELD_OUT = {"ari": "held_out_ari", "nmi": "held_out_nmi", "mapped_accuracy": "held_out_accuracy",
             "returning_accuracy": "held_out_returning_accuracy"}


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def _mapped(clusters: np.ndarray, mapping: dict, known: np.ndarray) -> np.ndarray:
    """Segments of ``clusters``; a cluster no training row fell in takes the most common segment."""
    fallback = pd.Series(known).value_counts().index[0]
    return np.array([mapping.get(int(c), fallback) for c in clusters], dtype=object)


def _supervised_ceiling(frame: pd.DataFrame, schema: Schema, y: np.ndarray, test_frame, returning: pd.DataFrame,
                        seed: int) -> dict[str, Any]:
    """Gradient boosting on the features, 5-fold cross-validated on the labelled training rows.

    A returning customer is predicted (from their test-table attributes) by the model of
    the fold that held their training row out, so no model sees the segment it predicts.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    labelled = np.flatnonzero(pd.notna(y))
    X, target = frame.iloc[labelled], y[labelled].astype(str)
    predicted = np.empty(len(labelled), dtype=object)
    returning_pred = np.empty(len(returning), dtype=object)
    train_pos = {p: i for i, p in enumerate(labelled)}
    ret_rows = np.array([train_pos.get(p, -1) for p in returning["train_row"]], dtype=int)
    n_splits = int(min(CV_FOLDS, pd.Series(target).value_counts().min()))
    if n_splits < 2:
        raise DataError("the supervised ceiling needs at least two customers of every known segment")
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # One OpenMP thread: gradient boosting's threads spin while they wait, and on a busy
    # two-core machine that made 20 small fits take 99 s instead of 3 s; the predictions do
    # not depend on the number of threads.
    with threadpool_limits(limits=1, user_api="openmp"):
        for fit_idx, held_idx in folds.split(X, target):
            model = make_pipeline(CustomerPreprocessor(**feature_roles(schema)),
                                  HistGradientBoostingClassifier(learning_rate=0.05, max_leaf_nodes=15,
                                                                 random_state=seed))
            model.fit(X.iloc[fit_idx], target[fit_idx])
            predicted[held_idx] = model.predict(X.iloc[held_idx])
            mine = np.flatnonzero(np.isin(ret_rows, held_idx))
            if len(mine):
                returning_pred[mine] = model.predict(test_frame.iloc[returning["test_row"].to_numpy()[mine]])
    row = {"method": SUPERVISED_NAME, "label": f"Supervised ceiling: gradient boosting, {n_splits}-fold CV",
           "kind": "supervised ceiling", "scoring": f"{n_splits}-fold cross-validation", "seed": seed,
           "fit_seconds": time.perf_counter() - started,
           "ari": float(adjusted_rand_score(target, predicted.astype(str))),
           "nmi": float(normalized_mutual_info_score(target, predicted.astype(str))),
           "mapped_accuracy": float(np.mean(predicted == target)),
           "returning_customers": len(returning),
           "returning_accuracy": (float(np.mean(returning_pred == returning["Segment"].to_numpy()))
                                  if len(returning) else np.nan)}
    return row


def _summarise(runs: pd.DataFrame, stabilities: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for name, part in runs.groupby("method", sort=False):
        row: dict[str, Any] = {"method": name, "label": part["label"].iloc[0], "kind": part["kind"].iloc[0],
                               "scoring": part["scoring"].iloc[0], "n_seeds": len(part)}
        for metric in METRIC_COLUMNS:
            if metric == "stability_ari":
                continue
            values = part[metric].astype("float64")
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_sd"] = values.std(ddof=1) if values.notna().sum() > 1 else np.nan
        aris = stabilities.get(name, np.array([]))
        row["stability_mean"] = float(aris.mean()) if len(aris) else np.nan
        row["stability_sd"] = float(aris.std(ddof=1)) if len(aris) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# -- presenting it ------------------------------------------------------------------------------------
_MD_COLUMNS = [
    ("ari", "ARI"),
    ("nmi", "NMI"),
    ("mapped_accuracy", "Mapped accuracy"),
    ("returning_accuracy", "Returning customers: accuracy"),
    ("held_out_nmi", "Held-out NMI"),
    ("held_out_accuracy", "Held-out accuracy"),
    ("own_silhouette", "Silhouette (own space)"),
    ("ref_silhouette", "Silhouette (reference space)"),
    ("stability", "Seed-to-seed ARI"),
    ("fit_seconds", "Fit time (s)"),
]


def _cell(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or np.isnan(mean):
        return "-"
    if sd is None or np.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def comparison_markdown(result: ComparisonResult) -> str:
    """``comparison.md``: the summary table (mean ± sd over seeds) with its caption and notes."""
    s = result.summary
    seeds = result.seeds
    seed_text = (f"seeds {seeds[0]}-{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
                 else "seeds " + ", ".join(map(str, seeds)))
    lines = [f"Clustering methods on {result.source} ({result.n_customers:,} customers, "
             f"{len(result.feature_columns)} features), k = {result.n_clusters}, {len(seeds)} {seed_text}: "
             "mean ± standard deviation over seeds.", ""]
    header = ["Method", *[title for _, title in _MD_COLUMNS]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * len(_MD_COLUMNS)) + " |")
    for row in s.itertuples(index=False):
        row = row._asdict()
        name = row["label"]
        if row["kind"] != "clustering":
            name = f"*{name} (a ceiling, not a clustering)*"
        elif str(row.get("scoring", "in-sample")).startswith("held-out"):
            name = f"**{name}** (uses known segments; scored {row['scoring']})"
        cells = [name]
        for metric, _ in _MD_COLUMNS:
            digits = 1 if metric == "fit_seconds" else 3
            cells.append(_cell(row[f"{metric}_mean"], row.get(f"{metric}_sd"), digits))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "- ARI, NMI: agreement of the clusters with the known segments of the training rows (0 = chance).",
        "- Mapped accuracy: each cluster is mapped to the known segment most common in it; the share of training "
        f"customers whose cluster maps to their segment. Mapping everyone to the largest segment scores "
        f"{result.chance_accuracy:.3f}.",
        f"- Returning customers: the {result.n_returning:,} customers of the test table whose ID is in the training "
        "table with a known segment; their cluster is predicted from their test-table attributes by the method "
        "fitted on the training table, mapped to a segment, and compared with their training segment.",
        "- Silhouette (own space): in the space the method clusters; not comparable between methods. "
        "Silhouette (reference space): in one common space (numeric features standardized, categorical features "
        "one-hot), comparable between methods.",
        f"- Seed-to-seed ARI: mean adjusted Rand index between the {len(seeds)} seeds' clusterings of the training "
        "rows (1 = the seed does not matter).",
        "- Fit time: wall-clock seconds of one fit (preprocessing included, metrics excluded); it depends on the "
        "machine and on what else runs on it, so read it as an order of magnitude.",
    ]
    ceiling = s[s["kind"] != "clustering"]
    if len(ceiling):
        notes.append("- The supervised row is a classifier trained on the known segments (cross-validated "
                     "predictions; a returning customer is predicted by the model whose training folds left them "
                     "out): what the features can tell about the segments at best, not a segmentation.")
    if any(m.uses_known_segments for m in result.methods.values()):
        notes.append(f"- Rows marked 'uses known segments' learn from the segments they are scored against, so "
                     f"they are scored on held-out folds ({CV_FOLDS}-fold, stratified): fitted on four folds with "
                     "their segments, clusters mapped to segments on those rows, ARI, NMI and mapped accuracy "
                     "measured on the fifth (ARI and NMI averaged over folds); a returning customer is predicted "
                     "by the model whose folds left their training row out. Their silhouettes and seed-to-seed ARI "
                     "come from a fit on every row. The other rows are scored on the rows they were fitted on, "
                     "which they never learned the segments of.")
    if result.runs["held_out_accuracy"].notna().any():
        notes.append(f"- Held-out NMI and accuracy: every method, fitted on four of {CV_FOLDS} stratified folds, its "
                     "clusters mapped to segments on those rows, scored on the fifth (NMI averaged over folds); "
                     "the same for every row, so these two columns compare all methods alike.")
    for name, method in result.methods.items():
        notes.append(f"- {method.label}: own space = {method.space}.")
    reference = " (the reference design's)" if result.kmeans_n_init == 50 else ""
    notes.append(f"- Initialisations per fit: every K-Means {result.kmeans_n_init}{reference}, "
                 f"Gaussian mixture {GMM_N_INIT}, K-Prototypes {KPROTOTYPES_N_INIT} (kmodes' default is 10; "
                 f"it is pure Python and takes seconds per initialisation), latent class model {LATENT_CLASS_N_INIT} "
                 "(EM from random starts).")
    return "\n".join(lines + notes) + "\n"
