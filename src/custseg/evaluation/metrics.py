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

__all__ = ["internal_metrics", "external_metrics", "mapped_accuracy", "pairwise_ari", "METRIC_GUIDE"]

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
        sil = skm.silhouette_score(X, labels, sample_size=sample_size, random_state=random_state)
    else:
        sil = skm.silhouette_score(X, labels)
    return {
        "silhouette": float(sil),
        "davies_bouldin": float(skm.davies_bouldin_score(X, labels)),
        "calinski_harabasz": float(skm.calinski_harabasz_score(X, labels)),
        "inertia": inertia,
    }


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
