"""The HTML report and the segment files, built from a small fake run written in the test."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custseg.exceptions import DataError
from custseg.report.html import REPORT_SECTIONS, build_report, write_segment_outputs
from custseg.schema import infer_schema

SEGMENT_OF_CLUSTER = {0: "A", 1: "B", 2: "C"}


def _customers(n: int, rng: np.random.Generator, start_id: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Three clear groups: young single healthcare workers, married artists in their 50s, large families."""
    cluster = rng.integers(0, 3, n)
    age = np.where(cluster == 0, rng.normal(26, 3, n), np.where(cluster == 1, rng.normal(55, 4, n), rng.normal(40, 6, n)))
    married = np.where(cluster == 0, rng.random(n) < 0.1, rng.random(n) < 0.9)
    profession = np.where(cluster == 0, "Healthcare", np.where(cluster == 1, "Artist", rng.choice(["Engineer", "Doctor"], n)))
    family = np.where(cluster == 2, rng.integers(5, 8, n), rng.integers(1, 4, n)).astype(float)
    table = pd.DataFrame({
        "ID": np.arange(start_id, start_id + n),
        "Gender": rng.choice(["Male", "Female"], n),
        "Ever_Married": np.where(married, "Yes", "No").astype(object),
        "Age": age.round(),
        "Profession": profession.astype(object),
        "Family_Size": family,
    })
    table.loc[rng.choice(n, 5, replace=False), "Ever_Married"] = np.nan
    table.loc[rng.choice(n, 4, replace=False), "Family_Size"] = np.nan
    return table, cluster


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set_xlabel("x")
    fig.savefig(path, dpi=50)
    plt.close(fig)


