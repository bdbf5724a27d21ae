"""Settings: one place that merges a file, a preset and the command line, and checks every value once."""

from __future__ import annotations

import math

import pytest

from custseg.config import PRESETS, SHIPPED_TEST, RunConfig, load_config, max_threads, preset_values, register_preset
from custseg.exceptions import ConfigError

NAMES = {"n_clusters": "--clusters", "seed": "--seed", "no_label": "--no-label", "label_column": "--label-column"}


def test_overrides_are_laid_over_the_settings_and_checked():
    base = RunConfig.from_dict({"data": {"na_values": ["?"]}, "clustering": {"n_init": 3}})
    cfg = base.with_overrides(n_clusters=4, seed=9, na_values=["unknown", "?"], models_dir=None)
    assert (cfg.clustering.n_clusters, cfg.seed, cfg.clustering.n_init) == (4, 9, 3)
    assert cfg.data.na_values == ["?", "unknown"]  # added to the file's tokens, once each
    assert cfg.models_dir == "models"  # None means "not given"
    assert base.clustering.n_clusters == 7 and base.seed == 42  # a copy: the original is unchanged


def test_the_shipped_test_table_goes_with_the_shipped_training_table_only():
    assert RunConfig().data.test == SHIPPED_TEST
    assert RunConfig().with_overrides(train="mine.csv").data.test is None
    assert RunConfig().with_overrides(train="mine.csv", test="new.csv").data.test == "new.csv"
    # the same rule for a config file, and for overrides over a file that names its own test table
    from_file = RunConfig.from_dict({"data": {"train": "mine.csv", "test": "theirs.csv"}})
    assert from_file.with_overrides(train="other.csv").data.test == "theirs.csv"
    assert RunConfig.from_dict({"data": {"train": "mine.csv"}}).data.test is None
    assert RunConfig.from_dict({"data": {"test": ""}}).data.test is None


def test_no_label_turns_inference_off_and_clears_the_label_column():
    cfg = RunConfig.from_dict({"data": {"label_column": "Tier"}}).with_overrides(no_label=True)
    assert cfg.data.infer_label is False and cfg.data.label_column is None
    with pytest.raises(ConfigError, match="^--no-label and --label-column contradict each other; give one of them$"):
        RunConfig().with_overrides(no_label=True, label_column="Tier", names=NAMES)


def test_override_errors_name_the_option_the_user_gave():
    with pytest.raises(ConfigError, match=r"^--clusters must be an int >= 1 and <= 100000\. Got 0 instead; "
                                          r"give the number of segments, e\.g\. --clusters 5$"):
        RunConfig().with_overrides(n_clusters=0, names=NAMES)
    with pytest.raises(ConfigError, match=r"^the command line: setting 'seed' must be an int >= 0 and <= 4294967295"):
        RunConfig().with_overrides(seed=-1)
    with pytest.raises(ConfigError, match="unknown setting 'clusters'"):
        RunConfig().with_overrides(clusters=3)
    assert RunConfig().with_overrides(autoencoder__latent_dim=3).autoencoder.latent_dim == 3


