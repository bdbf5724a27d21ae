import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import Pipeline

from custseg import (AutoencoderEmbedder, ConfigError, CustomerPreprocessor, DataError, NotFittedError,
                     SegmentationPipeline, map_clusters_to_segments)
from custseg.clustering import assign_to_centroids, mapping_table

from conftest import make_customers

FEATURES = dict(numeric=["Age", "Income", "Family_Size"], categorical=["Gender", "Profession", "Spending"])


def _pipeline(**kw):
    return SegmentationPipeline(
        preprocessor=CustomerPreprocessor(**FEATURES),
        embedder=AutoencoderEmbedder(max_epochs=30, patience=8, latent_dim=4),
        n_clusters=3, n_init=5, random_state=0, **kw)


def test_recovers_planted_groups_and_maps_them():
    table = make_customers(300, seed=3)
    seg = _pipeline().fit(table, table["Segment"])
    assert adjusted_rand_score(table["Segment"], seg.labels_) > 0.8
    assert sorted(set(seg.mapping_.values())) == ["G0", "G1", "G2"]
    assert np.mean(seg.predict_segment(table) == table["Segment"]) > 0.9


def test_predicting_training_rows_gives_their_training_clusters():
    table = make_customers(200, seed=4)
    seg = _pipeline().fit(table, table["Segment"])
    np.testing.assert_array_equal(seg.predict(table), seg.labels_)


def test_score_table_columns_and_distances():
    table = make_customers(200, seed=5)
    seg = _pipeline().fit(table, table["Segment"])
    scores = seg.score_table(table)
    assert list(scores.columns) == ["Cluster", "Predicted_Segment", "Distance_To_Centroid", "Reconstruction_Error"]
    latent = seg.transform(table)
    expected = np.linalg.norm(latent - seg.cluster_centers_[scores["Cluster"]], axis=1)
    np.testing.assert_allclose(scores["Distance_To_Centroid"], expected, rtol=1e-9, atol=1e-9)
    features = seg.preprocessor_.transform(table)
    # the error predict writes: the decoded latent features against the (float64) features ...
    np.testing.assert_array_equal(scores["Reconstruction_Error"],
                                  np.mean((seg.embedder_.decode(latent) - features) ** 2, axis=1))
    # ... which the embedder's own error (against its float32 input) matches to float32 precision
    np.testing.assert_allclose(scores["Reconstruction_Error"], seg.embedder_.reconstruction_error(features), rtol=1e-5)


def test_without_labels_there_is_no_mapping():
    table = make_customers(150, seed=6)
    seg = _pipeline().fit(table.drop(columns="Segment"))
    assert seg.mapping_ is None
    assert "Predicted_Segment" not in seg.score_table(table).columns
    with pytest.raises(NotFittedError, match="without known segments"):
        seg.predict_segment(table)


def test_partly_labelled_rows_map_on_labelled_rows_only():
    table = make_customers(240, seed=7)
    y = table["Segment"].copy()
    y.iloc[::3] = None
    seg = _pipeline().fit(table, y)
    assert set(seg.mapping_) == {0, 1, 2}
    assert seg.mapping_ == map_clusters_to_segments(seg.labels_[y.notna()], y[y.notna()])


def test_any_sklearn_transformer_can_replace_the_autoencoder():
    table = make_customers(200, seed=8)
    seg = SegmentationPipeline(preprocessor=CustomerPreprocessor(**FEATURES), embedder=PCA(3),
                               n_clusters=3, n_init=3, random_state=0).fit(table, table["Segment"])
    features = CustomerPreprocessor(**FEATURES).fit_transform(table)
    pca = PCA(3).fit(features)
    np.testing.assert_allclose(seg.transform(table), pca.transform(features), atol=1e-10)
    # PCA has no reconstruction_error: the pipeline takes it from inverse_transform
    expected = np.mean((pca.inverse_transform(pca.transform(features)) - features) ** 2, axis=1)
    np.testing.assert_allclose(seg.score_table(table)["Reconstruction_Error"], expected, atol=1e-10)


