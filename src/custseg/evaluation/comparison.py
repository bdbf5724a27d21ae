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
labelings of the training rows). A supervised classifier (gradient boosting, 5-fold
cross-validation) is added as a *ceiling*: no cluster -> segment mapping can be expected
to beat what a model trained on the segments reaches.

:func:`write_comparison` writes ``comparison.csv`` (one row per method and seed),
``comparison.md`` (means and standard deviations) and ``comparison.png``.

Adding a method
---------------
Write a function ``fit(frame, schema, n_clusters, seed, config) -> FittedClustering``
and add a :class:`Method` to :data:`METHODS`; everything else follows.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import FunctionTransformer

from ..clustering import map_clusters_to_segments
from ..exceptions import ConfigError, DataError, NotFittedError
from ..evaluation.metrics import external_metrics, internal_metrics
from ..pipeline import SegmentationPipeline
from ..preprocessing import CustomerPreprocessor
from ..schema import Schema, category_text
from ..evaluation.selection import pairwise_ari

__all__ = ["Method", "FittedClustering", "METHODS", "ReferenceEncoder", "returning_customers", "compare_methods",
           "run_comparison", "comparison_markdown",
           "ComparisonResult", "write_comparison", "plot_comparison", "SUPERVISED_NAME"]

#: K-Prototypes initialisations per fit. kmodes is pure Python: one init takes about 3.5 s on
#: 8,000 customers, so the library's default of 10 would make it the slowest method by far.
KPROTOTYPES_N_INIT = 3
#: Gaussian-mixture initialisations per fit.
GMM_N_INIT = 3
SUPERVISED_NAME = "supervised_ceiling"
CV_FOLDS = 5

METRIC_COLUMNS = ["fit_seconds", "own_silhouette", "own_davies_bouldin", "own_calinski_harabasz", "ref_silhouette",
                  "ref_davies_bouldin", "ref_calinski_harabasz", "ari", "nmi", "mapped_accuracy",
                  "returning_accuracy", "stability_ari"]


def _noop(*_args, **_kwargs) -> None:
    return None


# -- the reference space ---------------------------------------------------------------------------------
class ReferenceEncoder(TransformerMixin, BaseEstimator):
    """Numeric (and ordinal) features standardized, categorical features one-hot encoded.

    Imputation is :class:`~custseg.preprocessing.CustomerPreprocessor`'s (median, most
    frequent category), and so is the handling of unseen categories (they become the
    training mode). One-hot columns stay 0/1, so two customers differing in one category
    are sqrt(2) apart, about as far as 1.4 standard deviations of one numeric feature.

    Parameters
    ----------
    numeric, categorical, ordinal
        As in :class:`~custseg.preprocessing.CustomerPreprocessor`.

    Attributes
    ----------
    preprocessor_ : CustomerPreprocessor
    feature_names_out_ : ndarray of str
        ``Age`` for a numeric column, ``Profession=Artist`` for a one-hot column.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Age": [20.0, 40.0], "Gender": ["Male", "Female"]})
    >>> enc = ReferenceEncoder(numeric=["Age"], categorical=["Gender"]).fit(df)
    >>> list(enc.get_feature_names_out())
    ['Age', 'Gender=Female', 'Gender=Male']
    >>> enc.transform(df).tolist()
    [[-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """

    def __init__(self, numeric=None, categorical=None, ordinal=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal

    def fit(self, X: pd.DataFrame, y=None) -> "ReferenceEncoder":
        self.preprocessor_ = CustomerPreprocessor(numeric=self.numeric, categorical=self.categorical,
                                                  ordinal=self.ordinal).fit(X)
        names = []
        for name in self.preprocessor_.feature_names_in_:
            if self.preprocessor_.kinds_[name] == "categorical":
                names += [f"{name}={c}" for c in self.preprocessor_.categories_[name]]
            else:
                names.append(name)
        self.feature_names_out_ = np.array(names, dtype=object)
        self.n_features_in_ = self.preprocessor_.n_features_in_
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "preprocessor_"):
            raise NotFittedError("This ReferenceEncoder instance is not fitted yet. Call 'fit' first.")
        pre = self.preprocessor_
        z = pre.transform(X)
        blocks = []
        for j, name in enumerate(pre.feature_names_in_):
            if pre.kinds_[name] == "categorical":
                codes = np.rint(z[:, j] * pre.scale_[j] + pre.mean_[j]).astype(int)
                blocks.append(np.eye(len(pre.categories_[name]))[codes])
            else:
                blocks.append(z[:, [j]])
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if not hasattr(self, "feature_names_out_"):
            raise NotFittedError("This ReferenceEncoder instance is not fitted yet. Call 'fit' first.")
        return self.feature_names_out_.copy()


