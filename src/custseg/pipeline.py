"""The whole segmentation as one estimator: preprocess -> embed -> cluster -> map.

:class:`SegmentationPipeline` follows scikit-learn's contract: ``__init__`` only
stores its parameters, ``fit`` returns ``self``, learned state ends in ``_``, and it
can be cloned. The preprocessor and the embedder are parameters (cloned at fit time),
so any sklearn transformer with ``fit``/``transform`` (PCA, say) can stand in for the
autoencoder. An embedder that encodes the raw table itself (the mixed-type
:class:`~custseg.embedders.mixed.MixedAutoencoderEmbedder`) takes
``preprocessor="passthrough"``, as in an sklearn ``Pipeline``. The clusterer is a
parameter too: K-Means by default, or a consensus of an ensemble's members
(:class:`~custseg.clustering.ConsensusKMeans`), whose per-row ``agreement_`` the pipeline
passes on.

Example
-------
>>> from custseg import SegmentationPipeline, read_table
>>> train = read_table("data/raw/Train.csv").frame          # doctest: +SKIP
>>> X, y = train.drop(columns=["ID", "Segmentation"]), train["Segmentation"]   # doctest: +SKIP
>>> seg = SegmentationPipeline(random_state=42).fit(X, y)  # doctest: +SKIP
>>> seg.predict_segment(X)[:5]                             # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.cluster import KMeans
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, StrOptions
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.validation import check_array

from .embedders.autoencoder import AutoencoderEmbedder
from .clustering import assign_to_centroids, cluster_means, map_clusters_to_segments
from .exceptions import ConfigError, DataError, NotFittedError
from .io.reading import columns_frame
from .preprocessing import CustomerPreprocessor

__all__ = ["SegmentationPipeline", "sample_rows"]

#: Rows embedded and assigned at once when an ensemble's clusterer is fitted on a sample (the latent
#: features of 40 members: 65,536 x 320 float64 = 168 MB, and the assignment's temporaries).
FIT_SLICE_ROWS = 65_536


class SegmentationPipeline(ClusterMixin, TransformerMixin, BaseEstimator):
    """Preprocess a customer table, embed it, cluster the embedding, map clusters to segments.

    Parameters
    ----------
    preprocessor : transformer or "passthrough", default=None
        Turns the table into numeric features; ``CustomerPreprocessor()`` if None;
        ``"passthrough"`` gives the table to the embedder as it is (for an embedder that
        encodes it itself).
    embedder : transformer, default=None
        Learns the representation that is clustered; ``AutoencoderEmbedder()`` (the
        reference design) if None. Its ``random_state``, if None, is set from ours. An
        embedder with a ``guidance_weight`` parameter is given the known segments as they
        are (None where unknown); any other one gets them as stratification groups.
    clusterer : clusterer, default=None
        Clusters the latent features: ``KMeans(n_clusters, n_init, max_iter)`` if None.
        Otherwise a clone of it is fitted with our ``n_clusters`` (and, if it has an
        ``n_members`` parameter, the embedder's ``n_members``; its ``random_state``, if
        None, from ours). It must have ``labels_`` after fit and ``predict``; with
        ``predict_with_agreement`` the pipeline reports each row's ``Agreement``.
    n_clusters : int, default=7
    n_init : int, default=50
    max_iter : int, default=500
    random_state : int, RandomState instance or None, default=42
        One seed for the embedder and K-Means (None: fresh randomness).
    cluster_sample : int or None, default=None
        Fit K-Means (or the ``clusterer``) on at most this many rows drawn at random
        (seeded by ``random_state``), then assign every row: to its nearest centre, or by
        the clusterer's ``predict``. None fits on every row. For tables far larger than
        the number of clusters needs (a million customers), the centres barely move and
        the fit costs a fraction.
    fit_sample : int or None, default=None
        Fit the embedder on at most this many rows drawn at random (seeded by
        ``random_state``; the same rows as ``cluster_sample`` when both are equal); every
        row is then embedded. None fits on every row. The preprocessor always learns from
        every row, and so does an embedder's own input encoding if its ``fit`` takes a
        ``sample`` (the rows to train on).

    Attributes
    ----------
    preprocessor_, embedder_ : fitted transformers
    cluster_centers_ : ndarray of shape (n_clusters, n_latent)
    labels_ : ndarray of int
        Cluster of each training row.
    inertia_ : float
        Sum of squared latent distances of the training rows to their cluster's centre.
    clusterer_ : fitted clusterer or None
        The fitted ``clusterer`` (None for the built-in K-Means).
    agreement_ : ndarray of float or None
        Per training row, the share of ensemble members agreeing with its cluster
        (None without a consensus clusterer).
    mapping_ : dict or None
        Cluster -> known segment by majority, if ``y`` was given to ``fit``.
    feature_names_in_ : ndarray of str
    n_features_in_ : int

    ``transform`` gives the latent features (it is a transformer), ``predict`` and
    ``labels_`` the clusters (it is a clusterer). With a ``clusterer`` the cluster centres
    are the means of each cluster's latent features, and rows are assigned by the
    clusterer (the centre is then not necessarily the nearest one).
    """

    _parameter_constraints = {
        "preprocessor": [HasMethods(["fit", "transform"]), StrOptions({"passthrough"}), None],
        "embedder": [HasMethods(["fit", "transform"]), None],
        "clusterer": [HasMethods(["fit", "predict"]), None],
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "cluster_sample": [Interval(Integral, 1, None, closed="left"), None],
        "fit_sample": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, preprocessor=None, embedder=None, n_clusters=7, n_init=50, max_iter=500, random_state=42,
                 cluster_sample=None, clusterer=None, fit_sample=None):
        self.preprocessor = preprocessor
        self.embedder = embedder
        self.clusterer = clusterer
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.cluster_sample = cluster_sample
        self.fit_sample = fit_sample

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # the default preprocessor imputes missing values; another one says for itself
        source = self.embedder if self.preprocessor == "passthrough" else self.preprocessor
        tags.input_tags.allow_nan = source is None or get_tags(source).input_tags.allow_nan
        return tags

    def fit(self, X: pd.DataFrame, y=None, progress=None) -> "SegmentationPipeline":
        """Fit on a table of customers.

        Parameters
        ----------
        X : DataFrame, or ndarray (read as numeric columns)
        y : array-like, optional
            Known segments (missing allowed): they stratify the validation split and
            give the cluster -> segment mapping.
        progress : callable, optional
            Passed to the embedder's ``fit`` if it takes one (per-epoch records).
        """
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("cluster_sample", "fit_sample"):
            value = getattr(self, name)
            if isinstance(value, bool):  # an Integral to the constraints
                raise ConfigError(f"The '{name}' parameter of SegmentationPipeline must be an int in the range "
                                  f"[1, inf) or None. Got {value!r} instead.")
        if self.cluster_sample is not None and self.cluster_sample < self.n_clusters:
            raise ConfigError(f"The 'cluster_sample' parameter of SegmentationPipeline ({self.cluster_sample}) must "
                              f"be at least n_clusters ({self.n_clusters}).")
        X = _table(X)
        if len(X) < self.n_clusters:
            raise DataError(f"the table has {len(X)} rows, fewer than the {self.n_clusters} clusters asked for; "
                            "give more customers or a smaller number of clusters")
        if y is not None:
            y = pd.Series(np.asarray(y, dtype=object))
            labelled = y.notna().to_numpy()
            y = y.map(str).where(y.notna(), None).to_numpy(dtype=object)
        if self.preprocessor == "passthrough":
            # the identity: the embedder reads the table's own columns
            self.preprocessor_ = FunctionTransformer()
        else:
            self.preprocessor_ = clone(self.preprocessor) if self.preprocessor is not None else CustomerPreprocessor()
        embedder = clone(self.embedder) if self.embedder is not None else AutoencoderEmbedder()
        if "random_state" in embedder.get_params() and embedder.get_params()["random_state"] is None:
            embedder.set_params(random_state=self.random_state)
        features = self.preprocessor_.fit_transform(X)
        if y is None:
            targets = None
        elif "guidance_weight" in embedder.get_params():
            targets = np.where(labelled, y, None)  # guidance learns from the known segments only
        else:
            targets = np.where(labelled, y, "\0missing")  # unlabelled rows stratify as one more group
        fit_rows = sample_rows(len(X), self.fit_sample, self.random_state)
        takes = inspect.signature(embedder.fit).parameters
        fit_params = {"progress": progress} if progress is not None and "progress" in takes else {}
        if fit_rows is None:
            self.embedder_ = embedder.fit(features, targets, **fit_params)
        elif "sample" in takes:  # it learns its own input encoding from every row, the network from the sample
            self.embedder_ = embedder.fit(features, targets, sample=fit_rows, **fit_params)
        else:
            self.embedder_ = embedder.fit(_rows(features, fit_rows),
                                          None if targets is None else targets[fit_rows], **fit_params)
        self.clusterer_, self.agreement_ = None, None
        # one draw when the sizes are equal: the same rows whatever random_state is (an int, a RandomState)
        rows = (fit_rows if self.cluster_sample == self.fit_sample
                else sample_rows(len(X), self.cluster_sample, self.random_state))
        if self.clusterer is None:
            latent = np.asarray(self.embedder_.transform(features), dtype="float64")
            fitted_on = latent if rows is None else latent[rows]
            km = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
                        random_state=self.random_state).fit(fitted_on)
            self.cluster_centers_ = km.cluster_centers_
            self.labels_, distances = assign_to_centroids(latent, self.cluster_centers_)
            # inertia of every row (the same as K-Means' own when it was fitted on every row)
            self.inertia_ = float(km.inertia_) if fitted_on is latent else float(np.square(distances).sum())
            self.n_iter_ = int(km.n_iter_)
        elif rows is None:
            self._fit_clusterer(np.asarray(self.embedder_.transform(features), dtype="float64"), embedder)
        else:
            # an ensemble's latent features of every row are large (1,000,000 rows x 40 members x 8 =
            # 2.6 GB in float64, its assignment's temporaries several times that): the clusterer is fitted
            # on the sample's, and every row assigned a slice at a time
            self._fit_clusterer_in_slices(features, embedder, rows)
        self.mapping_ = None
        if y is not None and labelled.any():
            self.mapping_ = map_clusters_to_segments(self.labels_[labelled], y[labelled])
            # a cluster without labelled rows takes the segment of the nearest mapped centroid
            for c in range(self.n_clusters):
                if c not in self.mapping_:
                    mapped = sorted(self.mapping_)
                    d = ((self.cluster_centers_[mapped] - self.cluster_centers_[c]) ** 2).sum(axis=1)
                    self.mapping_[c] = self.mapping_[mapped[int(np.argmin(d))]]
        if self.preprocessor != "passthrough":
            names = self.preprocessor_.get_feature_names_out()
        elif hasattr(self.embedder_, "feature_names_in_"):
            names = self.embedder_.feature_names_in_  # the columns it reads (not an ID or the segment)
        else:
            names = [f"x{j}" for j in range(self.embedder_.n_features_in_)]
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _new_clusterer(self, embedder):
        """A clone of ``clusterer`` with our ``n_clusters`` (and the embedder's ``n_members``, our seed)."""
        clusterer = clone(self.clusterer)
        params = clusterer.get_params()
        overrides = {"n_clusters": self.n_clusters} if "n_clusters" in params else {}
        if "n_members" in params and "n_members" in embedder.get_params():
            overrides["n_members"] = embedder.get_params()["n_members"]
        if "random_state" in params and params["random_state"] is None:
            overrides["random_state"] = self.random_state
        return clusterer.set_params(**overrides)

    def _fit_clusterer(self, latent: np.ndarray, embedder) -> None:
        """Fit a clone of ``clusterer`` on every row's ``latent`` features."""
        self.clusterer_ = self._new_clusterer(embedder).fit(latent)
        self.n_iter_ = int(getattr(self.clusterer_, "n_iter_", 0))
        self.labels_ = np.asarray(self.clusterer_.labels_, dtype=int)
        self.agreement_ = getattr(self.clusterer_, "agreement_", None)
        self.cluster_centers_ = cluster_means(latent, self.labels_, self.n_clusters)
        self.inertia_ = float(((latent - self.cluster_centers_[self.labels_]) ** 2).sum())

    def _fit_clusterer_in_slices(self, features, embedder, rows: np.ndarray) -> None:
        """Fit a clone of ``clusterer`` on the ``rows``' latent features; assign every row, a slice at a time.

        The centres are the means of every row of a cluster and the inertia the sum over every
        row of the squared distance to it, merged slice by slice (per cluster: count, mean and
        sum of squared deviations, combined as Chan, Golub and LeVeque do; exact far from the
        origin too).
        """
        self.clusterer_ = self._new_clusterer(embedder).fit(
            np.asarray(self.embedder_.transform(_rows(features, rows)), dtype="float64"))
        self.n_iter_ = int(getattr(self.clusterer_, "n_iter_", 0))
        n, k = len(features), self.n_clusters
        self.labels_ = np.empty(n, dtype=int)
        with_agreement = hasattr(self.clusterer_, "predict_with_agreement")
        self.agreement_ = np.empty(n) if with_agreement else None
        counts, means, squares = np.zeros(k), None, np.zeros(k)
        for start in range(0, n, FIT_SLICE_ROWS):
            part = slice(start, start + FIT_SLICE_ROWS)
            latent = np.asarray(self.embedder_.transform(_rows(features, part)), dtype="float64")
            if with_agreement:
                labels, self.agreement_[part] = self.clusterer_.predict_with_agreement(latent)
            else:
                labels = self.clusterer_.predict(latent)
            labels = self.labels_[part] = np.asarray(labels, dtype=int)
            if means is None:
                means = np.zeros((k, latent.shape[1]))
            onehot = np.zeros((len(labels), k))
            onehot[np.arange(len(labels)), labels] = 1.0
            n_b = onehot.sum(axis=0)
            mean_b = (onehot.T @ latent) / np.maximum(n_b, 1)[:, None]
            deviation = latent - mean_b[labels]
            squares_b = np.bincount(labels, weights=np.einsum("ij,ij->i", deviation, deviation), minlength=k)
            total = counts + n_b
            delta = mean_b - means
            share = np.divide(n_b, total, out=np.zeros(k), where=total > 0)
            means += delta * share[:, None]
            squares += squares_b + np.einsum("ij,ij->i", delta, delta) * counts * share
            counts = total
        self.cluster_centers_ = means
        self.inertia_ = float(squares.sum())

    def assign_latent(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Cluster, latent distance to its centre and (with a consensus clusterer, else None) agreement of
        each row of latent features (as ``transform`` gives them)."""
        return self._assign(latent, space=False)[:3]

    def _assign(self, latent: np.ndarray, space: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                np.ndarray | None]:
        """:meth:`assign_latent`, and with ``space`` the rows in :meth:`assignment_space` (else None)."""
        where = None
        if self.clusterer_ is None:
            clusters, dist = assign_to_centroids(latent, self.cluster_centers_)
            return clusters, dist, None, np.asarray(latent, dtype="float64") if space else None
        if space and hasattr(self.clusterer_, "predict_in_space"):
            clusters, agreement, where = self.clusterer_.predict_in_space(latent)
        elif hasattr(self.clusterer_, "predict_with_agreement"):
            clusters, agreement = self.clusterer_.predict_with_agreement(latent)
        else:
            clusters, agreement = self.clusterer_.predict(latent), None
        if space and where is None:
            where = self.assignment_space(latent)
        clusters = np.asarray(clusters, dtype=int)
        deviation = latent - self.cluster_centers_[clusters]
        deviation *= deviation  # squares in place (the ensemble's latent features are 320 wide)
        dist = np.sqrt(deviation.sum(axis=1))
        return clusters, dist, agreement, where

    def assignment_space(self, latent: np.ndarray) -> np.ndarray:
        """Latent features (as ``transform`` gives them) in the space where each row's cluster is its
        nearest of :attr:`assignment_centers_`: the latent space itself, or a consensus clusterer's
        (:meth:`~custseg.clustering.ConsensusKMeans.assignment_space`). The confidence model works there,
        so that the most probable cluster is the assigned one."""
        self._check_fitted()
        if hasattr(self.clusterer_, "assignment_space"):
            return self.clusterer_.assignment_space(latent)
        return np.asarray(latent, dtype="float64")

    @property
    def assignment_centers_(self) -> np.ndarray:
        """The cluster centres in :meth:`assignment_space`."""
        self._check_fitted()
        if hasattr(self.clusterer_, "assignment_space"):
            return self.clusterer_.consensus_centers_
        return self.cluster_centers_

    def unseen_categories(self, X: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Categories of ``X`` never seen in training, per column, with their counts (from whichever part
        encodes the categories)."""
        self._check_fitted()
        for part in (self.preprocessor_, self.embedder_):
            if hasattr(part, "unseen_categories"):
                return part.unseen_categories(X)
        return {}

    def fit_predict(self, X, y=None, **kwargs) -> np.ndarray:
        """Fit, then the cluster of each training row (``labels_``)."""
        return self.fit(X, y, **kwargs).labels_

    # -- inference -------------------------------------------------------------------------------
    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Latent features of each row."""
        self._check_fitted()
        return np.asarray(self.embedder_.transform(self.preprocessor_.transform(_table(X))), dtype="float64")

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the latent features ``transform`` returns."""
        self._check_fitted()
        if hasattr(self.embedder_, "get_feature_names_out"):
            return np.asarray(self.embedder_.get_feature_names_out(), dtype=object)
        return np.array([f"latent_{i}" for i in range(self.cluster_centers_.shape[1])], dtype=object)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Cluster of each row (nearest centroid in the latent space, or the clusterer's assignment)."""
        return self.assign_latent(self.transform(X))[0]

    def predict_segment(self, X: pd.DataFrame) -> np.ndarray:
        """Known segment of each row's cluster; needs ``y`` at fit time."""
        self._check_fitted()
        if self.mapping_ is None:
            raise NotFittedError("This SegmentationPipeline was fitted without known segments, so it has no "
                                 "cluster -> segment mapping; use predict() for clusters.")
        return np.array([self.mapping_[c] for c in self.predict(X)], dtype=object)

    def score_table(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per row: Cluster, Predicted_Segment (if mapped), Agreement (with a consensus clusterer),
        Distance_To_Centroid, Reconstruction_Error."""
        self._check_fitted()
        X = _table(X)
        columns, _ = self.score_features(self.preprocessor_.transform(X))
        out = columns_frame(columns, X.index if isinstance(X, pd.DataFrame) else None)
        if "Predicted_Segment" in out:  # pandas' own text dtype, as this table has always had it
            out["Predicted_Segment"] = out["Predicted_Segment"].to_numpy()
        return out

    def score_features(self, features, space: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`score_table`'s columns (as arrays) of preprocessed ``features``, and their latent features
        (with ``space``: the rows in :meth:`assignment_space` instead, computed with the clusters)."""
        self._check_fitted()
        latent, error = self.latent_and_error(features)
        clusters, dist, agreement, where = self._assign(latent, space)
        out: dict[str, np.ndarray] = {"Cluster": clusters}
        if self.mapping_ is not None:
            segment_of = np.array([self.mapping_[c] for c in range(len(self.cluster_centers_))], dtype=object)
            out["Predicted_Segment"] = segment_of[clusters]
        if agreement is not None:
            out["Agreement"] = agreement
        out["Distance_To_Centroid"] = dist
        out["Reconstruction_Error"] = error
        return out, where if space else latent

    def latent_and_error(self, features) -> tuple[np.ndarray, np.ndarray]:
        """Latent features (float64) and per-row reconstruction error of preprocessed ``features``,
        with as few passes through the network as the embedder allows (the same numbers as
        ``embedder_.transform`` and ``embedder_.reconstruction_error``)."""
        if hasattr(self.embedder_, "transform_with_error"):  # one encoding for both (the mixed ensemble)
            return self.embedder_.transform_with_error(features)
        latent = np.asarray(self.embedder_.transform(features), dtype="float64")
        if hasattr(self.embedder_, "decode") and np.isfinite(latent).all():
            # decoding the latent features already computed: reconstruction_error()'s numbers, one encode fewer
            return latent, np.mean((self.embedder_.decode(latent) - features) ** 2, axis=1)
        if hasattr(self.embedder_, "reconstruction_error"):
            return latent, self.embedder_.reconstruction_error(features)
        if hasattr(self.embedder_, "inverse_transform"):
            return latent, np.mean((self.embedder_.inverse_transform(latent) - features) ** 2, axis=1)
        return latent, np.full(len(features), np.nan)

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("This SegmentationPipeline instance is not fitted yet. Call 'fit' first.")


def _table(X):
    """A DataFrame as it is; anything else as a 2-D array of numbers (missing values allowed)."""
    if isinstance(X, pd.DataFrame):
        return X
    # infinite values go on to the preprocessor, whose error names the column
    return check_array(X, dtype=np.float64, ensure_all_finite=False)


def _rows(features, rows: np.ndarray | slice):
    """The given rows (positions or a slice) of the preprocessor's output (a DataFrame for ``"passthrough"``)."""
    return features.iloc[rows] if isinstance(features, pd.DataFrame) else features[rows]


def sample_rows(n_rows: int, size: int | None, random_state=None) -> np.ndarray | None:
    """Sorted random rows, ``size`` of ``n_rows`` (seeded by ``random_state``), or None for every row.

    The rows :class:`SegmentationPipeline` fits on with ``fit_sample`` / ``cluster_sample``
    of that size and its ``random_state``.
    """
    if size is None or size >= n_rows:
        return None
    return np.sort(check_random_state(random_state).choice(n_rows, size, replace=False))
