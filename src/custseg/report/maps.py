"""2-D maps of the latent space for pictures: PCA of every row, t-SNE of a stratified sample.

t-SNE is quadratic-ish and takes about 36 s on all 8,068 training rows with
scikit-learn on this kind of machine; the map is a picture, not a model input, so it
is drawn on a sample stratified by cluster (every cluster keeps its share, and at
least a few points). openTSNE (FFT-accelerated, well maintained) computes it.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

__all__ = ["pca_coordinates", "stratified_sample", "tsne_coordinates"]


def pca_coordinates(latent: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of every row, and their explained variance ratios."""
    pca = PCA(n_components=2, random_state=random_state).fit(latent)
    return pca.transform(latent), pca.explained_variance_ratio_


def stratified_sample(labels: np.ndarray, max_points: int, random_state: int = 0, min_per_group: int = 5) -> np.ndarray:
    """Sorted row indices: at most ``max_points`` rows, each group keeping its share.

    Every group keeps at least ``min(min_per_group, its size)`` rows. With
    ``max_points`` 0 or at least the number of rows, every row is returned.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_points <= 0 or max_points >= n:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    chosen = []
    for group in np.unique(labels):
        idx = np.flatnonzero(labels == group)
        take = max(min(min_per_group, len(idx)), int(round(len(idx) * max_points / n)))
        chosen.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen))


def tsne_coordinates(latent: np.ndarray, labels: np.ndarray, *, max_points: int = 3000, perplexity: float = 30.0,
                     random_state: int = 0, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """t-SNE map of a cluster-stratified sample.

    Returns
    -------
    indices : ndarray of int
        The rows that were mapped.
    coords : ndarray of shape (len(indices), 2)
    """
    from openTSNE import TSNE  # imported here: it takes a second and only pictures need it

    idx = stratified_sample(labels, max_points, random_state)
    perplexity = float(min(perplexity, max(2.0, (len(idx) - 1) / 3)))
    # exact neighbours are faster than the approximate index below a few thousand rows
    neighbors = "exact" if len(idx) <= 5000 else "auto"
    coords = TSNE(n_components=2, perplexity=perplexity, random_state=random_state, n_jobs=n_jobs,
                  neighbors=neighbors, verbose=False).fit(np.asarray(latent[idx], dtype="float64"))
    return idx, np.asarray(coords)
