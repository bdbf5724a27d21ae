"""K-Means on latent features, the k scan, and the cluster -> segment mapping.

Pure functions: arrays in, arrays / DataFrames / dicts out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances_argmin_min


__all__ = ["assign_to_centroids", "map_clusters_to_segments", "mapping_table"]


def assign_to_centroids(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and the Euclidean distance to it.

    Returns
    -------
    labels : ndarray of int
    distances : ndarray of float
    """
    labels, dist = pairwise_distances_argmin_min(np.asarray(X, dtype="float64"), np.asarray(centers, dtype="float64"))
    return labels.astype(int), dist


def map_clusters_to_segments(clusters: np.ndarray, segments: np.ndarray) -> dict[int, str]:
    """Map each cluster to the known segment most common among its rows.

    Ties go to the segment that sorts first, so the mapping is deterministic.

    >>> map_clusters_to_segments([0, 0, 1, 1, 1], ["A", "B", "B", "B", "C"])
    {0: 'A', 1: 'B'}
    """
    table = pd.crosstab(pd.Series(np.asarray(clusters), name="cluster"),
                        pd.Series(np.asarray(segments).astype(str), name="segment"))
    table = table.reindex(sorted(table.columns), axis=1)
    return {int(c): str(table.loc[c].idxmax()) for c in table.index}


def mapping_table(clusters: np.ndarray, segments: np.ndarray, mapping: dict[int, str]) -> pd.DataFrame:
    """Clusters x known segments counts, with the mapped segment and its purity per cluster."""
    table = pd.crosstab(pd.Series(np.asarray(clusters), name="Cluster"),
                        pd.Series(np.asarray(segments).astype(str), name="Segment"))
    table = table.reindex(sorted(table.columns), axis=1)
    out = table.copy()
    out["Size"] = table.sum(axis=1)
    out["Mapped_Segment"] = [mapping.get(int(c), "") for c in table.index]
    out["Purity"] = [table.loc[c, mapping[int(c)]] / table.loc[c].sum() if int(c) in mapping else np.nan
                     for c in table.index]
    return out.reset_index()
