"""Statistics for exploring a customer table before segmenting it (pure functions).

What the exploratory notebook needs beyond :mod:`custseg.profiling`: how strongly
each feature is associated with a known segment over all segments at once,
associations between features, outlier counts, missing-value patterns, and how a
second table (new customers) differs from the training table, including customers
who appear in both. Tables in, tables out; nothing prints or draws.

Effect sizes
------------
* numeric feature vs segment: the correlation ratio ``eta`` (its square, eta-squared,
  is the share of the feature's variance explained by the segment), and the
  rank-based Kruskal-Wallis ``H`` with its effect size epsilon-squared ``H / (n - 1)``;
* categorical feature vs segment, or between two categorical features: Cramér's V
  (:func:`custseg.profiling.cramers_v`).

For a yes/no feature ``eta`` of its 0/1 indicator equals Cramér's V, so the two are
read on one scale (0.1 small, 0.3 medium, 0.5 large).

Example
-------
>>> import pandas as pd
>>> t = pd.DataFrame({"Age": [25.0, 30, 62, 70], "Ever_Married": ["No", "No", "Yes", "Yes"]})
>>> effects = association_with_label(t, ["D", "D", "C", "C"], numeric=["Age"], categorical=["Ever_Married"])
>>> [(f, m, round(e, 3)) for f, m, e in effects[["feature", "measure", "effect"]].itertuples(index=False)]
[('Ever_Married', "Cramér's V", 1.0), ('Age', 'eta', 0.985)]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .exceptions import DataError
from .profiling import cramers_v
from .schema import category_text

__all__ = [
    "eta_squared",
    "kruskal_wallis",
    "association_with_label",
    "cramers_v_matrix",
    "iqr_outliers",
    "missing_patterns",
    "standardized_mean_difference",
    "total_variation_distance",
    "compare_distributions",
    "compare_returning_customers",
]


def _as_category(values) -> pd.Series:
    """Values as canonical category text, NaN kept."""
    s = pd.Series(np.asarray(values, dtype=object))
    return s.map(lambda v: v if pd.isna(v) else category_text(v))


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], name: str = "table") -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(f"columns are missing from the {name}: {', '.join(map(repr, absent))}; "
                        f"its columns are {', '.join(map(str, frame.columns))}")


def eta_squared(values, groups) -> float:
    """Share of the variance of ``values`` explained by ``groups`` (rows with a missing value left out).

    0 when every group has the same mean, 1 when every group is constant; NaN with
    fewer than two values or no variance.

    >>> eta_squared([1.0, 2, 3, 4], ["a", "a", "b", "b"])
    0.8
    """
    x = np.asarray(values, dtype="float64")
    g = _as_category(groups).to_numpy()
    keep = ~np.isnan(x) & ~pd.isna(g)
    x, g = x[keep], g[keep]
    if len(x) < 2:
        return np.nan
    total = float(((x - x.mean()) ** 2).sum())
    if total == 0:
        return np.nan
    means = pd.Series(x).groupby(g).agg(["mean", "size"])
    between = float((means["size"] * (means["mean"] - x.mean()) ** 2).sum())
    return between / total


def kruskal_wallis(values, groups) -> dict[str, float]:
    """Kruskal-Wallis test of ``values`` across ``groups``, with its effect size.

    Returns
    -------
    dict
        ``h`` (statistic), ``p_value``, ``epsilon_squared`` (``h / (n - 1)``, 0-1) and ``n``.
        NaN statistics when fewer than two groups have values, or all values are equal.
    """
    from scipy import stats

    x = np.asarray(values, dtype="float64")
    g = _as_category(groups).to_numpy()
    keep = ~np.isnan(x) & ~pd.isna(g)
    x, g = x[keep], g[keep]
    samples = [x[g == k] for k in sorted(set(g))]
    n = len(x)
    if len(samples) < 2 or n < 3 or np.all(x == x[0]):
        return {"h": np.nan, "p_value": np.nan, "epsilon_squared": np.nan, "n": n}
    h, p = stats.kruskal(*samples)
    return {"h": float(h), "p_value": float(p), "epsilon_squared": float(h) / (n - 1), "n": n}


def association_with_label(
    table: pd.DataFrame,
    labels,
    *,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """How strongly each feature separates the segments in ``labels``, strongest first.

    Parameters
    ----------
    table : DataFrame
        Customers, numeric columns as floats, categorical as strings; NaN for missing.
    labels : array-like of shape (n_rows,)
        The (known) segment of each row.
    numeric, categorical : sequences of str
        The feature columns.

    Returns
    -------
    DataFrame
        ``feature, kind, measure, effect, eta_squared, epsilon_squared, kruskal_p, n``:
        ``effect`` is ``eta`` for numeric and Cramér's V for categorical features (one
        scale, see the module docstring); ``eta_squared``, ``epsilon_squared`` and
        ``kruskal_p`` are filled for numeric features only; ``n`` counts the rows used.

    Raises
    ------
    DataError
        If a column is absent or ``labels`` has the wrong length.
    """
    numeric, categorical = list(numeric), list(categorical)
    _check_columns(table, numeric + categorical)
    labels = _as_category(labels)
    if len(labels) != len(table):
        raise DataError(f"labels must have one value per row of the table ({len(table)}); got {len(labels)}")
    rows = []
    for f in numeric:
        x = pd.to_numeric(table[f], errors="coerce").to_numpy(dtype="float64")
        e2 = eta_squared(x, labels)
        kw = kruskal_wallis(x, labels)
        rows.append({"feature": f, "kind": "numeric", "measure": "eta",
                     "effect": math.sqrt(e2) if np.isfinite(e2) else np.nan, "eta_squared": e2,
                     "epsilon_squared": kw["epsilon_squared"], "kruskal_p": kw["p_value"], "n": kw["n"]})
    for f in categorical:
        values = _as_category(table[f])
        keep = values.notna().to_numpy() & labels.notna().to_numpy()
        counts = pd.crosstab(values[keep].to_numpy(), labels[keep].to_numpy()).to_numpy()
        rows.append({"feature": f, "kind": "categorical", "measure": "Cramér's V", "effect": cramers_v(counts),
                     "eta_squared": np.nan, "epsilon_squared": np.nan, "kruskal_p": np.nan, "n": int(keep.sum())})
    out = pd.DataFrame(rows, columns=["feature", "kind", "measure", "effect", "eta_squared", "epsilon_squared",
                                      "kruskal_p", "n"])
    return out.sort_values("effect", ascending=False, kind="stable").reset_index(drop=True)


def cramers_v_matrix(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Cramér's V between every pair of categorical ``columns`` (pairwise complete rows).

    Returns a square DataFrame indexed and labelled by ``columns``, 1 on the diagonal.

    >>> t = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["p", "p", "q", "q"], "c": ["u", "v", "u", "v"]})
    >>> cramers_v_matrix(t, ["a", "b", "c"]).round(2).to_numpy().tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    columns = list(columns)
    _check_columns(table, columns)
    text = {c: _as_category(table[c]) for c in columns}
    out = pd.DataFrame(np.eye(len(columns)), index=columns, columns=columns)
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            keep = (text[a].notna() & text[b].notna()).to_numpy()
            v = cramers_v(pd.crosstab(text[a][keep].to_numpy(), text[b][keep].to_numpy()).to_numpy())
            out.loc[a, b] = out.loc[b, a] = v
    return out


def iqr_outliers(table: pd.DataFrame, columns: Sequence[str], k: float = 1.5) -> pd.DataFrame:
    """Values outside Tukey's fences ``[q1 - k * iqr, q3 + k * iqr]``, per numeric column.

    Returns
    -------
    DataFrame
        ``feature, q1, q3, iqr, lower, upper, n_below, n_above, n_outliers, share``;
        ``share`` is of the column's non-missing values.

    >>> iqr_outliers(pd.DataFrame({"x": [1.0, 2, 3, 4, 100]}), ["x"])[["feature", "upper", "n_above"]]
      feature  upper  n_above
    0       x    7.0        1
    """
    columns = list(columns)
    _check_columns(table, columns)
    rows = []
    for f in columns:
        x = pd.to_numeric(table[f], errors="coerce").dropna().to_numpy(dtype="float64")
        q1, q3 = (np.percentile(x, [25, 75]) if len(x) else (np.nan, np.nan))
        iqr = q3 - q1
        lower, upper = q1 - k * iqr, q3 + k * iqr
        below, above = int((x < lower).sum()), int((x > upper).sum())
        rows.append({"feature": f, "q1": float(q1), "q3": float(q3), "iqr": float(iqr), "lower": float(lower),
                     "upper": float(upper), "n_below": below, "n_above": above, "n_outliers": below + above,
                     "share": (below + above) / len(x) if len(x) else np.nan})
    return pd.DataFrame(rows, columns=["feature", "q1", "q3", "iqr", "lower", "upper", "n_below", "n_above",
                                       "n_outliers", "share"])


def missing_patterns(table: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Which combinations of columns are missing together, most frequent first.

    Returns
    -------
    DataFrame
        One row per pattern: a boolean column per input column (True = missing),
        then ``n_missing`` (columns missing in the pattern), ``count`` and ``share`` of rows.

    >>> t = pd.DataFrame({"a": [1.0, None, None], "b": ["x", None, "y"]})
    >>> missing_patterns(t)[["a", "b", "n_missing", "count"]].to_dict("list")
    {'a': [False, True, True], 'b': [False, False, True], 'n_missing': [0, 1, 2], 'count': [1, 1, 1]}
    """
    columns = list(table.columns if columns is None else columns)
    _check_columns(table, columns)
    if not columns:
        raise DataError("missing_patterns needs at least one column")
    flags = table[columns].isna()
    counts = flags.value_counts(sort=False).rename("count").reset_index()
    counts["n_missing"] = counts[columns].sum(axis=1).astype(int)
    counts["share"] = counts["count"] / max(len(table), 1)
    counts = counts.sort_values(["count", "n_missing"], ascending=[False, True], kind="stable")
    return counts[columns + ["n_missing", "count", "share"]].reset_index(drop=True)


