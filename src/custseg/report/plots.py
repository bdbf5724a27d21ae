"""Figures, drawn from plot data computed elsewhere.

Each function takes data (DataFrames / arrays), draws on ``ax`` (or a new figure when
None) and returns the axes or figure; none reads or writes files. Colours come from
:func:`segment_palette` (Okabe-Ito, colour-blind safe) so a cluster has the same colour
in every figure, and legends are categorical with the cluster's name.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "segment_palette",
    "plot_training_history",
    "plot_k_selection",
    "plot_maps",
    "plot_cluster_distribution",
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


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes.ravel()


def plot_training_history(history: pd.DataFrame, best_epoch: int | None = None):
    """Loss and MAE per epoch (training and validation), learning-rate drops marked."""
    fig, (ax_loss, ax_mae) = _figure(1, 2)
    for ax, metric, label in ((ax_loss, "loss", "MSE loss"), (ax_mae, "mae", "mean absolute error")):
        ax.plot(history["epoch"], history[metric], color=_PALETTE[0], label="training")
        if history[f"val_{metric}"].notna().any():
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
    fig.tight_layout()
    return fig


def plot_k_selection(table: pd.DataFrame, chosen_k: int | None = None, recommended_k: int | None = None):
    """Elbow (inertia) and silhouette against k."""
    fig, (ax_in, ax_sil) = _figure(1, 2)
    ax_in.plot(table["k"], table["inertia"], marker="o", color=_PALETTE[0])
    ax_in.set_xlabel("number of clusters k")
    ax_in.set_ylabel("inertia (within-cluster sum of squares)")
    ax_in.set_title("Elbow method")
    ax_sil.plot(table["k"], table["silhouette"], marker="o", color=_PALETTE[1])
    ax_sil.set_xlabel("number of clusters k")
    ax_sil.set_ylabel("silhouette score")
    ax_sil.set_title("Silhouette by k")
    for ax in (ax_in, ax_sil):
        ax.set_xticks(list(table["k"]))
        if chosen_k is not None:
            ax.axvline(chosen_k, color=_PALETTE[2], ls="--", lw=1.2, label=f"chosen k = {chosen_k}")
        if recommended_k is not None and recommended_k != chosen_k:
            ax.axvline(recommended_k, color=_PALETTE[5], ls=":", lw=1.2, label=f"recommended k = {recommended_k}")
        if chosen_k is not None or recommended_k is not None:
            ax.legend(frameon=False)
    fig.tight_layout()
    return fig


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
              segments: np.ndarray | None = None, axis_labels: tuple[str, str] | None = None):
    """A 2-D map coloured by cluster, and beside it (if known) the same map coloured by known segment."""
    panels = 2 if segments is not None else 1
    fig, axes = _figure(1, panels, size=(6.2, 4.8))
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
    fig.tight_layout()
    return fig


def plot_cluster_distribution(clusters: np.ndarray, cluster_names: dict, segments: np.ndarray | None = None):
    """Cluster sizes, and (if known) each cluster's composition by known segment."""
    panels = 2 if segments is not None else 1
    fig, axes = _figure(1, panels, size=(6.4, 4.4))
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
    fig.tight_layout()
    return fig