def test_sklearn_contract():
    seg = _pipeline()
    copy = clone(seg)
    assert copy.get_params()["n_clusters"] == 3 and copy.embedder is not seg.embedder
    seg.set_params(embedder__latent_dim=2)
    assert seg.embedder.latent_dim == 2
    with pytest.raises(NotFittedError):
        seg.predict(make_customers(10))
    with pytest.raises(ConfigError, match=r"'n_clusters' parameter of SegmentationPipeline must be an int in the "
                                          r"range \[1, inf\). Got 0 instead"):
        _pipeline().set_params(n_clusters=0).fit(make_customers(20))
    with pytest.raises(DataError, match="fewer than the 3 clusters"):
        _pipeline().fit(make_customers(2))


def test_numpy_sizes_random_states_and_transformer_clusterer_roles():
    table = make_customers(120, seed=12)
    seg = _pipeline().set_params(n_clusters=np.int64(3), embedder__latent_dim=np.int64(2))
    labels = seg.fit_predict(table)
    np.testing.assert_array_equal(labels, seg.labels_)
    np.testing.assert_array_equal(seg.fit_transform(table), seg.transform(table))
    assert seg.transform(table).shape[1] == 2 and list(seg.get_feature_names_out()) == ["latent_0", "latent_1"]
    a = _pipeline().set_params(random_state=np.random.RandomState(3)).fit(table).transform(table)
    b = _pipeline().set_params(random_state=np.random.RandomState(3)).fit(table).transform(table)
    np.testing.assert_array_equal(a, b)
    fresh = [_pipeline().set_params(random_state=None).fit(table).transform(table) for _ in range(2)]
    assert not np.array_equal(*fresh)


def test_usable_inside_an_sklearn_pipeline():
    table = make_customers(150, seed=9)
    pipe = Pipeline([("segment", _pipeline())]).fit(table, table["Segment"])
    np.testing.assert_array_equal(pipe.predict(table), pipe.named_steps["segment"].labels_)
    alone = _pipeline().fit(table, table["Segment"])
    np.testing.assert_array_equal(pipe.predict(table), alone.labels_)


def test_mapping_ties_and_table():
    assert map_clusters_to_segments([0, 0, 1, 1], ["B", "A", "C", "C"]) == {0: "A", 1: "C"}
    table = mapping_table(np.array([0, 0, 0, 1]), np.array(["A", "A", "B", "B"]), {0: "A", 1: "B"})
    assert table["Purity"].round(3).tolist() == [0.667, 1.0]
    labels, dist = assign_to_centroids(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [3.0, 0.0]]))
    assert labels.tolist() == [0, 1] and dist.tolist() == [0.0, 4.0]


def test_kmeans_on_a_sample_still_assigns_every_customer():
    # the large-table path: centres from 120 of 300 customers, every customer assigned to the nearest one
    table = make_customers(300, seed=3)
    seg = _pipeline(cluster_sample=120).fit(table, table["Segment"])
    assert len(seg.labels_) == 300
    labels, dist = assign_to_centroids(seg.transform(table), seg.cluster_centers_)
    np.testing.assert_array_equal(seg.labels_, labels)
    assert seg.inertia_ == pytest.approx(float((dist ** 2).sum()))
    assert adjusted_rand_score(table["Segment"], seg.labels_) > 0.8
    full = _pipeline().fit(table, table["Segment"])
    assert not np.array_equal(seg.cluster_centers_, full.cluster_centers_)  # the sample changed the fit


def test_fit_sample_fits_the_embedder_on_those_rows_and_embeds_every_row():
    table = make_customers(300, seed=3)
    seg = _pipeline(fit_sample=120).fit(table, table["Segment"])
    rows = np.sort(np.random.RandomState(0).choice(300, 120, replace=False))
    features = CustomerPreprocessor(**FEATURES).fit_transform(table)  # the preprocessor learns from every row
    alone = AutoencoderEmbedder(max_epochs=30, patience=8, latent_dim=4, random_state=0).fit(
        features[rows], table["Segment"].to_numpy(dtype=object)[rows])
    np.testing.assert_array_equal(seg.transform(table), alone.transform(features).astype("float64"))
    assert len(seg.labels_) == 300
    # every row embedded and assigned: the clusters are the nearest centres of all 300 rows' latent features
    np.testing.assert_array_equal(seg.labels_, assign_to_centroids(seg.transform(table), seg.cluster_centers_)[0])