def standardized_mean_difference(a, b) -> float:
    """``(mean(b) - mean(a)) / sqrt((var(a) + var(b)) / 2)``, missing values left out.

    The usual balance measure between two samples; ``|smd| < 0.1`` is commonly read
    as a negligible difference. 0 when both samples are constant and equal.

    >>> standardized_mean_difference([0.0, 2.0, 4.0], [2.0, 4.0, 6.0])
    1.0
    """
    x = np.asarray(a, dtype="float64")
    y = np.asarray(b, dtype="float64")
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if len(x) < 2 or len(y) < 2:
        return np.nan
    diff = float(y.mean() - x.mean())
    sd = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    if sd == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / sd


def total_variation_distance(a, b) -> float:
    """Half the sum of absolute differences between two categorical distributions (0-1).

    The largest difference, over any set of categories, between the share of ``a`` and
    the share of ``b`` in it. Missing values are left out.

    >>> total_variation_distance(["x", "x", "y", "y"], ["x", "y", "y", "y"])
    0.25
    """
    p = _as_category(a).dropna().value_counts(normalize=True)
    q = _as_category(b).dropna().value_counts(normalize=True)
    if p.empty or q.empty:
        return np.nan
    cats = p.index.union(q.index)
    return float(0.5 * np.abs(p.reindex(cats, fill_value=0) - q.reindex(cats, fill_value=0)).sum())


