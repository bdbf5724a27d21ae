"""The HTML report: rendered from a real (tiny) run in memory, and rebuilt from its folders alone."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_customers
from custseg.config import RunConfig
from custseg.exceptions import DataError, ModelFormatError
from custseg.report.html import REPORT_SECTIONS, render_report
from custseg.workflow import load_run, rebuild_report, render_run_report, train, write_training_outputs

TINY = {"seed": 3, "preset": "reference", "autoencoder": {"hidden_dims": [8], "latent_dim": 3, "max_epochs": 4, "batch_size": 64},
        "clustering": {"n_clusters": 3, "n_init": 2}, "k_selection": {"k_max": 5, "n_init": 1},
        "plots": {"tsne_max_points": 80, "dpi": 40}}


def train_tiny_run(root: Path):
    """A run of ``custseg train`` on 240 planted customers and 60 new ones (20 of them returning), written to root."""
    root.mkdir(parents=True, exist_ok=True)
    table = make_customers(240, seed=1)
    new = pd.concat([make_customers(40, seed=2, start_id=5000), table.iloc[-20:]], ignore_index=True)
    table.to_csv(root / "train.csv", index=False)
    new.drop(columns="Segment").to_csv(root / "new.csv", index=False)
    config = RunConfig.from_dict({**TINY, "data": {"train": str(root / "train.csv"), "test": str(root / "new.csv")},
                                  "models_dir": str(root / "models"), "results_dir": str(root / "results")})
    result = train(config)
    write_training_outputs(result)
    return result, root / "models", root / "results"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def report_html(run):
    return render_run_report(run[0])


def _text(html: str) -> str:
    """The HTML without tags and with runs of whitespace made single spaces, to search sentences in it."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _tags(html: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_report_is_self_contained(report_html):
    assert "http://" not in report_html and "https://" not in report_html
    assert "<link" not in report_html and "<script" not in report_html
    assert "@import" not in report_html and "url(" not in report_html
    for tag, attrs in _tags(report_html):
        for attr in ("src", "href"):
            value = attrs.get(attr)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, attr, value[:60])


def test_every_section_is_there_with_a_heading(report_html):
    for section_id, heading in REPORT_SECTIONS:
        match = re.search(rf'<section id="{section_id}">\s*<h2>([^<]+)</h2>', report_html)
        assert match, section_id
        assert match.group(1) == heading
    assert "Not available" not in report_html  # the run has every part


def test_every_image_is_one_of_the_runs_figures(run, report_html):
    import base64

    result = run[0]
    images = [attrs for tag, attrs in _tags(report_html) if tag == "img"]
    shown = [base64.b64decode(a["src"].removeprefix("data:image/png;base64,")) for a in images]
    # training, k, PCA and t-SNE maps, sizes, heatmap, reliability, confidence per segment, drift: the run's own PNGs
    assert shown == [result.figures[n] for n in ("training_history", "optimal_clusters", "clusters_pca",
                                                 "clusters_tsne", "cluster_distribution", "segment_profiles",
                                                 "reliability", "confidence", "drift")]
    assert all(attrs.get("alt") for attrs in images)


def test_report_numbers_come_from_the_run(run, report_html):
    result, _, _ = run
    text = _text(report_html)
    # 20 of the 60 new customers are in the training table
    assert "20 of the 60 new customers (33.3%) already appear in the training table by ID" in text
    # the k the k-selection recommends (recommend_k's rule), not the best silhouette alone
    k_table = result.tables["k_selection"]
    recommended = int(k_table.loc[k_table["recommended"] == 1, "k"].iloc[0])
    assert f"This run uses k = 3 segments. The k-selection recommends k = {recommended}: " \
           f"{result.k_selection.reason}" in text
    # every segment is described, with its own name and size
    assert report_html.count('class="card"') == 3
    for d in result.descriptions:
        assert f"Segment {d.segment}: {d.name}" in text
        assert f"{d.size:,} customers, {100 * d.share:.0f}%" in text