def test_cluster_sample_fits_a_consensus_clusterer_on_those_rows_and_assigns_every_row(monkeypatch):
    import custseg.pipeline
    from custseg.clustering import ConsensusKMeans, cluster_means

    monkeypatch.setattr(custseg.pipeline, "FIT_SLICE_ROWS", 7)  # every row assigned in 43 slices, the last short
    table = make_customers(300, seed=3)
    embedder = AutoencoderEmbedder(max_epochs=5, latent_dim=2, random_state=0)
    full = _pipeline(clusterer=ConsensusKMeans(n_members=2)).set_params(embedder=embedder)
    seg = clone(full).set_params(cluster_sample=150).fit(table)
    latent = seg.transform(table)
    rows = np.sort(np.random.RandomState(0).choice(300, 150, replace=False))
    alone = ConsensusKMeans(n_clusters=3, n_members=2, random_state=0).fit(latent[rows])
    np.testing.assert_array_equal(seg.clusterer_.consensus_centers_, alone.consensus_centers_)
    labels, agreement = alone.predict_with_agreement(latent)
    np.testing.assert_array_equal(seg.labels_, labels)
    np.testing.assert_array_equal(seg.agreement_, agreement)
    np.testing.assert_allclose(seg.cluster_centers_, cluster_means(latent, labels, 3), rtol=1e-12, atol=1e-12)
    assert seg.inertia_ == pytest.approx(float(((latent - seg.cluster_centers_[labels]) ** 2).sum()), rel=1e-9)
    assert len(seg.labels_) == len(seg.agreement_) == 300
    assert not np.array_equal(seg.clusterer_.consensus_centers_, clone(full).fit(table).clusterer_.consensus_centers_)


def test_only_large_tables_take_the_sampled_path():
    from custseg.config import RunConfig, run_config
    from custseg.workflow import LARGE_FIT_SAMPLE, LARGE_TABLE_ROWS, large_table_plan

    assert large_table_plan(LARGE_TABLE_ROWS, RunConfig()) is None
    plan = large_table_plan(1_000_000, RunConfig())
    assert plan["autoencoder_sample_rows"] == LARGE_FIT_SAMPLE == LARGE_TABLE_ROWS
    assert plan["kmeans_sample_rows"] < 1_000_000
    assert "every row" in plan["note"] and "1,000,000 rows" in plan["note"] and "K-Means" in plan["note"]
    ensemble = large_table_plan(1_000_000, run_config(preset="mixed"))
    assert "(40 members) trained on 50,000 random rows" in ensemble["note"]
    assert "consensus clustering" in ensemble["note"]