def _roles(schema: Schema) -> dict[str, Any]:
    return {"numeric": schema.names("numeric"), "categorical": schema.names("categorical"),
            "ordinal": schema.ordinal_orders or None}


# -- the methods ------------------------------------------------------------------------------------------
@dataclass
class FittedClustering:
    """A method fitted on the training rows.

    Attributes
    ----------
    labels : ndarray of int
        Cluster of each training row.
    space : ndarray or None
        The training rows in the method's own space (where its internal metrics are computed).
    predict : callable
        Table of customers -> their clusters.
    """

    labels: np.ndarray
    space: np.ndarray | None
    predict: Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Method:
    """A clustering method the comparison runs.

    Attributes
    ----------
    name : str
        Short identifier (the ``method`` column of ``comparison.csv``).
    label : str
        Human-readable name for tables and figures.
    space : str
        What its own space is.
    fit : callable
        ``fit(frame, schema, n_clusters, seed, config) -> FittedClustering``.
    """

    name: str
    label: str
    space: str
    fit: Callable[..., FittedClustering]


def _fit_segmentation(pipeline: SegmentationPipeline, frame: pd.DataFrame, y) -> FittedClustering:
    pipeline.fit(frame, y)
    return FittedClustering(labels=pipeline.labels_, space=pipeline.transform(frame), predict=pipeline.predict)


def _kmeans_pipeline(preprocessor, embedder, n_clusters: int, seed: int, config) -> SegmentationPipeline:
    return SegmentationPipeline(preprocessor=preprocessor, embedder=embedder, n_clusters=n_clusters,
                                n_init=config.clustering.n_init, max_iter=config.clustering.max_iter,
                                random_state=seed)


