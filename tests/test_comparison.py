"""The side-by-side comparison of clustering methods, on small customer tables built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_customers
from custseg.cli import main
from custseg.clustering import map_clusters_to_segments
from custseg.evaluation.comparison import SUPERVISED_NAME, compare_methods, comparison_markdown, returning_customers
from custseg.evaluation.methods import METHODS, Method, ReferenceEncoder
from custseg.workflow import write_comparison
from custseg.config import RunConfig
from custseg.exceptions import ConfigError, DataError
from custseg.schema import infer_schema

N_TRAIN = 150


def fast_config() -> RunConfig:
    cfg = RunConfig()
    cfg.autoencoder.max_epochs = 4
    cfg.autoencoder.patience = 2
    cfg.clustering.n_init = 2
    return cfg


@pytest.fixture(scope="module")
def tables():
    """150 customers in 3 planted groups, and a test table with 30 of them back (IDs 1120-1149) plus 20 new ones."""
    train = make_customers(N_TRAIN, seed=4)
    back = train.iloc[120:].drop(columns="Segment")
    new = make_customers(20, seed=5, start_id=5000).drop(columns="Segment")
    test = pd.concat([new.iloc[:10], back, new.iloc[10:]], ignore_index=True)
    schema = infer_schema(train, other_columns=list(test.columns))
    return train, test, schema


#: the ensembles of presets 'mixed' and 'guided', cut to a size that trains in a moment (every method is
#: fitted six times per seed: on every row, then on each of five folds for the held-out scores)
SMALL_ENSEMBLE = {"kind": "mixed", "n_members": 3, "hidden_dims": [8], "max_epochs": 3}


def small_ensembles(patch: pytest.MonkeyPatch) -> None:
    """Presets 'mixed' and 'guided' with :data:`SMALL_ENSEMBLE`'s sizes, their other settings kept."""
    from custseg.config import PRESETS, preset_values

    for name in ("mixed", "guided"):
        autoencoder = {**preset_values(name)["autoencoder"], **SMALL_ENSEMBLE}
        patch.setitem(PRESETS, name, {"autoencoder": autoencoder})


@pytest.fixture(scope="module")
def result(tables):
    train, test, schema = tables
    with pytest.MonkeyPatch.context() as patch:
        small_ensembles(patch)
        return compare_methods(train, schema, test_frame=test, n_clusters=3, seeds=(1, 2), config=fast_config())


# -- the reference space ---------------------------------------------------------------------------------
def test_reference_space_is_standardized_numbers_and_one_hot_categories():
    frame = pd.DataFrame({"Age": [20.0, 40.0, np.nan, 60.0],
                          "Gender": ["Male", "Female", "Male", np.nan],
                          "Spending": ["Low", "High", "Low", "Average"]})
    enc = ReferenceEncoder(numeric=["Age"], categorical=["Gender", "Spending"]).fit(frame)
    assert list(enc.get_feature_names_out()) == ["Age", "Gender=Female", "Gender=Male", "Spending=Average",
                                                 "Spending=High", "Spending=Low"]
    X = enc.transform(frame)
    assert X.shape == (4, 6)
    assert X[:, 1:].sum(axis=1).tolist() == [2, 2, 2, 2]  # one category per column, the missing one imputed
    assert X[3, 1:3].tolist() == [0, 1]  # missing gender -> the mode, Male
    assert X[2, 0] == pytest.approx(X[1, 0])  # missing age -> the median, 40
    assert X[:, 0].mean() == pytest.approx(0) and X[:, 0].std() == pytest.approx(1)
    unseen = enc.transform(pd.DataFrame({"Age": [30.0], "Gender": ["Other"], "Spending": ["High"]}))
    assert unseen[0, 1:3].tolist() == [0, 1]


# -- returning customers --------------------------------------------------------------------------------
def test_returning_customers_match_ids_as_text_and_need_a_known_segment():
    train = pd.DataFrame({"ID": [10.0, 11.0, 12.0, 13.0], "Age": [30.0, 40.0, 50.0, 60.0],
                          "Segment": ["A", "B", np.nan, "D"]})
    test = pd.DataFrame({"ID": ["13", "99", "12", "10", np.nan], "Age": [61.0, 20.0, 51.0, 31.0, 44.0]})
    schema = infer_schema(train, id_column="ID", label_column="Segment")
    found = returning_customers(train, test, schema)
    # 13 and 10 come back with known segments; 12 has none, 99 and the blank ID are new
    assert found.to_dict("list") == {"ID": ["13", "10"], "test_row": [0, 3], "train_row": [3, 0],
                                     "Segment": ["D", "A"]}