def test_known_segment_table_has_mapping_and_purity(run, report_html):
    truth = run[0].tables["training_results"]
    purity = (truth["True_Segment"] == truth["Predicted_Segment"]).groupby(truth["Cluster"]).mean()
    for value in purity:
        assert f"{100 * value:.1f}%" in report_html
    accuracy = (truth["True_Segment"] == truth["Predicted_Segment"]).mean()
    assert f"Mapped accuracy: {100 * accuracy:.1f}%" in _text(report_html)


def test_the_report_written_by_train_is_the_rendered_one(run, report_html):
    _, _, results = run
    assert (results / "report.html").read_text(encoding="utf-8") == report_html


def test_report_rebuilt_without_the_training_table_is_the_same_page(run, tmp_path):
    """custseg report reads models/ and results/ only: with the tables moved away, the page is byte-identical."""
    _, models, results = run
    copy = tmp_path / "copy"
    shutil.copytree(models, copy / "models")
    shutil.copytree(results, copy / "results")
    written = (copy / "results" / "report.html").read_bytes()
    (copy / "results" / "report.html").unlink()
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("train.csv", "new.csv"):
        shutil.copy(models.parent / name, moved / name)
    try:
        for name in ("train.csv", "new.csv"):
            (models.parent / name).unlink()
        path = rebuild_report(copy / "models", copy / "results")
    finally:
        for name in ("train.csv", "new.csv"):
            shutil.copy(moved / name, models.parent / name)
    assert path == copy / "results" / "report.html"
    assert path.read_bytes() == written


def test_the_rebuilt_run_holds_the_same_data(run):
    result, models, results = run
    rebuilt = load_run(models, results)
    assert rebuilt.descriptions == result.descriptions
    assert rebuilt.figures == result.figures
    assert rebuilt.config == result.config
    assert rebuilt.schema.to_dict() == result.schema.to_dict()
    np.testing.assert_allclose(rebuilt.pipeline.cluster_centers_, result.pipeline.cluster_centers_)
    pd.testing.assert_frame_equal(rebuilt.tables["k_selection"], result.tables["k_selection"], rtol=1e-5)


def test_the_rebuilt_run_holds_the_monitoring(run):
    result, models, results = run
    rebuilt = load_run(models, results)
    assert rebuilt.monitor.to_dict() == result.monitor.to_dict()
    for name in ("drift", "confidence_by_segment", "uncertain_customers", "unusual_customers"):
        pd.testing.assert_frame_equal(rebuilt.tables[name], result.tables[name], check_exact=True)
    assert rebuilt.texts["drift.md"] == result.texts["drift.md"]


def _section(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}">')
    return html[start:html.index("</section>", start)]


def test_monitoring_sections_show_the_runs_customers_with_their_attributes(run, report_html):
    result = run[0]
    scored = result.tables["test_predictions_detailed"]
    monitoring = result.summary["monitoring"]
    confidence = _section(report_html, "confidence")
    assert f"expected calibration error {monitoring['calibration_error_out_of_fold']:.3f}" in _text(confidence)
    # the least sure of the 60 new customers is listed first, with the attributes it was scored on
    least = scored.loc[scored["Segment_Probability"].idxmin(), "ID"]
    uncertain = confidence[confidence.index("most uncertain"):]
    first_row = uncertain[uncertain.index("<tbody>"):uncertain.index("</tr>", uncertain.index("<tbody>"))]
    assert re.search(rf"<td[^>]*>{least}</td>", first_row)
    assert all(f"{c}</th>" in uncertain for c in ("Age", "Profession", "Second_Segment"))
    unusual = _text(_section(report_html, "unusual"))
    count = int(scored["Unusual"].sum())
    assert f"{count:,} of 60 new customers ({100 * count / 60:.1f}%) are Unusual." in unusual
    most = scored.loc[scored["Novelty"].idxmax(), "ID"]
    assert str(most) in unusual
    drift = _text(_section(report_html, "drift"))
    drifted = result.drift.drifted_features
    assert f"Drifted features: {', '.join(drifted) if drifted else 'none'} ." in drift
    auc = result.drift.classifier
    assert f"ROC AUC {auc['auc']:.3f} (95% interval {auc['low']:.3f} to {auc['high']:.3f}" in drift
    # 20 of the new customers are training customers, unchanged
    assert "20 new customers (33.3%) are training customers by ID; 20 of them with every attribute unchanged" in drift


