"""Choosing the number of clusters: elbow, separation, and stability, combined by one rule.

:func:`select_k` scans k on a feature space (the latent space of a trained
autoencoder, by default in :func:`run_k_selection`) and reports, for each k, K-Means
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

What the stability does not cover: :func:`run_k_selection` trains the autoencoder once
and resamples customers in that one latent space. Retraining the autoencoder with
another seed changes the space itself, and on the shipped data moves customers between
clusters far more (seed-to-seed ARI about 0.3 at k=7, see :mod:`custseg.comparison`)
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

import copy
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from .metrics import internal_metrics
from ..exceptions import ConfigError, DataError
from ..schema import category_text

__all__ = ["KSelection", "KSelectionRun", "knee_point", "scan_k", "pairwise_ari", "clustering_stability", "recommend_k",
           "select_k", "run_k_selection", "write_k_selection", "plot_k_selection_panels", "MIN_STABILITY"]

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


def pairwise_ari(labelings: Iterable[np.ndarray]) -> np.ndarray:
    """Adjusted Rand index of every pair of labelings of the same rows (empty for fewer than two)."""
    labelings = [np.asarray(labels) for labels in labelings]
    return np.array([adjusted_rand_score(a, b) for a, b in itertools.combinations(labelings, 2)], dtype="float64")


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
    recommended_k: int
    reason: str
    min_stability: float = MIN_STABILITY
    settings: dict[str, Any] = field(default_factory=dict)

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
                 f"stability {r['stability']:.2f}"
                 + ("" if r["stability"] >= self.min_stability or np.isnan(r["stability"]) else
                    f" (below {self.min_stability:.2f})"),
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
    recommended, reason = recommend_k(table, min_stability)
    table["knee"] = table["k"] == knee
    table["recommended"] = table["k"] == recommended
    return KSelection(table=table, knee_k=knee, recommended_k=recommended, reason=reason,
                      min_stability=min_stability,
                      settings={"n_resamples": n_resamples, "n_init": n_init, "random_state": random_state,
                                "silhouette_sample": silhouette_sample or None, "n_rows": len(X),
                                "n_features": X.shape[1]})


# -- on a customer table ------------------------------------------------------------------------------
@dataclass
class KSelectionRun:
    """:func:`select_k` on the latent space of a freshly trained autoencoder.

    Attributes
    ----------
    selection : KSelection
    business_k : int
        The number of segments asked for (the config's ``clustering.n_clusters``).
    source : str
        The training file.
    n_customers : int
    epochs : int
        Epochs the autoencoder trained for.
    seed : int
    """

    selection: KSelection
    business_k: int
    source: str
    n_customers: int
    epochs: int
    seed: int

    def summary_lines(self) -> list[str]:
        """What the command prints after the table."""
        sel = self.selection
        return [f"Recommended k={sel.recommended_k}: {sel.reason}.",
                f"Asked for: {sel.describe_k(self.business_k)}.",
                "Note: the stability is K-Means' on this one trained autoencoder (seed "
                f"{self.seed}); retraining the autoencoder with another seed moves customers between clusters "
                "far more ('custseg compare' measures that)."]


def run_k_selection(config, *, k_min: int | None = None, k_max: int | None = None, n_resamples: int = 5,
                    silhouette_sample: int | None = None, min_stability: float = MIN_STABILITY,
                    progress: Callable[[str], None] = _noop) -> KSelectionRun:
    """Train the reference autoencoder once (``config.seed``), then :func:`select_k` on its latent features.

    The autoencoder is the one ``custseg train`` fits with the same settings and seed,
    so the scan describes the space that run clusters.

    Parameters
    ----------
    config : RunConfig
        Data, autoencoder and seed; ``k_selection.k_min``/``k_max``/``n_init`` are the
        defaults of the scan; ``clustering.n_clusters`` is the k the business asked for.
    k_min, k_max : int, optional
        The range of k (inclusive); the config's if None.
    n_resamples, silhouette_sample, min_stability, progress
        As in :func:`select_k`.
    """
    from ..workflow import build_pipeline, load_tables

    config = copy.deepcopy(config)
    k_min = config.k_selection.k_min if k_min is None else k_min
    k_max = config.k_selection.k_max if k_max is None else k_max
    if not isinstance(k_min, int) or k_min < 2:
        raise ConfigError(f"The 'k_min' parameter must be an int >= 2. Got {k_min!r} instead.")
    if not isinstance(k_max, int) or k_max < k_min:
        raise ConfigError(f"The 'k_max' parameter must be an int >= k_min ({k_min}). Got {k_max!r} instead.")
    config.data.test = None  # only the training table is clustered
    config.validate()
    train_t, _, schema = load_tables(config)
    frame = train_t.frame
    if k_max >= len(frame):
        raise DataError(f"file {train_t.source!r} has {len(frame)} customers; k up to {k_max} needs more. "
                        "Give a smaller --max")
    label = schema.label_column
    y = frame[label] if label else None
    pipeline = build_pipeline(config, schema)
    # K-Means of the pipeline itself is not needed here; one init keeps the fit short
    pipeline.set_params(n_init=1, n_clusters=min(config.clustering.n_clusters, len(frame)))
    pipeline.fit(frame, None if y is None else y.map(lambda v: v if pd.isna(v) else category_text(v)))
    epochs = len(pipeline.embedder_.history_)
    progress(f"autoencoder: {epochs} epochs (best {pipeline.embedder_.best_epoch_}); "
             f"scanning k={k_min}..{k_max} on {pipeline.embedder_.latent_dim} latent features")
    latent = pipeline.transform(frame)
    selection = select_k(latent, range(k_min, k_max + 1), n_resamples=n_resamples,
                         n_init=config.k_selection.n_init, random_state=config.seed,
                         silhouette_sample=silhouette_sample, min_stability=min_stability, progress=progress)
    selection.settings.update(space="autoencoder latent features", seed=config.seed)
    return KSelectionRun(selection=selection, business_k=config.clustering.n_clusters, source=train_t.source,
                         n_customers=len(frame), epochs=epochs, seed=config.seed)


def write_k_selection(run: KSelectionRun, results_dir: str | Path, dpi: int = 120) -> list[Path]:
    """Write ``k_selection.csv`` and ``plots/k_selection.png`` into ``results_dir`` (atomically, per file)."""
    from ..io.atomic import merge_into, staging_dir
    from ..workflow import FLOAT_FORMAT, render_png

    results_dir = Path(results_dir)
    table = run.selection.table.copy()
    for column in ("stable", "knee", "recommended"):
        table[column] = table[column].astype(int)
    figure = plot_k_selection_panels(run.selection, chosen_k=run.business_k)
    with staging_dir(results_dir) as staged:
        table.to_csv(staged / "k_selection.csv", index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        (staged / "plots").mkdir()
        (staged / "plots" / "k_selection.png").write_bytes(render_png(figure, dpi))
        return merge_into(staged, results_dir)


# -- figure -------------------------------------------------------------------------------------------
def plot_k_selection_panels(selection: KSelection, chosen_k: int | None = None):
    """Four panels against k: inertia with its knee, silhouette, stability, Davies-Bouldin and Calinski-Harabasz.

    The recommended k is marked on every panel, and ``chosen_k`` (the k asked for) too.
    Returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..report.plots import segment_palette

    blue, orange, green, pink, sky, red = segment_palette(6)
    t = selection.table
    ks = t["k"].to_numpy()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.6))
    ax_in, ax_sil, ax_stab, ax_db = axes.ravel()

    ax_in.plot(ks, t["inertia"], marker="o", color=blue)
    if selection.knee_k is not None:
        y = float(t.loc[t["k"] == selection.knee_k, "inertia"].iloc[0])
        ax_in.scatter([selection.knee_k], [y], s=160, facecolors="none", edgecolors="#000000", linewidths=2, zorder=3,
                      label=f"knee (k = {selection.knee_k})")
    ax_in.set_ylabel("inertia (within-cluster sum of squares)")
    ax_in.set_title("Elbow: inertia falls with every k; the knee is where it slows")

    ax_sil.plot(ks, t["silhouette"], marker="o", color=orange)
    ax_sil.set_ylabel("silhouette (higher is better)")
    ax_sil.set_title("Separation: silhouette")

    ax_stab.errorbar(ks, t["stability"], yerr=t["stability_sd"], marker="o", color=green, capsize=3)
    ax_stab.axhline(selection.min_stability, color="#777777", ls=":", lw=1,
                    label=f"stable from {selection.min_stability:.2f}")
    ax_stab.set_ylabel("mean pairwise ARI of bootstrap fits")
    n_res = selection.settings.get("n_resamples")
    ax_stab.set_title("Stability of K-Means" + (f" over {n_res} bootstrap resamples" if n_res else ""))
    low = np.nanmin(np.r_[t["stability"] - t["stability_sd"].fillna(0), selection.min_stability])
    ax_stab.set_ylim(min(0.0, low - 0.05) if low < 0 else max(0.0, low - 0.05), 1.02)

    # two scales on one panel: each axis label is in its curve's colour instead of a legend over the curves
    ax_db.plot(ks, t["davies_bouldin"], marker="o", color=pink)
    ax_db.set_ylabel("Davies-Bouldin, circles (lower is better)", color=pink)
    ax_ch = ax_db.twinx()
    ax_ch.plot(ks, t["calinski_harabasz"], marker="s", color=sky)
    ax_ch.set_ylabel("Calinski-Harabasz, squares (higher is better)", color=sky)
    ax_db.set_title("Compactness: Davies-Bouldin and Calinski-Harabasz")

    for ax in (ax_in, ax_sil, ax_stab, ax_db):
        ax.set_xticks(list(ks))
        ax.set_xlabel("number of clusters k")
        ax.axvline(selection.recommended_k, color=red, ls="--", lw=1.3, label=f"recommended k = {selection.recommended_k}")
        if chosen_k is not None and chosen_k != selection.recommended_k and chosen_k in set(ks):
            ax.axvline(chosen_k, color="#555555", ls="-.", lw=1.2, label=f"asked for k = {chosen_k}")
    ax_in.legend(frameon=False)
    ax_sil.legend(frameon=False)
    ax_stab.legend(frameon=False, loc="lower left")
    settings = selection.settings
    fig.suptitle(f"Choosing k on {settings.get('space', 'the features')} "
                 f"({settings.get('n_rows', '?'):,} customers, {settings.get('n_features', '?')} dimensions)"
                 if isinstance(settings.get("n_rows"), int) else "Choosing k")
    fig.tight_layout()
    return fig


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
