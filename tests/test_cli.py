"""The command line through its entry point: outputs, reproducibility, errors and help."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_TOML, make_customers
from custseg import __version__
from custseg.cli import main
from test_selection import K_SELECTION_COLUMNS

EXPECTED_RESULTS = {
    "training_history.csv", "clustering_metrics.csv", "k_selection.csv", "training_results.csv",
    "submission.csv", "test_predictions_detailed.csv", "cluster_characteristics.csv", "segment_profiles.csv",
    "segments.md", "report.html", "run_summary.json", "maps.csv", "cluster_segment_crosstab.csv",
    "calibration.csv", "drift.csv", "drift.md", "confidence_by_segment.csv", "uncertain_customers.csv",
    "unusual_customers.csv",
}
EXPECTED_PLOTS = {"training_history.png", "clusters_tsne.png", "clusters_pca.png", "cluster_distribution.png",
                  "optimal_clusters.png", "segment_profiles.png", "reliability.png", "confidence.png", "drift.png"}


def _train(tmp_path, customer_files, fast_config, *extra):
    train, new = customer_files
    return main(["train", "--train", str(train), "--test", str(new), "--config", str(fast_config),
                 "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"),
                 "--quiet", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run of 'custseg train' for the tests that only read its outputs: (folder, files, what it printed)."""
    root = tmp_path_factory.mktemp("trained")
    train, new = root / "train.csv", root / "new.csv"
    make_customers(240, seed=1).to_csv(train, index=False)
    make_customers(60, seed=2, start_id=1200).drop(columns="Segment").to_csv(new, index=False)
    (root / "fast.toml").write_text(FAST_TOML, encoding="utf-8")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _train(root, (train, new), root / "fast.toml") == 0
    return root, (train, new), printed.getvalue()


def test_train_writes_every_output(trained):
    root, customer_files, printed = trained
    results = root / "results"
    assert {p.name for p in results.iterdir() if p.is_file()} == EXPECTED_RESULTS
    assert {p.name for p in (results / "plots").iterdir()} == EXPECTED_PLOTS
    assert "240 customers, 3 clusters" in printed and "mapped accuracy" in printed
    training = pd.read_csv(results / "training_results.csv")
    assert list(training.columns) == ["ID", "True_Segment", "Cluster", "Predicted_Segment", "Confidence",
                                      "Second_Cluster", "Segment_Probability", "Second_Segment", "Novelty",
                                      "Unusual", "Reason"]
    new = pd.read_csv(customer_files[1])
    submission = pd.read_csv(results / "submission.csv")
    assert list(submission.columns) == ["ID", "Segmentation"]
    assert submission["ID"].tolist() == new["ID"].tolist()  # every new row, in input order
    detailed = pd.read_csv(results / "test_predictions_detailed.csv")
    assert list(detailed.columns) == ["ID", "Cluster", "Segment_Name", "Predicted_Segment", "Distance_To_Centroid",
                                      "Reconstruction_Error", "Confidence", "Second_Cluster", "Segment_Probability",
                                      "Second_Segment", "Novelty", "Unusual", "Reason"]
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
    assert list(k_scan.columns) == K_SELECTION_COLUMNS  # the table 'custseg select-k' writes
    assert k_scan["recommended"].sum() == 1