def test_report_is_deterministic(run):
    assert render_run_report(run[0]) == render_run_report(run[0])


def test_report_without_optional_parts_says_what_is_missing(run):
    result = run[0]
    tables = {k: v for k, v in result.tables.items()
              if k not in ("k_selection", "clustering_metrics", "test_predictions_detailed")}
    raw = render_report(summary=result.summary, tables=tables, figures={},
                        descriptions=result.descriptions, schema=result.schema)
    for section_id, _ in REPORT_SECTIONS:
        assert f'<section id="{section_id}">' in raw
    html = _text(raw)
    for what in ("clustering_metrics.csv", "test_predictions_detailed.csv", "k_selection.csv", "the map figures",
                 "the training history figure", "the segment profile figure"):
        assert f"Not available: {what}" in html, what


def test_report_needs_the_run_summary(run, tmp_path):
    _, models, results = run
    shutil.copytree(results, tmp_path / "results")
    (tmp_path / "results" / "run_summary.json").unlink()
    with pytest.raises(DataError, match=r"run_summary.json' does not exist; run 'custseg train' first"):
        rebuild_report(models, tmp_path / "results")


def test_report_needs_the_model_folder(run, tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        rebuild_report(tmp_path / "nomodel", run[2])


def test_a_bad_value_in_a_results_file_is_one_error_naming_the_file(run, tmp_path):
    _, models, results = run
    shutil.copytree(results, tmp_path / "results")
    path = tmp_path / "results" / "clustering_metrics.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].split(",")[0] + ",lots," + lines[2].split(",")[2]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"clustering_metrics.csv', line 3, column 'value': 'lots' is not a number"):
        rebuild_report(models, tmp_path / "results")


def test_segment_files_hold_the_profile_and_the_descriptions(run):
    result, _, results = run
    profiles = pd.read_csv(results / "segment_profiles.csv", keep_default_na=False)
    assert list(profiles.columns) == ["segment", "feature", "value", "statistic", "number"]
    sizes = profiles[profiles["statistic"] == "size"].set_index("segment")["number"]
    clusters = result.pipeline.labels_
    assert sizes.astype(float).to_dict() == {str(k): float(v) for k, v in
                                             pd.Series(clusters).value_counts().sort_index().items()}
    composition = profiles[(profiles["feature"] == "known_segment") & (profiles["statistic"] == "share")]
    assert set(composition["value"]) == {"G0", "G1", "G2"}
    markdown = (results / "segments.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Customer segments\n")
    assert markdown.count("\n## Segment ") == 3
    for d in result.descriptions:
        assert d.name in markdown


def test_weak_agreement_with_known_segments_is_said_in_plain_words():
    from custseg.report.html import weak_agreement_warning

    counts = pd.DataFrame({"A": [30, 20], "B": [25, 25], "C": [20, 50]})
    weak = weak_agreement_warning(counts, {"ari": 0.079, "nmi": 0.108, "mapped_accuracy": 0.431})
    assert "weak: ARI 0.079 and NMI 0.108" in weak
    assert "43% compares with 41% for putting everyone in the largest known segment (C)" in weak
    assert weak_agreement_warning(counts, {"ari": 0.35, "nmi": 0.30, "mapped_accuracy": 0.7}) is None
    assert weak_agreement_warning(counts, {}) is None


@pytest.mark.parametrize("columns, titles", [
    ({"loss": [0.9, 0.7, 0.6], "mae": [0.8, 0.6, 0.5], "val_loss": [1.0, 0.8, 0.7], "val_mae": [0.9, 0.7, 0.6],
      "lr": [1e-3, 1e-3, 5e-4]}, ["MSE loss", "mean absolute error"]),
    ({"loss": [1.4, 1.1, 1.0], "reconstruction": [0.9, 0.7, 0.6], "guidance": [0.25, 0.2, 0.2], "lr": [1e-3] * 3},
     ["loss", "guidance loss (cross-entropy)"]),
    # unguided mixed-type: loss and reconstruction are the same curve, drawn once
    ({"loss": [0.9, 0.7, 0.6], "reconstruction": [0.9, 0.7, 0.6], "guidance": [0.0] * 3, "lr": [1e-3] * 3},
     ["reconstruction loss"]),
])
def test_training_figure_draws_a_panel_per_distinct_measure(columns, titles):
    from custseg.report import plots

    history = pd.DataFrame({"epoch": [1, 2, 3], **columns})
    axes = plots.plot_training_history(history, best_epoch=2)
    try:
        assert [ax.get_title() for ax in axes] == [f"Autoencoder training: {t}" for t in titles]
        assert list(axes[0].lines[0].get_ydata()) == columns["loss"]
        assert len(axes[0].figure.axes) == len(titles)
    finally:
        plots.render_png(axes, 30)


@pytest.mark.parametrize("val_loss, lead", [
    ([1.0, 0.9, 0.95], "The validation curve should flatten, not rise."),
    # the mixed-type ensemble has no validation split: no word about a curve the figure does not have
    ([np.nan] * 3, "It trains on every customer, without a validation split: the loss should fall, then flatten."),
])
def test_training_section_speaks_of_the_curves_the_figure_has(val_loss, lead):
    from custseg.report.html import _training_section

    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.7, 0.6], "val_loss": val_loss, "lr": [1e-3] * 3})
    section = _training_section({"preset": "reference"}, history, None)
    assert section["lead"] == lead
    assert ("best validation loss" in dict(section["facts"])) == (lead.startswith("The validation"))


