"""The HTML report of a run: one self-contained page, rendered from the run's data.

:func:`render_report` turns what a run computed (its summary, tables, figures and
segment descriptions: :class:`custseg.workflow.TrainResult` holds them, whether just
trained or rebuilt from disk by :func:`custseg.workflow.load_run`) into HTML text. It
reads no file and writes none (:mod:`custseg.io.writing` does); every style and figure
is inside the page, which opens offline.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluation.metrics import METRIC_GUIDE
from ..evaluation.selection import recommend_k
from ..profiling import SegmentDescription, known_segments_text
from ..schema import Schema, category_text
from .plots import segment_palette

__all__ = ["render_report", "REPORT_SECTIONS", "REPORT_FIGURES", "weak_agreement_warning"]

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
    ("confidence", "How sure the assignments are"),
    ("unusual", "Unusual customers"),
    ("drift", "How the new customers differ"),
]

#: The figures (``results/plots/<name>.png``) the report shows, by name.
REPORT_FIGURES = ("training_history", "optimal_clusters", "clusters_pca", "clusters_tsne", "cluster_distribution",
                  "segment_profiles", "reliability", "confidence", "drift")


def _data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _id_keys(values: pd.Series) -> pd.Series:
    """IDs as canonical text, so 462809, 462809.0 and "462809" match."""
    return values.map(lambda v: "" if pd.isna(v) else category_text(v))


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


def _feature_names(schema: Schema | None) -> tuple[list[str], list[str]]:
    if schema is None:
        return [], []
    return schema.names("numeric"), schema.names("categorical") + schema.names("ordinal")


def _summary_section(summary: dict, schema: Schema | None, n_segments: int) -> dict:
    data = summary.get("data") or {}
    train, test = data.get("train") or {}, data.get("test") or {}
    facts = [("training table", f"{train.get('path')} ({train.get('rows', 0):,} rows)")]
    if test.get("path"):
        facts.append(("new customers", f"{test['path']} ({test['rows']:,} rows)" if test.get("rows") is not None
                      else f"{test['path']} (not read)"))
    if schema is not None:
        facts.append(("id column", schema.id_column or "none"))
        facts.append(("known segment column", schema.label_column or "none"))
    numeric, categorical = _feature_names(schema)
    facts.append(("numeric features", ", ".join(numeric) or "none"))
    facts.append(("categorical features", ", ".join(categorical) or "none"))
    facts.append(("segments (k)", str(n_segments)))
    settings = summary.get("settings") or {}
    if "seed" in settings:
        facts.append(("seed", str(settings["seed"])))
    if summary.get("large_table"):
        facts.append(("computed on samples", summary["large_table"]["note"]))
    if summary.get("duration_seconds") is not None:
        facts.append(("training time", f"{summary['duration_seconds']:.1f} s"))
    versions = summary.get("versions") or {}
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    return {"facts": facts, "settings": _flatten(settings)}


def _missing(entry: dict, which: str) -> pd.DataFrame:
    frame = pd.DataFrame(entry.get("missing") or [], columns=["column", "missing", "share"])
    return frame.rename(columns={"missing": f"missing ({which})", "share": f"share ({which})"})


def _quality_section(summary: dict) -> dict:
    data = summary.get("data") or {}
    train, test = data.get("train") or {}, data.get("test") or {}
    table = _missing(train, "training")
    out: dict[str, Any] = {"n_test": None, "n_in_train": None}
    if test.get("rows") is not None:
        table = table.merge(_missing(test, "new"), on="column", how="left")
        if test.get("ids_in_train") is not None:
            out.update(n_test=test["rows"], n_in_train=test["ids_in_train"],
                       share_in_train=test["ids_in_train"] / max(test["rows"], 1))
    out["table"] = _table(table, pct=[c for c in table.columns if c.startswith("share")])
    return out


def _training_section(summary: dict, history: pd.DataFrame | None, image: str | None) -> dict:
    out = {"image": image, "facts": [], "lead": "The training loss should fall, then flatten."}
    ae = summary.get("autoencoder") or {}
    preset = summary.get("preset") or ae.get("preset")
    if preset:  # which design ran: the reference autoencoder, or the mixed-type ensemble
        design = (f"mixed-type autoencoder, ensemble of {ae.get('members', 1)}" if ae.get("kind") == "mixed"
                  else "reference autoencoder")
        if ae.get("guidance_weight"):
            design += f", guided by the known segments (weight {ae['guidance_weight']:g})"
        out["facts"].append(("preset", f"{preset} ({design})"))
    agreement = summary.get("agreement")
    if agreement:
        out["facts"].append(("members agreeing with a customer's segment",
                             f"{agreement['mean']:.0%} on average; {agreement['share_at_least_0.9']:.0%} of "
                             "customers have at least 90% of members agreeing"))
    if history is not None and len(history):
        watched = "val_loss" if "val_loss" in history and history["val_loss"].notna().any() else "loss"
        out["lead"] = ("The validation curve should flatten, not rise." if watched == "val_loss" else
                       "It trains on every customer, without a validation split: the loss should fall, then flatten.")
        best = history.loc[history[watched].idxmin()]
        out["facts"] += [
            ("epochs run", f"{len(history):,}"),
            (f"best {'validation' if watched == 'val_loss' else 'training'} loss",
             f"{best[watched]:.4g} (epoch {int(best['epoch'])})"),
            ("final training loss", f"{history['loss'].iloc[-1]:.4g}"),
        ]
        stopped = (summary.get("autoencoder") or {}).get("stopped_early")
        if stopped is not None:
            out["facts"].append(("stopped early", "yes, validation loss stopped improving" if stopped
                                 else "no, ran the maximum number of epochs"))
        if "lr" in history:
            out["facts"].append(("learning rate", f"{history['lr'].iloc[0]:.3g} at start, "
                                                  f"{history['lr'].iloc[-1]:.3g} at the end"))
    return out


def _k_section(scan: pd.DataFrame | None, image: str | None, k: int) -> dict:
    """The k scan, and the k :func:`~custseg.evaluation.selection.recommend_k` recommends from it."""
    out = {"image": image, "k": k, "recommended_k": None, "reason": None, "table": None}
    if scan is not None and len(scan):
        if {"silhouette", "stability"} <= set(scan.columns) and scan["silhouette"].notna().any():
            out["recommended_k"], out["reason"] = recommend_k(scan)
        out["table"] = _table(scan, highlight=(scan["k"] == k).tolist())
    return out


def _maps_section(maps: pd.DataFrame | None, figures: Mapping[str, bytes]) -> list[dict]:
    out = []
    for method, name, axes in (("PCA", "clusters_pca", ("pca_1", "pca_2")),
                               ("t-SNE", "clusters_tsne", ("tsne_1", "tsne_2"))):
        if figures.get(name) is not None:
            n = None
            if maps is not None and set(axes) <= set(maps.columns):
                n = int(maps[list(axes)].notna().all(axis=1).sum())
            out.append({"method": method, "image": _data_uri(figures[name]), "n": n})
    return out


def _sizes_section(descriptions: Sequence[SegmentDescription], colours: dict, image: str | None) -> dict:
    largest = max((d.share for d in descriptions), default=1.0) or 1.0
    rows = [{"segment": d.segment, "name": d.name, "size": f"{d.size:,}", "share": f"{100 * d.share:.1f}%",
             "colour": colours[d.segment], "width": f"{100 * d.share / largest:.1f}"} for d in descriptions]
    return {"image": image, "rows": rows}


def _known_section(crosstab: pd.DataFrame | None, metrics: dict, names: dict, summary: dict | None = None) -> dict | None:
    if crosstab is None or not len(crosstab):
        return None
    table = crosstab.copy()
    labels = [c for c in table.columns if c not in ("Cluster", "Size", "Mapped_Segment", "Purity")]
    table.insert(1, "Name", [names.get(int(c), "") for c in table["Cluster"]])
    table = table.rename(columns={"Cluster": "Segment", "Mapped_Segment": "Mapped to"})
    return {"table": _table(table, pct=["Purity"]), "accuracy": metrics.get("mapped_accuracy"),
            "labels": [str(c) for c in labels], "warning": weak_agreement_warning(crosstab[labels], metrics),
            "in_sample": guided_in_sample_note(summary or {})}


def guided_in_sample_note(summary: dict) -> str | None:
    """For a run whose network learnt from the known segments (``--guided``): its agreement with them on
    the training customers is in-sample, so optimistic; None for an unguided run."""
    ae = summary.get("autoencoder") or {}
    if not ae.get("guidance_weight"):
        return None
    return ("In-sample: the network was guided by these same known segments (--guided), so the agreement on "
            "training customers is optimistic. 'custseg compare' scores guided methods on held-out folds (fit "
            "on four fifths, score the fifth); judge the guided preset by those figures or by a test table "
            "with known segments.")


#: ARI and NMI below this are called weak agreement with the known segments in the report
WEAK_AGREEMENT = 0.2


def weak_agreement_warning(counts: pd.DataFrame, metrics: dict) -> str | None:
    """A plain sentence when the clusters agree only weakly with the known segments, else None.

    ``counts`` is clusters x known segments; ``metrics`` holds ``ari``, ``nmi`` and ``mapped_accuracy``.
    Weak means ARI and NMI both below :data:`WEAK_AGREEMENT` (0 is chance, 1 identical groupings).
    """
    ari, nmi, accuracy = (metrics.get(m) for m in ("ari", "nmi", "mapped_accuracy"))
    if ari is None or nmi is None or not (ari < WEAK_AGREEMENT and nmi < WEAK_AGREEMENT):
        return None
    totals = counts.sum(axis=0)
    baseline = float(totals.max() / totals.sum()) if totals.sum() else float("nan")
    text = (f"Agreement with the known segments is weak: ARI {ari:.3f} and NMI {nmi:.3f} (0 is chance, 1 identical "
            "groupings). ")
    if accuracy is not None:
        text += (f"Mapped accuracy {100 * accuracy:.0f}% compares with {100 * baseline:.0f}% for putting everyone in "
                 f"the largest known segment ({totals.idxmax()}). ")
    return text + ("These segments group the customers differently from the known ones: read the mapping to known "
                   "segments as a hint, not a prediction, and describe customers by the segment descriptions.")


def _metrics_section(metrics: pd.DataFrame | None) -> dict | None:
    if metrics is None:
        return None
    return {"rows": [{"metric": m, "value": _fmt(float(v)), "guide": METRIC_GUIDE.get(str(m), "")}
                     for m, v in zip(metrics["metric"], metrics["value"])]}


def _predictions_section(scored: pd.DataFrame | None, descriptions: Sequence[SegmentDescription],
                         names: dict) -> dict | None:
    if scored is None or not len(scored):
        return None
    segments = [d.segment for d in descriptions]
    counts = scored["Cluster"].value_counts().reindex(segments, fill_value=0)
    per_segment = pd.DataFrame({
        "Segment": segments,
        "Name": [names[s] for s in segments],
        "New customers": counts.to_numpy(),
        "Share (new)": counts.to_numpy() / len(scored),
        "Share (training)": [d.share for d in descriptions],
    })
    if "Predicted_Segment" in scored:
        per_segment["Predicted known segment"] = [
            ", ".join(sorted(scored.loc[scored["Cluster"] == s, "Predicted_Segment"].astype(str).unique()))
            for s in segments]
    out = {"n": len(scored), "table": _table(per_segment, pct=["Share (new)", "Share (training)"]), "unusual": None}
    if "Reconstruction_Error" in scored:
        columns = [c for c in ("ID", "Cluster", "Predicted_Segment", "Distance_To_Centroid", "Reconstruction_Error")
                   if c in scored]
        worst = scored.nlargest(10, "Reconstruction_Error")[columns].round(3)
        out["unusual"] = _table(worst.assign(ID=_id_keys(worst["ID"])) if "ID" in worst else worst)
        out["error_median"] = float(scored["Reconstruction_Error"].median())
        out["error_p95"] = float(scored["Reconstruction_Error"].quantile(0.95))
    return out


def _confidence_section(monitoring: dict, tables: Mapping[str, pd.DataFrame],
                        figures: Mapping[str, bytes]) -> dict | None:
    """Per segment, how sure the assignments are; the least sure customers with their attributes."""
    shown = monitoring.get("shown")
    per_segment, uncertain = tables.get("confidence_by_segment"), tables.get("uncertain_customers")
    if not shown or per_segment is None or uncertain is None:
        return None
    per_segment = per_segment.rename(
        columns={"customers": "Customers", "mean": "Mean", "q25": "25%", "median": "Median", "q75": "75%",
                 "below_half": "Below 0.5", "unusual": "Unusual"})
    if "ID" in uncertain:
        uncertain = uncertain.assign(ID=_id_keys(uncertain["ID"]))
    return {"who": shown["who"], "column": shown["column"], "n": shown["customers"],
            "ece": monitoring.get("calibration_error_out_of_fold"),
            "reliability": _data_uri(figures.get("reliability")), "figure": _data_uri(figures.get("confidence")),
            "table": _table(per_segment.round(3), pct=["Below 0.5", "Unusual"]),
            "uncertain": _table(uncertain.round(3))}


def _unusual_section(monitoring: dict, tables: Mapping[str, pd.DataFrame]) -> dict | None:
    """How many customers are Unusual, why, and the most unusual ones with their attributes."""
    shown = monitoring.get("shown")
    top = tables.get("unusual_customers")
    if not shown or top is None:
        return None
    side = monitoring.get("test" if shown["who"] == "new customers" else "train") or {}
    if "ID" in top:
        top = top.assign(ID=_id_keys(top["ID"]))
    if "Reason" in top:  # an empty reason reads back as missing
        top = top.assign(Reason=top["Reason"].fillna(""))
    n = max(int(shown["customers"]), 1)
    return {"who": shown["who"], "n": shown["customers"], "count": shown["unusual"], "share": shown["unusual"] / n,
            "threshold": f"{monitoring.get('unusual_above', 99):g}", "lines": side.get("lines", []),
            "table": _table(top.round(3))}


def _drift_section(monitoring: dict, table: pd.DataFrame | None, image: str | None) -> dict | None:
    """Per feature and as a whole, how the new customers differ from the training ones."""
    info = monitoring.get("drift")
    if table is None or info is None:
        return None
    drifted = [str(v).lower() == "true" for v in table["drifted"]]
    shown = table.assign(drifted=["yes" if d else "no" for d in drifted])
    return {"drifted": info.get("drifted_features", []), "classifier": info.get("classifier") or {},
            "segments": info.get("segment_shift"), "returning": info.get("returning"),
            "figure": image, "table": _table(shown.round(4), highlight=drifted)}


def _cards(descriptions: Sequence[SegmentDescription], colours: dict) -> list[dict]:
    return [{"segment": d.segment, "name": d.name, "traits": d.traits, "colour": colours[d.segment],
             "known": known_segments_text(d.composition), "size": f"{d.size:,}", "share": f"{100 * d.share:.0f}%"}
            for d in descriptions]


# --------------------------------------------------------------------------- the report


def render_report(*, summary: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
                  figures: Mapping[str, bytes], descriptions: Sequence[SegmentDescription],
                  schema: Schema | None = None) -> str:
    """The report of a run as HTML text.

    The page needs nothing else: styles are inline, figures are PNG data URIs, there are
    no scripts and no links to other files or sites. Reads and writes nothing.

    Parameters
    ----------
    summary : mapping
        The run summary (``run_summary.json``): data, settings, versions, metrics.
    tables : mapping of str to DataFrame
        The run's tables by name (``training_history``, ``k_selection``, ``maps``,
        ``clustering_metrics``, ``cluster_segment_crosstab``, ``test_predictions_detailed``,
        ``confidence_by_segment``, ``uncertain_customers``, ``unusual_customers``, ``drift``);
        an absent one is said so in its section.
    figures : mapping of str to bytes
        PNG bytes by name (:data:`REPORT_FIGURES`).
    descriptions : sequence of SegmentDescription
        One per segment (:func:`custseg.profiling.describe_segments`).
    schema : Schema, optional
        The column roles of the training table.

    Returns
    -------
    str
    """
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    descriptions = sorted(descriptions, key=lambda d: d.segment)
    names = {d.segment: d.name for d in descriptions}
    colours = dict(zip(names, segment_palette(len(names))))
    n_customers = sum(d.size for d in descriptions)
    metrics = {str(m): v for m, v in (summary.get("metrics") or {}).items()}
    monitoring = dict(summary.get("monitoring") or {})
    # a run trained with --no-figures drew none on purpose (runs before the setting drew them all)
    drawn = ((summary.get("settings") or {}).get("plots") or {}).get("figures", True)
    context = {
        "figures_drawn": drawn,
        "title": f"Customer segments: {len(descriptions)} segments of {n_customers:,} customers",
        "sections": REPORT_SECTIONS,
        "summary": _summary_section(dict(summary), schema, len(descriptions)),
        "quality": _quality_section(dict(summary)),
        "training": _training_section(dict(summary), tables.get("training_history"),
                                      _data_uri(figures.get("training_history"))),
        "k": _k_section(tables.get("k_selection"), _data_uri(figures.get("optimal_clusters")), len(descriptions)),
        "maps": _maps_section(tables.get("maps"), figures),
        "sizes": _sizes_section(descriptions, colours, _data_uri(figures.get("cluster_distribution"))),
        "heatmap": _data_uri(figures.get("segment_profiles")),
        "profiles_csv": "segment_profiles" in tables,
        "descriptions": _cards(descriptions, colours),
        "known": _known_section(tables.get("cluster_segment_crosstab"), metrics, names, dict(summary)),
        "metrics": _metrics_section(tables.get("clustering_metrics")),
        "predictions": _predictions_section(tables.get("test_predictions_detailed"), descriptions, names),
        "confidence": _confidence_section(monitoring, tables, figures),
        "unusual": _unusual_section(monitoring, tables),
        "drift": _drift_section(monitoring, tables.get("drift"), _data_uri(figures.get("drift"))),
    }
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)