@pytest.mark.parametrize("preset", ["reference", "mixed"])
def test_a_large_table_trains_on_samples_and_scores_every_row_as_predict_does(preset, tmp_path, monkeypatch):
    """The large-table path end to end, its thresholds made small: 300 rows, samples of 120."""
    import json

    import pandas as pd

    import custseg.workflow as workflow
    from conftest import tiny_toml
    from custseg.cli import main

    import custseg.pipeline

    for name, value in [("LARGE_TABLE_ROWS", 200), ("LARGE_FIT_SAMPLE", 120), ("LARGE_CLUSTER_SAMPLE", 120),
                        ("LARGE_SILHOUETTE_SAMPLE", 100), ("LARGE_PLOT_POINTS", 100), ("FIT_SLICE_ROWS", 64)]:
        monkeypatch.setattr(workflow, name, value)
    monkeypatch.setattr(custseg.pipeline, "FIT_SLICE_ROWS", 64)  # every row assigned in 5 slices
    from custseg.pipeline import sample_rows

    table = make_customers(300, seed=5)
    # a profession only customers outside the fitted sample have: still a known category of the model
    table.loc[np.setdiff1d(np.arange(300), sample_rows(300, 120, 2))[:3], "Profession"] = "Astronaut"
    table.to_csv(tmp_path / "train.csv", index=False)
    settings = tiny_toml(seed=2, figures=False).replace('preset = "reference"', f'preset = "{preset}"')
    (tmp_path / "tiny.toml").write_text(settings.replace("[autoencoder]\n", "[autoencoder]\nn_members = 3\n")
                                        if preset == "mixed" else settings, encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--config", str(tmp_path / "tiny.toml"),
                 "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q"]) == 0
    summary = json.loads((tmp_path / "results" / "run_summary.json").read_text(encoding="utf-8"))
    assert summary["large_table"]["autoencoder_sample_rows"] == 120 and summary["large_table"]["rows"] == 300
    assert "trained on 120 random rows" in summary["large_table"]["note"]
    assert "computed on samples" in (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    from custseg.persistence import load_model

    fitted = load_model(tmp_path / "models").pipeline
    assert (fitted.fit_sample, fitted.cluster_sample) == (120, 120)
    trained = pd.read_csv(tmp_path / "results" / "training_results.csv", dtype=str, keep_default_na=False)
    assert [int(i) for i in trained["ID"]] == table["ID"].tolist()
    assert not trained["Reason"].str.contains("unseen category").any()
    # every row was assigned and scored by the fitted model: what predict gives for the same customers
    assert main(["predict", "--model", str(tmp_path / "models"), "--input", str(tmp_path / "train.csv"),
                 "--output", str(tmp_path / "scored.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv", dtype=str, keep_default_na=False)
    shared = [c for c in trained.columns if c in scored.columns and c != "ID"]
    assert {"Cluster", "Predicted_Segment", "Confidence", "Novelty", "Unusual", "Reason"} <= set(shared)
    assert preset == "reference" or "Agreement" in shared
    pd.testing.assert_frame_equal(scored[shared], trained[shared])
    assert trained["Cluster"].nunique() == 3
    maps = pd.read_csv(tmp_path / "results" / "maps.csv", dtype={"ID": str})
    assert maps["ID"].tolist() == trained["ID"].tolist() and maps[["pca_1", "pca_2"]].notna().all().all()
    assert summary["metrics"]["calinski_harabasz"] > 0 and 0 < summary["metrics"]["silhouette"] <= 1


@pytest.mark.parametrize("ensemble", [False, True])
def test_the_clustering_space_in_slices_is_the_whole_tables(ensemble, monkeypatch):
    import custseg.workflow as workflow
    from custseg.clustering import ConsensusKMeans

    monkeypatch.setattr(workflow, "FIT_SLICE_ROWS", 23)
    table = make_customers(200, seed=4)
    seg = _pipeline(clusterer=ConsensusKMeans(n_members=2) if ensemble else None).set_params(
        embedder=AutoencoderEmbedder(max_epochs=3, latent_dim=4, random_state=0)).fit(table)
    whole, name = workflow.clustering_space(seg, seg.transform(table), random_state=0)
    sliced, sliced_name = workflow._clustering_space_in_slices(seg, table, np.arange(200), random_state=0)
    assert (name, sliced_name) == (("consensus",) * 2 if ensemble else ("latent",) * 2)
    np.testing.assert_allclose(sliced, whole, atol=1e-9)
    # on a sample: the principal components are the sample's, every row projected on them
    rows = np.arange(0, 200, 3)
    sampled, _ = workflow._clustering_space_in_slices(seg, table, rows, random_state=0)
    if ensemble:
        wide = seg.clusterer_.consensus_space(seg.transform(table))
        expected = workflow._consensus_pca(0).fit(wide[rows]).transform(wide)
    else:
        expected = whole
    np.testing.assert_allclose(sampled, expected, atol=1e-9)


def test_sliced_centres_and_inertia_stay_exact_far_from_the_origin(monkeypatch):
    # per-slice moments merged (not sums of squares minus squared sums, which cancel at 1e7)
    import custseg.pipeline
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import FunctionTransformer

    from custseg.clustering import cluster_means

    monkeypatch.setattr(custseg.pipeline, "FIT_SLICE_ROWS", 16)
    rng = np.random.default_rng(0)
    X = 1e7 + np.vstack([rng.normal(0, 1, (50, 3)), rng.normal(10, 1, (50, 3))])
    seg = SegmentationPipeline(preprocessor="passthrough", embedder=FunctionTransformer(),
                               clusterer=KMeans(n_init=3, random_state=0), n_clusters=2, cluster_sample=60,
                               random_state=0).fit(X)
    assert sorted(np.bincount(seg.labels_)) == [50, 50]
    centres = cluster_means(X, seg.labels_, 2)
    np.testing.assert_allclose(seg.cluster_centers_, centres, rtol=1e-14)
    assert seg.inertia_ == pytest.approx(float(((X - centres[seg.labels_]) ** 2).sum()), rel=1e-9)


@pytest.mark.parametrize("params, named", [({"fit_sample": True}, "'fit_sample'"), ({"cluster_sample": 2}, "n_clusters"),
                                           ({"cluster_sample": 0}, "'cluster_sample'")])
def test_sample_sizes_are_checked(params, named):
    table = make_customers(60, seed=1)
    with pytest.raises(ConfigError, match=named):
        _pipeline(**params).fit(table)


def test_guidance_that_finds_no_known_segments_in_the_sample_says_so(tmp_path, monkeypatch, capsys):
    # a large table whose few known segments all lie outside the rows the ensemble is fitted on
    import pandas as pd

    import custseg.workflow as workflow
    from custseg.cli import main
    from custseg.pipeline import sample_rows

    for name, value in [("LARGE_TABLE_ROWS", 200), ("LARGE_FIT_SAMPLE", 120), ("LARGE_CLUSTER_SAMPLE", 120),
                        ("LARGE_SILHOUETTE_SAMPLE", 100), ("LARGE_PLOT_POINTS", 100)]:
        monkeypatch.setattr(workflow, name, value)
    table = make_customers(300, seed=5).rename(columns={"Segment": "Tier"})
    outside = np.setdiff1d(np.arange(300), sample_rows(300, 120, 3))
    table["Tier"] = pd.Series(None, index=table.index, dtype=object)
    table.loc[outside[:10], "Tier"], table.loc[outside[10:20], "Tier"] = "A", "B"
    table.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "g.toml").write_text(
        'seed = 3\npreset = "guided"\n[autoencoder]\nn_members = 3\nhidden_dims = [8]\nmax_epochs = 2\n'
        '[clustering]\nn_clusters = 3\nn_init = 2\n[k_selection]\nk_max = 4\nn_init = 1\n'
        '[plots]\nfigures = false\ntsne_max_points = 60\n', encoding="utf-8")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--config", str(tmp_path / "g.toml"),
                 "--label-column", "Tier", "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"),
                 "-q"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "Note: guidance learned nothing" in err and "trained as an unguided one" in err


def test_scored_tables_keep_their_column_types_and_an_unfitted_pipeline_says_so():
    import pandas as pd

    from custseg.io.reading import table_from_frame
    from custseg.workflow import predict_table

    table = make_customers(200, seed=8)
    seg = SegmentationPipeline(preprocessor=CustomerPreprocessor(**FEATURES), embedder=PCA(3),
                               n_clusters=3, n_init=3, random_state=0).fit(table, table["Segment"])
    text_dtype = pd.Series(["a"]).dtype  # what pandas gives text: these tables have always had it
    assert seg.score_table(table)["Predicted_Segment"].dtype == text_dtype
    loaded = table_from_frame(table.drop(columns=["Segment"]), "t")
    scored = predict_table(seg, None, loaded, segment_names={0: "a", 1: "b", 2: "c"}).table
    assert scored["Segment_Name"].dtype == text_dtype and list(scored.columns[:3]) == ["ID", "Cluster", "Segment_Name"]
    with pytest.raises(NotFittedError, match="not fitted yet"):  # not an AttributeError from inside
        predict_table(SegmentationPipeline(), None, loaded)
