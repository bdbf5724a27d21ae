"""Choosing the number of clusters: elbow, separation, and stability, combined by one rule.

This is the one k-selection of custseg: ``custseg train`` and ``custseg select-k``
both call :func:`select_k` (through :mod:`custseg.workflow`) and write its
:meth:`KSelection.to_frame` as ``k_selection.csv``; the report shows its recommendation.

:func:`select_k` scans k on a feature space (the latent space of a trained
autoencoder, in :func:`custseg.workflow.run_k_selection`) and reports, for each k, K-Means
inertia, silhouette, Davies-Bouldin, Calinski-Harabasz, and the stability of the
clustering under resampling. It marks the knee of the inertia curve and recommends
one k with the reason.

The rule (:func:`recommend_k`)
------------------------------
1. A k is *stable* if its bootstrap stability (mean pairwise adjusted Rand index
   between K-Means fitted on resampled customers, every customer assigned by each
   fit) is at least ``min_stability`` (0.8 by default). A clustering that changes
   when a few customers are swapped for others is not a segmentation to act on;
   an ARI of 0.8 means the resampled clusterings are nearly the same, comparable
   to the 0.75-0.85 bounds Hennig (2007) uses for "stable" clusters with the Jaccard index.
2. Among stable k, recommend the one with the highest silhouette: the k whose
   customers sit most clearly closer to their own cluster than to the next one.
3. If no k is stable, recommend the most stable k, and say so.

What the stability does not cover: :func:`custseg.workflow.run_k_selection` trains the autoencoder once
and resamples customers in that one latent space. Retraining the autoencoder with
another seed changes the space itself, and on the shipped data moves customers between
clusters far more (seed-to-seed ARI about 0.3 at k=7, see :mod:`custseg.evaluation.comparison`)
than resampling does (about 0.98).

The knee of the inertia curve is reported beside the recommendation but does not
decide it: inertia always falls as k grows, and where it bends depends on the range
of k scanned. Davies-Bouldin and Calinski-Harabasz are reported for reference;
they mostly agree with the silhouette and add no separate criterion.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(c, 0.3, (50, 2)) for c in ([0, 0], [5, 0], [0, 5])])
>>> sel = select_k(X, range(2, 6), n_resamples=3, n_init=3)
>>> sel.recommended_k
3
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from .metrics import internal_metrics, pairwise_ari
from ..exceptions import ConfigError, DataError

__all__ = ["KSelection", "knee_point", "scan_k", "clustering_stability", "recommend_k", "select_k", "MIN_STABILITY"]

#: Bootstrap stability (mean pairwise ARI) a k needs to be recommended.
MIN_STABILITY = 0.8


def _noop(*_args, **_kwargs) -> None:
    return None


# -- pure building blocks -----------------------------------------------------------------------------
def knee_point(x: Iterable[float], y: Iterable[float]) -> float | None:
    """The knee (elbow) of a decreasing, convex curve such as K-Means inertia against k.

    The Kneedle idea (Satopaa et al., 2011): scale both axes to [0, 1]; the knee is
    the point farthest below the straight line from the first point to the last one.
    Returns None for fewer than three points or a curve with no point below that line
    (straight or concave: no elbow).

    >>> knee_point([1, 2, 3, 4, 5, 6], [100, 50, 20, 15, 12, 10])
    3
    """
    x = np.asarray(list(x), dtype="float64")
    y = np.asarray(list(y), dtype="float64")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    if len(x) < 3:
        return None
    order = np.argsort(x)
    x, y = x[order], y[order]
    x_span, y_span = x[-1] - x[0], y.max() - y.min()
    if x_span <= 0 or y_span <= 0:
        return None
    xn = (x - x[0]) / x_span
    yn = (y - y.min()) / y_span
    # the chord from (0, yn[0]) to (1, yn[-1]); for a decreasing curve that is (0, 1) to (1, 0)
    below = yn[0] + (yn[-1] - yn[0]) * xn - yn
    i = int(np.argmax(below))
    if below[i] <= 1e-12:
        return None
    value = x[i]
    return int(value) if float(value).is_integer() else float(value)


def clustering_stability(X: np.ndarray, n_clusters: int, *, n_resamples: int = 5, n_init: int = 10,
                         random_state: int = 0) -> tuple[float, float]:
    """Bootstrap stability of K-Means with ``n_clusters`` on ``X``.

    K-Means is fitted ``n_resamples`` times, each time on a bootstrap sample of the rows
    (drawn with replacement) and with its own seed; every row is then assigned to the
    nearest centroid of each fit. The stability is the mean adjusted Rand index over all
    pairs of these assignments: 1 when every resample finds the same clusters, near 0
    when the clusters are arbitrary.

    Returns
    -------
    mean, sd : float
        Mean and standard deviation of the pairwise ARIs (NaN for fewer than two resamples).
    """
    X = np.asarray(X, dtype="float64")
    n = len(X)
    rng = np.random.default_rng(random_state)
    assignments = []
    for b in range(n_resamples):
        rows = rng.integers(0, n, n)
        km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state + b).fit(X[rows])
        assignments.append(km.predict(X))
    aris = pairwise_ari(assignments)
    if len(aris) == 0:
        return float("nan"), float("nan")
    return float(aris.mean()), float(aris.std())


def recommend_k(table: pd.DataFrame, min_stability: float = MIN_STABILITY) -> tuple[int, str]:
    """The recommended k of a k-selection table, and why (see the module docstring for the rule).

    ``table`` needs columns k, silhouette and stability.
    """
    rows = table.dropna(subset=["silhouette"])
    if rows.empty:
        raise DataError("no k could be scored (every silhouette is undefined); give more distinct customers")
    stable = rows[rows["stability"] >= min_stability]
    if len(stable):
        best = stable.loc[stable["silhouette"].idxmax()]
        reason = (f"highest silhouette ({best['silhouette']:.3f}) among the {len(stable)} of {len(rows)} k values "
                  f"whose bootstrap stability is at least {min_stability:.2f} (k={int(best['k'])}: "
                  f"{best['stability']:.2f})")
        return int(best["k"]), reason
    if rows["stability"].notna().any():
        best = rows.loc[rows["stability"].idxmax()]
        return int(best["k"]), (f"no k reaches a stability of {min_stability:.2f}; k={int(best['k'])} is the most "
                                f"stable ({best['stability']:.2f}), so treat any segmentation of these data with care")
    best = rows.loc[rows["silhouette"].idxmax()]
    return int(best["k"]), f"highest silhouette ({best['silhouette']:.3f}); stability was not measured (one resample)"


@dataclass
class KSelection:
    """Scores of each k and the recommendation.

    Attributes
    ----------
    table : DataFrame
        One row per k: k, inertia, silhouette, davies_bouldin, calinski_harabasz (the
        columns of :func:`custseg.clustering.scan_k`), stability, stability_sd, stable,
        knee, recommended.
    knee_k : int or None
        Knee of the inertia curve.
    recommended_k : int
    reason : str
    min_stability : float
    settings : dict
    """

    table: pd.DataFrame
    knee_k: int | None
    recommended_k: int | None
    reason: str
    min_stability: float = MIN_STABILITY
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The table as ``k_selection.csv`` holds it: the yes/no columns as 0/1."""
        table = self.table.copy()
        for column in ("stable", "knee", "recommended"):
            table[column] = table[column].astype(int)
        return table

    def row(self, k: int) -> pd.Series:
        rows = self.table[self.table["k"] == k]
        if rows.empty:
            raise KeyError(k)
        return rows.iloc[0]

    def describe_k(self, k: int) -> str:
        """One sentence on how ``k`` compares with the best scores and the recommendation."""
        t = self.table
        if k not in set(t["k"]):
            return (f"k={k} was not scanned (k={int(t['k'].min())}..{int(t['k'].max())}); "
                    f"recommended k={self.recommended_k}")
        r = self.row(k)
        best_sil = t.loc[t["silhouette"].idxmax()]
        best_db = t.loc[t["davies_bouldin"].idxmin()]
        parts = [f"silhouette {r['silhouette']:.3f} (best {best_sil['silhouette']:.3f} at k={int(best_sil['k'])})",
                 ("stability not measured (one resample)" if np.isnan(r["stability"]) else
                  f"stability {r['stability']:.2f}"
                  + ("" if r["stability"] >= self.min_stability else f" (below {self.min_stability:.2f})")),
                 f"Davies-Bouldin {r['davies_bouldin']:.3f} (best {best_db['davies_bouldin']:.3f} at "
                 f"k={int(best_db['k'])})"]
        if k == self.recommended_k:
            verdict = "this is the recommended k"
        else:
            verdict = f"recommended k={self.recommended_k}"
        knee = f"; inertia knee at k={self.knee_k}" if self.knee_k is not None else "; the inertia curve has no knee"
        return f"k={k}: " + ", ".join(parts) + f"; {verdict}{knee}"


