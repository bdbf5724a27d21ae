"""Internal and external clustering metrics (pure functions).

Internal metrics judge a clustering by the geometry of the space it was made in,
so they compare clusterings only within one space. External metrics compare
clusters with known segments.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.utils import check_array, check_random_state

__all__ = ["internal_metrics", "silhouette", "external_metrics", "mapped_accuracy", "pairwise_ari", "METRIC_GUIDE"]

#: One line per metric on how to read it (used in the report and the docs).
METRIC_GUIDE = {
    "silhouette": "from -1 to 1; higher means customers sit closer to their own cluster than to the next one",
    "davies_bouldin": "0 or more; lower means clusters are compact and far apart",
    "calinski_harabasz": "0 or more; higher means more spread between clusters than within them",
    "inertia": "sum of squared distances to the nearest centroid; only comparable within one space and k",
    "ari": "adjusted Rand index with the known segments: 0 is chance, 1 is identical groupings",
    "nmi": "normalized mutual information with the known segments: 0 is independent, 1 is identical",
    "mapped_accuracy": "share of customers whose cluster's majority segment is their known segment",
}


def internal_metrics(X: np.ndarray, labels: np.ndarray, *, sample_size: int | None = None,
                     random_state: int = 0) -> dict[str, float]:
    """Silhouette, Davies-Bouldin, Calinski-Harabasz and inertia of ``labels`` in space ``X``.

    Inertia is computed around each cluster's mean. With ``sample_size``, the
    silhouette is computed on that many rows drawn at random (it is quadratic in rows).
    Metrics that need two or more clusters are NaN when there is only one.
    """
    X = np.asarray(X, dtype="float64")
    labels = np.asarray(labels)
    uniq = np.unique(labels)
    inertia = float(sum(((X[labels == c] - X[labels == c].mean(axis=0)) ** 2).sum() for c in uniq))
    if not 2 <= len(uniq) < len(X):
        return {"silhouette": np.nan, "davies_bouldin": np.nan, "calinski_harabasz": np.nan, "inertia": inertia}
    if sample_size and sample_size < len(X):
        # the rows scikit-learn's silhouette_score(sample_size=..., random_state=...) draws
        rows = check_random_state(random_state).permutation(len(X))[:sample_size]
        sil = silhouette(X[rows], labels[rows])
    else:
        sil = silhouette(X, labels)
    return {
        "silhouette": float(sil),
        "davies_bouldin": float(skm.davies_bouldin_score(X, labels)),
        "calinski_harabasz": float(skm.calinski_harabasz_score(X, labels)),
        "inertia": inertia,
    }


#: float64 cells of distances held at once by :func:`silhouette` (16 MB)
_SILHOUETTE_BLOCK_CELLS = 2_000_000


def silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Euclidean): ``sklearn.metrics.silhouette_score``, computed with matrix products.

    scikit-learn's reduces every chunk of the distance matrix to per-cluster sums row
    by row; here a block of rows' distances to all rows is multiplied by the rows'
    one-hot cluster matrix, which gives the same sums in one BLAS call (about 4x
    faster on 8,000 customers, one thread). The distances are scikit-learn's (``euclidean_distances``'
    expansion, clipped at 0, a row's distance to itself 0); the tests compare the
    result with ``silhouette_score`` on many tables. Members of one-customer clusters
    score 0, as there.
    """
    X = check_array(X, dtype="float64")  # NaN or infinity is an error, as in scikit-learn
    codes, labels = np.unique(np.asarray(labels), return_inverse=True)
    n, k = len(X), len(codes)
    if not 2 <= k <= n - 1:
        raise ValueError(f"Number of labels is {k}. Valid values are 2 to n_samples - 1 (inclusive)")
    counts = np.bincount(labels, minlength=k).astype("float64")
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    squared = np.einsum("ij,ij->i", X, X)
    block = max(1, _SILHOUETTE_BLOCK_CELLS // n)
    total = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows, own = np.arange(stop - start), labels[start:stop]
        d = X[start:stop] @ X.T
        d *= -2.0
        d += squared[start:stop, None]
        d += squared[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d[rows, rows + start] = 0.0
        sums = d @ onehot  # (rows, clusters): summed distance of each row to each cluster
        means = sums / counts
        means[rows, own] = np.inf
        b = means.min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = sums[rows, own] / (counts[own] - 1)
            s = (b - a) / np.maximum(a, b)
        # NaN (0 / 0) is a one-customer cluster, or a row whose distances are all 0: 0, as in scikit-learn
        total += float(np.nan_to_num(s).sum())
    return total / n


def mapped_accuracy(clusters: np.ndarray, segments: np.ndarray, mapping: dict) -> float:
    """Share of rows whose cluster maps to their known segment."""
    predicted = pd.Series(np.asarray(clusters)).map(mapping).to_numpy()
    return float(np.mean(predicted == np.asarray(segments)))


def external_metrics(clusters: np.ndarray, segments: np.ndarray, mapping: dict | None = None) -> dict[str, float]:
    """ARI, NMI and (with a cluster -> segment ``mapping``) mapped accuracy against known segments."""
    clusters = np.asarray(clusters)
    segments = np.asarray(segments).astype(str)
    out = {
        "ari": float(skm.adjusted_rand_score(segments, clusters)),
        "nmi": float(skm.normalized_mutual_info_score(segments, clusters)),
    }
    if mapping is not None:
        out["mapped_accuracy"] = mapped_accuracy(clusters, segments, mapping)
    return out


def pairwise_ari(labelings: Iterable[np.ndarray]) -> np.ndarray:
    """Adjusted Rand index of every pair of labelings of the same rows (empty for fewer than two)."""
    labelings = [np.asarray(labels) for labels in labelings]
    return np.array([skm.adjusted_rand_score(a, b) for a, b in itertools.combinations(labelings, 2)],
                    dtype="float64")
