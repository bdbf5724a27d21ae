"""The HTML report of a run, and the segment profile files.

:func:`write_segment_outputs` writes ``segment_profiles.csv`` and ``segments.md``;
:func:`build_report` reads what ``custseg train`` wrote into the models and results
folders (and the training table it names) and writes ``report.html``: one
self-contained file, every style and figure inside it, that opens offline.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io.atomic import atomic_write_text
from ..exceptions import CustsegError, DataError
from ..io.reading import missing_report, read_table
from ..profiling import (SegmentDescription, SegmentProfile, describe_segments, known_segments_text,
                        profile_heatmap_data, profile_segments, segments_markdown)
from ..schema import Schema, category_text

from ..report.plots import plot_cluster_distribution, plot_maps, segment_palette

__all__ = ["build_report", "write_segment_outputs", "REPORT_SECTIONS"]

#: (id, heading) of every section of the report, in order.
REPORT_SECTIONS = [
    ("summary", "Run summary"),
    ("data-quality", "Data quality"),
    ("training", "Training history"),
    ("choosing-k", "Choosing the number of segments"),
    ("maps", "Maps of the customers"),
    ("sizes", "Segment sizes"),
    ("profiles", "What sets each segment apart"),
    ("descriptions", "The segments in words"),
    ("known-segments", "Segments and the known segments"),
    ("metrics", "Metrics"),
    ("predictions", "New customers"),
]


def write_segment_outputs(
    table: pd.DataFrame,
    labels: Sequence | np.ndarray,
    results_dir: str | os.PathLike,
    known_segments: Sequence | np.ndarray | None = None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Profile the segments and write ``segment_profiles.csv`` and ``segments.md``.

    Parameters
    ----------
    table, labels, known_segments, numeric, categorical
        As for :func:`custseg.profiling.profile_segments`.
    results_dir : path-like
        Folder to write into (created if needed); each file is written atomically.

    Returns
    -------
    dict
        ``{"segment_profiles": Path, "segments": Path}``.
    """
    profile = profile_segments(table, labels, numeric=numeric, categorical=categorical,
                               known_segments=known_segments)
    descriptions = describe_segments(profile)
    folder = Path(results_dir)
    paths = {"segment_profiles": folder / "segment_profiles.csv", "segments": folder / "segments.md"}
    atomic_write_text(paths["segment_profiles"],
                      profile.to_frame().to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    atomic_write_text(paths["segments"], segments_markdown(descriptions))
    return paths


# --------------------------------------------------------------------------- reading a run


@dataclass
class _Run:
    """What ``custseg train`` left on disk, read once."""

    results: Path
    models: Path
    summary: dict
    settings: dict
    schema: Schema | None
    clustering: dict
    train: pd.DataFrame
    test: pd.DataFrame | None
    train_path: str
    test_path: str | None
    training_results: pd.DataFrame

    def csv(self, name: str) -> pd.DataFrame | None:
        path = self.results / name
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {str(path)!r} ({type(exc).__name__}); run 'custseg train' again") from None

    def png(self, name: str) -> str | None:
        path = self.results / "plots" / name
        return _data_uri(path.read_bytes()) if path.is_file() else None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({exc}); run 'custseg train' again") from None


def _data_path(summary: dict, settings: dict, which: str) -> str | None:
    """Path of the ``train`` / ``test`` table: run_summary's ``data.<which>``, else the settings'.

    The absolute path is preferred where it still exists, so that ``custseg report`` works
    from another folder than the one ``custseg train`` ran in.
    """
    entry = (summary.get("data") or {}).get(which)
    if isinstance(entry, dict):
        absolute = entry.get("absolute_path")
        if absolute and Path(absolute).is_file():
            return absolute
        entry = entry.get("path")
    return entry or (settings.get("data") or {}).get(which)


def _read_run(models_dir: Path, results_dir: Path) -> _Run:
    training_results = results_dir / "training_results.csv"
    if not training_results.is_file():
        raise DataError(f"{str(training_results)!r} does not exist; run 'custseg train' first, "
                        "or give the folder it wrote with --results-dir")
    summary = _read_json(results_dir / "run_summary.json") or {}
    settings = _read_json(models_dir / "settings.json") or summary.get("settings") or {}
    schema_dict = _read_json(models_dir / "schema.json") or summary.get("schema")
    train_path, test_path = _data_path(summary, settings, "train"), _data_path(summary, settings, "test")
    if not train_path:
        raise DataError(f"neither {str(results_dir / 'run_summary.json')!r} nor {str(models_dir / 'settings.json')!r} "
                        "names the training table; run 'custseg train' again")
    na_values = (settings.get("data") or {}).get("na_values") or ()
    return _Run(
        results=results_dir,
        models=models_dir,
        summary=summary,
        settings=settings,
        schema=Schema.from_dict(schema_dict) if schema_dict else None,
        clustering=_read_json(models_dir / "clustering.json") or {},
        train=read_table(train_path, na_values=na_values).frame,
        test=read_table(test_path, na_values=na_values).frame if test_path and Path(test_path).is_file() else None,
        train_path=train_path,
        test_path=test_path,
        training_results=_read_training_results(training_results, int(
            (_read_json(models_dir / "clustering.json") or {}).get("params", {}).get("n_clusters") or 0)),
    )


def _read_training_results(path: Path, n_clusters: int) -> pd.DataFrame:
    """training_results.csv, checked: segments stay text ('true' is not a boolean), clusters are 0..k-1."""
    try:
        table = pd.read_csv(path, dtype={"ID": str, "True_Segment": str, "Predicted_Segment": str, "Cluster": str},
                            keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({type(exc).__name__}); run 'custseg train' again") from None
    if "Cluster" not in table.columns:
        raise DataError(f"{str(path)!r} has no 'Cluster' column; run 'custseg train' again")
    clusters = pd.to_numeric(table["Cluster"], errors="coerce")
    bad = clusters.isna() | (clusters % 1 != 0) | (clusters < 0) \
        | ((clusters >= n_clusters) if n_clusters > 0 else False)
    if bad.any():
        pos = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{str(path)!r}, line {pos + 2}, column 'Cluster': value {table['Cluster'].iloc[pos]!r} is "
                        f"not a cluster of the model (0..{max(n_clusters - 1, 0)}); the file was edited: run "
                        "'custseg train' again")
    table["Cluster"] = clusters.astype(int)
    return table


def _id_keys(values: pd.Series) -> pd.Series:
    """IDs as canonical text, so 462809, 462809.0 and "462809" match."""
    return values.map(lambda v: "" if pd.isna(v) else category_text(v))


def _training_frame(run: _Run) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """The training table, each row's cluster and (if known) its known segment."""
    results = run.training_results
    id_col = run.schema.id_column if run.schema else None
    if id_col and id_col in run.train and "ID" in results:
        by_id = results.assign(_key=_id_keys(results["ID"])).drop_duplicates("_key").set_index("_key")
        keys = _id_keys(run.train[id_col])
        keep = keys.isin(by_id.index).to_numpy()
        table = run.train[keep].reset_index(drop=True)
        rows = by_id.loc[keys[keep]]
    elif len(results) == len(run.train):
        table, rows = run.train, results
    else:
        raise DataError(f"training_results.csv has {len(results)} rows but the training table has "
                        f"{len(run.train)} and no ID column to match them; run 'custseg train' again")
    clusters = rows["Cluster"].to_numpy().astype(int)
    known = None
    if "True_Segment" in rows and rows["True_Segment"].notna().any():
        known = rows["True_Segment"].map(lambda v: v if pd.isna(v) else category_text(v)).to_numpy(dtype=object)
    return table, clusters, known


# --------------------------------------------------------------------------- figures


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return _data_uri(buffer.getvalue())


def _plot_profile_heatmap(data: pd.DataFrame, names: dict):
    """Segments x features, coloured by standardized difference from the rest, annotated with values."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid = data.pivot(index="segment", columns="column", values="cohens_d")
    text = data.pivot(index="segment", columns="column", values="text")
    columns = list(dict.fromkeys(data["column"]))
    grid, text = grid[columns], text[columns]
    shown = np.clip(grid.to_numpy(dtype="float64"), -2, 2)
    fig, ax = plt.subplots(figsize=(1.05 * len(columns) + 3.2, 0.55 * len(grid) + 2.2))
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    # labels are cut: a 100,000-character category value made this figure exhaust memory
    ax.set_xticks(range(len(columns)), [_short(c) for c in columns], rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(grid)), [_short(f"{s}: {names[s]}") for s in grid.index], fontsize=9)
    ax.set_xlabel("distinguishing feature (value in the segment)")
    ax.set_ylabel("segment")
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            dark = abs(shown[i, j]) > 1.2
            ax.text(j, i, _short(str(text.iat[i, j]), 24), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("difference from the other customers\n(standard deviations, Cohen's d)")
    ax.set_title("Segment profiles: red = more than the rest, blue = less")
    fig.tight_layout()
    return fig


def _short(label: str, limit: int = 40) -> str:
    """A label cut to ``limit`` characters (with an ellipsis) so that a figure keeps its size."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- formatting


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _table(frame: pd.DataFrame, pct: Sequence[str] = (), highlight: Sequence[bool] | None = None) -> dict:
    """A DataFrame as strings for the template, numbers right-aligned."""
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    rows = [[_fmt(v, "pct" if c in pct else "") for c, v in zip(frame.columns, row)]
            for row in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "numeric": numeric, "rows": rows,
            "highlight": list(highlight) if highlight is not None else [False] * len(rows)}


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in settings.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", json.dumps(value) if not isinstance(value, str) else value))
    return out


# --------------------------------------------------------------------------- sections


def _summary_section(run: _Run, profile: SegmentProfile) -> dict:
    summary, settings = run.summary, run.settings
    facts = [("training table", f"{run.train_path} ({len(run.train):,} rows)")]
    if run.test_path:
        facts.append(("new customers", f"{run.test_path} ({len(run.test):,} rows)" if run.test is not None
                      else f"{run.test_path} (not found)"))
    if run.schema is not None:
        facts.append(("id column", run.schema.id_column or "none"))
        facts.append(("known segment column", run.schema.label_column or "none"))
    facts.append(("numeric features", ", ".join(profile.numeric_features) or "none"))
    facts.append(("categorical features", ", ".join(profile.categorical_features) or "none"))
    facts.append(("segments (k)", str(len(profile.segments))))
    if "seed" in settings:
        facts.append(("seed", str(settings["seed"])))
    if summary.get("duration_seconds") is not None:
        facts.append(("training time", f"{summary['duration_seconds']:.1f} s"))
    versions = summary.get("versions") or (_read_json(run.models / "manifest.json") or {}).get("versions") or {}
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    return {"facts": facts, "settings": _flatten(settings)}


def _quality_section(run: _Run) -> dict:
    train_missing = missing_report(run.train).rename(columns={"missing": "missing (training)",
                                                              "share": "share (training)"})
    out = {"n_test": None, "n_in_train": None}
    table = train_missing
    if run.test is not None:
        test_missing = missing_report(run.test).rename(columns={"missing": "missing (new)", "share": "share (new)"})
        table = train_missing.merge(test_missing, on="column", how="left")
        id_col = run.schema.id_column if run.schema else None
        if id_col and id_col in run.test and id_col in run.train:
            in_train = _id_keys(run.test[id_col]).isin(set(_id_keys(run.train[id_col])))
            out.update(n_test=len(run.test), n_in_train=int(in_train.sum()), share_in_train=float(in_train.mean()))
    out["table"] = _table(table, pct=[c for c in table.columns if c.startswith("share")])
    return out


def _training_section(run: _Run) -> dict:
    history = run.csv("training_history.csv")
    out = {"image": run.png("training_history.png"), "facts": []}
    if history is not None and len(history):
        watched = "val_loss" if "val_loss" in history and history["val_loss"].notna().any() else "loss"
        best = history.loc[history[watched].idxmin()]
        out["facts"] = [
            ("epochs run", f"{len(history):,}"),
            (f"best {'validation' if watched == 'val_loss' else 'training'} loss",
             f"{best[watched]:.4g} (epoch {int(best['epoch'])})"),
            ("final training loss", f"{history['loss'].iloc[-1]:.4g}"),
        ]
        stopped = (run.summary.get("autoencoder") or {}).get("stopped_early")
        if stopped is not None:
            out["facts"].append(("stopped early", "yes, validation loss stopped improving" if stopped
                                 else "no, ran the maximum number of epochs"))
        if "lr" in history:
            out["facts"].append(("learning rate", f"{history['lr'].iloc[0]:.3g} at start, "
                                                  f"{history['lr'].iloc[-1]:.3g} at the end"))
    return out


def _k_section(run: _Run, k: int) -> dict:
    scan = run.csv("k_selection.csv")
    out = {"image": run.png("optimal_clusters.png"), "k": k, "best_k": None, "table": None}
    if scan is not None and len(scan):
        if "silhouette" in scan and scan["silhouette"].notna().any():
            out["best_k"] = int(scan.loc[scan["silhouette"].idxmax(), "k"])
        out["table"] = _table(scan, highlight=(scan["k"] == k).tolist())
    return out


def _maps_section(run: _Run, names: dict, known: np.ndarray | None) -> list[dict]:
    maps = run.csv("maps.csv")
    figures = []
    for method, png, axes in (("PCA", "clusters_pca.png", ("pca_1", "pca_2")),
                              ("t-SNE", "clusters_tsne.png", ("tsne_1", "tsne_2"))):
        if run.png(png):  # drawn by 'custseg train' with the same names and colours
            figures.append({"method": method, "image": run.png(png), "n": _mapped_rows(maps, axes)})
        elif maps is not None and set(axes) <= set(maps.columns):
            rows = maps.dropna(subset=list(axes))
            segments = None
            if known is not None and "ID" in maps:
                truth = run.training_results.assign(_key=_id_keys(run.training_results["ID"])).set_index("_key")
                segments = truth["True_Segment"].reindex(_id_keys(rows["ID"])).astype(str).to_numpy()
            fig = plot_maps(rows[list(axes)].to_numpy(), rows["Cluster"].to_numpy().astype(int), names, method,
                            segments=segments)
            figures.append({"method": method, "image": _figure_uri(fig), "n": len(rows)})
    return figures


def _mapped_rows(maps: pd.DataFrame | None, axes: tuple[str, str]) -> int | None:
    if maps is None or not set(axes) <= set(maps.columns):
        return None
    return int(maps[list(axes)].notna().all(axis=1).sum())


def _sizes_section(run: _Run, profile: SegmentProfile, names: dict, legend: dict, colours: dict, clusters: np.ndarray,
                   known: np.ndarray | None) -> dict:
    sizes = profile.sizes.assign(name=[names[s] for s in profile.segments])
    image = png if (png := run.png("cluster_distribution.png")) else \
        _figure_uri(plot_cluster_distribution(clusters, legend, known))
    rows = [{"segment": s, "name": n, "size": f"{k:,}", "share": f"{100 * p:.1f}%", "colour": colours[s],
             "width": f"{100 * p / sizes['share'].max():.1f}"}
            for s, n, k, p in zip(sizes.segment, sizes.name, sizes["size"], sizes.share)]
    return {"image": image, "rows": rows}


def _known_section(run: _Run, clusters: np.ndarray, known: np.ndarray | None, names: dict) -> dict | None:
    if known is None:
        return None
    from ..clustering import map_clusters_to_segments, mapping_table

    labelled = pd.notna(known)
    clusters, known = clusters[labelled], known[labelled].astype(str)
    mapping = run.clustering.get("mapping")
    mapping = ({int(k): str(v) for k, v in mapping.items()} if mapping
               else map_clusters_to_segments(clusters, known))
    table = mapping_table(clusters, known, mapping)
    table.insert(1, "Name", [names.get(int(c), "") for c in table["Cluster"]])
    table = table.rename(columns={"Cluster": "Segment", "Mapped_Segment": "Mapped to"})
    accuracy = float(np.mean(pd.Series(clusters).map(mapping).to_numpy() == known))
    return {"table": _table(table, pct=["Purity"]), "accuracy": accuracy, "labels": sorted(set(known))}


def _metrics_section(run: _Run) -> dict | None:
    from ..evaluation.metrics import METRIC_GUIDE

    metrics = run.csv("clustering_metrics.csv")
    if metrics is None:
        return None
    return {"rows": [{"metric": m, "value": _fmt(float(v)), "guide": METRIC_GUIDE.get(str(m), "")}
                     for m, v in zip(metrics["metric"], metrics["value"])]}


def _predictions_section(run: _Run, profile: SegmentProfile, names: dict) -> dict | None:
    scored = run.csv("test_predictions_detailed.csv")
    if scored is None or not len(scored):
        return None
    counts = scored["Cluster"].value_counts().reindex(profile.segments, fill_value=0)
    per_segment = pd.DataFrame({
        "Segment": profile.segments,
        "Name": [names[s] for s in profile.segments],
        "New customers": counts.to_numpy(),
        "Share (new)": counts.to_numpy() / len(scored),
        "Share (training)": profile.sizes["share"].to_numpy(),
    })
    if "Predicted_Segment" in scored:
        per_segment["Predicted known segment"] = [
            ", ".join(sorted(scored.loc[scored["Cluster"] == s, "Predicted_Segment"].astype(str).unique()))
            for s in profile.segments]
    out = {"n": len(scored), "table": _table(per_segment, pct=["Share (new)", "Share (training)"]), "unusual": None}
    if "Reconstruction_Error" in scored:
        columns = [c for c in ("ID", "Cluster", "Predicted_Segment", "Distance_To_Centroid", "Reconstruction_Error")
                   if c in scored]
        worst = scored.nlargest(10, "Reconstruction_Error")[columns].round(3)
        out["unusual"] = _table(worst.assign(ID=_id_keys(worst["ID"])) if "ID" in worst else worst)
        out["error_median"] = float(scored["Reconstruction_Error"].median())
        out["error_p95"] = float(scored["Reconstruction_Error"].quantile(0.95))
    return out


def _cards(descriptions: list[SegmentDescription], colours: dict) -> list[dict]:
    return [{"segment": d.segment, "name": d.name, "traits": d.traits, "colour": colours[d.segment],
             "known": known_segments_text(d.composition), "size": f"{d.size:,}", "share": f"{100 * d.share:.0f}%"}
            for d in descriptions]


# --------------------------------------------------------------------------- the report


def build_report(models_dir: str | os.PathLike = "models", results_dir: str | os.PathLike = "results") -> Path:
    """Write ``report.html`` into ``results_dir`` from what ``custseg train`` wrote.

    The report is one HTML file that needs nothing else: styles are inline, figures are
    PNG data URIs, there are no scripts and no links to other files or sites.

    Parameters
    ----------
    models_dir : path-like
        The model folder (``settings.json``, ``schema.json``, ``clustering.json`` are read).
    results_dir : path-like
        The results folder; ``training_results.csv`` is required, every other file adds
        its section (a missing one is said so in the report). The training table is
        re-read from the path in ``run_summary.json`` (or ``settings.json``) to profile
        the segments.

    Returns
    -------
    Path
        The path of the report.

    Raises
    ------
    DataError
        If ``training_results.csv`` or the training table cannot be found.
    """
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    models, results = Path(models_dir), Path(results_dir)
    if results.is_dir() and not os.access(results, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the report into {str(results)!r} (the folder is read-only); make it "
                        "writable or give another --results-dir")
    try:
        run = _read_run(models, results)
        table, clusters, known = _training_frame(run)
        numeric = categorical = None
        if run.schema is not None:
            numeric = run.schema.names("numeric")
            categorical = run.schema.names("categorical") + run.schema.names("ordinal")
        profile = profile_segments(table, clusters, numeric=numeric, categorical=categorical, known_segments=known)
        descriptions = describe_segments(profile)
        names = {d.segment: d.name for d in descriptions}
        legend = {s: f"{s}: {n}" for s, n in names.items()}
        colours = dict(zip(profile.segments, segment_palette(len(profile.segments))))

        context = {
            "title": f"Customer segments: {len(profile.segments)} segments of {profile.n_customers:,} customers",
            "sections": REPORT_SECTIONS,
            "summary": _summary_section(run, profile),
            "quality": _quality_section(run),
            "training": _training_section(run),
            "k": _k_section(run, len(profile.segments)),
            "maps": _maps_section(run, legend, known),
            "sizes": _sizes_section(run, profile, names, legend, colours, clusters, known),
            "heatmap": _figure_uri(_plot_profile_heatmap(profile_heatmap_data(profile), names)),
            "profiles_csv": (results / "segment_profiles.csv").is_file(),
            "descriptions": _cards(descriptions, colours),
            "known": _known_section(run, clusters, known, names),
            "metrics": _metrics_section(run),
            "predictions": _predictions_section(run, profile, names),
        }
    except CustsegError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        # a results file edited by hand (or by another tool) with a value the report cannot place
        raise DataError(f"the files in {str(results)!r} hold a value the report cannot use ({type(exc).__name__}: "
                        f"{str(exc)[:80]}); run 'custseg train' again") from None
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(**context)
    path = results / "report.html"
    atomic_write_text(path, html)
    return path
