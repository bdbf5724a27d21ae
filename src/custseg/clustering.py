"""K-Means on latent features, consensus of many clusterings, and the cluster -> segment mapping.

Pure functions (arrays in, arrays / DataFrames / dicts out), plus :class:`ConsensusKMeans`,
the estimator that clusters each member of an ensemble and combines their clusterings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .exceptions import ConfigError

__all__ = ["assign_to_centroids", "map_clusters_to_segments", "mapping_table", "batched_kmeans", "label_matching",
           "match_labels", "membership_matrix", "consensus_clustering", "member_agreement", "order_by_size",
           "cluster_means", "ConsensusKMeans"]


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


# -- many K-Means at once ----------------------------------------------------------------------------------------
def batched_kmeans(X: np.ndarray, n_clusters: int, *, n_init: int = 4, max_iter: int = 50,
                   init: np.ndarray | None = None, random_state=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K-Means on each of ``B`` data sets of equal shape at once (k-means++ seeding, Lloyd iterations).

    Every data set gets ``n_init`` seedings; all ``B * n_init`` runs iterate together as
    batched torch matrix products, so clustering 100 ensemble members costs about as much
    as a few sklearn fits. The run of lowest inertia is kept per data set. An empty
    cluster keeps its previous centre.

    Parameters
    ----------
    X : ndarray of shape (B, n_rows, n_features)
    n_clusters : int
    n_init : int, default=4
    max_iter : int, default=50
    init : ndarray of shape (B, n_clusters, n_features), optional
        Starting centres (then ``n_init`` is 1 and there is no k-means++ seeding).
    random_state : int, RandomState or None

    Returns
    -------
    labels : ndarray of int, shape (B, n_rows)
    centers : ndarray of float, shape (B, n_clusters, n_features)
    inertia : ndarray of float, shape (B,)
    n_iter : int
        Lloyd iterations run (all runs iterate until the slowest has converged).
    """
    X = np.asarray(X, dtype="float64")
    n_sets, n, d = X.shape
    k = int(n_clusters)
    if init is not None:
        n_init = 1
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    gen = torch.Generator().manual_seed(seed)
    # float32 and a (runs, clusters, rows) layout: the minimum over a short middle axis is the fast one
    x = torch.from_numpy(X.astype("float32")).repeat_interleave(n_init, dim=0)  # (R, n, d), R = B * n_init
    xt = x.transpose(1, 2).contiguous()
    runs = len(x)
    rows = torch.arange(runs)
    if init is not None:
        centers = torch.from_numpy(np.asarray(init, dtype="float32").copy())
    else:
        # k-means++: each next centre drawn with probability proportional to the squared distance
        centers = x.new_empty(runs, k, d)
        centers[:, 0] = x[rows, torch.randint(n, (runs,), generator=gen)]
        closest = (x - centers[:, :1]).pow(2).sum(-1)
        for j in range(1, k):
            pick = torch.multinomial(closest.clamp_min(0) + 1e-12, 1, generator=gen).squeeze(1)
            centers[:, j] = x[rows, pick]
            closest = torch.minimum(closest, (x - centers[:, j:j + 1]).pow(2).sum(-1))
    # sklearn's stopping rule: centres moved less than tol times the mean feature variance
    tol = 1e-4 * float(X.var(axis=1).mean())

    cluster_ids = torch.arange(k).view(1, k, 1)

    def nearest(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = torch.baddbmm(c.pow(2).sum(-1).unsqueeze(-1), c, xt, alpha=-2.0)  # (R, k, n) minus ||x||^2
        best = dist.min(1)
        return best.values, best.indices

    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        _, labels = nearest(centers)
        members = (labels.unsqueeze(1) == cluster_ids).to(x.dtype)  # (R, k, n) one-hot
        counts = members.sum(-1, keepdim=True)
        new = torch.where(counts > 0, torch.bmm(members, x) / counts.clamp_min(1), centers)
        shift = float((new - centers).pow(2).sum((1, 2)).max())
        centers = new
        if shift <= tol:
            break
    best_dist, labels = nearest(centers)
    inertia = (best_dist + x.pow(2).sum(-1)).clamp_min(0).double().sum(-1).view(n_sets, n_init)
    best = inertia.argmin(1) + torch.arange(n_sets) * n_init
    centers = centers.double()
    return labels[best].numpy().astype(int), centers[best].numpy(), inertia.min(1).values.numpy(), n_iter


# -- consensus of clusterings --------------------------------------------------------------------------------------
def label_matching(labels: np.ndarray, reference: np.ndarray, n_clusters: int) -> np.ndarray:
    """The one-to-one renumbering of ``labels``' clusters that agrees best with ``reference``.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) on the clusters' overlap;
    returns an array: cluster number -> matched reference number.

    >>> label_matching(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]), 2).tolist()
    [1, 0]
    """
    overlap = np.zeros((n_clusters, n_clusters))
    np.add.at(overlap, (np.asarray(labels), np.asarray(reference)), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    relabel = np.empty(n_clusters, dtype=int)
    relabel[rows] = cols
    return relabel


def match_labels(labels: np.ndarray, reference: np.ndarray, n_clusters: int) -> np.ndarray:
    """Relabel ``labels`` to agree best with ``reference`` (see :func:`label_matching`).

    >>> match_labels(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1]), 2).tolist()
    [0, 0, 1, 1]
    """
    return label_matching(labels, reference, n_clusters)[np.asarray(labels)]


def membership_matrix(member_labels: np.ndarray, n_clusters: int) -> sp.csr_matrix:
    """Members' clusterings as stacked one-hot memberships: shape (n_rows, n_members * n_clusters), sparse.

    Row i has a 1 in column ``m * n_clusters + c`` when member m put row i in cluster c.
    The squared distance between two rows is twice the number of members that separate them.
    """
    member_labels = np.asarray(member_labels)
    n_members, n = member_labels.shape
    cols = (np.arange(n_members)[:, None] * n_clusters + member_labels).T.ravel()
    indptr = np.arange(0, n * n_members + 1, n_members)
    return sp.csr_matrix((np.ones(n * n_members), cols, indptr), shape=(n, n_members * n_clusters))


def order_by_size(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster numbers by size: 0 is the largest (ties: the cluster whose first row comes first).

    A fixed numbering, so two clusterings that group rows alike also number them alike.

    >>> order_by_size(np.array([2, 0, 0, 1, 0, 2]), 3).tolist()
    [1, 0, 0, 2, 0, 1]
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels, minlength=n_clusters)
    first = np.full(n_clusters, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    order = sorted(range(n_clusters), key=lambda c: (-sizes[c], first[c]))
    rank = np.empty(n_clusters, dtype=int)
    rank[order] = np.arange(n_clusters)
    return rank[labels]


def consensus_clustering(member_labels: np.ndarray, n_clusters: int, *, n_init: int = 50,
                         random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """One clustering from many: K-Means on the members' stacked one-hot memberships.

    Each row is described by which cluster every member put it in
    (:func:`membership_matrix`); rows that most members keep together are close. K-Means
    there (``n_init`` seedings, sparse input) finds the partition that disagrees least,
    in squared distance, with the members. Clusters are then numbered by size
    (:func:`order_by_size`), so the result does not depend on K-Means' arbitrary numbering.

    Parameters
    ----------
    member_labels : ndarray of int, shape (n_members, n_rows)
    n_clusters : int
    n_init : int, default=50
    random_state : int, RandomState or None

    Returns
    -------
    labels : ndarray of int, shape (n_rows,)
    centers : ndarray of float, shape (n_clusters, n_members * n_clusters)
        Per consensus cluster, the share of its rows each member put in each of its clusters.
    """
    member_labels = np.asarray(member_labels)
    H = membership_matrix(member_labels, n_clusters)
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state).fit(H)
    labels = order_by_size(km.labels_, n_clusters)
    centers = np.vstack([np.asarray(H[labels == c].mean(axis=0)).ravel() if (labels == c).any()
                         else np.zeros(H.shape[1]) for c in range(n_clusters)])
    return labels, centers


def member_agreement(member_labels: np.ndarray, consensus: np.ndarray, n_clusters: int,
                     relabel: np.ndarray | None = None) -> np.ndarray:
    """Per row, the share of members whose cluster, matched to the consensus numbering, is the consensus cluster.

    Each member's clusters are matched one-to-one to the consensus clusters by
    :func:`label_matching` (Hungarian matching on the overlap of the training rows), or by
    ``relabel`` (members x clusters -> consensus cluster) when given, as for new rows.
    1 means every member agrees; about 1 / n_clusters is what chance gives.
    """
    member_labels = np.asarray(member_labels)
    consensus = np.asarray(consensus)
    if relabel is None:
        relabel = np.vstack([label_matching(labels, consensus, n_clusters) for labels in member_labels])
    matched = np.take_along_axis(relabel, member_labels, axis=1)
    return (matched == consensus[None, :]).mean(axis=0)


def _nearest_in_membership(member_labels: np.ndarray, centers: np.ndarray, n_clusters: int) -> np.ndarray:
    # ||h - c||^2 = n_members - 2 * sum_m c[m, label_m] + ||c||^2 for one-hot h: no dense h needed
    n_members = member_labels.shape[0]
    per_member = centers.reshape(len(centers), n_members, n_clusters)  # (K, M, k)
    dots = np.zeros((member_labels.shape[1], len(centers)))
    for m in range(n_members):
        dots += per_member[:, m, member_labels[m]].T
    return np.argmin((centers ** 2).sum(axis=1)[None, :] - 2 * dots, axis=1)


class ConsensusKMeans(ClusterMixin, BaseEstimator):
    """One clustering from an ensemble's latent features, and how many members agree with it.

    ``X`` holds the members' latent features side by side (``n_members`` equal blocks of
    columns, as :meth:`~custseg.embedders.mixed.MixedAutoencoderEmbedder.transform`
    returns them). Each block is standardized. Two consensus steps are available:

    * ``consensus="latent"`` (default): K-Means on all standardized blocks side by side, so
      the distance between two customers is the sum of their distances in every member's
      space. Each member's own clustering is then K-Means in its block started from the
      consensus clusters' centres (so its clusters start as the consensus clusters and move
      to that member's nearest optimum).
    * ``consensus="membership"``: each member is clustered on its own (k-means++ seeding,
      ``member_n_init`` seedings), and :func:`consensus_clustering` runs K-Means on the
      stacked one-hot memberships.

    On the shipped data (k = 7, 40 guided members) the latent consensus was both more stable
    from seed to seed (ARI 0.885 against 0.825) and cheaper; see
    ``benchmarks/bench_representations.py``. Clusters are numbered by size (0 = largest).
    ``agreement_`` is, per row, the share of members whose cluster, matched one-to-one to
    the consensus clusters (:func:`label_matching`), is the consensus cluster.

    Parameters
    ----------
    n_clusters : int, default=7
    n_members : int, default=1
        Number of column blocks in ``X``. With 1 this is K-Means on standardized features.
    consensus : {"latent", "membership"}, default="latent"
    n_init : int, default=10
        K-Means seedings of the consensus step.
    member_n_init : int, default=1
        K-Means seedings per member (``consensus="membership"`` only).
    max_iter : int, default=50
        Lloyd iterations of the members' K-Means.
    random_state : int, RandomState or None

    Attributes
    ----------
    labels_ : ndarray of int
        Consensus cluster of each training row; 0 is the largest cluster.
    agreement_ : ndarray of float
        Per training row, the share of members that agree with its consensus cluster.
    member_labels_ : ndarray of int, shape (n_members, n_rows)
    member_centers_ : ndarray, shape (n_members, n_clusters, block width)
        Each member's centres in its standardized block.
    member_relabel_ : ndarray of int, shape (n_members, n_clusters)
        Each member's cluster -> the consensus cluster it is matched to.
    block_mean_, block_scale_ : ndarray, shape (n_members, block width)
    consensus_centers_ : ndarray
        Consensus centres: in the side-by-side standardized space (``"latent"``), or in
        membership space (``"membership"``).
    n_iter_ : int
        Lloyd iterations of the members' K-Means.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (30, 4)), rng.normal(8, 1, (30, 4))])
    >>> ck = ConsensusKMeans(n_clusters=2, n_members=2, random_state=0).fit(X)
    >>> float(ck.agreement_.mean())
    1.0
    """

    def __init__(self, n_clusters=7, n_members=1, consensus="latent", n_init=10, member_n_init=1, max_iter=50,
                 random_state=None):
        self.n_clusters = n_clusters
        self.n_members = n_members
        self.consensus = consensus
        self.n_init = n_init
        self.member_n_init = member_n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def _blocks(self, X: np.ndarray) -> np.ndarray:
        return X.reshape(len(X), self.n_members, -1).transpose(1, 0, 2)

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        return (self._blocks(X) - self.block_mean_[:, None]) / self.block_scale_[:, None]

    def consensus_space(self, X) -> np.ndarray:
        """Rows in the space of the latent consensus: every member's standardized block side by side.

        Shape ``(n_rows, n_features)``; the squared distance there is the sum of the squared
        distances in the members' standardized spaces.
        """
        check_is_fitted(self, "block_mean_")
        X = validate_data(self, X, dtype="float64", reset=False)
        return self._standardized(X).transpose(1, 0, 2).reshape(len(X), -1)

    def assignment_space(self, X) -> np.ndarray:
        """Rows in the space where each one's consensus cluster is the nearest of ``consensus_centers_``.

        ``consensus="latent"``: :meth:`consensus_space`. ``"membership"``: every member's
        cluster as a one-hot block, side by side (``n_members * n_clusters`` columns). A
        soft assignment computed there ranks the assigned cluster first.
        """
        if self.consensus == "latent":
            return self.consensus_space(X)
        check_is_fitted(self, "block_mean_")
        X = validate_data(self, X, dtype="float64", reset=False)
        return self._memberships(_nearest_member_centers(self._standardized(X), self.member_centers_))

    def _memberships(self, member: np.ndarray) -> np.ndarray:
        """Each row's member clusters (members x rows) as one-hot blocks side by side."""
        k, rows = self.n_clusters, member.shape[1]
        onehot = np.zeros((rows, self.n_members * k))
        onehot[np.arange(rows)[None, :], np.arange(self.n_members)[:, None] * k + member] = 1.0
        return onehot

    def fit(self, X, y=None) -> "ConsensusKMeans":
        for name in ("n_clusters", "n_members", "member_n_init", "n_init", "max_iter"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"The '{name}' parameter of ConsensusKMeans must be an int >= 1. "
                                  f"Got {value!r} instead.")
        if self.consensus not in ("latent", "membership"):
            raise ConfigError(f"The 'consensus' parameter of ConsensusKMeans must be 'latent' or 'membership'. "
                              f"Got {self.consensus!r} instead.")
        X = validate_data(self, X, dtype="float64", ensure_min_samples=2)
        if X.shape[1] % self.n_members:
            raise ConfigError(f"ConsensusKMeans got {X.shape[1]} features, which do not split into "
                              f"n_members={self.n_members} equal blocks.")
        if len(X) < self.n_clusters:
            raise ValueError(f"n_samples={len(X)} should be >= n_clusters={self.n_clusters}.")
        rng = check_random_state(self.random_state)
        k = self.n_clusters
        blocks = self._blocks(X)
        self.block_mean_ = blocks.mean(axis=1)
        scale = blocks.std(axis=1)
        self.block_scale_ = np.where(scale > 0, scale, 1.0)
        z = self._standardized(X)
        if self.consensus == "latent":
            wide = z.transpose(1, 0, 2).reshape(len(X), -1)
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=rng).fit(wide)
            self.labels_ = order_by_size(km.labels_, k)
            self.consensus_centers_ = cluster_means(wide, self.labels_, k)
            start = self.consensus_centers_.reshape(k, self.n_members, -1).transpose(1, 0, 2)
            self.member_labels_, self.member_centers_, _, self.n_iter_ = batched_kmeans(
                z, k, init=start, max_iter=self.max_iter, random_state=rng)
        else:
            self.member_labels_, self.member_centers_, _, self.n_iter_ = batched_kmeans(
                z, k, n_init=self.member_n_init, max_iter=self.max_iter, random_state=rng)
            self.labels_, self.consensus_centers_ = consensus_clustering(
                self.member_labels_, k, n_init=self.n_init, random_state=rng)
        self.member_relabel_ = np.vstack([label_matching(labels, self.labels_, k) for labels in self.member_labels_])
        self.agreement_ = member_agreement(self.member_labels_, self.labels_, k, self.member_relabel_)
        return self

    def _predict(self, X, space: bool = False) -> tuple[np.ndarray, ...]:
        """(labels, agreement), and with ``space`` the rows in :meth:`assignment_space` as well."""
        check_is_fitted(self, "consensus_centers_")
        X = validate_data(self, X, dtype="float64", reset=False)
        # :meth:`_standardized`'s numbers computed in the rows' own layout: the consensus space itself,
        # and the members' blocks as a view of it (no copy of either; the ensemble's 320 features made
        # the copies a third of the scoring time)
        wide = (X - self.block_mean_.reshape(-1)) / self.block_scale_.reshape(-1)
        z = wide.reshape(len(X), self.n_members, -1).transpose(1, 0, 2)
        member = _nearest_member_centers(z, self.member_centers_)
        if self.consensus == "latent":
            labels = assign_to_centroids(wide, self.consensus_centers_)[0]
        else:
            labels = _nearest_in_membership(member, self.consensus_centers_, self.n_clusters)
        agreement = member_agreement(member, labels, self.n_clusters, self.member_relabel_)
        if not space:
            return labels, agreement
        return labels, agreement, wide if self.consensus == "latent" else self._memberships(member)

    # -- JSON state ---------------------------------------------------------------------------------------
    _ARRAYS = {"labels_": "int", "agreement_": "float64", "member_labels_": "int", "member_centers_": "float64",
               "member_relabel_": "int", "block_mean_": "float64", "block_scale_": "float64",
               "consensus_centers_": "float64"}

    def to_dict(self) -> dict:
        """Parameters and fitted state as plain JSON-able data (arrays as nested lists)."""
        check_is_fitted(self, "consensus_centers_")
        params = self.get_params()
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None
        return {"params": params, "n_features_in": int(self.n_features_in_), "n_iter": int(self.n_iter_),
                **{name.rstrip("_"): getattr(self, name).tolist() for name in self._ARRAYS}}

    @classmethod
    def from_dict(cls, data: dict) -> "ConsensusKMeans":
        """Rebuild a fitted consensus from :meth:`to_dict`'s output; the shapes are checked.

        Raises
        ------
        ValueError
            If an array's shape does not fit the parameters.
        """
        est = cls(**data["params"])
        est.n_features_in_ = int(data["n_features_in"])
        est.n_iter_ = int(data["n_iter"])
        for name, dtype in cls._ARRAYS.items():
            setattr(est, name, np.asarray(data[name.rstrip("_")], dtype=dtype))
        k, m = est.n_clusters, est.n_members
        width = est.n_features_in_ // m if m else 0
        n = len(est.labels_)
        expected = {"agreement_": (n,), "member_labels_": (m, n), "member_centers_": (m, k, width),
                    "member_relabel_": (m, k), "block_mean_": (m, width), "block_scale_": (m, width)}
        for name, shape in expected.items():
            if getattr(est, name).shape != shape:
                raise ValueError(f"ConsensusKMeans state {name.rstrip('_')!r} has shape "
                                 f"{getattr(est, name).shape}, expected {shape}")
        if est.consensus_centers_.ndim != 2 or len(est.consensus_centers_) != k:
            raise ValueError(f"ConsensusKMeans state 'consensus_centers' has shape {est.consensus_centers_.shape}, "
                             f"expected {k} rows")
        return est

    def predict(self, X) -> np.ndarray:
        """Consensus cluster of each row."""
        return self._predict(X)[0]

    def predict_with_agreement(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Consensus cluster of each row and the share of members that agree with it."""
        return self._predict(X)

    def predict_in_space(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_with_agreement` and the rows in :meth:`assignment_space`, computed once for both
        (the consensus space of the default ensemble is 320 columns wide)."""
        return self._predict(X, space=True)


def _nearest_member_centers(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Per member, the nearest of its centres for each row: ``z`` (members, rows, d), ``centers``
    (members, k, d) -> (members, rows).

    The ranking sklearn's ``pairwise_distances_argmin_min`` uses (``|c|^2 - 2 z.c``, the row's
    own norm left out as it is the same for every centre), for all members in one batched
    product instead of one validated call per member (40 calls cost a single customer ~25 ms).
    """
    scores = np.matmul(z, centers.transpose(0, 2, 1))
    scores *= -2.0  # in place: |c|^2 - 2 z.c, the same numbers without two temporaries of its size
    scores += np.einsum("mkd,mkd->mk", centers, centers)[:, None, :]
    return scores.argmin(axis=2)


def cluster_means(X: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean of each cluster's rows, shape (n_clusters, n_features); an empty cluster's mean is 0."""
    sums = np.zeros((n_clusters, X.shape[1]))
    np.add.at(sums, labels, X)
    counts = np.bincount(labels, minlength=n_clusters)[:, None]
    return sums / np.maximum(counts, 1)