def test_predict_agrees_with_submission(trained, tmp_path):
    root, customer_files, _ = trained
    out = tmp_path / "pred.csv"
    code = main(["predict", "--model", str(root / "models"), "--input", str(customer_files[1]),
                 "--output", str(out)])
    assert code == 0
    predicted = pd.read_csv(out)
    submission = pd.read_csv(root / "results" / "submission.csv")
    assert predicted["Predicted_Segment"].tolist() == submission["Segmentation"].tolist()
    detailed = pd.read_csv(root / "results" / "test_predictions_detailed.csv")
    pd.testing.assert_frame_equal(predicted, detailed)


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every table, figure and text of a results folder (the report and the summary show the run's duration)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.suffix in {".csv", ".png", ".md"}}


def test_same_seed_gives_byte_identical_outputs(trained, tmp_path):
    root, customer_files, _ = trained
    assert _train(tmp_path, customer_files, root / "fast.toml") == 0
    first, second = _outputs(root / "results"), _outputs(tmp_path / "results")
    assert set(first) == set(second) == (EXPECTED_RESULTS - {"run_summary.json", "report.html"}) | {
        f"plots/{name}" for name in EXPECTED_PLOTS}
    for name, data in first.items():
        assert second[name] == data, name
    # settings.json (and so manifest.json) name the output folders, which differ here
    for name in ("autoencoder.safetensors", "autoencoder.json", "clustering.json", "preprocessor.json", "schema.json"):
        assert (root / "models" / name).read_bytes() == (tmp_path / "models" / name).read_bytes()


def test_no_figures_draws_nothing_and_changes_nothing_else(trained, tmp_path, monkeypatch):
    import custseg.report.plots
    import custseg.workflow

    def refuse(*args, **kwargs):
        raise AssertionError("a figure was drawn under --no-figures")

    root, customer_files, _ = trained
    with monkeypatch.context() as patch:  # not drawn and thrown away: not drawn at all
        patch.setattr(custseg.workflow, "render_png", refuse)
        patch.setattr(custseg.report.plots, "render_png", refuse)
        assert _train(tmp_path, customer_files, root / "fast.toml", "--no-figures") == 0
    drawn, plain = _outputs(root / "results"), _outputs(tmp_path / "results")
    assert set(drawn) - set(plain) == {f"plots/{name}" for name in EXPECTED_PLOTS}
    assert not (tmp_path / "results" / "plots").exists()
    for name, data in plain.items():  # every table (the maps' t-SNE coordinates too) and text as with figures
        assert drawn[name] == data, name
    summary = json.loads((tmp_path / "results" / "run_summary.json").read_text(encoding="utf-8"))
    assert summary["settings"]["plots"]["figures"] is False
    for name in ("autoencoder.safetensors", "clustering.json", "preprocessor.json"):
        assert (root / "models" / name).read_bytes() == (tmp_path / "models" / name).read_bytes()
    # the report says why its pictures are absent, and 'custseg report' rebuilds the same page
    page = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "<img" not in page and page.count("trained with <code>--no-figures</code>") == 4
    assert main(["report", "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "report.html").read_text(encoding="utf-8") == page
    # and a report with figures never says they were not drawn
    assert "--no-figures" not in (root / "results" / "report.html").read_text(encoding="utf-8")


def test_a_run_retires_the_earlier_runs_outputs_it_does_not_write(trained, tmp_path):
    # into a copy of a run with figures and a test table: a run without either leaves none of the old
    # run's figures or test scores beside its own model (the user's own file stays)
    root, customer_files, _ = trained
    shutil.copytree(root / "results", tmp_path / "results")
    shutil.copytree(root / "models", tmp_path / "models")
    (tmp_path / "results" / "mine.txt").write_text("my notes", encoding="utf-8")
    train, _ = customer_files
    assert main(["train", "--train", str(train), "--config", str(root / "fast.toml"), "--seed", "8", "--no-figures",
                 "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q"]) == 0
    left = {str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*") if p.is_file()}
    assert not any(name.startswith("plots/") for name in left)
    assert not {"submission.csv", "test_predictions_detailed.csv", "drift.csv", "drift.md"} & left
    assert "mine.txt" in left and (tmp_path / "results" / "mine.txt").read_text(encoding="utf-8") == "my notes"
    assert main(["report", "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results")]) == 0
    assert "<img" not in (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    # --figures turns a config file's "figures = false" back on
    config = tmp_path / "nofig.toml"
    config.write_text(FAST_TOML.replace("[plots]\n", "[plots]\nfigures = false\n"), encoding="utf-8")
    assert main(["train", "--train", str(train), "--config", str(config), "--figures", "--models-dir",
                 str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q"]) == 0
    assert {p.name for p in (tmp_path / "results" / "plots").iterdir()} >= {"training_history.png", "clusters_pca.png"}


def test_other_seed_gives_other_model(trained, tmp_path):
    root, customer_files, _ = trained
    assert _train(tmp_path, customer_files, root / "fast.toml", "--seed", "99", "--no-figures") == 0
    a = (root / "models" / "autoencoder.safetensors").read_bytes()
    b = (tmp_path / "models" / "autoencoder.safetensors").read_bytes()
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


def test_report_command_rebuilds_the_report_train_wrote(trained, tmp_path, capsys):
    root, _, _ = trained
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "results", tmp_path / "results")
    report = tmp_path / "results" / "report.html"
    report.unlink()
    assert main(["report", "--models-dir", str(tmp_path / "models"),
                 "--results-dir", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.strip() == f"Wrote {report}"
    assert report.read_bytes() == (root / "results" / "report.html").read_bytes()


# -- help and usage errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["train"], ["select-k"], ["compare"]])
def test_help_shows_flags_without_a_type_and_keeps_the_defaults(command, capsys):
    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "<bool>" not in text
    if command == ["train"]:
        assert "--no-label " in text and "[default: data/raw/Train.csv]" in text and "[default: 7]" in text
    if not command:
        assert "--debug " in text


@pytest.mark.parametrize("argv, command", [(["train", "--clusters", "many"], "custseg train"),
                                           (["select-k", "--seeds", "x"], "custseg select-k"),
                                           (["nonsense"], "custseg")])
def test_usage_errors_point_to_the_commands_help(argv, command, capsys):
    assert main(argv) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("Error: ") and line.endswith(f"(see '{command} --help')")


MIXED_TOML = FAST_TOML.replace('preset = "reference"', 'preset = "mixed"').replace(
    "[autoencoder]\n", '[autoencoder]\nn_members = 4\nhidden_dims = [8]\nlatent_dim = 3\n')


def test_train_mixed_preset_writes_agreement_and_says_which_preset_ran(tmp_path, customer_files, capsys):
    import json

    config = tmp_path / "mixed.toml"
    config.write_text(MIXED_TOML, encoding="utf-8")
    assert _train(tmp_path, customer_files, config, "--preset", "mixed") == 0
    assert "preset mixed" in capsys.readouterr().out
    results = tmp_path / "results"
    training = pd.read_csv(results / "training_results.csv")
    assert list(training.columns)[:5] == ["ID", "True_Segment", "Cluster", "Predicted_Segment", "Agreement"]
    assert training["Agreement"].between(0, 1).all() and training["Agreement"].max() == 1
    summary = json.loads((results / "run_summary.json").read_text())
    assert summary["preset"] == "mixed" and summary["autoencoder"]["members"] == 4
    assert summary["agreement"]["mean"] == pytest.approx(training["Agreement"].mean())
    assert "mixed-type autoencoder, ensemble of 4" in (results / "report.html").read_text()
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(tmp_path / "models"), "--input", str(customer_files[1]),
                 "--output", str(out)]) == 0
    predicted = pd.read_csv(out)
    assert "Agreement" in predicted.columns
    detailed = pd.read_csv(results / "test_predictions_detailed.csv")
    pd.testing.assert_series_equal(predicted["Agreement"], detailed["Agreement"])


def test_guided_needs_known_segments_and_the_mixed_design(tmp_path, customer_files, capsys):
    config = tmp_path / "mixed.toml"
    config.write_text(MIXED_TOML, encoding="utf-8")
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(customer_files[0]).drop(columns="Segment").to_csv(unlabelled, index=False)
    assert main(["train", "--train", str(unlabelled), "--config", str(config), "--preset", "mixed", "--guided",
                 "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "has no known segments, but guidance (--guided" in err and "Traceback" not in err
    assert main(["train", "--train", str(unlabelled), "--preset", "reference", "--guided",
                 "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "-q"]) == 1
    assert "--guided needs the mixed-type autoencoder" in capsys.readouterr().err