def select_k(X: np.ndarray, k_values: Iterable[int] = range(2, 13), *, n_resamples: int = 5, n_init: int = 10,
             random_state: int = 0, silhouette_sample: int | None = None, min_stability: float = MIN_STABILITY,
             progress: Callable[[str], None] = _noop) -> KSelection:
    """Score each k on ``X`` and recommend one.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
        The space to cluster (latent features, say).
    k_values : iterable of int
        Each >= 2 and smaller than the number of rows.
    n_resamples : int, default=5
        Bootstrap fits per k for the stability (1 skips it).
    n_init : int, default=10
        K-Means initialisations per fit.
    random_state : int, default=0
    silhouette_sample : int, optional
        Compute the silhouette on this many random rows (None or 0: every row).
    min_stability : float, default=0.8
        See :func:`recommend_k`.
    progress : callable, optional
        Receives one line per k scored.
    """
    X = np.asarray(X, dtype="float64")
    k_values = sorted({int(k) for k in k_values})
    if not k_values:
        raise ConfigError("The 'k_values' parameter must hold at least one k. Got none.")
    if k_values[0] < 2:
        raise ConfigError(f"The 'k_values' parameter must hold ints >= 2. Got {k_values[0]} instead.")
    if k_values[-1] >= len(X):
        raise DataError(f"k={k_values[-1]} needs more than {len(X)} customers; scan a smaller range of k")
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"The 'n_resamples' parameter must be an int >= 1. Got {n_resamples!r} instead.")
    rows = []
    for k in k_values:
        started = time.perf_counter()
        scores = scan_k(X, [k], n_init=n_init, random_state=random_state,
                        silhouette_sample=silhouette_sample or None).iloc[0].to_dict()
        mean, sd = (clustering_stability(X, k, n_resamples=n_resamples, n_init=n_init, random_state=random_state)
                    if n_resamples >= 2 else (float("nan"), float("nan")))
        scores.update(k=k, stability=mean, stability_sd=sd)
        rows.append(scores)
        progress(f"k={k}: silhouette {scores['silhouette']:.3f}, stability {mean:.2f} "
                 f"({time.perf_counter() - started:.1f} s)")
    table = pd.DataFrame(rows)[["k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz", "stability",
                                "stability_sd"]]
    table["stable"] = table["stability"] >= min_stability
    knee = knee_point(table["k"], table["inertia"])
    try:
        recommended, reason = recommend_k(table, min_stability)
    except DataError as exc:  # every silhouette undefined (too few distinct customers): the scores still stand
        recommended, reason = None, str(exc)
    table["knee"] = table["k"] == knee
    table["recommended"] = table["k"] == recommended
    return KSelection(table=table, knee_k=knee, recommended_k=recommended, reason=reason,
                      min_stability=min_stability,
                      settings={"n_resamples": n_resamples, "n_init": n_init, "random_state": random_state,
                                "silhouette_sample": silhouette_sample or None, "n_rows": len(X),
                                "n_features": X.shape[1]})


def scan_k(X: np.ndarray, k_values, *, n_init: int = 10, max_iter: int = 300, random_state: int = 0,
           silhouette_sample: int | None = None) -> pd.DataFrame:
    """Fit K-Means for each k and report inertia, silhouette, Davies-Bouldin and Calinski-Harabasz.

    Returns a DataFrame with one row per k.
    """
    rows = []
    for k in k_values:
        km = KMeans(n_clusters=int(k), n_init=n_init, max_iter=max_iter, random_state=random_state).fit(X)
        m = internal_metrics(X, km.labels_, sample_size=silhouette_sample, random_state=random_state)
        rows.append({"k": int(k), "inertia": float(km.inertia_), "silhouette": m["silhouette"],
                     "davies_bouldin": m["davies_bouldin"], "calinski_harabasz": m["calinski_harabasz"]})
    return pd.DataFrame(rows)
