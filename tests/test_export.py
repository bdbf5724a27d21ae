"""The exported ONNX graph scores as the torch model does, run by onnxruntime alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import SHIPPED_TEST, SHIPPED_TRAIN, make_customers, tiny_toml  # noqa: E402
from custseg.cli import main  # noqa: E402
from custseg.io.reading import read_table  # noqa: E402
from custseg.config import load_config  # noqa: E402
from custseg.persistence import load_model, save_model  # noqa: E402
from custseg.workflow import build_pipeline, load_tables  # noqa: E402


def _trained_and_exported(root, settings: str):
    """The model ``settings`` describe, fitted on the shipped Train.csv into ``root / models``, and its ONNX
    export through the CLI at ``root / segmenter.onnx``."""
    (root / "tiny.toml").write_text(settings, encoding="utf-8")
    config = load_config(root / "tiny.toml")
    config.data.train, config.data.test = str(SHIPPED_TRAIN), None
    train, _, schema = load_tables(config)
    # the pipeline and the model folder only: the run's pictures and k scan are not what is tested here
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # as custseg train fits it (two OpenMP threads spin beside the other worker)
        pipeline = build_pipeline(config, schema).fit(train.frame, train.frame[schema.label_column])
    save_model(pipeline, root / "models", schema=schema, settings=config.to_dict())
    assert main(["export", "--model", str(root / "models"), "--onnx", str(root / "segmenter.onnx")]) == 0
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model of the reference design trained on the shipped Train.csv, and its ONNX export."""
    return _trained_and_exported(tmp_path_factory.mktemp("onnx"), tiny_toml(seed=5, n_clusters=4, figures=False))


def _raw_feeds(frame: pd.DataFrame, session) -> dict[str, np.ndarray]:
    """Inputs built with pandas only, as a user of the file without custseg would."""
    feeds = {}
    for given in session.get_inputs():
        col = frame[given.name]
        if given.type == "tensor(float)":
            feeds[given.name] = col.to_numpy(dtype="float32").reshape(-1, 1)
        else:
            feeds[given.name] = col.fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return feeds


