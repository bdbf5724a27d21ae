"""Segment profiles and plain-language descriptions (pure functions).

:func:`profile_segments` measures how each segment differs from the rest of the
customers; :func:`describe_segments` turns the strongest differences into a sentence
and a short name a marketer can use; :func:`segments_markdown` lays the descriptions
out as Markdown. Nothing here prints or writes files (:mod:`custseg.report` does).

How features are ranked
-----------------------
Each feature gets one *effect*: the strength of the association between being in
the segment (yes / no) and the feature, on a 0-1 scale.

* numeric feature: the absolute point-biserial correlation between segment
  membership and the value. For a given segment it is a monotone function of
  ``|Cohen's d|`` (``r = d / sqrt(d**2 + 1 / (p * q))`` with ``p, q`` the shares
  of customers in and out of the segment), so ranking numeric features by it is
  ranking them by ``|d|``;
* categorical feature: Cramér's V of the 2 x m table (in segment / rest x category).

For a yes/no feature the two are the same number (phi), which is what makes them
comparable. Conventional reading for both: 0.1 small, 0.3 medium, 0.5 large.

Example
-------
>>> import pandas as pd
>>> table = pd.DataFrame({"Age": [25.0, 30, 62, 70], "Ever_Married": ["No", "No", "Yes", "Yes"]})
>>> profile = profile_segments(table, [0, 0, 1, 1])
>>> [d.name for d in describe_segments(profile)]
['Never Married, Aged 26-29', 'Married, Aged 64-68']
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats.contingency import association

from .exceptions import DataError
from .schema import Schema, category_text

__all__ = [
    "SegmentProfile",
    "cluster_characteristics",
    "SegmentDescription",
    "profile_segments",
    "rank_features",
    "describe_segments",
    "segments_markdown",
    "profile_heatmap_data",
    "known_segments_text",
    "humanize",
    "cohens_d",
    "cramers_v",
    "MIN_EFFECT",
]

#: Features whose effect is below this are not used to describe a segment ("small" is 0.1).
MIN_EFFECT = 0.1
#: How many traits a description lists at most.
MAX_TRAITS = 3
_YES = {"yes", "true", "y", "1"}
_NO = {"no", "false", "n", "0"}


@dataclass
class SegmentProfile:
    """What sets each segment apart; every table is tidy (one row per segment x item).

    Missing values are left out of every statistic; ``features.n_missing`` counts them.

    Attributes
    ----------
    n_customers : int
    numeric_features, categorical_features : list of str
    sizes : DataFrame
        ``segment, size, share``.
    numeric : DataFrame
        ``segment, feature, mean, median, q1, q3, cohens_d`` (d: segment vs the rest, pooled sd).
    categorical : DataFrame
        ``segment, feature, value, count, share, share_overall, lift, cohens_d``: ``share``
        is the share of the value among the segment's non-missing values, ``lift`` is
        ``share / share_overall``, ``cohens_d`` is the standardized difference of the
        value's indicator between the segment and the rest.
    features : DataFrame
        ``segment, rank, feature, kind, effect, n_missing``, ranked by ``effect`` within
        each segment (see the module docstring).
    overall_numeric : DataFrame
        ``feature, mean, median, q1, q3, n_missing`` over all customers.
    overall_categorical : DataFrame
        ``feature, value, count, share`` over all customers.
    composition : DataFrame or None
        ``segment, known_segment, count, share`` when known segments were given.
    whole_number_features : list of str
        Numeric features whose values are all whole numbers (descriptions round their quartiles).
    """

    n_customers: int
    numeric_features: list[str]
    categorical_features: list[str]
    sizes: pd.DataFrame
    numeric: pd.DataFrame
    categorical: pd.DataFrame
    features: pd.DataFrame
    overall_numeric: pd.DataFrame
    overall_categorical: pd.DataFrame
    composition: pd.DataFrame | None = None
    whole_number_features: list[str] = field(default_factory=list)

    @classmethod
    def from_rows(cls, n_customers: int, numeric: list[str], categorical: list[str], sizes: pd.DataFrame,
                  num_rows: list[dict], cat_rows: list[dict], feat_rows: list[dict], overall_num: list[dict],
                  overall_cat: list[dict], *, composition: pd.DataFrame | None = None,
                  whole_number_features: Sequence[str] = ()) -> "SegmentProfile":
        """A profile from its rows (dicts), with the features ranked (see :func:`rank_features`)."""
        return cls(
            n_customers=n_customers, numeric_features=numeric, categorical_features=categorical, sizes=sizes,
            numeric=pd.DataFrame(num_rows, columns=["segment", "feature", "mean", "median", "q1", "q3", "cohens_d"]),
            categorical=pd.DataFrame(cat_rows, columns=["segment", "feature", "value", "count", "share",
                                                        "share_overall", "lift", "cohens_d"]),
            features=rank_features(feat_rows, numeric + categorical),
            overall_numeric=pd.DataFrame(overall_num, columns=["feature", "mean", "median", "q1", "q3", "n_missing"]),
            overall_categorical=pd.DataFrame(overall_cat, columns=["feature", "value", "count", "share"]),
            composition=composition, whole_number_features=list(whole_number_features))

    @property
    def segments(self) -> list:
        """Segment ids, sorted."""
        return self.sizes["segment"].tolist()

    def to_frame(self) -> pd.DataFrame:
        """Every statistic as one tidy table: ``segment, feature, value, statistic, number``.

        ``segment`` is ``"all"`` for the whole population; ``value`` is the category
        for per-category statistics and empty otherwise; ``feature`` is empty for the
        segment's ``size`` and ``share`` and ``known_segment`` for its composition.
        """
        parts = [
            _long(self.sizes, ["size", "share"], feature=""),
            _long(self.overall_numeric.assign(segment="all"), ["mean", "median", "q1", "q3", "n_missing"]),
            _long(self.overall_categorical.assign(segment="all"), ["count", "share"]),
            _long(self.numeric, ["mean", "median", "q1", "q3", "cohens_d"]),
            _long(self.categorical, ["count", "share", "lift", "cohens_d"]),
            _long(self.features, ["effect", "rank", "n_missing"]),
        ]
        if self.composition is not None:
            parts.append(_long(self.composition.rename(columns={"known_segment": "value"}),
                               ["count", "share"], feature="known_segment"))
        out = pd.concat(parts, ignore_index=True)
        return out[["segment", "feature", "value", "statistic", "number"]]


def _long(frame: pd.DataFrame, stats: list[str], feature: str | None = None) -> pd.DataFrame:
    frame = frame.copy()
    if feature is not None:
        frame["feature"] = feature
    if "value" not in frame:
        frame["value"] = ""
    out = frame.melt(id_vars=["segment", "feature", "value"], value_vars=stats, var_name="statistic",
                     value_name="number")
    # keep each item's statistics together, items in their original order
    out["_item"] = np.tile(np.arange(len(frame)), len(stats))
    out["_stat"] = np.repeat(np.arange(len(stats)), len(frame))
    return out.sort_values(["_item", "_stat"], kind="stable").drop(columns=["_item", "_stat"])


def profile_segments(
    table: pd.DataFrame,
    labels: Sequence | np.ndarray,
    *,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    known_segments: Sequence | np.ndarray | None = None,
) -> SegmentProfile:
    """Profile each segment against the rest of the customers.

    Missing values are ignored in every statistic (a share is a share of the
    non-missing values); their count is reported per segment and feature.

    Parameters
    ----------
    table : DataFrame
        Customers in original units: numeric columns as floats with NaN for missing,
        categorical columns as strings with NaN.
    labels : array-like of shape (n_rows,)
        Segment (cluster) id of each row.
    numeric, categorical : sequence of str, optional
        Feature columns. When both are None, numeric dtypes are numeric and every
        other column is categorical; pass them explicitly to leave out ids and labels.
    known_segments : array-like of shape (n_rows,), optional
        A known segment per row; adds each segment's composition by known segment.

    Returns
    -------
    SegmentProfile

    Raises
    ------
    DataError
        If ``labels`` or ``known_segments`` do not have one value per row, or a named
        column is not in the table.

    Examples
    --------
    >>> t = pd.DataFrame({"Ever_Married": ["Yes", "Yes", "No", "Yes"]})
    >>> p = profile_segments(t, [0, 0, 1, 1])
    >>> float(p.categorical.query("segment == 0 and value == 'Yes'").lift.iloc[0])
    1.3333333333333333
    """
    labels = np.asarray(labels)
    n = len(table)
    if labels.shape != (n,):
        raise DataError(f"labels must have one value per row of the table ({n}); got shape {labels.shape}")
    if pd.isna(pd.Series(labels)).any():
        raise DataError("labels must not be missing; give every row a segment")
    if numeric is None and categorical is None:
        numeric = [c for c in table.columns
                   if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
        categorical = [c for c in table.columns if c not in numeric]
    numeric, categorical = list(numeric or []), list(categorical or [])
    absent = [c for c in numeric + categorical if c not in table.columns]
    if absent:
        raise DataError(f"columns are missing from the table: {', '.join(map(repr, absent))}; "
                        f"its columns are {', '.join(map(str, table.columns))}")

    segments = sorted(np.unique(labels).tolist())
    sizes = pd.DataFrame({"segment": segments, "size": [int((labels == s).sum()) for s in segments]})
    sizes["share"] = sizes["size"] / n
    num_rows, cat_rows, feat_rows = [], [], []
    overall_num, overall_cat, whole = [], [], []

    for f in numeric:
        x = pd.to_numeric(table[f], errors="coerce").to_numpy(dtype="float64")
        present = ~np.isnan(x)
        if np.all(np.mod(x[present], 1) == 0):
            whole.append(f)
        overall_num.append({"feature": f, **_summary(x[present]), "n_missing": int((~present).sum())})
        for s in segments:
            member = labels == s
            inside, rest = x[member & present], x[~member & present]
            num_rows.append({"segment": s, "feature": f, **_summary(inside), "cohens_d": cohens_d(inside, rest)})
            feat_rows.append({"segment": s, "feature": f, "kind": "numeric",
                              "effect": _abs_correlation(member[present], x[present]),
                              "n_missing": int((member & ~present).sum())})

    for f in categorical:
        values = table[f].map(lambda v: v if pd.isna(v) else category_text(v)).to_numpy(dtype=object)
        present = ~pd.isna(values)
        cats = sorted(set(values[present]))
        overall_counts = np.array([(values[present] == c).sum() for c in cats])
        overall_share = overall_counts / max(present.sum(), 1)
        overall_cat += [{"feature": f, "value": c, "count": int(k), "share": float(p)}
                        for c, k, p in zip(cats, overall_counts, overall_share)]
        for s in segments:
            member = labels == s
            in_seg = values[member & present]
            in_rest = values[~member & present]
            counts = np.array([(in_seg == c).sum() for c in cats])
            rest_counts = np.array([(in_rest == c).sum() for c in cats])
            for c, k, p_all in zip(cats, counts, overall_share):
                share = k / len(in_seg) if len(in_seg) else np.nan
                cat_rows.append({"segment": s, "feature": f, "value": c, "count": int(k), "share": share,
                                 "share_overall": float(p_all), "lift": share / p_all,
                                 "cohens_d": cohens_d((in_seg == c).astype(float), (in_rest == c).astype(float))})
            feat_rows.append({"segment": s, "feature": f, "kind": "categorical",
                              "effect": cramers_v(np.vstack([counts, rest_counts])),
                              "n_missing": int((member & ~present).sum())})

    composition = None
    if known_segments is not None:
        known = pd.Series(np.asarray(known_segments, dtype=object))
        if len(known) != n:
            raise DataError(f"known_segments must have one value per row of the table ({n}); got {len(known)}")
        known = known.map(lambda v: v if pd.isna(v) else category_text(v))
        table_ks = pd.crosstab(pd.Series(labels, name="segment"), known.rename("known_segment"))
        composition = table_ks.stack().rename("count").reset_index()
        composition["count"] = composition["count"].astype(int)
        composition["share"] = composition["count"] / composition.groupby("segment")["count"].transform("sum")

    return SegmentProfile.from_rows(n, numeric, categorical, sizes, num_rows, cat_rows, feat_rows, overall_num,
                                    overall_cat, composition=composition, whole_number_features=whole)


def rank_features(rows: list[dict], features: Sequence[str]) -> pd.DataFrame:
    """Per segment, features ranked by effect (ties: in the given feature order).

    ``rows`` hold ``segment, feature, kind, effect, n_missing``; the result adds ``rank``.
    """
    ranked = pd.DataFrame(rows, columns=["segment", "feature", "kind", "effect", "n_missing"])
    ranked["_order"] = ranked["feature"].map({f: i for i, f in enumerate(features)})
    ranked = ranked.sort_values(["segment", "effect", "_order"], ascending=[True, False, True], kind="stable")
    ranked["rank"] = ranked.groupby("segment").cumcount() + 1
    return ranked[["segment", "rank", "feature", "kind", "effect", "n_missing"]].reset_index(drop=True)


def _summary(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"mean": np.nan, "median": np.nan, "q1": np.nan, "q3": np.nan}
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {"mean": float(x.mean()), "median": float(median), "q1": float(q1), "q3": float(q3)}


def cohens_d(inside: np.ndarray, rest: np.ndarray) -> float:
    """Cohen's d of ``inside`` vs ``rest``: difference of means over the pooled standard deviation.

    NaN when either group has fewer than one value or both fewer than two; 0 when both
    groups are constant and equal; +-inf when they are constant and differ.

    >>> cohens_d(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0]))
    -2.0
    """
    n1, n2 = len(inside), len(rest)
    if n1 == 0 or n2 == 0 or n1 + n2 < 3:
        return np.nan
    diff = float(np.mean(inside) - np.mean(rest))
    ss = ((inside - inside.mean()) ** 2).sum() + ((rest - rest.mean()) ** 2).sum()
    sd = math.sqrt(ss / (n1 + n2 - 2))
    if sd == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / sd


def cramers_v(counts: np.ndarray) -> float:
    """Cramér's V of a contingency table (no bias correction); 0 if it has one row or column.

    Empty rows and columns are dropped first; the value is
    :func:`scipy.stats.contingency.association` (``method="cramer"``, no continuity correction).

    >>> cramers_v(np.array([[10, 0], [0, 10]]))
    1.0
    """
    counts = np.asarray(counts, dtype=np.int64)  # association takes counts only
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if min(counts.shape) < 2:
        return 0.0
    return float(association(counts, method="cramer", correction=False))


def _abs_correlation(member: np.ndarray, x: np.ndarray) -> float:
    m = member.astype("float64")
    if len(x) < 2 or m.std() == 0 or x.std() == 0:
        return 0.0
    return float(abs(np.corrcoef(m, x)[0, 1]))


# --------------------------------------------------------------------------- descriptions


@dataclass
class SegmentDescription:
    """A segment in words.

    Attributes
    ----------
    segment : segment id
    name : str
        A short name, unique across segments.
    size : int
    share : float
    traits : list of str
        Phrases for the most distinguishing features, strongest first.
    text : str
        One paragraph: "Segment 3 (1,204 customers, 15%): mostly ever married (92% vs 58% overall), ..."
    composition : dict
        Known segment -> its share of the segment, largest first (empty without known segments).
    """

    segment: object
    name: str
    size: int
    share: float
    traits: list[str]
    text: str
    composition: dict[str, float] = field(default_factory=dict)


@dataclass
class _Trait:
    phrase: str
    label: str
    #: the label rests on an anonymised code ("Cat_4", "Var_1"): named after meaningful traits
    coded: bool = False


# anonymised codes: "Cat_4", "Var 1", "C3", "x12", "7" -- a name must not lead with one
_CODE = re.compile(r"^(?:[a-z]{1,4}[\s_.-]?)?\d+$", re.IGNORECASE)
#: longest category value put into a name (the description keeps it whole)
MAX_NAME_VALUE = 30


def _code_like(text: str) -> bool:
    return bool(_CODE.match(str(text).strip()))


def _name_value(value: str) -> str:
    return value if len(value) <= MAX_NAME_VALUE else value[: MAX_NAME_VALUE - 1] + "\u2026"


def _yes_no_labels(words: str) -> tuple[str, str]:
    """Names for the yes and the no side of a yes/no column: 'ever married' -> ('Married', 'Never Married')."""
    for lead, negation in (("ever ", "Never "), ("is ", "Not "), ("has ", "No "), ("have ", "No ")):
        if words.startswith(lead):
            rest = _title(words[len(lead):])
            return rest, negation + rest
    return _title(words), "Not " + _title(words)


def humanize(column: str) -> str:
    """A column name as words: ``Ever_Married`` -> ``ever married``, ``SpendingScore`` -> ``spending score``.

    >>> humanize("Work_Experience"), humanize("familySize"), humanize("Var_1")
    ('work experience', 'family size', 'var 1')
    """
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(column))
    return re.sub(r"[\s_\-.]+", " ", text).strip().lower()


def _title(words: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in words.split())


def _num(x: float) -> str:
    """A number for prose: whole numbers without decimals, small ones with one."""
    if not np.isfinite(x):
        return str(x)
    if abs(x) >= 10 or float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:.1f}"


def _span(low: float, high: float, rounded: bool) -> str:
    if rounded:
        low, high = math.floor(low), math.ceil(high)
    return _num(low) if low == high else f"{_num(low)}-{_num(high)}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _yes_no(categories: list[str]) -> tuple[str, str] | None:
    """(yes, no) values of a yes/no column, or None."""
    if len(categories) != 2:
        return None
    a, b = categories
    if a.lower() in _YES and b.lower() in _NO:
        return a, b
    if b.lower() in _YES and a.lower() in _NO:
        return b, a
    return None


def _numeric_trait(profile: SegmentProfile, segment, feature: str) -> _Trait:
    seg = profile.numeric.query("segment == @segment and feature == @feature").iloc[0]
    overall = profile.overall_numeric.query("feature == @feature").iloc[0]
    words = humanize(feature)
    is_age = words == "age"
    seg_iqr, all_iqr = seg.q3 - seg.q1, overall.q3 - overall.q1
    if seg_iqr <= 0.6 * all_iqr:
        # whole-number features read better as whole-number ranges ("family size 1-3", not "1-2.8")
        rounded = feature in profile.whole_number_features
        span, overall_span = (_span(q.q1, q.q3, rounded) for q in (seg, overall))
        lead = "aged" if is_age else f"{words} typically"
        return _Trait(f"{lead} {span} (overall {overall_span})", f"Aged {span}" if is_age else f"{_title(words)} {span}",
                      coded=_code_like(words))
    higher = seg.cohens_d > 0
    if is_age:
        word = "older" if higher else "younger"
        return _Trait(f"{word} than average (mean {_num(seg['mean'])} vs {_num(overall['mean'])})", _title(word))
    word = "above-average" if higher else "below-average"
    if words.endswith(" size"):  # "Large Families", not "High Family Size"
        thing = words[: -len(" size")]
        plural = thing[:-1] + "ies" if thing.endswith("y") else thing + "s"
        label = f"{'Large' if higher else 'Small'} {_title(plural)}"
    else:
        label = f"{'High' if higher else 'Low'} {_title(words)}"
    return _Trait(f"{word} {words} (mean {_num(seg['mean'])} vs {_num(overall['mean'])})", label,
                  coded=_code_like(words))


def _categorical_trait(profile: SegmentProfile, segment, feature: str) -> _Trait:
    rows = profile.categorical.query("segment == @segment and feature == @feature")
    words = humanize(feature)
    yes_no = _yes_no(rows["value"].tolist())
    if yes_no is not None:
        row = rows[rows["value"] == yes_no[0]].iloc[0]
        vs = f"({_pct(row.share)} vs {_pct(row.share_overall)} overall)"
        yes_label, no_label = _yes_no_labels(words)
        if row.share >= row.share_overall:
            lead = "mostly" if row.share >= 0.5 else "more often"
            return _Trait(f"{lead} {words} {vs}", yes_label)
        lead = "few" if row.share < 0.5 else "fewer"
        return _Trait(f"{lead} {words} {vs}", no_label)
    row = rows.loc[_telling_category(rows)]
    value = str(row.value)
    coded = _code_like(value) or _code_like(words)
    shown = _name_value(value)
    if coded:  # the column first, so the name never leads with a code: "Var 1: Cat 4"
        label = f"{_title(words)}: {shown.replace('_', ' ')}"
    elif len(rows) == 2 and value.isalpha() and len(value) >= 3:
        label = shown
    else:
        label = f"{shown} {_title(words)}"
    vs = f"{_pct(row.share)} vs {_pct(row.share_overall)}"
    if row.cohens_d > 0:
        if row.share > 0.5:
            return _Trait(f"{words} mostly {value} ({vs} overall)", label, coded)
        return _Trait(f"{words} {value} {row.lift:.1f}x as common as overall ({vs})", label, coded)
    negative = f"{_title(words)}: Not {shown}" if coded else f"Non-{label}"
    return _Trait(f"{words} {'rarely' if row.share > 0 else 'never'} {value} ({vs} overall)", negative, coded)


def _telling_category(rows: pd.DataFrame):
    """Index of the category that says most about the segment.

    The over-represented category with the largest standardized difference, unless an
    under-represented one differs at least twice as much ("rarely Healthcare" says more
    than a small rise spread over many other professions).
    """
    d = rows["cohens_d"].fillna(0)
    best_up, best_down = d.idxmax(), d.idxmin()
    return best_down if -d[best_down] > 2 * max(d[best_up], 0) else best_up


def _traits(profile: SegmentProfile, segment) -> list[_Trait]:
    ranked = profile.features[profile.features["segment"] == segment]
    strong = ranked[ranked["effect"] >= MIN_EFFECT].head(MAX_TRAITS)
    return [(_numeric_trait if kind == "numeric" else _categorical_trait)(profile, segment, feature)
            for feature, kind in zip(strong["feature"], strong["kind"])]


def describe_segments(
    profile: SegmentProfile,
    *,
    names: Mapping | Sequence[str] | None = None,
) -> list[SegmentDescription]:
    """Describe each segment in plain language, from its most distinguishing features.

    Deterministic: the same profile always gives the same words. A segment lists up to
    three features whose effect is at least :data:`MIN_EFFECT`, strongest first:

    * yes/no columns: "mostly ever married (92% vs 58% overall)" or "few graduated (...)";
    * other categorical columns, the category that differs most: "profession mostly Artist
      (...)", "profession Doctor 2.4x as common as overall (...)", "profession rarely Artist (...)";
    * numeric columns: their middle half when it is narrow ("aged 45-60 (overall 30-53)"),
      otherwise the direction ("older than average (mean 61 vs 43)", "above-average
      work experience (mean 6.1 vs 2.6)").

    The short name joins the labels of the top two traits ("Married, Aged 45-60"). Equal
    names get the next trait, then the segment id, so names are unique.

    Parameters
    ----------
    profile : SegmentProfile
    names : mapping or sequence of str, optional
        Names to use instead of the generated ones (by segment id, or in segment order).

    Returns
    -------
    list of SegmentDescription
        One per segment, in segment order.
    """
    segments = profile.segments
    traits = {s: _traits(profile, s) for s in segments}
    if names is None:
        chosen = _unique_names(segments, traits)
    elif isinstance(names, Mapping):
        chosen = {s: str(names.get(s, f"Segment {s}")) for s in segments}
    else:
        names = list(names)
        if len(names) != len(segments):
            raise DataError(f"names must give one name per segment ({len(segments)}); got {len(names)}")
        chosen = dict(zip(segments, map(str, names)))

    out = []
    for s, size, share in profile.sizes[["segment", "size", "share"]].itertuples(index=False):
        phrases = [t.phrase for t in traits[s]]
        body = ", ".join(phrases) if phrases else "close to the overall population on every feature"
        text = f"Segment {s} ({size:,} customers, {_pct(share)}): {body}."
        composition = {}
        if profile.composition is not None:
            comp = profile.composition[profile.composition["segment"] == s].sort_values(
                ["share", "known_segment"], ascending=[False, True], kind="stable")
            composition = {str(k): float(p) for k, p, c in zip(comp.known_segment, comp.share, comp["count"]) if c > 0}
            text += " Known segments: " + known_segments_text(composition) + "."
        out.append(SegmentDescription(segment=s, name=chosen[s], size=int(size), share=float(share),
                                      traits=phrases, text=text, composition=composition))
    return out


def known_segments_text(composition: Mapping[str, float]) -> str:
    """``{"A": 0.62, "D": 0.2}`` -> ``"A 62%, D 20%"``."""
    return ", ".join(f"{k} {_pct(p)}" for k, p in composition.items())


def _unique_names(segments: list, traits: dict) -> dict:
    """Two traits per name; a clash tries three, and what still clashes gets its segment id."""
    def name(s, n_traits: int) -> str:
        # meaningful traits name a segment before anonymised codes do (stable: strongest first within each)
        ordered = sorted(traits[s], key=lambda t: t.coded)
        labels = [t.label for t in ordered[:n_traits]]
        return ", ".join(labels) if labels else "Typical Customers"

    def clashing(chosen: dict) -> list:
        counts = pd.Series(list(chosen.values())).value_counts()
        return [s for s in segments if counts[chosen[s]] > 1]

    chosen = {s: name(s, 2) for s in segments}
    longer = {**chosen, **{s: name(s, 3) for s in clashing(chosen)}}
    for s in clashing(longer):
        longer[s] = f"{chosen[s]} ({s})"
    return longer


def segments_markdown(descriptions: Sequence[SegmentDescription], *, title: str = "Customer segments") -> str:
    """The descriptions as a Markdown document: an overview table, then one section per segment.

    Parameters
    ----------
    descriptions : sequence of SegmentDescription
    title : str
        The level-1 heading.

    Returns
    -------
    str
    """
    lines = [f"# {title}", "", "| Segment | Name | Customers | Share |", "| ---: | --- | ---: | ---: |"]
    lines += [f"| {d.segment} | {_md(d.name)} | {d.size:,} | {_pct(d.share)} |" for d in descriptions]
    for d in descriptions:
        lines += ["", f"## Segment {d.segment}: {_md(d.name)}", "", _md(d.text)]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    # intraword underscores (Cat_3) are plain text in CommonMark; pipes would split table cells
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- plot data


def profile_heatmap_data(profile: SegmentProfile, *, per_segment: int = 3, max_columns: int = 12) -> pd.DataFrame:
    """The data of a segments x distinguishing-features heatmap.

    Columns are the top ``per_segment`` features of every segment (at most
    ``max_columns``, strongest first); a categorical feature appears as the
    category that differs most in that segment ("Profession = Artist").

    Returns
    -------
    DataFrame
        ``segment, column, cohens_d, text``: ``cohens_d`` is the standardized difference
        from the rest (the colour), ``text`` the value in the segment ("mean 61", "92%").
    """
    items: list[tuple[str, str | None]] = []
    ranked = profile.features.sort_values(["rank", "effect"], ascending=[True, False], kind="stable")
    for feature, kind, segment in ranked[ranked["rank"] <= per_segment][["feature", "kind", "segment"]].itertuples(index=False):
        if kind == "numeric":
            item = (feature, None)
        else:
            rows = profile.categorical.query("segment == @segment and feature == @feature")
            yes_no = _yes_no(rows["value"].tolist())
            value = yes_no[0] if yes_no else rows.loc[_telling_category(rows), "value"]
            item = (feature, value)
        if item not in items:
            items.append(item)
    items = items[:max_columns]
    # values of one feature side by side, features in order of first appearance
    first = {f: i for i, (f, _) in reversed(list(enumerate(items)))}
    items.sort(key=lambda item: first[item[0]])
    rows = []
    for feature, value in items:
        if value is None:
            data = profile.numeric[profile.numeric["feature"] == feature]
            label = f"{feature} (mean)"
            texts = [_num(m) for m in data["mean"]]
        else:
            data = profile.categorical[(profile.categorical["feature"] == feature) & (profile.categorical["value"] == value)]
            label = f"{feature} = {value}"
            texts = [_pct(p) if np.isfinite(p) else "" for p in data["share"]]
        rows += [{"segment": s, "column": label, "cohens_d": d, "text": t}
                 for s, d, t in zip(data["segment"], data["cohens_d"], texts)]
    return pd.DataFrame(rows, columns=["segment", "column", "cohens_d", "text"])


def cluster_characteristics(frame: pd.DataFrame, clusters: np.ndarray, schema: Schema,
                            mapping: dict | None = None) -> pd.DataFrame:
    """Per cluster: size, share, mean and median of numeric features, most frequent category and its share.

    Computed on the table as read (original units and categories, missing values left out).
    """
    clusters = np.asarray(clusters)
    rows = []
    for c in sorted(np.unique(clusters)):
        part = frame[clusters == c]
        row: dict = {"Cluster": int(c)}
        if mapping is not None:
            row["Predicted_Segment"] = mapping.get(int(c), "")
        row["Size"] = len(part)
        row["Share"] = round(len(part) / len(frame), 4)
        # rounded for people: 2 decimals for values in the table's units, 4 for shares
        for name in schema.feature_columns:
            col = part[name]
            if schema.column(name).role == "numeric":
                row[f"{name}_mean"] = round(float(col.mean()), 2)
                row[f"{name}_median"] = round(float(col.median()), 2)
            else:
                counts = col.dropna().map(category_text).value_counts()
                counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
                row[f"{name}_top"] = counts.index[0] if len(counts) else ""
                row[f"{name}_top_share"] = round(float(counts.iloc[0] / counts.sum()), 4) if len(counts) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