def compare_distributions(
    reference: pd.DataFrame,
    other: pd.DataFrame,
    *,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """How each feature's distribution in ``other`` differs from ``reference`` (e.g. new vs training customers).

    Returns
    -------
    DataFrame
        ``feature, kind, measure, difference, mean_reference, mean_other, ks,
        missing_reference, missing_other``: ``difference`` is the standardized mean
        difference (other minus reference) for numeric features and the total-variation
        distance for categorical ones; ``ks`` is the two-sample Kolmogorov-Smirnov
        statistic (numeric only); ``missing_*`` are the shares of missing values.
    """
    from scipy import stats

    numeric, categorical = list(numeric), list(categorical)
    _check_columns(reference, numeric + categorical, "reference table")
    _check_columns(other, numeric + categorical, "other table")
    rows = []
    for f in numeric:
        x = pd.to_numeric(reference[f], errors="coerce").astype("float64")
        y = pd.to_numeric(other[f], errors="coerce").astype("float64")
        ks = stats.ks_2samp(x.dropna(), y.dropna()).statistic if x.notna().any() and y.notna().any() else np.nan
        rows.append({"feature": f, "kind": "numeric", "measure": "SMD",
                     "difference": standardized_mean_difference(x, y), "mean_reference": x.mean(),
                     "mean_other": y.mean(), "ks": float(ks), "missing_reference": x.isna().mean(),
                     "missing_other": y.isna().mean()})
    for f in categorical:
        rows.append({"feature": f, "kind": "categorical", "measure": "TVD",
                     "difference": total_variation_distance(reference[f], other[f]), "mean_reference": np.nan,
                     "mean_other": np.nan, "ks": np.nan, "missing_reference": reference[f].isna().mean(),
                     "missing_other": other[f].isna().mean()})
    return pd.DataFrame(rows, columns=["feature", "kind", "measure", "difference", "mean_reference", "mean_other",
                                       "ks", "missing_reference", "missing_other"])


def compare_returning_customers(
    reference: pd.DataFrame,
    other: pd.DataFrame,
    *,
    id_column: str,
    columns: Sequence[str],
    numeric: Sequence[str] = (),
) -> pd.DataFrame:
    """For customers present in both tables, how their row in ``other`` differs from their row in ``reference``.

    Customers are matched on ``id_column``. A value counts as unchanged when both rows
    hold the same value or both are missing.

    Parameters
    ----------
    reference, other : DataFrame
    id_column : str
        Unique in each table.
    columns : sequence of str
        The columns to compare.
    numeric : sequence of str
        Those of ``columns`` whose changes are also measured (``other - reference``).

    Returns
    -------
    DataFrame
        ``feature, n_pairs, share_identical, share_missing_changed, mean_change,
        median_abs_change, sd_change``; ``share_missing_changed`` is the share of pairs
        where exactly one row is missing; the change statistics are over pairs with both
        values present, numeric features only.

    Raises
    ------
    DataError
        If a column is absent or the id is not unique in a table.
    """
    columns, numeric = list(columns), list(numeric)
    for frame, name in ((reference, "reference table"), (other, "other table")):
        _check_columns(frame, [id_column] + columns, name)
        if not frame[id_column].is_unique:
            raise DataError(f"{id_column!r} must be unique in the {name} to match customers; it repeats")
    pairs = reference[[id_column] + columns].merge(other[[id_column] + columns], on=id_column,
                                                   suffixes=("_reference", "_other"))
    rows = []
    for f in columns:
        a, b = pairs[f"{f}_reference"], pairs[f"{f}_other"]
        both_missing = a.isna() & b.isna()
        if f in numeric:
            a_num, b_num = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
            same = (a_num == b_num) | both_missing
            change = (b_num - a_num).dropna()
        else:
            same = (_as_category(a) == _as_category(b)).to_numpy() | both_missing.to_numpy()
            change = pd.Series(dtype="float64")
        n = len(pairs)
        rows.append({"feature": f, "n_pairs": n,
                     "share_identical": float(np.mean(same)) if n else np.nan,
                     "share_missing_changed": float((a.isna() ^ b.isna()).mean()) if n else np.nan,
                     "mean_change": float(change.mean()) if len(change) else np.nan,
                     "median_abs_change": float(change.abs().median()) if len(change) else np.nan,
                     "sd_change": float(change.std()) if len(change) > 1 else np.nan})
    return pd.DataFrame(rows, columns=["feature", "n_pairs", "share_identical", "share_missing_changed",
                                       "mean_change", "median_abs_change", "sd_change"])