@pytest.mark.parametrize("table", [SHIPPED_TRAIN, SHIPPED_TEST], ids=["Train.csv", "Test.csv"])
def test_onnxruntime_alone_gives_identical_clusters_and_latent(exported, table):
    model = load_model(exported / "models")
    loaded = read_table(table)
    latent = model.pipeline.transform(loaded.frame)
    clusters = model.pipeline.predict(loaded.frame)
    session = ort.InferenceSession(str(exported / "segmenter.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, _raw_feeds(pd.read_csv(table), session))))
    assert {"cluster", "distance", "distances", "latent", "reconstruction_error", "segment"} <= set(names)
    np.testing.assert_array_equal(got["cluster"], clusters)
    np.testing.assert_allclose(got["latent"], latent, rtol=0, atol=1e-5)
    assert got["segment"].tolist() == [model.pipeline.mapping_[c] for c in clusters]
    scores = model.pipeline.score_table(loaded.frame)
    np.testing.assert_allclose(got["distance"], scores["Distance_To_Centroid"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["reconstruction_error"], scores["Reconstruction_Error"], rtol=1e-4, atol=1e-6)
    assert got["distances"].shape == (len(loaded.frame), 4)
    np.testing.assert_allclose(got["distances"].min(axis=1), got["distance"])


def _predicted_both_ways(exported_root, table: pd.DataFrame, folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``table`` scored by ``custseg predict`` (the model folder) and ``predict --runtime onnx`` (the export)."""
    table.to_csv(folder / "new.csv", index=False)
    assert main(["predict", "--model", str(exported_root / "models"), "--input", str(folder / "new.csv"),
                 "--output", str(folder / "torch.csv")]) == 0
    assert main(["predict", "--runtime", "onnx", "--model", str(exported_root / "segmenter.onnx"),
                 "--input", str(folder / "new.csv"), "--output", str(folder / "onnx.csv")]) == 0
    torch_out, onnx_out = pd.read_csv(folder / "torch.csv"), pd.read_csv(folder / "onnx.csv")
    assert list(onnx_out.columns) == list(torch_out.columns)
    return torch_out, onnx_out


def test_predict_runtime_onnx_writes_what_predict_writes(exported, tmp_path, capsys):
    new = make_customers(60, seed=8, start_id=990000).drop(columns="Segment")
    shipped = pd.read_csv(SHIPPED_TEST).head(300)
    table = shipped.assign(Profession=shipped["Profession"].where(shipped.index != 3, "Astronaut"))  # unseen
    capsys.readouterr()
    torch_out, onnx_out = _predicted_both_ways(exported, table, tmp_path)
    # both runtimes say what they noticed (the ONNX one used to write the rows without a word)
    said = capsys.readouterr().out
    assert said.count("Unseen categories in Profession (assigned the training mode): 'Astronaut' x1") == 2, said
    pd.testing.assert_frame_equal(onnx_out[["ID", "Cluster", "Predicted_Segment"]],
                                  torch_out[["ID", "Cluster", "Predicted_Segment"]])
    np.testing.assert_allclose(onnx_out["Distance_To_Centroid"], torch_out["Distance_To_Centroid"], rtol=1e-5)
    assert len(new)  # the synthetic table lacks the shipped columns: refused with the CLI's message
    new.to_csv(tmp_path / "other.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--runtime", "onnx", "--model", str(exported / "segmenter.onnx"),
                 "--input", str(tmp_path / "other.csv"), "--output", str(tmp_path / "x.csv")]) == 1
    assert "columns are missing: 'Ever_Married'" in capsys.readouterr().err


def test_runtime_onnx_with_a_model_folder_says_how_to_export(exported, tmp_path, capsys):
    assert main(["predict", "--runtime", "onnx", "--model", str(exported / "models"), "--input", str(SHIPPED_TEST),
                 "--output", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: --runtime onnx scores with an ONNX file") and "custseg export" in err


@pytest.mark.parametrize("content", [b"not an onnx graph at all \x00\xff", b""], ids=["garbage", "empty"])
def test_runtime_onnx_with_a_damaged_file_is_one_line(exported, tmp_path, capsys, content):
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(content)
    assert main(["predict", "--runtime", "onnx", "--model", str(damaged), "--input", str(SHIPPED_TEST),
                 "--output", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {str(damaged)!r} is not a readable ONNX model") and err.count("\n") == 1, err
    assert not (tmp_path / "x.csv").exists()


def test_runtime_onnx_with_a_graph_custseg_did_not_write_says_so(exported, tmp_path, capsys):
    import onnx

    foreign = onnx.load(str(exported / "segmenter.onnx"))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    assert main(["predict", "--runtime", "onnx", "--model", str(tmp_path / "foreign.onnx"), "--input",
                 str(SHIPPED_TEST), "--output", str(tmp_path / "x.csv")]) == 1
    assert "was not written by 'custseg export'" in capsys.readouterr().err


def _only_latent(model):
    kept = [o for o in model.graph.output if o.name == "latent"]
    del model.graph.output[:]
    model.graph.output.extend(kept)


def _metadata(key: str, value: str):
    def change(model):
        for entry in model.metadata_props:
            if entry.key == key:
                entry.value = value
    return change


@pytest.mark.parametrize("change, said", [
    (_only_latent, "is not a whole graph of 'custseg export': it has no output 'cluster', 'distance', "
                   "'reconstruction_error'"),
    (_metadata("custseg_feature_kinds", "{not json"), "its custseg metadata is damaged (JSONDecodeError)"),
    (_metadata("custseg_feature_kinds", '{"Age": "numeric"}'), "its inputs ('Gender', "),
    (_metadata("custseg_feature_kinds", '{"Gender": "categorical", "Ever_Married": "categorical", "Age": '
                                        '"categorical", "Graduated": "categorical", "Profession": "categorical", '
                                        '"Work_Experience": "numeric", "Spending_Score": "categorical", '
                                        '"Family_Size": "numeric", "Var_1": "categorical"}'),
     "are not the columns and types its metadata names"),
    (_metadata("custseg_categories", '{"Gender": 5}'), "its custseg metadata is damaged (TypeError)"),
    (_metadata("custseg_na_values", '"abc"'), "its custseg metadata is damaged (TypeError)"),
], ids=["outputs cut", "metadata not JSON", "metadata names other columns", "a number column read as text",
        "categories not a list", "missing-value tokens not a list"])
def test_runtime_onnx_with_an_altered_graph_is_one_line(exported, tmp_path, capsys, change, said):
    import onnx

    model = onnx.load(str(exported / "segmenter.onnx"))
    change(model)
    onnx.save(model, str(tmp_path / "altered.onnx"))
    assert main(["predict", "--runtime", "onnx", "--model", str(tmp_path / "altered.onnx"), "--input",
                 str(SHIPPED_TEST), "--output", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert said in err and err.startswith("Error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x.csv").exists()


# -- the mixed-type ensemble (the default preset) and its guided variant ------------------------------------
def _mixed_toml(preset: str, members: int, loss: str, latent: int = 4) -> str:
    """Preset ``preset`` made tiny: few members, one small hidden layer, two epochs."""
    return f"""seed = 5
preset = "{preset}"
[autoencoder]
n_members = {members}
hidden_dims = [16]
latent_dim = {latent}
max_epochs = 2
categorical_loss = "{loss}"
[clustering]
n_clusters = 4
n_init = 2
"""


# consensus of members with mse (the presets' loss); guided with the cross-entropy losses (indicators, groups);
# one member, clustered by K-Means instead of a consensus, with 3 latent features (rows of an odd width: a sum over
# a row's contiguous values had depended on its position)
MIXED_KINDS = {"mixed": ("mixed", 3, "mse"), "guided": ("guided", 2, "cross_entropy"),
               "one-member": ("mixed", 1, "mse", 3)}


@pytest.fixture(scope="module", params=list(MIXED_KINDS))
def exported_mixed(request, tmp_path_factory):
    """A tiny mixed-type model trained on the shipped Train.csv, and its ONNX export."""
    return _trained_and_exported(tmp_path_factory.mktemp(f"onnx-{request.param}"),
                                 _mixed_toml(*MIXED_KINDS[request.param]))


@pytest.mark.parametrize("table", [SHIPPED_TRAIN, SHIPPED_TEST], ids=["Train.csv", "Test.csv"])
def test_mixed_model_in_onnxruntime_alone_scores_as_torch(exported_mixed, table):
    pipeline = load_model(exported_mixed / "models").pipeline
    frame = read_table(table).frame
    latent = pipeline.transform(frame)
    scores = pipeline.score_table(frame)
    session = ort.InferenceSession(str(exported_mixed / "segmenter.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, _raw_feeds(pd.read_csv(table), session))))
    np.testing.assert_array_equal(got["cluster"], scores["Cluster"])
    assert got["segment"].tolist() == scores["Predicted_Segment"].tolist()
    np.testing.assert_allclose(got["latent"], latent, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["distance"], scores["Distance_To_Centroid"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["reconstruction_error"], scores["Reconstruction_Error"], rtol=1e-4, atol=1e-6)
    assert got["distances"].shape == (len(frame), 4)
    if pipeline.clusterer_ is None:  # K-Means on the latent features: the nearest centre
        assert "agreement" not in names and "consensus" not in names
        np.testing.assert_allclose(got["distances"].min(axis=1), got["distance"])
    else:
        np.testing.assert_allclose(got["consensus"], pipeline.clusterer_.consensus_space(latent), rtol=0, atol=1e-5)
        # shares of members: the same member clusters give exactly the same numbers
        np.testing.assert_array_equal(got["agreement"], scores["Agreement"])
        assert got["agreement"].min() < 1  # the members disagree somewhere: the comparison above means something
        rows = np.arange(len(frame))
        np.testing.assert_allclose(got["distances"][rows, got["cluster"]], got["distance"], rtol=1e-6, atol=1e-9)


def test_mixed_predict_runtime_onnx_writes_what_predict_writes(exported_mixed, tmp_path):
    shipped = pd.read_csv(SHIPPED_TEST).head(300)
    # an unseen category (all zeros in the one-hot group) and missing values in a column without any in training
    table = shipped.assign(Profession=shipped["Profession"].where(shipped.index != 3, "Astronaut"),
                           Gender=shipped["Gender"].where(shipped.index != 5, None))
    torch_out, onnx_out = _predicted_both_ways(exported_mixed, table, tmp_path)
    same = ["ID", "Cluster", "Predicted_Segment", *(["Agreement"] if "Agreement" in torch_out else [])]
    pd.testing.assert_frame_equal(onnx_out[same], torch_out[same])
    for column in ("Distance_To_Centroid", "Reconstruction_Error"):
        np.testing.assert_allclose(onnx_out[column], torch_out[column], rtol=1e-4, atol=1e-6)


def test_the_same_model_exports_to_the_same_bytes(exported_mixed, tmp_path):
    assert main(["export", "--model", str(exported_mixed / "models"), "--onnx", str(tmp_path / "again.onnx")]) == 0
    assert (tmp_path / "again.onnx").read_bytes() == (exported_mixed / "segmenter.onnx").read_bytes()


def _same_answers_wherever_scored(onnx_path):
    """OnnxSegmenter runs onnxruntime on slices of SESSION_ROWS rows, on one thread or several: a row's
    scores are its own bits whatever slice, position, thread or table size it is scored in."""
    from custseg import export

    segmenter = export.OnnxSegmenter(onnx_path, threads=1)
    frame = read_table(SHIPPED_TRAIN).frame  # 8,068 rows: 16 slices, the last one short
    assert len(frame) > 10 * export.SESSION_ROWS and len(frame) % export.SESSION_ROWS
    alone = segmenter.score(frame)
    side_by_side = export.OnnxSegmenter(onnx_path, threads=2).score(frame)
    pd.testing.assert_frame_equal(side_by_side, alone, check_exact=True)
    for rows in ([0], [5, 4000, 8000], list(range(700, 1300))):  # alone, scattered, across a slice boundary
        part = segmenter.score(frame.iloc[rows].reset_index(drop=True))
        pd.testing.assert_frame_equal(part, alone.iloc[rows].reset_index(drop=True), check_exact=True)
    for shift in (1, 2, 3):  # every row one to three places on: onnxruntime's reductions see other alignments
        shifted = segmenter.score(pd.concat([frame.iloc[:shift], frame], ignore_index=True)).iloc[shift:]
        pd.testing.assert_frame_equal(shifted.reset_index(drop=True), alone, check_exact=True)


def test_onnx_scores_do_not_depend_on_where_a_row_is_scored(exported_mixed):
    _same_answers_wherever_scored(exported_mixed / "segmenter.onnx")


def test_onnx_clusters_are_torchs_for_huge_numbers(exported_mixed):
    """Numbers up to the 1e15 the reader accepts: (|x|^2 - 2 x.c) + |c|^2 then rounds near centres to a tie, which
    scikit-learn's nearest-centre search gives to the first; a ranking without |x|^2 had told them apart."""
    from custseg import export

    pipeline = load_model(exported_mixed / "models").pipeline
    base = read_table(SHIPPED_TEST).frame
    values = [sign * v for v in (1e15, 9e14, 3e14, 1e13) for sign in (1, -1)] + [np.nan]
    grid = np.array(np.meshgrid(values, values, values)).reshape(3, -1).T
    frame = base.iloc[np.arange(len(grid)) % len(base)].reset_index(drop=True)
    frame[["Age", "Work_Experience", "Family_Size"]] = grid
    torch_scores = pipeline.score_table(frame)
    onnx_scores = export.OnnxSegmenter(exported_mixed / "segmenter.onnx").score(frame)
    same = ["Cluster", *(["Agreement"] if "Agreement" in torch_scores else [])]
    pd.testing.assert_frame_equal(onnx_scores[same], torch_scores[same].reset_index(drop=True), check_dtype=False)


def test_the_scoring_session_runs_only_what_the_scores_need(exported_mixed):
    """onnxruntime runs every node of a graph whatever outputs are asked for: OnnxSegmenter's session holds
    the part that computes its columns, not the wide latent features, the consensus space or the distances."""
    import onnx

    from custseg import export

    segmenter = export.OnnxSegmenter(exported_mixed / "segmenter.onnx")
    whole = onnx.load(str(exported_mixed / "segmenter.onnx"))
    assert segmenter.outputs == [o.name for o in whole.graph.output]  # what the file offers, all of it
    scored = [o.name for o in segmenter.session.get_outputs()]
    assert scored == [name for name in export._SCORED if name in segmenter.outputs]
    assert {"latent", "distances"} <= set(segmenter.outputs) - set(scored)


def test_onnx_scores_of_the_reference_model_do_not_depend_on_where_a_row_is_scored(exported):
    _same_answers_wherever_scored(exported / "segmenter.onnx")