def test_no_test_table_means_no_returning_customers(tables):
    train, _, schema = tables
    assert returning_customers(train, None, schema).empty


# -- the comparison ------------------------------------------------------------------------------------------
def test_one_row_per_method_and_seed(result):
    runs = result.runs
    assert len(runs) == (len(METHODS) + 1) * 2
    assert runs["method"].tolist() == [m for m in [*METHODS, SUPERVISED_NAME] for _ in (1, 2)]
    assert runs["seed"].tolist() == [1, 2] * (len(METHODS) + 1)
    assert (runs["kind"] == "clustering").sum() == len(METHODS) * 2
    assert result.summary["method"].tolist() == [*METHODS, SUPERVISED_NAME]


def test_returning_customers_are_counted(result):
    assert result.n_returning == 30
    assert (result.runs["returning_customers"] == 30).all()


def test_metrics_are_in_range_and_present_where_they_apply(result):
    runs = result.runs
    clusterings = runs[runs["kind"] == "clustering"]
    for column in ("own_silhouette", "ref_silhouette", "ari", "nmi", "mapped_accuracy", "returning_accuracy",
                   "held_out_nmi", "held_out_accuracy", "held_out_returning_accuracy", "stability_ari",
                   "fit_seconds"):
        assert clusterings[column].notna().all(), column
    assert clusterings["ref_silhouette"].between(-1, 1).all()
    assert clusterings["mapped_accuracy"].between(0, 1).all()
    ceiling = runs[runs["kind"] != "clustering"]
    assert ceiling[["own_silhouette", "ref_silhouette", "stability_ari"]].isna().all().all()
    # the planted groups are easy: K-Means on the features finds them, the same for every seed
    kmeans = runs[runs["method"] == "kmeans_features"]
    assert (kmeans["ari"] > 0.8).all()
    assert (kmeans["stability_ari"] > 0.99).all()
    assert (ceiling["mapped_accuracy"] > 0.9).all()
    assert (ceiling["held_out_accuracy"] == ceiling["mapped_accuracy"]).all()  # cross-validated already
    # held out, the planted groups are still found: the held-out score measures the method, not the rows
    assert (kmeans["held_out_accuracy"] > 0.9).all()


def test_one_hot_kmeans_is_measured_in_the_reference_space(result):
    onehot = result.runs[result.runs["method"] == "kmeans_onehot"]
    assert np.allclose(onehot["own_silhouette"], onehot["ref_silhouette"])


def test_returning_customers_with_unchanged_attributes_score_as_their_training_rows(tables):
    # the 30 customers come back exactly as they were trained on, so each method's accuracy on them
    # equals its mapped accuracy on those 30 training rows
    train, test, schema = tables
    res = compare_methods(train, schema, test_frame=test, n_clusters=3, seeds=(3,), config=fast_config(),
                          methods=["kmeans_features", "gmm_features"], supervised=False)
    y = train["Segment"].to_numpy().astype(str)
    for name in ("kmeans_features", "gmm_features"):
        fitted = METHODS[name].fit(train, schema, 3, 3, fast_config())
        mapping = map_clusters_to_segments(fitted.labels, y)
        expected = np.mean([mapping[c] == s for c, s in zip(fitted.labels[120:], y[120:])])
        got = res.runs.loc[res.runs["method"] == name, "returning_accuracy"].iloc[0]
        assert got == pytest.approx(expected)


def test_stability_is_the_mean_ari_between_seeds(result):
    summary = result.summary.set_index("method")
    runs = result.runs
    for name in METHODS:
        # with two seeds there is one pair: every seed's value is that pair's ARI
        per_seed = runs.loc[runs["method"] == name, "stability_ari"]
        assert per_seed.nunique() == 1
        assert summary.loc[name, "stability_mean"] == pytest.approx(per_seed.iloc[0])


def test_bad_arguments_are_refused(tables):
    train, test, schema = tables
    with pytest.raises(ConfigError, match="unknown method 'dbscan'"):
        compare_methods(train, schema, methods=["dbscan"], seeds=(1,))
    with pytest.raises(ConfigError, match="distinct seeds"):
        compare_methods(train, schema, seeds=(1, 1))
    unlabelled = infer_schema(train.drop(columns="Segment"))
    with pytest.raises(DataError, match="needs known segments"):
        compare_methods(train.drop(columns="Segment"), unlabelled, seeds=(1,))


