"""Every figure of custseg, drawn from plot data computed elsewhere.

As in hdbscan's ``plots.py``: each function takes data (DataFrames, arrays, result
objects), draws on the axes it is given (``ax=None``, or ``axes=None`` for a figure of
several panels: a new figure then) and returns the axes. None reads or writes files;
:func:`render_png` turns a figure into PNG bytes for :mod:`custseg.io.writing`. Colours
come from :func:`segment_palette` (Okabe-Ito, colour-blind safe) so a cluster has the
same colour in every figure, and legends are categorical with the cluster's name.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # only for the annotations: the plots need the objects' attributes, not their modules
    from ..evaluation.comparison import ComparisonResult
    from ..evaluation.selection import KSelection

__all__ = [
    "segment_palette",
    "render_png",
    "plot_training_history",
    "plot_k_selection",
    "plot_maps",
    "plot_cluster_distribution",
    "plot_profile_heatmap",
    "plot_comparison",
    "plot_reliability",
    "plot_confidence",
    "plot_drift",
]

# Colour-blind-safe colours (Okabe & Ito 2008, Paul Tol, IBM design) in the order that keeps the first n
# as far apart as possible: chosen greedily by the smallest CIELAB distance seen with normal vision,
# deuteranopia and protanopia (Machado et al. 2009). The smallest distance stays above 27 for 8 colours and
# above 23 for 10 (the former order put clusters 0 and 4 in two blues and the 10th and 11th in two greens
# 4 apart). Segments after clusters take the next colours, so they never repeat a cluster's.
_PALETTE = ["#0072B2", "#E69F00", "#000000", "#009E73", "#88CCEE", "#994F00", "#785EF0", "#DDCC77",
            "#332288", "#882255", "#BBBBBB", "#F0E442", "#EE7733", "#CC79A7", "#EE6677", "#648FFF", "#D41159"]


def segment_palette(n: int) -> list[str]:
    """``n`` colours, colour-blind safe for n <= 8, cycling past 17."""
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _subplots(*args, **kwargs):
    """``pyplot.subplots`` with layout "none": each figure lays itself out (tight_layout), whatever the
    user's rcParams ask for (with figure.constrained_layout.use the heatmap's colorbar and tight_layout() raised)."""
    return _pyplot().subplots(*args, layout="none", **kwargs)


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2)):
    fig, axes = _subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes.ravel()


def _panels(axes, n: int, size) -> tuple[Any, np.ndarray, bool]:
    """The figure and ``n`` axes to draw on: the given ones, or a new row of ``n`` panels."""
    if axes is None:
        fig, made = _figure(1, n, size=size)
        return fig, made, True
    axes = np.ravel(np.asarray(axes, dtype=object))
    if len(axes) < n:
        raise ValueError(f"this figure needs {n} axes; got {len(axes)}")
    return axes[0].figure, axes, False


def render_png(axes, dpi: int, *, tight: bool = False) -> bytes:
    """PNG bytes of the figure holding ``axes`` (an axes, an array of them, or a figure); closes it.

    No timestamp or software name is written, so the same figure gives the same bytes.
    ``tight`` crops the white border (``bbox_inches="tight"``).
    """
    import matplotlib
    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    fig = axes if hasattr(axes, "savefig") else np.ravel(np.asarray(axes, dtype=object))[0].figure
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        # what ``tight_layout()`` leaves behind; with any engine set, savefig lays the figure out in one
        # more (unrendered) draw first: 14% of the figures' time, the same pixels without it. (None means
        # "no engine" only while the rcParams ask for no automatic layout.)
        with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None},
                **({"bbox_inches": "tight"} if tight else {}))
    _pyplot().close(fig)
    return buffer.getvalue()


# -- training ---------------------------------------------------------------------------------------------
def plot_training_history(history: pd.DataFrame, best_epoch: int | None = None, axes=None) -> np.ndarray:
    """Loss per epoch (training and validation), learning-rate drops marked, and a second panel where
    there is a second measure: the MAE of the reference autoencoder, the guidance loss (cross-entropy
    of the segment head) of a guided mixed-type one. An unguided mixed-type autoencoder's loss is its
    reconstruction loss: one panel. Returns the axes drawn on.
    """
    if "mae" in history:
        panels = [("loss", "MSE loss"), ("mae", "mean absolute error")]
    elif "guidance" in history and history["guidance"].abs().sum() > 0:
        panels = [("loss", "loss"), ("guidance", "guidance loss (cross-entropy)")]
    else:
        panels = [("loss", "reconstruction loss")]
    fig, axes, made = _panels(axes, len(panels), (6.4, 4.2))
    for ax, (metric, label) in zip(axes, panels):
        ax.plot(history["epoch"], history[metric], color=_PALETTE[0], label="training")
        if f"val_{metric}" in history and history[f"val_{metric}"].notna().any():
            ax.plot(history["epoch"], history[f"val_{metric}"], color=_PALETTE[1], label="validation")
        drops = history["epoch"][history["lr"].diff() < 0]
        for i, epoch in enumerate(drops):
            ax.axvline(epoch, color="#999999", lw=0.8, ls=":", label="learning rate halved" if i == 0 else None)
        if best_epoch is not None:
            ax.axvline(best_epoch, color=_PALETTE[2], lw=1.2, ls="--", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"Autoencoder training: {label}")
        ax.legend(frameon=False)
    if made:
        fig.tight_layout()
    return axes[:len(panels)]


# -- choosing k ---------------------------------------------------------------------------------------------
def plot_k_selection(selection: "KSelection", chosen_k: int | None = None, axes=None) -> np.ndarray:
    """Four panels against k: inertia with its knee, silhouette, stability, Davies-Bouldin and Calinski-Harabasz.

    The recommended k (:func:`custseg.evaluation.selection.recommend_k`) is marked on
    every panel, and ``chosen_k`` (the k asked for) too when it differs.
    """
    if axes is None:
        fig, made = _subplots(2, 2, figsize=(11, 7.6))
        axes, made = made.ravel(), True
    else:
        fig, axes, made = _panels(axes, 4, (5.5, 3.8))
    blue, orange, green, pink, sky, red = segment_palette(6)
    t = selection.table
    ks = t["k"].to_numpy()
    ax_in, ax_sil, ax_stab, ax_db = axes[:4]

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

    ax_stab.set_ylabel("mean pairwise ARI of bootstrap fits")
    n_res = selection.settings.get("n_resamples")
    if t["stability"].notna().any():
        ax_stab.errorbar(ks, t["stability"], yerr=t["stability_sd"], marker="o", color=green, capsize=3)
        ax_stab.axhline(selection.min_stability, color="#777777", ls=":", lw=1,
                        label=f"stable from {selection.min_stability:.2f}")
        ax_stab.set_title("Stability of K-Means" + (f" over {n_res} bootstrap resamples" if n_res else ""))
        low = np.nanmin(np.r_[t["stability"] - t["stability_sd"].fillna(0), selection.min_stability])
        ax_stab.set_ylim(min(0.0, low - 0.05) if low < 0 else max(0.0, low - 0.05), 1.02)
    else:
        ax_stab.set_title("Stability of K-Means: not measured")
        ax_stab.text(0.5, 0.55, "one fit per k (k_selection.n_resamples = 1);\n'custseg select-k' measures it",
                     ha="center", va="center", transform=ax_stab.transAxes, color="#555555",
                     bbox={"facecolor": "white", "edgecolor": "none"})
        ax_stab.set_ylim(0.0, 1.02)

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
        if selection.recommended_k is not None:
            ax.axvline(selection.recommended_k, color=red, ls="--", lw=1.3,
                       label=f"recommended k = {selection.recommended_k}")
        if chosen_k is not None and chosen_k != selection.recommended_k and chosen_k in set(ks):
            ax.axvline(chosen_k, color="#555555", ls="-.", lw=1.2, label=f"asked for k = {chosen_k}")
    if not t["stability"].notna().any():  # nothing plotted there: the same k axis as the other panels
        ax_stab.set_xlim(*ax_sil.get_xlim())
    ax_in.legend(frameon=False)
    ax_sil.legend(frameon=False)
    ax_stab.legend(frameon=False, loc="lower left")
    if made:
        settings = selection.settings
        # wrapped: an ensemble's space has a long name, which would run off both sides of the figure
        fig.suptitle(textwrap.fill(
            f"Choosing k on {settings.get('space', 'the features')} "
            f"({settings.get('n_rows', '?'):,} customers, {settings.get('n_features', '?')} dimensions)", 110)
            if isinstance(settings.get("n_rows"), int) else "Choosing k")
        fig.tight_layout()
    return axes[:4]


# -- maps and sizes -------------------------------------------------------------------------------------------
def _scatter(ax, coords: np.ndarray, groups: Sequence, names: dict, colours: dict, title: str,
             axis_labels: tuple[str, str]):
    groups = np.asarray(groups)
    for key in names:
        sel = groups == key
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.65, color=colours[key], label=names[key],
                       linewidths=0, rasterized=True)
    ax.set_title(title)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.legend(markerscale=2.5, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))


def plot_maps(coords: np.ndarray, clusters: np.ndarray, cluster_names: dict, method: str,
              segments: np.ndarray | None = None, axis_labels: tuple[str, str] | None = None,
              axes=None) -> np.ndarray:
    """A 2-D map coloured by cluster, and beside it (if known) the same map coloured by known segment."""
    panels = 2 if segments is not None else 1
    fig, axes, made = _panels(axes, panels, (6.2, 4.8))
    axis_labels = axis_labels or (f"{method} 1", f"{method} 2")
    keys = sorted(cluster_names)
    colours = dict(zip(keys, segment_palette(len(keys))))
    _scatter(axes[0], coords, clusters, {k: cluster_names[k] for k in keys}, colours,
             f"{method} map of the latent space, by cluster", axis_labels)
    if segments is not None:
        seg_keys = sorted(set(np.asarray(segments).astype(str)))
        seg_colours = dict(zip(seg_keys, segment_palette(len(keys) + len(seg_keys))[len(keys):]))
        _scatter(axes[1], coords, np.asarray(segments).astype(str), {s: f"known segment {s}" for s in seg_keys},
                 seg_colours, f"{method} map, by known segment", axis_labels)
    if made:
        fig.tight_layout()
    return axes[:panels]


def plot_cluster_distribution(clusters: np.ndarray, cluster_names: dict, segments: np.ndarray | None = None,
                              axes=None) -> np.ndarray:
    """Cluster sizes, and (if known) each cluster's composition by known segment."""
    panels = 2 if segments is not None else 1
    fig, axes, made = _panels(axes, panels, (6.4, 4.4))
    keys = sorted(cluster_names)
    counts = pd.Series(np.asarray(clusters)).value_counts().reindex(keys, fill_value=0)
    colours = segment_palette(len(keys))
    labels = [cluster_names[k] for k in keys]
    bars = axes[0].bar(range(len(keys)), counts.to_numpy(), color=colours)
    axes[0].bar_label(bars, labels=[f"{c:,}\n{c / counts.sum():.0%}" for c in counts], fontsize=8)
    axes[0].set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("customers")
    axes[0].set_title("Customers per cluster")
    axes[0].margins(y=0.15)
    if segments is not None:
        table = pd.crosstab(pd.Series(np.asarray(clusters)), pd.Series(np.asarray(segments).astype(str)),
                            normalize="index").reindex(keys, fill_value=0)
        seg_colours = segment_palette(len(keys) + table.shape[1])[len(keys):]
        bottom = np.zeros(len(keys))
        for j, seg in enumerate(table.columns):
            axes[1].bar(range(len(keys)), table[seg].to_numpy(), bottom=bottom, color=seg_colours[j],
                        label=f"known segment {seg}")
            bottom += table[seg].to_numpy()
        axes[1].set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
        axes[1].set_ylabel("share of the cluster")
        axes[1].set_title("Known segments within each cluster")
        axes[1].legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if made:
        fig.tight_layout()
    return axes[:panels]