def write_fake_run(root: Path) -> tuple[Path, Path]:
    """A models and a results folder as ``custseg train`` writes them, with the data they name."""
    rng = np.random.default_rng(0)
    data, models, results = root / "data", root / "models", root / "results"
    for folder in (data, models, results / "plots"):
        folder.mkdir(parents=True)
    train, clusters = _customers(300, rng, 1000)
    segments = np.array([SEGMENT_OF_CLUSTER[c] for c in clusters])
    flip = rng.random(300) < 0.15
    segments[flip] = rng.choice(list("ABCD"), flip.sum())
    train["Segmentation"] = segments
    test, test_clusters = _customers(80, rng, 1250)  # IDs 1250..1299 are also in training
    train.to_csv(data / "Train.csv", index=False)
    test.to_csv(data / "Test.csv", index=False)

    schema = infer_schema(train, other_columns=test.columns)
    settings = {"seed": 7, "data": {"train": str(data / "Train.csv"), "test": str(data / "Test.csv")},
                "clustering": {"n_clusters": 3}}
    (models / "settings.json").write_text(json.dumps(settings))
    (models / "schema.json").write_text(json.dumps(schema.to_dict()))
    (models / "clustering.json").write_text(json.dumps({
        "cluster_centers": [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]],
        "mapping": {str(k): v for k, v in SEGMENT_OF_CLUSTER.items()}}))
    (models / "manifest.json").write_text(json.dumps({"format": "custseg-model", "versions": {"custseg": "0.1.0"}}))

    (results / "run_summary.json").write_text(json.dumps({
        "versions": {"custseg": "0.1.0", "torch": "2.5.0"}, "settings": settings,
        "data": {"train": {"path": settings["data"]["train"], "rows": 300},
                 "test": {"path": settings["data"]["test"], "rows": 80}},
        "autoencoder": {"epochs": 20, "best_epoch": 20, "stopped_early": False},
        "monitoring": {"calibration_error_out_of_fold": 0.031, "unusual_above": 99.0,
                       "test": {"lines": ["1 customer (1.25%) are unlike any training customer: see column Unusual"]},
                       "drift": {"drifted_features": ["Age"],
                                 "classifier": {"auc": 0.71, "low": 0.65, "high": 0.77, "drifted": True},
                                 "segment_shift": {"psi": 0.02, "p_value": 0.3, "drifted": False},
                                 "returning": {"ids_in_both": 50, "share_of_new": 0.625, "all_attributes_match": 50}}},
        "duration_seconds": 12.5}))
    epochs = np.arange(1, 21)
    pd.DataFrame({"epoch": epochs, "loss": 1 / epochs, "val_loss": 1.1 / epochs + 0.01, "mae": 0.5 / epochs,
                  "val_mae": 0.6 / epochs, "lr": np.where(epochs < 12, 1e-3, 5e-4)}).to_csv(
        results / "training_history.csv", index=False)
    pd.DataFrame({"k": range(2, 7), "inertia": [90.0, 50, 45, 42, 40], "silhouette": [0.30, 0.52, 0.41, 0.35, 0.33]}
                 ).to_csv(results / "k_selection.csv", index=False)
    pd.DataFrame({"metric": ["silhouette", "davies_bouldin", "ari"], "value": [0.52, 0.81, 0.44],
                  "space": ["latent", "latent", "labels"]}).to_csv(
        results / "clustering_metrics.csv", index=False)
    pd.DataFrame({"ID": train["ID"], "True_Segment": segments, "Cluster": clusters,
                  "Predicted_Segment": [SEGMENT_OF_CLUSTER[c] for c in clusters]}).to_csv(
        results / "training_results.csv", index=False)
    novelty = np.linspace(0, 100, 80)
    reason = np.where(novelty > 99, "Age far outside training range (18 to 70)", "")
    pd.DataFrame({"ID": test["ID"], "Cluster": test_clusters,
                  "Predicted_Segment": [SEGMENT_OF_CLUSTER[c] for c in test_clusters],
                  "Distance_To_Centroid": rng.random(80), "Reconstruction_Error": rng.random(80),
                  "Confidence": np.linspace(0.34, 1.0, 80), "Second_Cluster": (test_clusters + 1) % 3,
                  "Segment_Probability": np.linspace(0.9, 0.25, 80), "Second_Segment": "D",
                  "Novelty": novelty, "Unusual": novelty > 99, "Reason": reason}).to_csv(
        results / "test_predictions_detailed.csv", index=False)
    pd.DataFrame({"feature": ["Age", "Age", "Gender", "Gender"], "kind": ["numeric", "missing", "categorical", "missing"],
                  "test": ["Kolmogorov-Smirnov", "chi-square (missing share)", "chi-square", "chi-square (missing share)"],
                  "statistic": [0.2, 0.0, 0.1, 0.0], "p_value": [1e-6, 1.0, 0.7, 1.0], "psi": [0.3, np.nan, 0.001, np.nan],
                  "effect": [0.4, 0.0, 0.01, 0.0], "drifted": [True, False, False, False]}).to_csv(
        results / "drift.csv", index=False)
    centre = np.array([[0, 0], [4, 0], [2, 3]])[clusters]
    tsne = centre + rng.normal(0, 0.5, (300, 2))
    tsne[::3] = np.nan  # rows outside the t-SNE sample
    pd.DataFrame({"ID": train["ID"], "Cluster": clusters, "pca_1": centre[:, 0] + rng.normal(0, 0.6, 300),
                  "pca_2": centre[:, 1] + rng.normal(0, 0.6, 300), "tsne_1": tsne[:, 0], "tsne_2": tsne[:, 1]}
                 ).to_csv(results / "maps.csv", index=False)
    for name in ("training_history", "optimal_clusters", "clusters_pca", "clusters_tsne", "cluster_distribution",
                 "reliability", "confidence", "drift"):
        _png(results / "plots" / f"{name}.png")
    return models, results


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def fake_run(tmp_path):
    return write_fake_run(tmp_path)


@pytest.fixture
def report_html(fake_run):
    models, results = fake_run
    path = build_report(models, results)
    assert path == results / "report.html"
    return path.read_text(encoding="utf-8")


def _text(html: str) -> str:
    """The HTML with runs of whitespace made single spaces, to search sentences in it."""
    return " ".join(html.split())


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
    assert "Not available" not in report_html  # the fake run has every file


def test_every_image_is_an_embedded_png(report_html):
    images = [attrs for tag, attrs in _tags(report_html) if tag == "img"]
    # training, k, PCA and t-SNE maps, sizes, heatmap, reliability, confidence per segment, drift
    assert len(images) == 9
    for attrs in images:
        assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/]{200,}=*", attrs["src"])
        assert attrs.get("alt")