def test_figures_do_not_depend_on_the_users_layout_rcparams(run):
    # custseg lays its figures out itself: a user's automatic layout (constrained: the heatmap's colorbar
    # and tight_layout() raised; autolayout: other pixels) changes nothing
    import matplotlib

    from custseg.report.maps import pca_coordinates
    from custseg.workflow import _draw_early

    result = run[0]
    xy, variance = pca_coordinates(result.pipeline.transform(result.train_table))
    default = _draw_early(result, None, xy, variance)
    assert set(default) == {"training_history", "clusters_pca", "cluster_distribution", "segment_profiles"}
    for layout in ({"figure.constrained_layout.use": True}, {"figure.autolayout": True}):
        with matplotlib.rc_context(layout):
            drawn = _draw_early(result, None, xy, variance)
        for name, png in default.items():
            assert drawn[name] == png, (layout, name)


def test_a_guided_run_says_its_agreement_with_the_known_segments_is_in_sample():
    # the guided network learnt from the segments it is then compared with: the report says so (it showed
    # 54% mapped accuracy on training customers without a word, against 49% held out in compare)
    from custseg.report.html import _known_section, guided_in_sample_note

    crosstab = pd.DataFrame({"Cluster": [0, 1], "Size": [3, 2], "A": [2, 0], "B": [1, 2],
                             "Mapped_Segment": ["A", "B"], "Purity": [2 / 3, 1.0]})
    metrics = {"ari": 0.3, "nmi": 0.3, "mapped_accuracy": 0.8}
    guided = {"autoencoder": {"kind": "mixed", "guidance_weight": 2.0}}
    note = _known_section(crosstab, metrics, {}, guided)["in_sample"]
    assert note is not None and "In-sample" in note and "held-out folds" in note
    for unguided in ({"autoencoder": {"kind": "mixed", "guidance_weight": 0.0}}, {"autoencoder": {}}, {}):
        assert guided_in_sample_note(unguided) is None
        assert _known_section(crosstab, metrics, {}, unguided)["in_sample"] is None