# -- profiles -------------------------------------------------------------------------------------------------
#: longest tick label drawn; a category value of thousands of characters made the tight
#: bounding box of the heatmap so large that rendering it ran out of memory
MAX_LABEL = 40


def _short(text: str, limit: int = MAX_LABEL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def plot_profile_heatmap(data: pd.DataFrame, names: dict, ax=None):
    """Segments x features, coloured by standardized difference from the rest, annotated with values.

    ``data`` is :func:`custseg.profiling.profile_heatmap_data`'s table; ``names`` maps a
    segment to its name.
    """
    grid = data.pivot(index="segment", columns="column", values="cohens_d")
    text = data.pivot(index="segment", columns="column", values="text")
    columns = list(dict.fromkeys(data["column"]))
    grid, text = grid[columns], text[columns]
    shown = np.clip(grid.to_numpy(dtype="float64"), -2, 2)
    made = ax is None
    if made:
        fig, ax = _subplots(figsize=(1.05 * len(columns) + 3.2, 0.55 * len(grid) + 2.2))
    fig = ax.figure
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(columns)), [_short(c) for c in columns], rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(grid)), [_short(f"{s}: {names[s]}") for s in grid.index], fontsize=9)
    ax.set_xlabel("distinguishing feature (value in the segment)")
    ax.set_ylabel("segment")
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            dark = abs(shown[i, j]) > 1.2
            ax.text(j, i, _short(text.iat[i, j], 24), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("difference from the other customers\n(standard deviations, Cohen's d)")
    ax.set_title("Segment profiles: red = more than the rest, blue = less")
    if made:
        fig.tight_layout()
    return ax


# -- comparison of methods ----------------------------------------------------------------------------------
def plot_comparison(result: "ComparisonResult", axes=None) -> np.ndarray:
    """Four panels, one row per clustering method: accuracy, ARI and NMI, silhouettes, stability.

    Large markers are means over seeds with their standard deviation, small dots the
    seeds. The supervised ceiling and the chance level are lines on the accuracy panel.
    """
    runs = result.runs
    summary = result.summary
    clustering = summary[summary["kind"] == "clustering"].reset_index(drop=True)
    ceiling = summary[summary["kind"] != "clustering"]
    colours = segment_palette(6)
    height = max(3.2, 0.55 * len(clustering) + 1.6)
    made = axes is None
    if made:
        fig, grid = _subplots(2, 2, figsize=(13, 2 * height), sharey=True)
    else:
        grid = np.asarray(axes, dtype=object).reshape(2, 2)
        fig = grid[0, 0].figure
    y = np.arange(len(clustering))[::-1]
    panels = [
        (grid[0, 0], "Agreement with known segments: mapped accuracy", "share of customers mapped to their segment",
         [("mapped_accuracy", "training customers"), ("returning_accuracy", "returning customers")]),
        (grid[0, 1], "Agreement with known segments: ARI and NMI", "index (0 = chance, 1 = the known segments)",
         [("ari", "ARI"), ("nmi", "NMI")]),
        (grid[1, 0], "Separation: silhouette (higher is better)", "silhouette",
         [("own_silhouette", "in the method's own space"), ("ref_silhouette", "in the reference space")]),
        (grid[1, 1], "Stability across seeds, and fit time", "mean ARI between the seeds' clusterings",
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
    acc = grid[0, 0]
    acc.axvline(result.chance_accuracy, color="#777777", ls=":", lw=1.2,
                label=f"everyone in the largest segment ({result.chance_accuracy:.3f})")
    if len(ceiling):
        value = float(ceiling["mapped_accuracy_mean"].iloc[0])
        acc.axvline(value, color=colours[5], ls="--", lw=1.4, label=f"supervised ceiling ({value:.3f})")
    stab = grid[1, 1]
    low = min(0.0, float(np.nanmin(runs["stability_ari"].astype(float).to_numpy(), initial=0.0)))
    # fit times are written in a column of their own right of the stability scale
    stab.set_xlim(low, 1.32)
    stab.set_xticks(np.arange(0.0, 1.01, 0.2))
    stab.axvline(1.08, color="#bbbbbb", lw=0.8)
    stab.text(1.31, y[0] + 0.45, "fit time", ha="right", va="bottom", fontsize=8, color="#555555")
    for i, row in clustering.iterrows():
        stab.text(1.31, y[i], f"{row['fit_seconds_mean']:.1f} s", ha="right", va="center", fontsize=9,
                  color="#333333")
    for ax in grid.ravel():
        ax.set_yticks(y, clustering["label"])
        ax.legend(frameon=False, fontsize=8, loc="best")
        ax.margins(y=0.12)
    if made:
        fig.suptitle(f"{result.n_customers:,} customers, k = {result.n_clusters}, {len(result.seeds)} seeds; "
                     f"{result.n_returning:,} returning customers", fontsize=12)
        fig.tight_layout()
    return grid.ravel()


# -- monitoring: confidence and drift -----------------------------------------------------------------------
def _one_axes(ax, size) -> tuple[Any, Any, bool]:
    """The figure and the axes to draw on: ``ax``, or the one axes of a new figure."""
    if ax is None:
        fig, axes = _figure(1, 1, size=size)
        return fig, axes[0], True
    return ax.figure, ax, False


def plot_reliability(table: pd.DataFrame, ax=None, label: str = "Segment_Probability", title: str | None = None):
    """Reliability diagram from :func:`custseg.monitoring.reliability_table`: observed accuracy against probability.

    Points on the diagonal are calibrated; marker area grows with the rows in the bin.
    Returns the axes.
    """
    fig, ax, made = _one_axes(ax, (5.2, 4.4))
    used = table[table["count"] > 0]
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    sizes = 20 + 180 * used["count"] / max(int(used["count"].max()) if len(used) else 1, 1)
    ax.plot(used["mean_probability"], used["accuracy"], color=_PALETTE[0], lw=1)
    ax.scatter(used["mean_probability"], used["accuracy"], s=sizes, color=_PALETTE[0], zorder=3,
               label=f"{label} (area: rows)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"mean {label} in the bin")
    ax.set_ylabel("share predicted correctly")
    ax.set_title(title or "Reliability of the segment probability")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    if made:
        fig.tight_layout()
    return ax


def plot_confidence(confidence, groups, ax=None, label: str = "Segment_Probability"):
    """Distribution of a confidence column per group (segment or cluster), as box plots. Returns the axes."""
    fig, ax, made = _one_axes(ax, (6.4, 4.2))
    frame = pd.DataFrame({"p": np.asarray(confidence, dtype="float64"), "g": np.asarray(groups).astype(str)})
    frame = frame[np.isfinite(frame["p"])]
    keys = sorted(frame["g"].unique())
    ax.boxplot([frame.loc[frame["g"] == k, "p"].to_numpy() for k in keys], tick_labels=keys, showfliers=False)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted segment")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per predicted segment")
    if made:
        fig.tight_layout()
    return ax


def plot_drift(features: pd.DataFrame, ax=None, psi_threshold: float = 0.1):
    """PSI per feature from a drift table (drift.csv), drifted features highlighted. Returns the axes."""
    fig, ax, made = _one_axes(ax, (6.4, 4.2))
    rows = features[features["kind"] != "missing"]
    psi = rows["psi"].fillna(0.0).to_numpy()
    colours = [_PALETTE[5] if d else _PALETTE[0] for d in rows["drifted"]]
    ax.barh(range(len(rows)), psi, color=colours)
    ax.set_yticks(range(len(rows)), rows["feature"].tolist(), fontsize=8)
    ax.invert_yaxis()
    ax.axvline(psi_threshold, color="#999999", ls="--", lw=1, label=f"PSI {psi_threshold:g}")
    ax.set_xlabel("population stability index (new vs reference)")
    ax.set_title("Drift per feature (brown: drifted)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    if made:
        fig.tight_layout()
    return ax