def test_report_numbers_come_from_the_run(report_html):
    report_html = _text(report_html)
    # 50 of the 80 new customers (IDs 1250..1299) are also in the training table
    assert "50 of the 80 new customers (62.5%)" in report_html
    # the chosen k (3) is the best by silhouette here, so no remark about another k
    assert "This run uses k = 3 segments. The silhouette score is highest at k = 3." in report_html
    # the metric guide explains each metric
    assert "higher means customers sit closer to their own cluster" in report_html
    # every segment is described, with its size
    assert report_html.count('class="card"') == 3
    assert "Segment 1: " in report_html and "profession mostly Artist" in report_html


def test_known_segment_table_has_mapping_and_purity(fake_run, report_html):
    _, results = fake_run
    truth = pd.read_csv(results / "training_results.csv")
    purity = (truth["True_Segment"] == truth["Cluster"].map(SEGMENT_OF_CLUSTER)).groupby(truth["Cluster"]).mean()
    for value in purity:
        assert f"{100 * value:.1f}%" in report_html
    accuracy = (truth["True_Segment"] == truth["Predicted_Segment"]).mean()
    assert f"Mapped accuracy: {100 * accuracy:.1f}%" in _text(report_html)


def test_report_is_deterministic(fake_run):
    models, results = fake_run
    first = build_report(models, results).read_bytes()
    assert build_report(models, results).read_bytes() == first


def test_report_without_optional_files_says_what_is_missing(fake_run):
    models, results = fake_run
    for name in ("k_selection.csv", "clustering_metrics.csv", "test_predictions_detailed.csv", "maps.csv"):
        (results / name).unlink()
    for png in (results / "plots").glob("*.png"):
        png.unlink()
    html = _text(build_report(models, results).read_text(encoding="utf-8"))
    for section_id, _ in REPORT_SECTIONS:
        assert f'<section id="{section_id}">' in html
    assert "Not available: clustering_metrics.csv" in html
    assert "Not available: test_predictions_detailed.csv" in html
    assert "Not available: maps.csv" in html


def test_report_needs_training_results(fake_run):
    models, results = fake_run
    (results / "training_results.csv").unlink()
    with pytest.raises(DataError, match=r"training_results.csv' does not exist; run 'custseg train' first"):
        build_report(models, results)


def test_write_segment_outputs(tmp_path):
    table, clusters = _customers(200, np.random.default_rng(1), 1)
    paths = write_segment_outputs(table.drop(columns="ID"), clusters, tmp_path / "out",
                                  known_segments=[SEGMENT_OF_CLUSTER[c] for c in clusters])
    assert set(paths) == {"segment_profiles", "segments"}
    profiles = pd.read_csv(paths["segment_profiles"], keep_default_na=False)
    assert list(profiles.columns) == ["segment", "feature", "value", "statistic", "number"]
    sizes = profiles[profiles["statistic"] == "size"].set_index("segment")["number"]
    assert sizes.astype(float).to_dict() == {str(k): float(v) for k, v in
                                             pd.Series(clusters).value_counts().sort_index().items()}
    composition = profiles[(profiles["feature"] == "known_segment") & (profiles["statistic"] == "share")]
    assert set(composition["value"]) == {"A", "B", "C"}
    markdown = paths["segments"].read_text(encoding="utf-8")
    assert markdown.startswith("# Customer segments\n")
    assert markdown.count("\n## Segment ") == 3


def test_monitoring_sections_show_customers_with_their_attributes(report_html):
    text = _text(report_html)
    confidence = text[text.index('<section id="confidence">'):text.index('<section id="unusual">')]
    assert "expected calibration error 0.031" in confidence
    # the least sure new customer (last row: probability 0.25) comes first, with its age and profession
    assert "Second_Segment</th>" in confidence and "Age</th>" in confidence
    assert confidence.index("0.25") < confidence.index("0.258")
    unusual = text[text.index('<section id="unusual">'):text.index('<section id="drift">')]
    assert "1 of 80 new customers (1.2%) are Unusual." in unusual
    assert "Age far outside training range (18 to 70)" in unusual and "Profession</th>" in unusual
    drift = text[text.index('<section id="drift">'):]
    assert "Drifted features: <strong>Age</strong>" in drift
    assert "ROC AUC 0.710 (95% interval 0.650 to 0.770" in drift and "the new customers are distinguishable" in drift
    assert "50 new customers (62.5%) are training customers by ID" in drift
