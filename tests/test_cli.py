import subprocess
import sys

import pandas as pd
import pytest

from custseg import __version__
from custseg.cli import main

EXPECTED_RESULTS = {
    "training_history.csv", "clustering_metrics.csv", "k_selection.csv", "training_results.csv",
    "submission.csv", "test_predictions_detailed.csv", "cluster_characteristics.csv", "segment_profiles.csv",
    "segments.md", "report.html", "run_summary.json", "maps.csv", "cluster_segment_crosstab.csv",
}
EXPECTED_PLOTS = {"training_history.png", "clusters_tsne.png", "clusters_pca.png", "cluster_distribution.png",
                  "optimal_clusters.png"}


def _train(tmp_path, customer_files, fast_config, *extra):
    train, new = customer_files
    return main(["train", "--train", str(train), "--test", str(new), "--config", str(fast_config),
                 "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"),
                 "--quiet", *extra])


def test_train_writes_every_output(tmp_path, customer_files, fast_config, capsys):
    assert _train(tmp_path, customer_files, fast_config) == 0
    results = tmp_path / "results"
    assert {p.name for p in results.iterdir() if p.is_file()} == EXPECTED_RESULTS
    assert {p.name for p in (results / "plots").iterdir()} == EXPECTED_PLOTS
    printed = capsys.readouterr().out
    assert "240 customers, 3 clusters" in printed and "mapped accuracy" in printed
    training = pd.read_csv(results / "training_results.csv")
    assert list(training.columns) == ["ID", "True_Segment", "Cluster", "Predicted_Segment"]
    new = pd.read_csv(customer_files[1])
    submission = pd.read_csv(results / "submission.csv")
    assert list(submission.columns) == ["ID", "Segmentation"]
    assert submission["ID"].tolist() == new["ID"].tolist()  # every new row, in input order
    detailed = pd.read_csv(results / "test_predictions_detailed.csv")
    assert list(detailed.columns) == ["ID", "Cluster", "Segment_Name", "Predicted_Segment", "Distance_To_Centroid",
                                      "Reconstruction_Error"]
    chars = pd.read_csv(results / "cluster_characteristics.csv")
    assert chars["Size"].sum() == 240 and chars["Share"].sum() == pytest.approx(1)
    assert {"Age_mean", "Age_median", "Profession_top", "Profession_top_share"} <= set(chars.columns)
    # original units: mean ages lie in the planted 25-65 range, not around 0
    assert chars["Age_mean"].between(20, 70).all()
    metrics = pd.read_csv(results / "clustering_metrics.csv").set_index("metric")["value"]
    assert set(metrics.index) == {"silhouette", "davies_bouldin", "calinski_harabasz", "inertia", "ari", "nmi",
                                  "mapped_accuracy"}
    k_scan = pd.read_csv(results / "k_selection.csv")
    assert k_scan["k"].tolist() == [2, 3, 4]


def test_predict_agrees_with_submission(tmp_path, customer_files, fast_config, capsys):
    assert _train(tmp_path, customer_files, fast_config) == 0
    out = tmp_path / "pred.csv"
    code = main(["predict", "--model", str(tmp_path / "models"), "--input", str(customer_files[1]),
                 "--output", str(out)])
    assert code == 0
    predicted = pd.read_csv(out)
    submission = pd.read_csv(tmp_path / "results" / "submission.csv")
    assert predicted["Predicted_Segment"].tolist() == submission["Segmentation"].tolist()
    detailed = pd.read_csv(tmp_path / "results" / "test_predictions_detailed.csv")
    pd.testing.assert_frame_equal(predicted, detailed)


def test_same_seed_gives_byte_identical_csvs(tmp_path, customer_files, fast_config):
    assert _train(tmp_path / "a", customer_files, fast_config) == 0
    assert _train(tmp_path / "b", customer_files, fast_config) == 0
    csvs = sorted(p.relative_to(tmp_path / "a" / "results")
                  for p in (tmp_path / "a" / "results").rglob("*") if p.suffix in {".csv", ".png", ".md"})
    assert len(csvs) >= 15
    for rel in csvs:
        assert (tmp_path / "a" / "results" / rel).read_bytes() == (tmp_path / "b" / "results" / rel).read_bytes(), rel
    # settings.json (and so manifest.json) name the output folders, which differ here
    for name in ("autoencoder.safetensors", "autoencoder.json", "clustering.json", "preprocessor.json", "schema.json"):
        assert (tmp_path / "a" / "models" / name).read_bytes() == (tmp_path / "b" / "models" / name).read_bytes()


def test_other_seed_gives_other_model(tmp_path, customer_files, fast_config):
    assert _train(tmp_path / "a", customer_files, fast_config) == 0
    assert _train(tmp_path / "b", customer_files, fast_config, "--seed", "99") == 0
    a = (tmp_path / "a" / "models" / "autoencoder.safetensors").read_bytes()
    b = (tmp_path / "b" / "models" / "autoencoder.safetensors").read_bytes()
    assert a != b


def test_wrong_path_is_one_error_line(tmp_path, capsys):
    code = main(["train", "--train", str(tmp_path / "nope.csv"), "--results-dir", str(tmp_path / "r"),
                 "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [f"Error: file {str(tmp_path / 'nope.csv')!r} does not exist; check the path"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


def test_predict_with_missing_model_folder(tmp_path, customer_files, capsys):
    code = main(["predict", "--model", str(tmp_path / "none"), "--input", str(customer_files[1]),
                 "--output", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and "run 'custseg train' first" in err


def test_python_m_and_version():
    done = subprocess.run([sys.executable, "-m", "custseg", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"custseg {__version__}"


def test_report_command_rebuilds_report(tmp_path, customer_files, fast_config, capsys):
    assert _train(tmp_path, customer_files, fast_config) == 0
    report = tmp_path / "results" / "report.html"
    report.unlink()
    assert main(["report", "--models-dir", str(tmp_path / "models"),
                 "--results-dir", str(tmp_path / "results")]) == 0
    assert report.is_file() and "Segment" in report.read_text()
