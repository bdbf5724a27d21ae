"""Choosing k: the knee, stability, the recommendation rule, and the select-k command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.cli import main
from custseg.exceptions import ConfigError, DataError
from custseg.evaluation.metrics import pairwise_ari
from custseg.evaluation.selection import clustering_stability, knee_point, recommend_k, select_k

SCAN_K_COLUMNS = ["k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz"]
#: k_selection.csv, as both 'custseg train' and 'custseg select-k' write it
K_SELECTION_COLUMNS = SCAN_K_COLUMNS + ["stability", "stability_sd", "stable", "knee", "recommended"]


def planted(n_clusters: int, n_per: int = 60, dims: int = 5, seed: int = 0, spread: float = 0.4) -> np.ndarray:
    """``n_clusters`` tight Gaussian blobs, centres 6 apart on distinct axes."""
    rng = np.random.default_rng(seed)
    centres = 6.0 * np.eye(max(n_clusters, dims))[:n_clusters, :dims] if n_clusters <= dims else \
        rng.uniform(-12, 12, (n_clusters, dims))
    return np.concatenate([rng.normal(c, spread, (n_per, dims)) for c in centres])


# -- knee ---------------------------------------------------------------------------------------------
def test_knee_of_a_synthetic_elbow_curve():
    k = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    inertia = [100, 62, 31, 10, 9, 8, 7.2, 6.5, 6, 5.6]
    assert knee_point(k, inertia) == 4


def test_knee_ignores_the_order_of_the_points():
    k = [4, 1, 3, 2, 5, 6]
    inertia = [10, 100, 30, 60, 9, 8]
    assert knee_point(k, inertia) == 4


@settings(max_examples=60, deadline=None)
@given(knee=st.integers(3, 9), steep=st.floats(5, 50), shallow_ratio=st.floats(0.01, 0.2), n_after=st.integers(3, 8))
def test_knee_is_the_break_of_a_two_slope_curve(knee, steep, shallow_ratio, n_after):
    # falls by `steep` per k up to the knee, then by a small fraction of that
    k = np.arange(2, knee + n_after + 1)
    inertia = np.where(k <= knee, steep * (knee - k), -steep * shallow_ratio * (k - knee)) + 1000
    assert knee_point(k, inertia) == knee


def test_no_knee_on_a_straight_line_or_too_few_points():
    assert knee_point([1, 2, 3, 4], [40, 30, 20, 10]) is None
    assert knee_point([1, 2], [10, 5]) is None
    assert knee_point([1, 2, 3], [5, 5, 5]) is None


# -- stability -----------------------------------------------------------------------------------------
def test_well_separated_clusters_are_stable():
    mean, sd = clustering_stability(planted(3), 3, n_resamples=4, n_init=3, random_state=1)
    assert mean == pytest.approx(1.0, abs=0.01)
    assert sd < 0.01


def test_splitting_a_single_blob_is_less_stable_than_finding_planted_clusters():
    rng = np.random.default_rng(3)
    blob = rng.normal(0, 1, (300, 2))
    blob_mean, _ = clustering_stability(blob, 6, n_resamples=5, n_init=1, random_state=0)
    planted_mean, _ = clustering_stability(planted(3), 3, n_resamples=5, n_init=1, random_state=0)
    assert blob_mean < planted_mean - 0.05


def test_pairwise_ari_counts_every_pair_and_ignores_label_names():
    a, b, c = [0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]
    aris = pairwise_ari([a, b, c])
    assert len(aris) == 3
    assert aris[0] == pytest.approx(1.0)  # a and b are the same partition
    assert aris[1] < 0.5 and aris[2] < 0.5
    assert len(pairwise_ari([a])) == 0


# -- the rule ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_clusters", [3, 4, 5])
def test_planted_clusters_give_the_planted_k(n_clusters):
    sel = select_k(planted(n_clusters, seed=n_clusters), range(2, 9), n_resamples=3, n_init=3, random_state=0)
    assert sel.recommended_k == n_clusters
    row = sel.row(n_clusters)
    assert row["stability"] == pytest.approx(1.0, abs=0.01)
    assert row["silhouette"] == sel.table["silhouette"].max()
    assert sel.table["recommended"].sum() == 1
    assert f"k={n_clusters}" in sel.reason


def test_the_table_holds_every_score_and_the_marks_as_0_or_1():
    sel = select_k(planted(3), range(2, 6), n_resamples=2, n_init=2)
    table = sel.to_frame()
    assert list(table.columns) == K_SELECTION_COLUMNS
    assert table["k"].tolist() == [2, 3, 4, 5]
    assert table["recommended"].tolist() == [0, 1, 0, 0] and table["knee"].tolist() == [0, 1, 0, 0]


def test_one_resample_leaves_stability_unmeasured_and_recommends_by_silhouette():
    sel = select_k(planted(3), range(2, 6), n_resamples=1, n_init=2)
    assert sel.table["stability"].isna().all()
    assert sel.recommended_k == int(sel.table.loc[sel.table["silhouette"].idxmax(), "k"])
    assert "stability was not measured" in sel.reason


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # identical rows: that is the point
def test_identical_rows_leave_nothing_to_recommend_but_keep_the_scores():
    sel = select_k(np.zeros((10, 2)), range(2, 4), n_resamples=1, n_init=1)
    assert sel.recommended_k is None and "no k could be scored" in sel.reason
    assert sel.table["inertia"].tolist() == [0.0, 0.0]


def test_an_unstable_k_is_not_recommended_even_with_the_best_silhouette():
    table = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.40, 0.55, 0.45], "stability": [0.95, 0.60, 0.90]})
    k, reason = recommend_k(table, min_stability=0.8)
    assert k == 4
    assert "0.450" in reason and "2 of 3" in reason


def test_when_nothing_is_stable_the_most_stable_k_is_recommended_with_a_warning():
    table = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.40, 0.55, 0.45], "stability": [0.5, 0.7, 0.6]})
    k, reason = recommend_k(table, min_stability=0.8)
    assert k == 3
    assert "no k reaches" in reason


def test_describe_k_compares_with_the_best():
    sel = select_k(planted(3), range(2, 7), n_resamples=2, n_init=2)
    text = sel.describe_k(5)
    assert text.startswith("k=5: silhouette")
    assert f"at k={sel.recommended_k}" in text and f"recommended k={sel.recommended_k}" in text
    assert "this is the recommended k" in sel.describe_k(sel.recommended_k)
    assert "was not scanned" in sel.describe_k(20)


def test_bad_ranges_are_refused():
    X = planted(2, n_per=5)
    with pytest.raises(ConfigError, match="'k_values'"):
        select_k(X, [1, 2])
    with pytest.raises(DataError, match="k=12 needs more than 10 customers"):
        select_k(X, range(2, 13))


# -- the command -----------------------------------------------------------------------------------------
def test_select_k_command_writes_the_table_and_the_figure(tmp_path, customer_files, fast_config, capsys):
    results = tmp_path / "results"
    code = main(["select-k", "--train", str(customer_files[0]), "--config", str(fast_config), "--min", "2",
                 "--max", "6", "--seeds", "3", "--results-dir", str(results), "--quiet"])
    assert code == 0
    table = pd.read_csv(results / "k_selection.csv")
    assert table["k"].tolist() == [2, 3, 4, 5, 6]
    assert list(table.columns) == K_SELECTION_COLUMNS
    assert table["recommended"].sum() == 1
    assert table["stability"].notna().all()  # --seeds 3: measured
    assert (results / "plots" / "k_selection.png").read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    recommended = int(table.loc[table["recommended"] == 1, "k"].iloc[0])
    assert f"Recommended k={recommended}:" in printed
    # the fast config asks for 3 clusters
    assert "Asked for: k=3: silhouette" in printed


def test_select_k_command_rejects_an_empty_range(tmp_path, customer_files, capsys):
    code = main(["select-k", "--train", str(customer_files[0]), "--min", "5", "--max", "3",
                 "--results-dir", str(tmp_path / "results")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: --max must be an int >= 5 (--min). Got 3 instead.")
    assert not (tmp_path / "results").exists()


def test_k_selection_figure_title_stays_inside_the_figure():
    """A long space name (an ensemble's consensus space) is wrapped, not cut off at both sides."""
    from custseg.report import plots

    X = np.random.default_rng(0).normal(size=(120, 3))
    selection = select_k(X, range(2, 5), n_resamples=1, n_init=2)
    selection.settings.update(space="the principal components of the ensemble's consensus space (standardized "
                                    "members' latent features side by side)", n_rows=8068, n_features=12)
    axes = plots.plot_k_selection(selection, chosen_k=3)
    fig = axes[0].figure
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width, (title, fig.bbox.width)
    plots.render_png(axes, 50)  # closes the figure


def test_select_k_never_replaces_a_training_runs_scan(tmp_path, customer_files, fast_config, capsys, monkeypatch):
    # train and select-k both default to results/: select-k's scan (another network) went over the run's
    # k_selection.csv, and the report showed it as the run's
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--train", str(customer_files[0]), "--config", str(fast_config), "--no-figures",
                 "-q"]) == 0
    scan = (tmp_path / "results" / "k_selection.csv").read_bytes()
    assert main(["select-k", "--train", str(customer_files[0]), "--config", str(fast_config), "--min", "2",
                 "--max", "4", "--seeds", "1", "--seed", "99", "--quiet"]) == 0
    assert (tmp_path / "results" / "k_selection.csv").read_bytes() == scan
    assert pd.read_csv(tmp_path / "results" / "select-k" / "k_selection.csv")["k"].tolist() == [2, 3, 4]
    printed = capsys.readouterr().out
    assert "nan" not in printed and "stability not measured (one resample)" in printed
    capsys.readouterr()
    assert main(["select-k", "--train", str(customer_files[0]), "--config", str(fast_config), "--min", "2",
                 "--max", "4", "--seeds", "1", "--results-dir", "results", "--quiet"]) == 1
    assert "holds the results of a training run" in capsys.readouterr().err
    assert (tmp_path / "results" / "k_selection.csv").read_bytes() == scan