@pytest.mark.parametrize("section, key, value, expected", [
    ("autoencoder", "learning_rate", math.inf, "a finite number > 0 and <= 10. Got inf"),
    ("autoencoder", "learning_rate", 1e30, "<= 10. Got 1e+30"),
    ("autoencoder", "min_lr", math.inf, "a finite number >= 0"),
    ("autoencoder", "dropout", 1.0, ">= 0 and < 1. Got 1.0"),
    ("autoencoder", "hidden_dims", [8, 0], "a list of integers >= 1. Got 0"),
    ("plots", "tsne_perplexity", math.nan, "a finite number > 0"),
    ("plots", "tsne_perplexity", 0.0, "> 0 and <= 10000. Got 0.0"),
    ("plots", "dpi", 0, "an int >= 10 and <= 1200. Got 0"),
    ("k_selection", "silhouette_sample", -1, "an int >= 0. Got -1"),
    ("k_selection", "n_resamples", 0, "an int >= 1 and <= 1000. Got 0"),
    ("clustering", "n_init", 0, "an int >= 1"),
    ("clustering", "n_clusters", True, "an int >= 1"),
    ("clustering", "n_clusters", 2.0, "an int >= 1"),
    ("data", "numeric", "Age", "a list of strings. Got 'Age'"),
    ("monitoring", "unusual_percentile", 100.0, "a finite number > 0 and < 100. Got 100.0"),
    ("monitoring", "unusual_percentile", 0, "a finite number > 0 and < 100. Got 0"),
    ("monitoring", "unusual_percentile", math.nan, "a finite number > 0 and < 100. Got nan"),
])
def test_every_bad_value_is_one_line_naming_the_file_and_the_setting(section, key, value, expected):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({section: {key: value}}, source="mine.toml")
    message = str(info.value)
    assert message.startswith(f"mine.toml: setting '{section}.{key}' must be ")
    assert expected in message and "\n" not in message


def test_thread_counts_are_limited_by_the_machine():
    assert RunConfig.from_dict({"autoencoder": {"n_threads": max_threads()}}).autoencoder.n_threads == max_threads()
    with pytest.raises(ConfigError, match=rf"'autoencoder.n_threads' must be an int >= 1 and <= {max_threads()} "
                                          r"\(four per core of this machine\)\. Got 100000"):
        RunConfig.from_dict({"autoencoder": {"n_threads": 100_000}})


def test_setting_an_attribute_is_checked_too():
    cfg = RunConfig()
    cfg.clustering.n_clusters = 5
    with pytest.raises(ConfigError, match=r"^settings: setting 'clustering.n_clusters' must be an int >= 1"):
        cfg.clustering.n_clusters = 0
    with pytest.raises(ConfigError, match=r"'seed' must be an int >= 0 and <= 4294967295\. Got 4294967296"):
        cfg.seed = 2**32
    assert cfg.clustering.n_clusters == 5 and cfg.seed == 42


def test_k_max_below_k_min_names_both():
    with pytest.raises(ConfigError, match=r"'k_selection.k_max' must be an int >= 5 \(k_selection.k_min\)\. Got 4"):
        RunConfig.from_dict({"k_selection": {"k_min": 5, "k_max": 4}})