def _fit_kmeans_features(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pipeline = _kmeans_pipeline(CustomerPreprocessor(**_roles(schema)), FunctionTransformer(), n_clusters, seed, config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_kmeans_onehot(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pipeline = _kmeans_pipeline(ReferenceEncoder(**_roles(schema)), FunctionTransformer(), n_clusters, seed, config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_pca_kmeans(frame, schema, n_clusters, seed, config) -> FittedClustering:
    n_features = len(schema.feature_columns)
    pca = PCA(n_components=min(config.autoencoder.latent_dim, n_features), random_state=seed)
    pipeline = _kmeans_pipeline(CustomerPreprocessor(**_roles(schema)), pca, n_clusters, seed, config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_gmm(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pre = CustomerPreprocessor(**_roles(schema)).fit(frame)
    X = pre.transform(frame)
    gmm = GaussianMixture(n_components=n_clusters, covariance_type="full", n_init=GMM_N_INIT,
                          random_state=seed).fit(X)
    return FittedClustering(labels=gmm.predict(X), space=X, predict=lambda f: gmm.predict(pre.transform(f)))


def _fit_kprototypes(frame, schema, n_clusters, seed, config) -> FittedClustering:
    from kmodes.kprototypes import KPrototypes  # imported here: only this method needs it

    pre = CustomerPreprocessor(**_roles(schema)).fit(frame)
    names = list(pre.feature_names_in_)
    cat_idx = [j for j, n in enumerate(names) if pre.kinds_[n] == "categorical"]
    num_idx = [j for j in range(len(names)) if j not in cat_idx]

    def mixed(f: pd.DataFrame) -> np.ndarray:
        z = pre.transform(f)
        out = np.empty(z.shape, dtype=object)
        out[:, num_idx] = z[:, num_idx]
        for j in cat_idx:
            codes = np.rint(z[:, j] * pre.scale_[j] + pre.mean_[j]).astype(int)
            out[:, j] = np.asarray(pre.categories_[names[j]], dtype=object)[codes]
        return out

    X = mixed(frame)
    if not cat_idx or not num_idx:
        raise DataError("K-Prototypes needs both numeric and categorical features; leave it out of --methods")
    kp = KPrototypes(n_clusters=n_clusters, init="Cao", n_init=KPROTOTYPES_N_INIT, random_state=seed)
    labels = np.asarray(kp.fit_predict(X, categorical=cat_idx), dtype=int)
    # Its cost is squared Euclidean on the numeric features plus gamma per categorical mismatch;
    # a mismatch is half the squared distance of two one-hot vectors, so the cost is exactly the
    # squared Euclidean distance in [numeric, sqrt(gamma / 2) * one-hot]: its own space.
    onehot = ReferenceEncoder(numeric=[], categorical=[names[j] for j in cat_idx]).fit(frame).transform(frame)
    space = np.hstack([X[:, num_idx].astype("float64"), np.sqrt(kp.gamma / 2.0) * onehot])
    return FittedClustering(labels=labels, space=space,
                            predict=lambda f: np.asarray(kp.predict(mixed(f), categorical=cat_idx), dtype=int))


def _fit_autoencoder(frame, schema, n_clusters, seed, config) -> FittedClustering:
    from ..workflow import build_pipeline

    config = copy.deepcopy(config)
    config.seed = seed
    config.clustering.n_clusters = n_clusters
    y = None
    if schema.label_column:
        y = frame[schema.label_column].map(lambda v: v if pd.isna(v) else category_text(v))
    return _fit_segmentation(build_pipeline(config, schema), frame, y)


#: Every clustering method of the comparison, in the order of its tables. Extend this to add one.
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("kmeans_features", "K-Means on features",
           "the label-encoded, standardized features (CustomerPreprocessor)", _fit_kmeans_features),
    Method("kmeans_onehot", "K-Means on one-hot features",
           "standardized numeric + one-hot categorical features (the reference space)", _fit_kmeans_onehot),
    Method("pca_kmeans", "PCA + K-Means",
           "principal components of the features, as many as the autoencoder's latent features", _fit_pca_kmeans),
    Method("gmm_features", "Gaussian mixture on features",
           "the label-encoded, standardized features; full covariances", _fit_gmm),
    Method("kprototypes", "K-Prototypes (mixed types)",
           "standardized numeric + sqrt(gamma/2)-scaled one-hot categorical features, where K-Prototypes' "
           "cost is the squared Euclidean distance", _fit_kprototypes),
    Method("autoencoder_kmeans", "Autoencoder + K-Means (custseg)",
           "the autoencoder's latent features (reference design)", _fit_autoencoder),
]}


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
                    progress: Callable[[str], None] = _noop) -> ComparisonResult:
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
    progress : callable, optional
        Receives one line per fit.
    """
    from ..config import RunConfig

    config = copy.deepcopy(config) if config is not None else RunConfig()
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
                        "name it with --label-column")
    y = train_frame[label].map(lambda v: v if pd.isna(v) else category_text(v)).to_numpy(dtype=object)
    labelled = pd.notna(y)
    if not labelled.any():
        raise DataError(f"column {label!r} holds no known segment; the comparison needs some")
    y_known = y[labelled].astype(str)
    chance = float(pd.Series(y_known).value_counts(normalize=True).iloc[0])
    returning = returning_customers(train_frame, test_frame, schema)
    returning_test = None if returning.empty else test_frame.iloc[returning["test_row"].to_numpy()]
    reference = ReferenceEncoder(**_roles(schema)).fit(train_frame).transform(train_frame)
    sample = silhouette_sample or None

    rows, labelings = [], {}
    for name in names:
        method = METHODS[name]
        for seed in seeds:
            started = time.perf_counter()
            fitted = method.fit(train_frame, schema, n_clusters, seed, config)
            seconds = time.perf_counter() - started
            labels = np.asarray(fitted.labels, dtype=int)
            labelings[name, seed] = labels
            row = {"method": name, "label": method.label, "kind": "clustering", "seed": seed,
                   "n_clusters": n_clusters, "fit_seconds": seconds}
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
            mapping = map_clusters_to_segments(labels[labelled], y_known)
            row.update(external_metrics(labels[labelled], y_known, mapping))
            row["returning_customers"] = len(returning)
            row["returning_accuracy"] = np.nan
            if returning_test is not None:
                predicted = _mapped(fitted.predict(returning_test), mapping, y_known)
                row["returning_accuracy"] = float(np.mean(predicted == returning["Segment"].to_numpy()))
            rows.append(row)
            progress(f"{method.label}, seed {seed}: ARI {row['ari']:.3f}, mapped accuracy "
                     f"{row['mapped_accuracy']:.3f} ({seconds:.1f} s)")
    if supervised:
        for seed in seeds:
            row = _supervised_ceiling(train_frame, schema, y, test_frame, returning, seed)
            row["n_clusters"] = n_clusters
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
    runs = runs[["method", "label", "kind", "seed", "n_clusters", *METRIC_COLUMNS, "returning_customers"]]
    return ComparisonResult(runs=runs, summary=_summarise(runs, stabilities), methods={n: METHODS[n] for n in names},
                            n_customers=len(train_frame), n_labelled=int(labelled.sum()), n_returning=len(returning),
                            n_clusters=n_clusters, seeds=seeds, chance_accuracy=chance, source=source,
                            feature_columns=list(schema.feature_columns), kmeans_n_init=config.clustering.n_init)


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
    for fit_idx, held_idx in folds.split(X, target):
        model = make_pipeline(CustomerPreprocessor(**_roles(schema)),
                              HistGradientBoostingClassifier(learning_rate=0.05, max_leaf_nodes=15,
                                                             random_state=seed))
        model.fit(X.iloc[fit_idx], target[fit_idx])
        predicted[held_idx] = model.predict(X.iloc[held_idx])
        mine = np.flatnonzero(np.isin(ret_rows, held_idx))
        if len(mine):
            returning_pred[mine] = model.predict(test_frame.iloc[returning["test_row"].to_numpy()[mine]])
    row = {"method": SUPERVISED_NAME, "label": f"Supervised ceiling: gradient boosting, {n_splits}-fold CV",
           "kind": "supervised ceiling", "seed": seed, "fit_seconds": time.perf_counter() - started,
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
                               "n_seeds": len(part)}
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
    for name, method in result.methods.items():
        notes.append(f"- {method.label}: own space = {method.space}.")
    reference = " (the reference design's)" if result.kmeans_n_init == 50 else ""
    notes.append(f"- Initialisations per fit: every K-Means {result.kmeans_n_init}{reference}, "
                 f"Gaussian mixture {GMM_N_INIT}, K-Prototypes {KPROTOTYPES_N_INIT} (kmodes' default is 10; "
                 "it is pure Python and takes seconds per initialisation).")
    return "\n".join(lines + notes) + "\n"


def plot_comparison(result: ComparisonResult):
    """Four panels, one row per clustering method: accuracy, ARI and NMI, silhouettes, stability.

    Large markers are means over seeds with their standard deviation, small dots the
    seeds. The supervised ceiling and the chance level are lines on the accuracy panel.
    Returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..report.plots import segment_palette

    runs = result.runs
    summary = result.summary
    clustering = summary[summary["kind"] == "clustering"].reset_index(drop=True)
    ceiling = summary[summary["kind"] != "clustering"]
    colours = segment_palette(6)
    height = max(3.2, 0.55 * len(clustering) + 1.6)
    fig, axes = plt.subplots(2, 2, figsize=(13, 2 * height), sharey=True)
    y = np.arange(len(clustering))[::-1]
    panels = [
        (axes[0, 0], "Agreement with known segments: mapped accuracy", "share of customers mapped to their segment",
         [("mapped_accuracy", "training customers"), ("returning_accuracy", "returning customers")]),
        (axes[0, 1], "Agreement with known segments: ARI and NMI", "index (0 = chance, 1 = the known segments)",
         [("ari", "ARI"), ("nmi", "NMI")]),
        (axes[1, 0], "Separation: silhouette (higher is better)", "silhouette",
         [("own_silhouette", "in the method's own space"), ("ref_silhouette", "in the reference space")]),
        (axes[1, 1], "Stability across seeds, and fit time", "mean ARI between the seeds' clusterings",
         [("stability_ari", "seed-to-seed ARI")]),
    ]
    for ax, title, xlabel, metrics in panels:
        # the first metric sits just above the method's line, the second just below
        offsets = np.linspace(0.15, -0.15, len(metrics)) if len(metrics) > 1 else [0.0]
        for (metric, legend), off, colour in zip(metrics, offsets, colours):
            for i, row in clustering.iterrows():
                values = runs.loc[runs["method"] == row["method"], metric].astype(float).dropna()
                if values.empty:
                    continue
                ax.scatter(values, np.full(len(values), y[i] + off), s=12, color=colour, alpha=0.5, linewidths=0)
                mean = row["stability_mean"] if metric == "stability_ari" else row[f"{metric}_mean"]
                sd = row["stability_sd"] if metric == "stability_ari" else row[f"{metric}_sd"]
                ax.errorbar([mean], [y[i] + off], xerr=None if np.isnan(sd) else [sd], fmt="o", ms=7, color=colour,
                            capsize=3, label=legend if i == 0 else None)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        ax.margins(x=0.08)
    acc = axes[0, 0]
    acc.axvline(result.chance_accuracy, color="#777777", ls=":", lw=1.2,
                label=f"everyone in the largest segment ({result.chance_accuracy:.3f})")
    if len(ceiling):
        value = float(ceiling["mapped_accuracy_mean"].iloc[0])
        acc.axvline(value, color=colours[5], ls="--", lw=1.4, label=f"supervised ceiling ({value:.3f})")
    stab = axes[1, 1]
    low = min(0.0, float(np.nanmin(runs["stability_ari"].astype(float).to_numpy(), initial=0.0)))
    # fit times are written in a column of their own right of the stability scale
    stab.set_xlim(low, 1.32)
    stab.set_xticks(np.arange(0.0, 1.01, 0.2))
    stab.axvline(1.08, color="#bbbbbb", lw=0.8)
    stab.text(1.31, y[0] + 0.45, "fit time", ha="right", va="bottom", fontsize=8, color="#555555")
    for i, row in clustering.iterrows():
        stab.text(1.31, y[i], f"{row['fit_seconds_mean']:.1f} s", ha="right", va="center", fontsize=9,
                  color="#333333")
    for ax in axes.ravel():
        ax.set_yticks(y, clustering["label"])
        ax.legend(frameon=False, fontsize=8, loc="best")
        ax.margins(y=0.12)
    fig.suptitle(f"{result.n_customers:,} customers, k = {result.n_clusters}, {len(result.seeds)} seeds; "
                 f"{result.n_returning:,} returning customers", fontsize=12)
    fig.tight_layout()
    return fig


def write_comparison(result: ComparisonResult, output: str | Path, dpi: int = 120) -> list[Path]:
    """Write ``output`` (the per-run CSV) and, beside it, the ``.md`` summary and the ``.png`` figure.

    The three files are staged first and then moved into place one by one.
    """
    from ..io.atomic import merge_into, staging_dir
    from ..workflow import FLOAT_FORMAT, render_png

    output = Path(output)
    if output.is_dir():
        raise DataError(f"--output {str(output)!r} is a folder; give a file name such as comparison.csv")
    if output.suffix.lower() in (".md", ".png"):
        raise DataError(f"--output {str(output)!r} names the summary or the figure; give the CSV file, such as "
                        "comparison.csv (the .md and .png files are written beside it)")
    folder = output.parent if str(output.parent) else Path(".")
    png = render_png(plot_comparison(result), dpi)
    with staging_dir(output) as staged:
        result.runs.to_csv(staged / output.name, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        (staged / output.with_suffix(".md").name).write_text(result.to_markdown(), encoding="utf-8")
        (staged / output.with_suffix(".png").name).write_bytes(png)
        return merge_into(staged, folder)


def run_comparison(config, *, n_seeds: int = 5, methods: Sequence[str] | None = None, supervised: bool = True,
                   silhouette_sample: int | None = None,
                   progress: Callable[[str], None] = _noop) -> ComparisonResult:
    """Read the tables a :class:`~custseg.config.RunConfig` names and :func:`compare_methods` on them.

    The seeds are ``config.seed``, ``config.seed + 1``, ... (``n_seeds`` of them); k is
    ``config.clustering.n_clusters``; the autoencoder and K-Means settings are the config's.
    """
    from ..workflow import load_tables

    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise ConfigError(f"The 'n_seeds' parameter must be an int >= 1. Got {n_seeds!r} instead.")
    config.validate()
    train_t, test_t, schema = load_tables(config)
    return compare_methods(train_t.frame, schema, test_frame=None if test_t is None else test_t.frame,
                           n_clusters=config.clustering.n_clusters,
                           seeds=range(config.seed, config.seed + n_seeds), methods=methods, supervised=supervised,
                           config=config, silhouette_sample=silhouette_sample, source=train_t.source,
                           progress=progress)
