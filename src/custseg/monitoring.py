"""How sure each assignment is, which customers are unlike any seen, and how a new table differs.

Three independent pieces, each pure computing (arrays and DataFrames in, DataFrames and
dicts out, no files, no printing), with fitted state as plain JSON (``to_dict`` /
``from_dict``), never pickle.

:class:`SoftAssigner`
    A probability per cluster in the latent space and, where known segments exist, a
    calibrated probability per segment. The model is a softmax of negative squared
    distances to the K-Means centroids, ``P(c | x) ∝ exp(-||x - mu_c||^2 / T)``.
    This is exactly the posterior of a mixture of isotropic Gaussians with a shared
    variance ``T / 2`` and equal weights, i.e. the probabilistic model whose hard
    assignment *is* K-Means, so the soft and the hard assignment never disagree on the
    most probable cluster (a full Gaussian mixture or the Student-t kernel of DEC can).
    The one free number, the temperature ``T``, is chosen so that the probabilities are
    calibrated: with known segments, ``T`` minimises the segment log loss of
    ``P(s | x) = sum_c P(c | x) P(s | c)`` on out-of-fold rows (``P(s | c)`` counted on
    the other folds, with add-one smoothing), so no row scores its own counts. Without
    known segments ``T = 2 sigma^2``, the shared variance of the mixture estimated from
    the within-cluster spread (the K-Means inertia).

:class:`NoveltyDetector`
    ``Novelty``: a score in [0, 100], the percentile of the training distribution.
    Two signals, each first turned into its training percentile: the autoencoder's
    reconstruction error (a customer the network cannot reproduce) and the squared
    latent distance to the nearest centroid (the negative log density of the mixture
    above, up to constants: a customer far from every group). The combined raw score
    is the larger of the two percentiles ("unusual in either way"), and ``Novelty`` is
    the percentile of that maximum among training rows, so ``Novelty > 99`` flags
    about 1% of training customers whatever the two signals look like. ``Unusual`` is
    ``Novelty > threshold`` (99 by default) *or* any per-row guard firing; ``Reason``
    says why.

    Guards, checked on the table as read (before imputation hides anything):

    * ``out_of_range``: a number beyond the training range by more than
      ``range_factor`` (0.5) times that range, i.e. outside
      ``[min - 0.5 (max - min), max + 0.5 (max - min)]``. The range, not the IQR, is
      the yardstick because count-like columns (Work_Experience: IQR 4, but many 0)
      would flag honest values with an IQR rule. Age in training is 18..89, so ages
      below -17.5 or above 124.5 are flagged; Age x 1,000 always is.
    * ``overflow``: a value whose magnitude is infinite or exceeds the float32 maximum
      (3.4e38): the network computes in float32 and would turn it into inf/NaN.
    * ``unseen_category``: a category never seen in training (mapped to the training
      mode by the preprocessor, so the segment rests on a guess).
    * ``all_missing``: every feature of the row is empty (the row would be all
      imputed values, i.e. the "median customer").
    * ``column_missing``: a feature column empty in every row of the table; a
      table-level condition, reported in the summary, not per row.

:func:`drift_report`
    Per feature a two-sample test (Kolmogorov-Smirnov for numbers, chi-square for
    categories), the population stability index and a difference in means or shares;
    the change in missingness; a classifier two-sample test on the whole table; the
    shift in segment shares; returning customers. See its docstring for the verdict rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from sklearn.base import BaseEstimator

from .exceptions import ConfigError, DataError, NotFittedError
from .io.reading import columns_frame, is_in
from .schema import Schema, category_text

__all__ = [
    "SoftAssigner",
    "NoveltyDetector",
    "NoveltySummary",
    "CustomerMonitor",
    "expected_calibration_error",
    "reliability_table",
    "confidence_by_segment",
    "extreme_customers",
    "DriftReport",
    "drift_report",
    "drift_markdown",
    "classifier_two_sample_test",
    "population_stability_index",
    "GUARD_KINDS",
]

#: the per-row and per-table guards, in the order their summary lines are printed
GUARD_KINDS = ("unusual", "out_of_range", "overflow", "unseen_category", "all_missing", "column_missing")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ================================================================================================
# soft assignment and calibration
# ================================================================================================
def _squared_distances(latent: np.ndarray, centers: np.ndarray) -> np.ndarray:
    latent = np.asarray(latent, dtype="float64")
    centers = np.asarray(centers, dtype="float64")
    sq = latent @ (-2.0 * centers.T)
    sq += (latent ** 2).sum(axis=1)[:, None]
    sq += (centers ** 2).sum(axis=1)[None, :]
    return np.maximum(sq, 0.0, out=sq)  # rounding can take a zero distance just below 0


def _softmax_neg(sq: np.ndarray, temperature: float) -> np.ndarray:
    logits = -sq / temperature
    logits -= logits.max(axis=1, keepdims=True)  # exp of the largest logit is 1: no overflow
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


class SoftAssigner(BaseEstimator):
    """Probabilities of clusters and known segments for points in the latent space.

    See the module docstring for the model. ``fit`` takes the latent features of the
    training rows, their K-Means clusters, the centroids and (optionally) known
    segments.

    Parameters
    ----------
    temperature : float, optional
        Fixed temperature ``T``; fitted if None.
    n_folds : int, default=5
        Folds of the out-of-fold fit of ``T``.
    random_state : int, default=0

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_latent)
    temperature_ : float
    segments_ : list of str or None
        Known segments, sorted.
    segment_given_cluster_ : ndarray of shape (n_clusters, n_segments) or None
        ``P(segment | cluster)`` from all training rows, add-one smoothed.
    mapping_ : dict or None
        Cluster -> predicted segment (the pipeline's majority mapping).
    calibration_ : DataFrame or None
        Reliability table (:func:`reliability_table`) of ``Segment_Probability`` on
        out-of-fold training rows at the fitted temperature; None if ``T`` was given.
    calibration_error_ : float or None
        Its expected calibration error.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> soft = SoftAssigner(temperature=0.5).fit(z, [0, 0, 1, 1], np.array([[0.05], [1.05]]))
    >>> soft.predict_proba(np.array([[0.05]])).round(2)
    array([[0.9, 0.1]])
    """

    def __init__(self, temperature=None, n_folds=5, random_state=0):
        self.temperature = temperature
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, latent, clusters, centers, segments=None, mapping=None) -> "SoftAssigner":
        """Fit the temperature and ``P(segment | cluster)``.

        Parameters
        ----------
        latent : ndarray of shape (n, n_latent)
        clusters : array of int
            Hard cluster of each row.
        centers : ndarray of shape (n_clusters, n_latent)
        segments : array of str, optional
            Known segment of each row (missing allowed).
        mapping : dict, optional
            Cluster -> predicted segment; the most common segment per cluster if None.
        """
        if self.temperature is not None and not float(self.temperature) > 0:
            raise ConfigError(f"The 'temperature' parameter must be a float > 0. Got {self.temperature!r} instead.")
        centers = np.asarray(centers, dtype="float64")
        clusters = np.asarray(clusters, dtype=int)
        sq = _squared_distances(latent, centers)
        k = len(centers)
        self.cluster_centers_ = centers
        self.segments_, self.segment_given_cluster_, self.mapping_ = None, None, None
        self.calibration_, self.calibration_error_ = None, None
        # the shared variance of the isotropic mixture: mean within-cluster squared distance per dimension
        sigma2 = max(float(sq[np.arange(len(sq)), clusters].mean()) / max(centers.shape[1], 1), 1e-12)
        default_t = 2.0 * sigma2
        labelled = None
        if segments is not None:
            seg = pd.Series(np.asarray(segments, dtype=object))
            labelled = seg.notna().to_numpy()
            if labelled.sum() >= 2:
                self.segments_ = sorted({str(s) for s in seg[labelled]})
        if self.segments_ is None:
            self.temperature_ = float(self.temperature) if self.temperature is not None else default_t
            return self
        codes = pd.Categorical(seg[labelled].map(str), categories=self.segments_).codes
        lab_sq, lab_clusters = sq[labelled], clusters[labelled]
        self.segment_given_cluster_ = _segment_given_cluster(lab_clusters, codes, k, len(self.segments_))
        if mapping is None:
            mapping = {c: self.segments_[int(np.argmax(self.segment_given_cluster_[c]))] for c in range(k)}
        self.mapping_ = {int(c): str(s) for c, s in mapping.items()}
        if self.temperature is not None:
            self.temperature_ = float(self.temperature)
            return self
        # out-of-fold P(s|c): a row never scores with counts that include itself
        rng = np.random.default_rng(self.random_state)
        folds = rng.permutation(len(codes)) % max(2, int(self.n_folds))
        oof = np.empty((len(codes), k, len(self.segments_)))
        for f in np.unique(folds):
            part = folds == f
            table = _segment_given_cluster(lab_clusters[~part], codes[~part], k, len(self.segments_))
            oof[part] = table[None, :, :]
        true = oof[np.arange(len(codes)), :, codes]  # (n, k): P(true segment | c) per cluster

        def loss(log_t: float) -> float:
            p = (_softmax_neg(lab_sq, np.exp(log_t)) * true).sum(axis=1)
            return float(-np.log(np.maximum(p, 1e-12)).mean())

        # the loss can be flat over decades of T (near-hard assignments): a coarse grid first finds the right
        # basin, then Brent's method refines within one grid step of it
        centre = np.log(default_t)
        grid = centre + np.linspace(-12.0, 12.0, 49)
        best = int(np.argmin([loss(g) for g in grid]))
        lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
        res = optimize.minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
        self.temperature_ = float(np.exp(res.x))
        # out-of-fold reliability of Segment_Probability at the fitted temperature: the held-out check
        predicted = np.array([self.segments_.index(self.mapping_[c]) for c in range(k)])[lab_clusters]
        seg_p = np.einsum("nk,nks->ns", _softmax_neg(lab_sq, self.temperature_), oof)
        prob = seg_p[np.arange(len(codes)), predicted]
        self.calibration_ = reliability_table(prob, predicted == codes)
        self.calibration_error_ = expected_calibration_error(prob, predicted == codes)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("This SoftAssigner instance is not fitted yet. Call 'fit' first.")

    def predict_proba(self, latent) -> np.ndarray:
        """``P(cluster | x)``, shape (n, n_clusters)."""
        self._check_fitted()
        return _softmax_neg(_squared_distances(latent, self.cluster_centers_), self.temperature_)

    def _proba_from_distances(self, sq: np.ndarray) -> np.ndarray:
        return _softmax_neg(sq.copy(), self.temperature_)

    def segment_proba(self, cluster_proba: np.ndarray) -> np.ndarray:
        """``P(segment | x) = sum_c P(c | x) P(segment | c)``, shape (n, n_segments)."""
        self._check_fitted()
        if self.segment_given_cluster_ is None:
            raise NotFittedError("This SoftAssigner was fitted without known segments; it has no segment probabilities.")
        return cluster_proba @ self.segment_given_cluster_

    def score(self, latent, clusters=None, probabilities: bool = False, _sq: np.ndarray | None = None) -> pd.DataFrame:
        """The confidence columns of scored rows.

        Parameters
        ----------
        latent : ndarray
        clusters : array of int, optional
            Assigned clusters (nearest centroid if None).
        probabilities : bool, default=False
            Add ``P_Cluster_<c>`` per cluster.

        Returns
        -------
        DataFrame
            ``Confidence`` (probability of the assigned cluster), ``Second_Cluster``,
            and with known segments ``Segment_Probability`` (probability of the
            predicted segment, the mapping of the assigned cluster) and
            ``Second_Segment`` (the most probable other segment).
        """
        return columns_frame(self._score_columns(latent, clusters, probabilities, _sq))

    def _score_columns(self, latent, clusters=None, probabilities: bool = False,
                       _sq: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """:meth:`score`'s columns as arrays (one DataFrame is built for all of a customer's scores)."""
        self._check_fitted()
        proba = self.predict_proba(latent) if _sq is None else self._proba_from_distances(_sq)
        n = len(proba)
        rows = np.arange(n)
        clusters = np.argmax(proba, axis=1) if clusters is None else np.asarray(clusters, dtype=int)
        masked = proba.copy()
        masked[rows, clusters] = -1.0
        out = {"Confidence": proba[rows, clusters], "Second_Cluster": np.argmax(masked, axis=1)}
        if self.segment_given_cluster_ is not None:
            seg_p = self.segment_proba(proba)
            lookup = {s: i for i, s in enumerate(self.segments_)}
            predicted = np.array([lookup[self.mapping_[c]] for c in range(len(self.cluster_centers_))])[clusters]
            out["Segment_Probability"] = seg_p[rows, predicted]
            seg_p[rows, predicted] = -1.0
            # object dtype on purpose: pandas would otherwise convert a million strings to Arrow text
            out["Second_Segment"] = np.asarray(self.segments_, dtype=object)[np.argmax(seg_p, axis=1)]
        if probabilities:
            for c in range(proba.shape[1]):
                out[f"P_Cluster_{c}"] = proba[:, c]
        # a row whose latent features are not finite (a value the network cannot represent) has no probability
        bad = ~np.isfinite(proba).all(axis=1)
        if bad.any():
            for name in ("Confidence", "Segment_Probability"):
                if name in out:
                    out[name] = np.where(bad, np.nan, out[name])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Fitted state as plain JSON-able data."""
        self._check_fitted()
        return {"params": self.get_params(), "cluster_centers": self.cluster_centers_.tolist(),
                "temperature": self.temperature_, "segments": self.segments_,
                "segment_given_cluster": None if self.segment_given_cluster_ is None
                else self.segment_given_cluster_.tolist(),
                "mapping": None if self.mapping_ is None else {str(k): v for k, v in self.mapping_.items()},
                "calibration": None if self.calibration_ is None else
                {c: [None if pd.isna(v) else float(v) for v in self.calibration_[c]] for c in self.calibration_},
                "calibration_error": self.calibration_error_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SoftAssigner":
        soft = cls(**data["params"])
        soft.cluster_centers_ = np.asarray(data["cluster_centers"], dtype="float64")
        soft.temperature_ = float(data["temperature"])
        soft.segments_ = None if data["segments"] is None else [str(s) for s in data["segments"]]
        table = data["segment_given_cluster"]
        soft.segment_given_cluster_ = None if table is None else np.asarray(table, dtype="float64")
        soft.mapping_ = None if data["mapping"] is None else {int(k): str(v) for k, v in data["mapping"].items()}
        soft.calibration_ = None if data.get("calibration") is None else \
            pd.DataFrame(data["calibration"], dtype="float64").astype({"count": "int64"})
        soft.calibration_error_ = data.get("calibration_error")
        if soft.segment_given_cluster_ is not None and \
                soft.segment_given_cluster_.shape != (len(soft.cluster_centers_), len(soft.segments_)):
            raise ValueError("segment_given_cluster does not match the clusters and segments")
        return soft


def _segment_given_cluster(clusters: np.ndarray, codes: np.ndarray, k: int, s: int) -> np.ndarray:
    counts = np.zeros((k, s))
    np.add.at(counts, (clusters, codes), 1.0)
    counts += 1.0  # add-one: a segment never seen in a small cluster is unlikely, not impossible
    return counts / counts.sum(axis=1, keepdims=True)


def reliability_table(probability, correct, n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram data: per equal-width probability bin, mean probability and observed accuracy.

    Parameters
    ----------
    probability : array of float
        Predicted probability of the predicted class.
    correct : array of bool
        Whether the prediction was right.
    n_bins : int, default=10

    Returns
    -------
    DataFrame
        ``bin_low, bin_high, count, mean_probability, accuracy`` (empty bins kept, NaN).
    """
    p = np.asarray(probability, dtype="float64")
    y = np.asarray(correct, dtype="float64")
    keep = np.isfinite(p)
    p, y = p[keep], y[keep]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        acc = np.bincount(idx, weights=y, minlength=n_bins) / count
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": count,
                         "mean_probability": mean_p, "accuracy": acc})


def expected_calibration_error(probability, correct, n_bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - mean probability| over bins.

    >>> expected_calibration_error([0.8, 0.8, 0.8, 0.8, 0.8], [1, 1, 1, 1, 0])
    0.0
    """
    table = reliability_table(probability, correct, n_bins)
    used = table["count"] > 0
    if not used.any():
        return float("nan")
    t = table[used]
    return float(round((t["count"] * (t["accuracy"] - t["mean_probability"]).abs()).sum() / t["count"].sum(), 12))


# ================================================================================================
# novelty and per-column guards
# ================================================================================================
_GRID = np.linspace(0.0, 100.0, 1001)


def _quantiles(values: np.ndarray) -> list[float]:
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return [0.0] * len(_GRID)
    return np.percentile(values, _GRID).tolist()


def _percentile_of(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Percentile of each value in the training distribution summarised by ``quantiles`` (0..100 by 0.1).

    The empirical CDF, linearly interpolated between grid points: a value equal to many
    training values (ties) takes the highest percentile they span.
    """
    values = np.asarray(values, dtype="float64")
    q = np.asarray(quantiles, dtype="float64")
    j = np.searchsorted(q, values, side="right") - 1  # last grid quantile <= value
    inner = (j >= 0) & (j < len(q) - 1)
    jj = np.clip(j, 0, len(q) - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((values - q[jj]) / (q[jj + 1] - q[jj]), 0.0, 1.0)
    step = _GRID[1] - _GRID[0]
    out = np.where(j < 0, 0.0, np.where(inner, _GRID[jj] + frac * step, 100.0))
    return np.where(np.isnan(values), np.nan, out)


@dataclass
class NoveltySummary:
    """Counts of what the guards saw, additive over chunks of one table.

    Attributes
    ----------
    rows : int
    counts : dict
        Guard kind -> number of rows it fired on.
    details : dict
        Guard kind -> {detail text -> rows}, e.g. ``{"Profession='Astronaut'": 3}``.
    missing_per_column : dict
        Feature column -> rows where it was empty (for ``column_missing``).
    unseen_categories : dict
        Column -> {unseen category -> rows}, as
        :meth:`~custseg.preprocessing.CustomerPreprocessor.unseen_categories` reports them.
    """

    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_per_column: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, dict[str, int]] = field(default_factory=dict)

    def __add__(self, other: "NoveltySummary") -> "NoveltySummary":
        out = NoveltySummary(self.rows + other.rows, dict(self.counts), {k: dict(v) for k, v in self.details.items()},
                             dict(self.missing_per_column), {k: dict(v) for k, v in self.unseen_categories.items()})
        for col, d in other.unseen_categories.items():
            mine = out.unseen_categories.setdefault(col, {})
            for t, v in d.items():
                mine[t] = mine.get(t, 0) + v
            out.unseen_categories[col] = dict(sorted(mine.items()))
        for k, v in other.counts.items():
            out.counts[k] = out.counts.get(k, 0) + v
        for k, d in other.details.items():
            mine = out.details.setdefault(k, {})
            for t, v in d.items():
                mine[t] = mine.get(t, 0) + v
        for k, v in other.missing_per_column.items():
            out.missing_per_column[k] = out.missing_per_column.get(k, 0) + v
        return out

    @property
    def columns_missing(self) -> list[str]:
        """Feature columns empty in every row."""
        if not self.rows:
            return []
        return [c for c, n in self.missing_per_column.items() if n == self.rows]

    def lines(self, unseen: bool = True) -> list[str]:
        """One line per guard that fired, e.g. '312 customers (12%) are unlike any training customer: ...'.

        ``unseen=False`` leaves out the unseen-category line (for a caller that lists them per column).
        """
        n = self.rows
        out = []

        def share(k: int, verb: str) -> str:
            # "1 customer (0.952%) is", "2 customers (1.9%) are"
            verb = {"are": "is", "have": "has"}[verb] if k == 1 else verb
            return (f"{k} customer{'s' if k != 1 else ''} ({100 * k / n:.3g}%) {verb}" if n
                    else f"{k} customers {verb}")

        def top(kind: str) -> str:
            items = sorted(self.details.get(kind, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            text = ", ".join(f"{t} ({v})" for t, v in items[:5])
            return text + (f" and {len(items) - 5} more" if len(items) > 5 else "")

        c = self.counts
        if c.get("unusual"):
            out.append(f"{share(c['unusual'], 'are')} unlike any training customer: see column Unusual")
        if c.get("out_of_range"):
            out.append(f"{share(c['out_of_range'], 'have')} a number far outside the training range: {top('out_of_range')}")
        if c.get("overflow"):
            out.append(f"{share(c['overflow'], 'have')} a value that overflows float32: {top('overflow')}")
        if c.get("unseen_category") and unseen:
            out.append(f"{share(c['unseen_category'], 'have')} a category never seen in training (imputed with the "
                       f"training mode): {top('unseen_category')}")
        if c.get("all_missing"):
            out.append(f"{share(c['all_missing'], 'have')} every feature missing: their segment is a guess")
        for col in self.columns_missing:
            out.append(f"column {col!r} is empty in every row: imputed with its training value for all customers")
        return out

    def problems(self) -> list[str]:
        """The guard lines that ``--strict`` turns into an error (data problems, not the statistical flag)."""
        lines = self.lines()
        return [ln for ln in lines if "unlike any training customer" not in ln]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "counts": dict(self.counts), "details": self.details,
                "columns_missing": self.columns_missing, "lines": self.lines()}


class NoveltyDetector(BaseEstimator):
    """Novelty score, Unusual flag and Reason per customer; see the module docstring for the rule.

    Parameters
    ----------
    threshold : float, default=99.0
        ``Unusual`` when ``Novelty`` is above this training percentile.
    range_factor : float, default=0.5
        A number is far outside the training range beyond ``min - f*(max-min)`` or ``max + f*(max-min)``.
    numeric, categorical : list of str, optional
        Feature columns by kind; if both None, numeric dtypes are numeric and the rest categorical.

    Attributes
    ----------
    ranges_ : dict
        Numeric column -> [training min, training max].
    categories_ : dict
        Categorical column -> sorted training categories.
    reconstruction_quantiles_, distance_quantiles_, combined_quantiles_ : ndarray
        Training distributions at percentiles 0, 0.1, ..., 100.
    """

    def __init__(self, threshold=99.0, range_factor=0.5, numeric=None, categorical=None):
        self.threshold = threshold
        self.range_factor = range_factor
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, reconstruction_error, latent_distance,
            seen: pd.DataFrame | None = None) -> "NoveltyDetector":
        """Learn the training ranges, categories and score distributions.

        Parameters
        ----------
        X : DataFrame
            Training feature columns, as read.
        reconstruction_error, latent_distance : array of float
            Per training row; the distance is squared, to the nearest centroid.
        seen : DataFrame, optional
            The rows whose numeric ranges and categories count as seen in training, if
            not ``X`` (every training row, when the scores come from a sample of them).
        """
        self._validate_params()
        X = X if seen is None else seen
        numeric = list(self.numeric) if self.numeric is not None else \
            [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and self.categorical is None]
        categorical = list(self.categorical) if self.categorical is not None else \
            [c for c in X.columns if c not in numeric]
        self.ranges_ = {}
        for c in numeric:
            v = pd.to_numeric(X[c], errors="coerce").astype("float64")
            v = v[np.isfinite(v)]
            self.ranges_[c] = [float(v.min()), float(v.max())] if len(v) else [0.0, 0.0]
        self.categories_ = {c: sorted({category_text(v) for v in X[c].dropna()}) for c in categorical}
        self.feature_names_in_ = [c for c in X.columns if c in self.ranges_ or c in self.categories_]
        r = _percentile_of(reconstruction_error, np.asarray(q := _quantiles(reconstruction_error)))
        self.reconstruction_quantiles_ = np.asarray(q)
        self.distance_quantiles_ = np.asarray(_quantiles(latent_distance))
        d = _percentile_of(latent_distance, self.distance_quantiles_)
        self.combined_quantiles_ = np.asarray(_quantiles(np.fmax(r, d)))
        return self

    def _validate_params(self) -> None:
        if not 0 <= float(self.threshold) <= 100:
            raise ConfigError(f"The 'threshold' parameter must be a percentile in [0, 100]. Got {self.threshold!r} instead.")
        if not float(self.range_factor) >= 0:
            raise ConfigError(f"The 'range_factor' parameter must be a float >= 0. Got {self.range_factor!r} instead.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "combined_quantiles_"):
            raise NotFittedError("This NoveltyDetector instance is not fitted yet. Call 'fit' first.")

    def novelty(self, reconstruction_error, latent_distance) -> np.ndarray:
        """The combined novelty percentile (0..100) of each row; NaN signals become 100."""
        self._check_fitted()
        r = _percentile_of(reconstruction_error, self.reconstruction_quantiles_)
        d = _percentile_of(latent_distance, self.distance_quantiles_)
        score = _percentile_of(np.fmax(r, d), self.combined_quantiles_)
        # a row the network could not represent has no finite error: as unlike training as can be
        return np.where(np.isnan(r) | np.isnan(d), 100.0, score)

    def guards(self, X: pd.DataFrame) -> tuple[np.ndarray, NoveltySummary]:
        """Per row the reasons of the guards that fired ('' if none), and the summary counts."""
        self._check_fitted()
        n = len(X)
        reason = np.full(n, "", dtype=object)
        summary = NoveltySummary(rows=n)
        any_present = np.zeros(n, dtype=bool)
        f = float(self.range_factor)

        def add(kind: str, mask: np.ndarray, text, detail) -> None:
            if not mask.any():
                return
            part = reason[mask]
            msg = text if isinstance(text, str) else np.asarray(text, dtype=object)
            reason[mask] = np.where(part == "", msg, part + "; " + msg)
            d = summary.details.setdefault(kind, {})
            for t, v in (detail.items() if isinstance(detail, dict) else [(detail, int(mask.sum()))]):
                d[t] = d.get(t, 0) + v

        kind_masks = {k: np.zeros(n, dtype=bool) for k in ("out_of_range", "overflow", "unseen_category")}
        for col in self.feature_names_in_:
            if col not in X.columns:
                summary.missing_per_column[col] = n
                continue
            if col in self.ranges_:
                v = X[col].to_numpy()
                v = v.astype("float64") if v.dtype.kind in "fiub" else \
                    pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                present = ~np.isnan(v)
                summary.missing_per_column[col] = int(n - present.sum())
                any_present |= present
                lo, hi = self.ranges_[col]
                span = hi - lo
                with np.errstate(invalid="ignore"):
                    overflow = present & ~(np.abs(v) <= _FLOAT32_MAX)
                    far = present & ~overflow & ((v < lo - f * span) | (v > hi + f * span))
                add("overflow", overflow, f"{col} value overflows float32", col)
                add("out_of_range", far, f"{col} far outside training range ({lo:g} to {hi:g})", col)
                kind_masks["overflow"] |= overflow
                kind_masks["out_of_range"] |= far
            else:
                raw = X[col]
                present = pd.notna(raw.to_numpy())
                summary.missing_per_column[col] = int(n - present.sum())
                any_present |= present
                # a hash lookup of the values as they are settles nearly every row; only the rest (numbers
                # written as 1.0, true novelties) need their canonical text
                suspect = np.flatnonzero(present & ~is_in(raw, self.categories_[col]))
                if len(suspect):
                    codes, uniques = pd.factorize(raw.iloc[suspect])
                    texts = np.array([category_text(u) for u in uniques], dtype=object)[codes]
                    new_rows = ~np.isin(texts, self.categories_[col])
                    mask = np.zeros(n, dtype=bool)
                    mask[suspect[new_rows]] = True
                    row_text = texts[new_rows]
                if len(suspect) and mask.any():
                    counts = pd.Series(row_text).value_counts().sort_index()
                    summary.unseen_categories[col] = {str(t): int(v) for t, v in counts.items()}
                    add("unseen_category", mask, [f"unseen category {col}={t!r}" for t in row_text],
                        {f"{col}={t!r}": int(v) for t, v in counts.items()})
                    kind_masks["unseen_category"] |= mask
        all_missing = ~any_present if self.feature_names_in_ else np.zeros(n, dtype=bool)
        add("all_missing", all_missing, "all features missing", "all features")
        kind_masks["all_missing"] = all_missing
        for kind, mask in kind_masks.items():
            if mask.any():
                summary.counts[kind] = int(mask.sum())
            else:
                summary.counts.pop(kind, None)
        return reason, summary

    def score(self, X: pd.DataFrame, reconstruction_error, latent_distance) -> tuple[pd.DataFrame, NoveltySummary]:
        """``Novelty``, ``Unusual`` and ``Reason`` per row, and the summary of the guards.

        Parameters
        ----------
        X : DataFrame
            The rows as read (feature columns at least).
        reconstruction_error, latent_distance : array of float
            As given to :meth:`fit`, for these rows.
        """
        columns, summary = self._score_columns(X, reconstruction_error, latent_distance)
        return columns_frame(columns, X.index), summary

    def _score_columns(self, X: pd.DataFrame, reconstruction_error,
                       latent_distance) -> tuple[dict[str, np.ndarray], NoveltySummary]:
        """:meth:`score`'s columns as arrays."""
        reason, summary = self.guards(X)
        novelty = self.novelty(reconstruction_error, latent_distance)
        guarded = reason != ""
        novelty = np.where(guarded, 100.0, novelty)
        high = novelty > float(self.threshold)
        unusual = high | guarded
        reason = np.where(high & ~guarded, f"novelty above the training {float(self.threshold):g}th percentile",
                          reason)
        summary.counts["unusual"] = int(unusual.sum())
        return {"Novelty": novelty, "Unusual": unusual, "Reason": reason.astype(object, copy=False)}, summary

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"params": self.get_params(), "feature_names_in": list(self.feature_names_in_),
                "ranges": self.ranges_, "categories": self.categories_,
                "reconstruction_quantiles": self.reconstruction_quantiles_.tolist(),
                "distance_quantiles": self.distance_quantiles_.tolist(),
                "combined_quantiles": self.combined_quantiles_.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NoveltyDetector":
        det = cls(**data["params"])
        det.feature_names_in_ = [str(c) for c in data["feature_names_in"]]
        det.ranges_ = {k: [float(a), float(b)] for k, (a, b) in data["ranges"].items()}
        det.categories_ = {k: [str(x) for x in v] for k, v in data["categories"].items()}
        for name in ("reconstruction_quantiles", "distance_quantiles", "combined_quantiles"):
            arr = np.asarray(data[name], dtype="float64")
            if arr.shape != _GRID.shape:
                raise ValueError(f"{name} must hold {len(_GRID)} values")
            setattr(det, name + "_", arr)
        return det


class CustomerMonitor(BaseEstimator):
    """Confidence and novelty columns of scored customers: a :class:`SoftAssigner` and a :class:`NoveltyDetector`.

    Parameters
    ----------
    numeric, categorical : list of str, optional
        Feature columns by kind (see :class:`NoveltyDetector`).
    threshold : float, default=99.0
        ``Unusual`` above this training percentile of ``Novelty``.
    range_factor : float, default=0.5
        See :class:`NoveltyDetector`.
    temperature : float, optional
        Fixed temperature of the soft assignment; fitted if None.
    random_state : int, default=0
    space : {"latent", "assignment"}, default="latent"
        What the coordinates given to :meth:`fit` and :meth:`score` are: the latent
        features, or the pipeline's
        :meth:`~custseg.pipeline.SegmentationPipeline.assignment_space` (a consensus
        ensemble's clusters are nearest centres there, not in the latent space; a model
        folder whose monitoring.json names no space was fitted on the latent features).

    Attributes
    ----------
    soft_ : SoftAssigner
    novelty_ : NoveltyDetector
    """

    def __init__(self, numeric=None, categorical=None, threshold=99.0, range_factor=0.5, temperature=None,
                 random_state=0, space="latent"):
        self.space = space
        self.numeric = numeric
        self.categorical = categorical
        self.threshold = threshold
        self.range_factor = range_factor
        self.temperature = temperature
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, latent, reconstruction_error, clusters, centers, segments=None,
            mapping=None, seen: pd.DataFrame | None = None) -> "CustomerMonitor":
        """Fit on the training rows as read, their latent features, errors, clusters and known segments.

        ``seen``: the rows whose ranges and categories count as seen, if not ``X`` (every
        training row, when the rest is fitted on a sample of them; see :meth:`NoveltyDetector.fit`).
        """
        centers = np.asarray(centers, dtype="float64")
        self.soft_ = SoftAssigner(temperature=self.temperature, random_state=self.random_state).fit(
            latent, clusters, centers, segments, mapping)
        dist = _squared_distances(latent, centers)[np.arange(len(latent)), np.asarray(clusters, dtype=int)]
        self.novelty_ = NoveltyDetector(threshold=self.threshold, range_factor=self.range_factor,
                                        numeric=self.numeric, categorical=self.categorical).fit(
            X, reconstruction_error, dist, seen=seen)
        return self

    def score(self, X: pd.DataFrame, latent, reconstruction_error, clusters,
              probabilities: bool = False) -> tuple[pd.DataFrame, NoveltySummary]:
        """``Confidence, Second_Cluster[, Segment_Probability, Second_Segment], Novelty, Unusual, Reason[, P_Cluster_*]``.

        Returns the columns (index of ``X``) and the summary of the guards.
        """
        columns, summary = self.score_columns(X, latent, reconstruction_error, clusters, probabilities)
        return columns_frame(columns, X.index), summary

    def score_columns(self, X: pd.DataFrame, latent, reconstruction_error, clusters,
                      probabilities: bool = False) -> tuple[dict[str, np.ndarray], NoveltySummary]:
        """:meth:`score`'s columns as arrays, in order, for a caller that builds one table of all its columns."""
        if not hasattr(self, "soft_"):
            raise NotFittedError("This CustomerMonitor instance is not fitted yet. Call 'fit' first.")
        clusters = np.asarray(clusters, dtype=int)
        sq = _squared_distances(latent, self.soft_.cluster_centers_)
        soft = self.soft_._score_columns(latent, clusters, probabilities=probabilities, _sq=sq)
        novelty, summary = self.novelty_._score_columns(X, reconstruction_error, sq[np.arange(len(sq)), clusters])
        out = {name: values for name, values in soft.items() if not name.startswith("P_Cluster_")}
        out.update(novelty)
        out.update((name, values) for name, values in soft.items() if name.startswith("P_Cluster_"))
        return out, summary

    def to_dict(self) -> dict[str, Any]:
        """Fitted state as plain JSON-able data (monitoring.json of a model folder)."""
        if not hasattr(self, "soft_"):
            raise NotFittedError("This CustomerMonitor instance is not fitted yet. Call 'fit' first.")
        return {"params": self.get_params(), "soft_assignment": self.soft_.to_dict(),
                "novelty": self.novelty_.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CustomerMonitor":
        mon = cls(**data["params"])
        if mon.space not in ("latent", "assignment"):
            raise ValueError(f"monitoring space must be 'latent' or 'assignment', not {mon.space!r}")
        mon.soft_ = SoftAssigner.from_dict(data["soft_assignment"])
        mon.novelty_ = NoveltyDetector.from_dict(data["novelty"])
        return mon


def confidence_by_segment(scored: pd.DataFrame, column: str = "Segment_Probability",
                          by: str = "Predicted_Segment") -> pd.DataFrame:
    """Distribution of a confidence column per segment: customers, mean, quartiles, share below 0.5, share Unusual."""
    if by not in scored.columns:
        by = "Cluster"
    if column not in scored.columns:
        column = "Confidence"
    g = scored.groupby(scored[by].astype(str), sort=True)
    out = pd.DataFrame({"customers": g.size(), "mean": g[column].mean(), "q25": g[column].quantile(0.25),
                        "median": g[column].median(), "q75": g[column].quantile(0.75),
                        "below_half": g[column].apply(lambda v: float((v < 0.5).mean()))})
    if "Unusual" in scored.columns:
        out["unusual"] = g["Unusual"].mean()
    return out.rename_axis(by).reset_index()


def extreme_customers(scored: pd.DataFrame, frame: pd.DataFrame, column: str, n: int = 10,
                      largest: bool = True, keep: Sequence[str] = ()) -> pd.DataFrame:
    """The ``n`` customers with the largest (or smallest) ``column``, with their attributes.

    ``scored`` and ``frame`` are aligned row by row (same length and order). Ties keep
    table order, so the result is deterministic.
    """
    values = pd.to_numeric(scored[column], errors="coerce").to_numpy(dtype="float64")
    key = np.where(np.isnan(values), -np.inf if largest else np.inf, values)
    order = np.argsort(-key if largest else key, kind="stable")[:n]
    shown = [c for c in ["ID", "Predicted_Segment", "Cluster", *keep, column] if c in scored.columns]
    shown = list(dict.fromkeys(shown))
    left = scored.iloc[order][shown].reset_index(drop=True)
    right = frame.iloc[order].drop(columns=[c for c in frame.columns if c in left.columns]).reset_index(drop=True)
    return pd.concat([left, right], axis=1)


# ================================================================================================
# drift between a reference table and new customers
# ================================================================================================
#: columns of :attr:`DriftReport.features`, the rows of drift.csv
DRIFT_COLUMNS = ["feature", "kind", "test", "statistic", "p_value", "psi", "effect", "drifted"]


def population_stability_index(reference_counts, new_counts, epsilon: float = 1e-4) -> float:
    """PSI = sum over bins of (new share - reference share) * ln(new share / reference share).

    Shares are floored at ``epsilon`` so an empty bin does not make it infinite. The usual
    reading: below 0.1 no material shift, 0.1 to 0.25 a moderate one, above 0.25 a large one.

    >>> round(population_stability_index([50, 50], [50, 50]), 6)
    0.0
    """
    r = np.asarray(reference_counts, dtype="float64")
    n = np.asarray(new_counts, dtype="float64")
    if r.sum() == 0 or n.sum() == 0:
        return float("nan")
    r = np.maximum(r / r.sum(), epsilon)
    n = np.maximum(n / n.sum(), epsilon)
    return float(np.sum((n - r) * np.log(n / r)))


def _numeric_bin_counts(ref: np.ndarray, new: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both samples in the reference's deciles (each distinct value its own bin if there are few)."""
    distinct = np.unique(ref)
    if len(distinct) <= 2 * n_bins:
        edges = (distinct[:-1] + distinct[1:]) / 2  # one bin per reference value
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return (np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1),
            np.bincount(np.searchsorted(edges, new, side="right"), minlength=len(edges) + 1))


@dataclass
class DriftReport:
    """What :func:`drift_report` found; :func:`drift_markdown` renders it.

    Attributes
    ----------
    features : DataFrame
        One row per feature (kind ``numeric`` / ``categorical``) and one per feature's
        missingness (kind ``missing``), columns :data:`DRIFT_COLUMNS`.
    classifier : dict
        ``auc``, ``low``, ``high`` (95% bootstrap interval), ``folds``, ``model``, ``drifted``.
    segments : DataFrame or None
        Per segment: counts and shares in both tables and their difference.
    segment_test : dict or None
        Chi-square test of equal segment shares: ``statistic``, ``p_value``, ``psi``, ``drifted``.
    returning : dict or None
        ``ids_in_both``, ``share_of_new``, ``all_attributes_match``, ``mean_matching``,
        ``per_feature`` (feature -> share of returning customers whose value is unchanged).
    reference_rows, new_rows : int
    settings : dict
        The thresholds of the verdicts.
    """

    features: pd.DataFrame
    classifier: dict[str, Any]
    segments: pd.DataFrame | None = None
    segment_test: dict[str, Any] | None = None
    returning: dict[str, Any] | None = None
    reference_rows: int = 0
    new_rows: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        """Features whose distribution (not missingness) drifted."""
        f = self.features
        return f.loc[f["drifted"] & (f["kind"] != "missing"), "feature"].tolist()

    def summary_lines(self) -> list[str]:
        """What ``custseg drift`` prints: drifted features, the classifier test, segment shares, returning customers."""
        f = self.features
        drifted = self.drifted_features
        lines = [f"Drifted features: {', '.join(drifted) if drifted else 'none'} (of {int((f['kind'] != 'missing').sum())})"]
        c = self.classifier
        if c:
            lines.append(f"Classifier two-sample test: ROC AUC {c['auc']:.3f} (95% interval {c['low']:.3f} to "
                         f"{c['high']:.3f}; 0.5 = indistinguishable)")
        if self.segment_test is not None:
            t = self.segment_test
            lines.append(f"Segment shares: PSI {t['psi']:.3f}, p = {t['p_value']:.3g}"
                         + (" (shifted)" if t["drifted"] else ""))
        if self.returning is not None:
            r = self.returning
            lines.append(f"Returning customers: {r['ids_in_both']:,} ({r['share_of_new']:.1%} of the new table)")
        return lines


def drift_report(reference: pd.DataFrame, new: pd.DataFrame, schema: Schema, *,
                 reference_segments: Sequence | None = None, new_segments: Sequence | None = None,
                 alpha: float = 0.01, psi_threshold: float = 0.1, mean_threshold: float = 0.2,
                 share_threshold: float = 0.05, classifier: bool = True, n_folds: int = 5,
                 n_bootstrap: int = 200, random_state: int = 0) -> DriftReport:
    """Compare new customers with a reference (training) table, feature by feature and as a whole.

    Verdict of a feature: ``drifted`` when the test rejects equal distributions
    (``p_value < alpha``, 0.01) **and** the change is large enough to matter: PSI >=
    ``psi_threshold`` (0.1), or for a number a standardised mean difference
    ``|mean_new - mean_ref| / sd_ref >= mean_threshold`` (0.2, a "small" effect in
    Cohen's terms), or for a category a change of ``share_threshold`` (5 points) in the
    share of one category. The test alone is not enough: with thousands of rows it
    rejects differences nobody would act on.

    * numbers: two-sample Kolmogorov-Smirnov on the present values; PSI on the
      reference's deciles (one bin per value when there are at most 20 distinct);
      ``effect`` = standardised mean difference.
    * categories: chi-square test of homogeneity; PSI over categories (a category
      unseen in the reference is its own bin); ``effect`` = largest change in a
      category's share (new minus reference, signed).
    * missingness (kind ``missing``): chi-square on the 2x2 table present/missing;
      ``effect`` = change in the missing share; drifted when ``p < alpha`` and the
      change is at least ``share_threshold``.
    * the whole table: a classifier two-sample test. A histogram gradient-boosting
      classifier learns to tell reference rows from new rows from the features only;
      its out-of-fold ROC AUC is 0.5 when the tables are indistinguishable. Folds are
      grouped by customer ID, so a returning customer's two rows are never split between
      training and scoring (the model would otherwise recognise the twin and score
      below 0.5). The interval is a 95% stratified bootstrap of the out-of-fold AUC;
      drifted when its lower end is above 0.5.

    Parameters
    ----------
    reference, new : DataFrame
        Tables as read; the schema's feature (and id) columns are used.
    schema : Schema
        Column roles (from training).
    reference_segments, new_segments : sequence, optional
        Segment (or cluster) of each row of each table, for the shift in segment shares.
    alpha, psi_threshold, mean_threshold, share_threshold : float
        The verdict rule above.
    classifier : bool, default=True
        Run the classifier two-sample test.
    n_folds, n_bootstrap, random_state : int

    Returns
    -------
    DriftReport
    """
    if not len(reference) or not len(new):
        raise DataError(f"drift needs rows in both tables; the reference has {len(reference)}, the new table "
                        f"{len(new)}")
    missing = [c for c in schema.feature_columns if c not in new.columns]
    if missing:
        raise DataError(f"the new table lacks the columns {', '.join(map(repr, missing))} of the reference; "
                        "add them (empty cells are fine)")
    rows = []
    for col in schema.feature_columns:
        numeric = schema.column(col).role == "numeric"
        ref_raw, new_raw = reference[col], new[col]
        if numeric:
            ref = pd.to_numeric(ref_raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            nw = pd.to_numeric(new_raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            ref_p, new_p = ref[np.isfinite(ref)], nw[np.isfinite(nw)]
            if len(ref_p) and len(new_p):
                ks = stats.ks_2samp(ref_p, new_p)
                psi = population_stability_index(*_numeric_bin_counts(ref_p, new_p))
                sd = float(np.std(ref_p))
                effect = float((new_p.mean() - ref_p.mean()) / sd) if sd > 0 else 0.0
                stat, p = float(ks.statistic), float(ks.pvalue)
            else:
                stat = p = psi = effect = float("nan")
            material = (psi >= psi_threshold) or (abs(effect) >= mean_threshold)
            rows.append([col, "numeric", "Kolmogorov-Smirnov", stat, p, psi, effect, bool(p < alpha and material)])
        else:
            ref_t = ref_raw.dropna().map(category_text)
            new_t = new_raw.dropna().map(category_text)
            cats = sorted(set(ref_t) | set(new_t))
            rc = ref_t.value_counts().reindex(cats, fill_value=0).to_numpy()
            nc = new_t.value_counts().reindex(cats, fill_value=0).to_numpy()
            if rc.sum() and nc.sum() and len(cats) > 1:
                chi = stats.chi2_contingency(np.vstack([rc, nc]), correction=False)
                stat, p = float(chi.statistic), float(chi.pvalue)
                diff = nc / nc.sum() - rc / rc.sum()
                effect = float(diff[np.argmax(np.abs(diff))])
                psi = population_stability_index(rc, nc)
            else:
                stat, p, psi, effect = 0.0, 1.0, 0.0, 0.0
            material = (psi >= psi_threshold) or (abs(effect) >= share_threshold)
            rows.append([col, "categorical", "chi-square", stat, p, psi, effect, bool(p < alpha and material)])
        ref_miss, new_miss = int(ref_raw.isna().sum()), int(new_raw.isna().sum())
        table = np.array([[ref_miss, len(ref_raw) - ref_miss], [new_miss, len(new_raw) - new_miss]])
        if (table.sum(axis=0) > 0).all():
            chi = stats.chi2_contingency(table, correction=False)
            stat, p = float(chi.statistic), float(chi.pvalue)
        else:  # nothing missing anywhere (or everything): no change to test
            stat, p = 0.0, 1.0
        effect = new_miss / len(new_raw) - ref_miss / len(ref_raw)
        rows.append([col, "missing", "chi-square (missing share)", stat, p, np.nan, effect,
                     bool(p < alpha and abs(effect) >= share_threshold)])
    features = pd.DataFrame(rows, columns=DRIFT_COLUMNS)

    clf = (classifier_two_sample_test(reference, new, schema, n_folds=n_folds, n_bootstrap=n_bootstrap,
                                      random_state=random_state) if classifier else {})
    segments = segment_test = None
    if reference_segments is not None and new_segments is not None:
        segments, segment_test = _segment_shift(reference_segments, new_segments, alpha, psi_threshold)
    returning = _returning(reference, new, schema)
    return DriftReport(features=features, classifier=clf, segments=segments, segment_test=segment_test,
                       returning=returning, reference_rows=len(reference), new_rows=len(new),
                       settings={"alpha": alpha, "psi_threshold": psi_threshold, "mean_threshold": mean_threshold,
                                 "share_threshold": share_threshold})


def _classifier_features(frame: pd.DataFrame, schema: Schema, categories: dict[str, list[str]]) -> np.ndarray:
    cols = []
    for col in schema.feature_columns:
        if schema.column(col).role == "numeric":
            cols.append(pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
        else:
            text = frame[col].map(lambda v: np.nan if pd.isna(v) else category_text(v))
            cols.append(pd.Categorical(text, categories=categories[col]).codes.astype("float64"))
            cols[-1][cols[-1] < 0] = np.nan
    return np.column_stack(cols)


def _weighted_auc(inverse: np.ndarray, n_scores: int, pos_weight: np.ndarray, neg_weight: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half) with a weight per row; ``inverse`` = rank of each row's score.

    Weights are how often a bootstrap draws each row, so one sort serves every resample.
    """
    pos = np.bincount(inverse, weights=pos_weight, minlength=n_scores)
    neg = np.bincount(inverse, weights=neg_weight, minlength=n_scores)
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def classifier_two_sample_test(reference: pd.DataFrame, new: pd.DataFrame, schema: Schema, *, n_folds: int = 5,
                               n_bootstrap: int = 200, random_state: int = 0) -> dict[str, Any]:
    """Can a classifier tell the new rows from the reference rows? (See :func:`drift_report`.)

    Returns
    -------
    dict
        ``auc`` (out-of-fold ROC AUC, 0.5 = indistinguishable), ``low``/``high`` (95%
        stratified bootstrap interval), ``folds``, ``model``, ``drifted`` (``low > 0.5``).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    both = pd.concat([reference, new], ignore_index=True)
    categories = {c: sorted({category_text(v) for v in both[c].dropna()}) for c in schema.feature_columns
                  if schema.column(c).role != "numeric"}
    X = _classifier_features(both, schema, categories)
    y = np.r_[np.zeros(len(reference), dtype=int), np.ones(len(new), dtype=int)]
    if schema.id_column is not None and schema.id_column in reference.columns and schema.id_column in new.columns:
        groups = both[schema.id_column].map(category_text).to_numpy()
    else:
        groups = np.arange(len(both))
    n_folds = int(min(n_folds, len(reference), len(new)))
    if n_folds < 2:
        return {"auc": float("nan"), "low": float("nan"), "high": float("nan"), "folds": n_folds,
                "model": "too few rows", "drifted": False}
    categorical = np.array([schema.column(c).role != "numeric" for c in schema.feature_columns])
    oof = np.empty(len(y))
    # whole groups to random folds (sklearn's StratifiedGroupKFold is greedy per group: seconds for
    # 10,000 customers); with thousands of groups the class shares of the folds come out even anyway
    rng = np.random.default_rng(random_state)
    group_codes, unique_groups = pd.factorize(groups)
    fold_of_group = rng.permutation(len(unique_groups)) % n_folds
    fold = fold_of_group[group_codes]
    # One OpenMP thread, as for every K-Means of a run: the trees' histograms are too small to share,
    # and on a busy machine OpenMP threads spin-wait for each other. Measured on the shipped tables at
    # load 4 on 2 cores: 56.6 CPU-s (57 s wall) with the default threads, 1.1 CPU-s with one; same AUC.
    with threadpool_limits(limits=1):
        for f in range(n_folds):
            train_idx, test_idx = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            if not len(test_idx) or len(np.unique(y[train_idx])) < 2:
                continue
            # shallow trees, few rounds: enough to find a real shift, too little to memorise rows
            model = HistGradientBoostingClassifier(max_iter=100, max_depth=3, learning_rate=0.1,
                                                   categorical_features=categorical if categorical.any() else None,
                                                   early_stopping=False, random_state=random_state)
            model.fit(X[train_idx], y[train_idx])
            oof[test_idx] = model.predict_proba(X[test_idx])[:, 1]
    unique_scores, inverse = np.unique(oof, return_inverse=True)
    is_pos = (y == 1).astype("float64")
    auc = _weighted_auc(inverse, len(unique_scores), is_pos, 1.0 - is_pos)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = []
    for _ in range(int(n_bootstrap)):  # stratified: each class resampled to its own size
        w_pos = np.bincount(rng.choice(pos, len(pos)), minlength=len(y)).astype("float64")
        w_neg = np.bincount(rng.choice(neg, len(neg)), minlength=len(y)).astype("float64")
        boot.append(_weighted_auc(inverse, len(unique_scores), w_pos, w_neg))
    low, high = (np.percentile(boot, [2.5, 97.5]).tolist() if boot else [float("nan")] * 2)
    return {"auc": auc, "low": float(low), "high": float(high), "folds": n_folds,
            "model": "HistGradientBoostingClassifier(max_iter=100, max_depth=3), out-of-fold, folds grouped by ID",
            "drifted": bool(low > 0.5)}


def _segment_shift(reference_segments, new_segments, alpha: float, psi_threshold: float):
    ref = pd.Series(np.asarray(reference_segments, dtype=object)).dropna().map(category_text)
    new = pd.Series(np.asarray(new_segments, dtype=object)).dropna().map(category_text)
    names = sorted(set(ref) | set(new))
    rc = ref.value_counts().reindex(names, fill_value=0)
    nc = new.value_counts().reindex(names, fill_value=0)
    table = pd.DataFrame({"segment": names, "reference_count": rc.to_numpy(), "reference_share": (rc / rc.sum()).to_numpy(),
                          "new_count": nc.to_numpy(), "new_share": (nc / nc.sum()).to_numpy()})
    table["difference"] = table["new_share"] - table["reference_share"]
    if len(names) > 1 and rc.sum() and nc.sum():
        chi = stats.chi2_contingency(np.vstack([rc.to_numpy(), nc.to_numpy()]), correction=False)
        stat, p = float(chi.statistic), float(chi.pvalue)
    else:
        stat, p = 0.0, 1.0
    psi = population_stability_index(rc.to_numpy(), nc.to_numpy())
    return table, {"statistic": stat, "p_value": p, "psi": psi, "drifted": bool(p < alpha and psi >= psi_threshold)}


def _returning(reference: pd.DataFrame, new: pd.DataFrame, schema: Schema) -> dict[str, Any] | None:
    idc = schema.id_column
    if idc is None or idc not in reference.columns or idc not in new.columns:
        return None
    ref = reference.assign(_key=reference[idc].map(category_text)).drop_duplicates("_key").set_index("_key")
    nw = new.assign(_key=new[idc].map(category_text)).drop_duplicates("_key").set_index("_key")
    common = nw.index[nw.index.isin(ref.index)]
    out: dict[str, Any] = {"ids_in_both": int(len(common)), "share_of_new": len(common) / len(new),
                           "per_feature": {}, "all_attributes_match": 0, "mean_matching": float("nan"),
                           "n_features": len(schema.feature_columns)}
    if not len(common):
        return out
    a, b = ref.loc[common], nw.loc[common]
    same = pd.DataFrame({c: ((a[c].map(_same_text) == b[c].map(_same_text)).to_numpy())
                         for c in schema.feature_columns})
    out["per_feature"] = {c: float(same[c].mean()) for c in same.columns}
    out["all_attributes_match"] = int(same.all(axis=1).sum())
    out["mean_matching"] = float(same.sum(axis=1).mean())
    return out


def _same_text(value: Any) -> str:
    # missing equals missing when comparing a returning customer's two records
    return "\0missing" if pd.isna(value) else category_text(value)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def drift_markdown(report: DriftReport) -> str:
    """The drift report as Markdown (drift.md)."""
    s = report.settings
    lines = ["# Drift: new customers against the reference", "",
             f"Reference: {report.reference_rows} rows; new: {report.new_rows} rows.", ""]
    drifted = report.drifted_features
    lines.append("**Drifted features:** " + (", ".join(drifted) if drifted else "none") + ".")
    miss = report.features[(report.features["kind"] == "missing") & report.features["drifted"]]["feature"].tolist()
    if miss:
        lines.append(f"**Missingness changed:** {', '.join(miss)}.")
    c = report.classifier
    if c:
        verdict = ("the tables are distinguishable" if c["drifted"] else
                   "the tables are not distinguishable (0.5 is inside or above the interval)")
        lines += ["", "## The whole table: classifier two-sample test", "",
                  f"ROC AUC {_fmt(c['auc'])} (95% interval {_fmt(c['low'])} to {_fmt(c['high'])}; 0.5 = "
                  f"indistinguishable): {verdict}. Model: {c['model']}, {c['folds']} folds."]
    lines += ["", "## Per feature", "",
              f"Verdict: drifted when p < {s.get('alpha')} and the change matters (PSI >= {s.get('psi_threshold')}, "
              f"or |standardised mean difference| >= {s.get('mean_threshold')} for numbers, or a category's "
              f"share moved by >= {s.get('share_threshold')}). Effect: standardised mean difference (numbers), "
              "largest change in a category's share (categories), change in the missing share (missing).", "",
              "| feature | kind | test | statistic | p-value | PSI | effect | drifted |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in report.features.itertuples(index=False):
        lines.append(f"| {r.feature} | {r.kind} | {r.test} | {_fmt(r.statistic)} | {_fmt(r.p_value)} | "
                     f"{_fmt(r.psi)} | {_fmt(r.effect)} | {_fmt(r.drifted)} |")
    if report.segments is not None:
        t = report.segment_test
        lines += ["", "## Segment shares", "",
                  f"Chi-square {_fmt(t['statistic'])}, p = {_fmt(t['p_value'])}, PSI {_fmt(t['psi'])}: "
                  + ("shifted." if t["drifted"] else "no material shift."), "",
                  "| segment | reference | new | difference |", "| --- | ---: | ---: | ---: |"]
        for r in report.segments.itertuples(index=False):
            lines.append(f"| {r.segment} | {r.reference_share:.1%} | {r.new_share:.1%} | {r.difference:+.1%} |")
    if report.returning is not None:
        r = report.returning
        lines += ["", "## Returning customers", "",
                  f"{r['ids_in_both']} customers of the new table ({r['share_of_new']:.1%}) are in the reference "
                  "by ID."]
        if r["ids_in_both"]:
            lines.append(f"{r['all_attributes_match']} of them have every attribute unchanged; on average "
                         f"{r['mean_matching']:.1f} of {r['n_features']} attributes match.")
            lines += ["", "| feature | unchanged |", "| --- | ---: |"]
            lines += [f"| {f} | {v:.1%} |" for f, v in r["per_feature"].items()]
    return "\n".join(lines) + "\n"