def test_written_files(result, tmp_path):
    written = write_comparison(result, tmp_path / "out" / "comparison.csv", dpi=40)
    assert sorted(p.name for p in written) == ["comparison.csv", "comparison.md", "comparison.png"]
    runs = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert len(runs) == len(result.runs)
    md = (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8")
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(METHODS) + 1  # header, rule, one line per method
    assert "the 30 customers of the test table" in md
    assert "(a ceiling, not a clustering)" in md
    with pytest.raises(DataError, match="is a folder"):
        write_comparison(result, tmp_path / "out")
    with pytest.raises(DataError, match="give the CSV file"):
        write_comparison(result, tmp_path / "out" / "comparison.md")


# -- the command -----------------------------------------------------------------------------------------
@pytest.mark.slow  # every method, two seeds, through the command line
def test_compare_command(tmp_path, customer_files, fast_config, capsys, monkeypatch):
    # the command's wiring is checked here (the held-out folds are the module fixture's: with them on, this
    # run fitted every method six times per seed); the full-size ensembles only made it slower
    small_ensembles(monkeypatch)
    train, new = customer_files
    output = tmp_path / "results" / "comparison.csv"
    code = main(["compare", "--train", str(train), "--test", str(new), "--config", str(fast_config),
                 "--clusters", "3", "--seeds", "2", "--output", str(output), "--quiet", "--no-held-out"])
    assert code == 0
    runs = pd.read_csv(output)
    assert set(runs["method"]) == {*METHODS, SUPERVISED_NAME}
    assert len(runs) == 2 * (len(METHODS) + 1)
    # --no-held-out: only the methods that learn from the known segments are scored on held-out folds
    learns = runs["method"].map({name: method.uses_known_segments for name, method in METHODS.items()})
    assert runs.loc[learns.eq(False), "held_out_accuracy"].isna().all()
    assert runs.loc[learns.fillna(True).astype(bool), "held_out_accuracy"].notna().all()
    assert runs["seed"].unique().tolist() == [7, 8]  # the fast config's seed, then the next
    # new.csv has IDs 1200-1259, train.csv 1000-1239
    assert (runs["returning_customers"] == 40).all()
    assert output.with_suffix(".md").exists() and output.with_suffix(".png").exists()
    printed = capsys.readouterr().out
    assert "| Autoencoder + K-Means (custseg) |" in printed


def test_compare_command_rejects_zero_seeds(tmp_path, customer_files, capsys):
    code = main(["compare", "--train", str(customer_files[0]), "--seeds", "0",
                 "--output", str(tmp_path / "comparison.csv")])
    assert code == 1
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("Error: Invalid value for '--seeds': ") and "1" in line
    assert line.endswith("(see 'custseg compare --help')")
    assert not (tmp_path / "comparison.csv").exists()


def test_methods_that_learn_the_segments_are_scored_on_held_out_folds(tables, monkeypatch):
    """A method that memorises the segments would score 1.0 in-sample; held out, it scores what it predicts."""
    from custseg.evaluation.methods import FittedClustering, Method

    train, test, schema = tables
    fits = []

    def memorise(frame, schema, n_clusters, seed, config):
        codes = frame[schema.label_column].astype("category").cat.codes.to_numpy()
        fits.append(len(frame))
        # new customers all land in cluster 0: without the segment there is nothing to go on
        return FittedClustering(labels=codes, space=None, predict=lambda f: np.zeros(len(f), dtype=int))

    monkeypatch.setitem(METHODS, "memorise", Method("memorise", "Memorise", "none", memorise,
                                                    uses_known_segments=True))
    res = compare_methods(train, schema, test_frame=test, n_clusters=3, seeds=(1,), methods=["memorise"],
                          supervised=False, config=fast_config())
    row = res.runs.iloc[0]
    assert row["scoring"] == "held-out (5-fold)"
    assert fits == [N_TRAIN] + [N_TRAIN - N_TRAIN // 5] * 5  # one fit on every row, then one per fold
    largest = train["Segment"].value_counts(normalize=True).iloc[0]
    assert row["mapped_accuracy"] <= largest + 0.05 and row["ari"] == pytest.approx(0.0, abs=1e-9)
    md = comparison_markdown(res)
    assert "**Memorise** (uses known segments; scored held-out (5-fold))" in md


def test_guided_ensemble_is_held_out_and_the_mixed_one_in_sample(result):
    scoring = result.summary.set_index("method")["scoring"]
    assert scoring["guided_ensemble"] == "held-out (5-fold)" and scoring["mixed_ensemble"] == "in-sample"
    assert METHODS["guided_ensemble"].uses_known_segments and not METHODS["mixed_ensemble"].uses_known_segments


def test_unsupervised_methods_are_also_scored_on_held_out_folds(tables, monkeypatch):
    """Every row gets the same 5-fold held-out columns; a method that cannot predict new rows scores chance there."""
    from custseg.evaluation.methods import FittedClustering, Method

    train, test, schema = tables
    fits = []

    def by_row_order(frame, schema, n_clusters, seed, config):
        fits.append(len(frame))
        # in-sample clusters that follow the segments' codes by accident of row order, nothing to predict with
        codes = frame[schema.label_column].astype("category").cat.codes.to_numpy() if schema.label_column in \
            frame else np.zeros(len(frame), dtype=int)
        return FittedClustering(labels=codes, space=None, predict=lambda f: np.zeros(len(f), dtype=int))

    monkeypatch.setitem(METHODS, "row_order", Method("row_order", "Row order", "none", by_row_order))
    res = compare_methods(train, schema, test_frame=test, n_clusters=3, seeds=(1,), methods=["row_order"],
                          supervised=False, config=fast_config())
    row = res.runs.iloc[0]
    assert row["scoring"] == "in-sample" and row["mapped_accuracy"] == pytest.approx(1.0)
    assert fits == [N_TRAIN] + [N_TRAIN - N_TRAIN // 5] * 5
    largest = train["Segment"].value_counts(normalize=True).iloc[0]
    assert row["held_out_accuracy"] <= largest + 0.05 and row["held_out_nmi"] == pytest.approx(0.0, abs=1e-9)
    assert "Held-out accuracy" in comparison_markdown(res)

    fits.clear()
    quick = compare_methods(train, schema, test_frame=test, n_clusters=3, seeds=(1,), methods=["row_order"],
                            supervised=False, config=fast_config(), held_out_folds=False)
    assert fits == [N_TRAIN] and np.isnan(quick.runs.iloc[0]["held_out_accuracy"])
    monkeypatch.setitem(METHODS, "row_order", Method("row_order", "Row order", "none", by_row_order,
                                                     uses_known_segments=True))
    fits.clear()
    learned = compare_methods(train, schema, n_clusters=3, seeds=(1,), methods=["row_order"], supervised=False,
                              config=fast_config(), held_out_folds=False)
    # a method that learns the segments has no other honest score: it stays held-out
    assert len(fits) == 6 and learned.runs.iloc[0]["held_out_accuracy"] == learned.runs.iloc[0]["mapped_accuracy"]


def test_the_reference_autoencoder_method_stays_the_reference_design_under_the_mixed_preset(tables):
    train, _, schema = tables
    mixed = RunConfig.from_preset("mixed")
    fitted = METHODS["autoencoder_kmeans"].fit(train, schema, 3, 1, mixed)
    assert fitted.space.shape == (N_TRAIN, RunConfig.from_preset("reference").autoencoder.latent_dim)


# -- the latent class model (StepMix) ---------------------------------------------------------------------
def test_latent_class_model_is_compared_with_k_classes_that_find_the_planted_groups(tables, result):
    train, _, schema = tables
    assert "latent_class" in METHODS and not METHODS["latent_class"].uses_known_segments
    rows = result.runs[result.runs["method"] == "latent_class"]
    assert rows["seed"].tolist() == [1, 2] and (rows["scoring"] == "in-sample").all()
    assert rows[["ari", "held_out_accuracy", "returning_accuracy", "stability_ari"]].notna().all().all()
    fitted = METHODS["latent_class"].fit(train, schema, 3, 1, fast_config())
    assert sorted(np.unique(fitted.labels)) == [0, 1, 2]
    # the three planted groups differ in age, income, profession and spending: one class each
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(train["Segment"], fitted.labels) > 0.8
    assert (rows["ari"] > 0.8).all()
    # predicting the training rows gives their classes back
    assert np.array_equal(fitted.predict(train.drop(columns="Segment")), fitted.labels)


def test_latent_class_model_same_seed_same_labels(tables):
    train, test, schema = tables
    first = METHODS["latent_class"].fit(train, schema, 4, 5, fast_config())
    second = METHODS["latent_class"].fit(train, schema, 4, 5, fast_config())
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.predict(test), second.predict(test))


def test_latent_class_model_is_scored_held_out_on_customers_it_was_not_fitted_on(tables, monkeypatch):
    train, test, schema = tables
    latent_class = METHODS["latent_class"]
    fitted_ids, predicted_ids = [], []

    def recording(frame, schema, n_clusters, seed, config):
        fitted_ids.append(set(frame["ID"]))
        fit, fitted = len(fitted_ids) - 1, latent_class.fit(frame, schema, n_clusters, seed, config)
        predict = fitted.predict

        def recorded_predict(f):
            predicted_ids.append((fit, set(f["ID"]), schema.label_column in f))
            return predict(f)

        fitted.predict = recorded_predict
        return fitted

    monkeypatch.setitem(METHODS, "latent_class", Method("latent_class", latent_class.label, latent_class.space,
                                                        recording))
    res = compare_methods(train, schema, n_clusters=3, seeds=(1,), methods=["latent_class"], supervised=False,
                          config=fast_config())
    assert [len(ids) for ids in fitted_ids] == [N_TRAIN] + [N_TRAIN - N_TRAIN // 5] * 5
    held_out = [(fit, ids, has_label) for fit, ids, has_label in predicted_ids if fit > 0]
    assert len(held_out) == 5
    for fit, ids, has_label in held_out:
        assert not has_label and not ids & fitted_ids[fit]  # no segment, and no row the fold model saw
    # together the five held-out parts are every training customer once
    assert sorted(i for _, ids, _ in held_out for i in ids) == sorted(train["ID"])
    assert res.runs.iloc[0]["held_out_accuracy"] > 0.8


def _row_autoencoders(monkeypatch, config):
    """The autoencoder settings the mixed and the guided rows fit with ``config``."""
    from custseg.evaluation import methods

    fitted = {}

    class Stop(Exception):
        pass

    def capture(config, schema):
        fitted["autoencoder"] = config.autoencoder
        raise Stop

    monkeypatch.setattr(methods, "build_pipeline", capture)
    train = make_customers(60, seed=2)
    schema = infer_schema(train)
    rows = {}
    for row in ("mixed_ensemble", "guided_ensemble"):
        with pytest.raises(Stop):
            METHODS[row].fit(train, schema, 3, 7, config)
        rows[row] = fitted["autoencoder"]
    return rows["mixed_ensemble"], rows["guided_ensemble"]


@pytest.mark.parametrize("preset", ["mixed", "guided", "reference"])
def test_each_ensemble_row_fits_its_presets_network(monkeypatch, preset):
    """The default settings are preset 'mixed''s: the guided row had then fitted the mixed preset's network
    with a head, not preset 'guided''s, while its label named preset 'guided'."""
    mixed, guided = _row_autoencoders(monkeypatch, RunConfig.from_preset(preset))
    for fitted, expected in ((mixed, "mixed"), (guided, "guided")):
        network = RunConfig.from_preset(expected).autoencoder
        assert (fitted.hidden_dims, fitted.n_members, fitted.max_epochs) == \
            (network.hidden_dims, network.n_members, network.max_epochs), (preset, expected)
    assert mixed.guidance_weight == 0 and guided.guidance_weight == RunConfig.from_preset("guided").autoencoder.guidance_weight


@pytest.mark.parametrize("preset", ["mixed", "guided"])
def test_a_configs_changes_reach_both_ensemble_rows(monkeypatch, preset):
    config = RunConfig.from_preset(preset).with_overrides(autoencoder__n_members=5, autoencoder__max_epochs=3,
                                                          autoencoder__guidance_weight=3.0)
    mixed, guided = _row_autoencoders(monkeypatch, config)
    assert (mixed.n_members, mixed.max_epochs, guided.n_members, guided.max_epochs) == (5, 3, 5, 3)
    assert mixed.hidden_dims == RunConfig.from_preset("mixed").autoencoder.hidden_dims
    assert guided.hidden_dims == RunConfig.from_preset("guided").autoencoder.hidden_dims
    assert (mixed.guidance_weight, guided.guidance_weight) == (0.0, 3.0)


def test_the_guided_row_learns_from_the_segments_even_if_the_guided_preset_has_no_weight(monkeypatch):
    from custseg import config as config_module

    values = dict(config_module.PRESETS["guided"])
    monkeypatch.setitem(config_module.PRESETS, "guided",
                        {**values, "autoencoder": {**values["autoencoder"], "guidance_weight": 0.0}})
    mixed, guided = _row_autoencoders(monkeypatch, RunConfig.from_preset("mixed"))
    assert mixed.guidance_weight == 0 and guided.guidance_weight == config_module.GUIDANCE_WEIGHT