def test_unknown_keys_are_reported_together_with_hints(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[autoencoder]\nlatent_dims = 3\nlearning_rte = 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(
        f"{path}: unknown setting 'autoencoder.latent_dims' (did you mean 'autoencoder.latent_dim'?), "
        "'autoencoder.learning_rte' (did you mean 'autoencoder.learning_rate'?)")


def test_settings_survive_a_round_trip_through_their_dict():
    cfg = RunConfig.from_dict({"seed": 3, "autoencoder": {"hidden_dims": [8, 4]}, "data": {"ordinal": {"S": ["a"]}}})
    assert cfg.autoencoder.hidden_dims == (8, 4)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


# -- presets --------------------------------------------------------------------------------------------------
def test_the_reference_preset_is_packaged_and_is_the_defaults():
    assert "reference" in PRESETS
    assert RunConfig.from_preset("reference") == RunConfig()
    assert RunConfig.from_dict(preset_values("reference")) == RunConfig()


def test_a_registered_preset_lies_under_a_config_that_names_it(tmp_path):
    register_preset("tiny-test", {"autoencoder": {"latent_dim": 3, "max_epochs": 5}, "clustering": {"n_clusters": 4}})
    try:
        path = tmp_path / "mine.toml"
        path.write_text('preset = "tiny-test"\n[autoencoder]\nmax_epochs = 7\n', encoding="utf-8")
        cfg = load_config(path)
        assert cfg.preset == "tiny-test"
        assert (cfg.autoencoder.latent_dim, cfg.autoencoder.max_epochs, cfg.clustering.n_clusters) == (3, 7, 4)
        # a run's settings name their preset, and read back to the same settings
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
    finally:
        PRESETS.pop("tiny-test")


def test_bad_presets_are_refused_where_they_are_defined_or_named():
    with pytest.raises(ConfigError, match=r"preset 'broken': setting 'autoencoder.latent_dim' must be an int >= 1"):
        register_preset("broken", {"autoencoder": {"latent_dim": 0}})
    assert "broken" not in PRESETS
    with pytest.raises(ConfigError, match=r"mine.toml: unknown preset 'refrence' \(did you mean 'reference'\?\)"):
        RunConfig.from_dict({"preset": "refrence"}, source="mine.toml")


def test_the_mixed_and_guided_presets_hold_the_measured_ensembles():
    from custseg.config import GUIDANCE_WEIGHT

    mixed = RunConfig.from_preset("mixed").autoencoder
    assert (mixed.kind, mixed.n_members, mixed.hidden_dims, mixed.latent_dim, mixed.max_epochs) == \
        ("mixed", 40, (32,), 8, 10)
    assert (mixed.categorical_loss, mixed.learning_rate, mixed.batch_size, mixed.guidance_weight) == \
        ("mse", 0.005, 256, 0.0)
    guided = RunConfig.from_preset("guided").autoencoder
    assert guided.kind == "mixed" and guided.hidden_dims == (64, 32) and guided.guidance_weight == GUIDANCE_WEIGHT
    # a run that names no preset gets the mixed ensemble; RunConfig() is the base every preset is laid over
    from custseg.config import DEFAULT_PRESET, run_config

    assert DEFAULT_PRESET == "mixed"
    for cfg in (RunConfig.from_preset(), RunConfig.from_dict({}), run_config()):
        assert cfg.preset == "mixed" and cfg.autoencoder == RunConfig.from_preset("mixed").autoencoder
    assert RunConfig().preset == "reference" and RunConfig().autoencoder.kind == "reference"


def test_run_config_lays_preset_guided_and_overrides_together(tmp_path):
    from custseg.config import run_config

    assert run_config(preset="mixed", seed=3).seed == 3
    guided = run_config(guided=True)  # no preset named: the guided ensemble
    assert guided.preset == "guided" and guided.autoencoder.guidance_weight == 2.0
    mixed_guided = run_config(preset="mixed", guided=True)
    assert mixed_guided.preset == "mixed" and mixed_guided.autoencoder.guidance_weight == 2.0
    with pytest.raises(ConfigError, match="--guided needs the mixed-type autoencoder, but preset 'reference'"):
        run_config(preset="reference", guided=True)
    path = tmp_path / "c.toml"
    path.write_text('preset = "mixed"\n[autoencoder]\nn_members = 5\n', encoding="utf-8")
    assert run_config(path).autoencoder.n_members == 5
    assert run_config(path, preset="mixed").autoencoder.n_members == 5
    with pytest.raises(ConfigError, match="names preset 'mixed' but --preset gives 'reference'"):
        run_config(path, preset="reference")
    # --guided with a file that names no preset: preset 'guided' (as without a file), the file's settings on top;
    # it had been the mixed preset's network with a head
    plain = tmp_path / "plain.toml"
    plain.write_text("seed = 7\n[autoencoder]\nn_members = 5\n", encoding="utf-8")
    guided_file = run_config(plain, guided=True)
    assert guided_file.preset == "guided" and guided_file.seed == 7 and guided_file.autoencoder.n_members == 5
    assert guided_file.autoencoder.hidden_dims == RunConfig.from_preset("guided").autoencoder.hidden_dims
    assert run_config(path, guided=True).preset == "mixed"  # a file naming its preset keeps it
    assert run_config(plain).preset == "mixed"


def test_ensemble_settings_on_the_reference_design_are_refused():
    with pytest.raises(ConfigError, match="autoencoder.n_members applies to the mixed-type autoencoder only"):
        RunConfig.from_dict({"preset": "reference", "autoencoder": {"n_members": 3}})
    with pytest.raises(ConfigError, match="autoencoder.kind"):
        RunConfig.from_dict({"autoencoder": {"kind": "deep"}})
