import json
import pickletools

import numpy as np
import pytest
from sklearn.base import clone

from custseg import DataError, ModelFormatError, load_model, save_model
from custseg.persistence import FORMAT_VERSION

from test_pipeline import _pipeline
from conftest import make_customers


@pytest.fixture(scope="module")
def fitted():
    table = make_customers(200, seed=11)
    return _pipeline().fit(table, table["Segment"]), table


def test_round_trip_gives_identical_predictions(fitted, tmp_path):
    seg, table = fitted
    save_model(seg, tmp_path / "m")
    loaded = load_model(tmp_path / "m").pipeline
    np.testing.assert_array_equal(loaded.transform(table), seg.transform(table))
    np.testing.assert_array_equal(loaded.predict(table), seg.predict(table))
    assert loaded.mapping_ == seg.mapping_
    assert loaded.score_table(table).equals(seg.score_table(table))


def _same_params(a, b):
    pa, pb = a.get_params(deep=True), b.get_params(deep=True)
    assert pa.keys() == pb.keys()
    for name in pa:
        if hasattr(pa[name], "get_params"):
            assert type(pa[name]) is type(pb[name]) and pa[name].get_params() == pb[name].get_params(), name
        else:
            assert pa[name] == pb[name], name


def test_loaded_model_is_the_fitted_model(fitted, tmp_path):
    seg, table = fitted
    save_model(seg, tmp_path / "m")
    loaded = load_model(tmp_path / "m").pipeline
    _same_params(loaded, seg)  # nested preprocessor and embedder parameters included
    assert loaded.get_params()["embedder__latent_dim"] == 4
    np.testing.assert_array_equal(loaded.labels_, seg.labels_)
    np.testing.assert_array_equal(loaded.cluster_centers_, seg.cluster_centers_)
    assert loaded.embedder_.latent_dim_ == seg.embedder_.latent_dim_ == 4
    assert loaded.n_features_in_ == seg.n_features_in_ and loaded.inertia_ == seg.inertia_
    _same_params(loaded.embedder_, seg.embedder_)
    _same_params(loaded.preprocessor_, seg.preprocessor_)
    # clone trains the saved configuration, not the defaults
    again, fresh = clone(loaded).fit(table, table["Segment"]), clone(seg).fit(table, table["Segment"])
    assert again.embedder_.latent_dim_ == 4
    np.testing.assert_array_equal(again.transform(table), fresh.transform(table))
    np.testing.assert_array_equal(again.labels_, seg.labels_)


def _is_pickle(data: bytes) -> bool:
    try:
        ops = list(pickletools.genops(data))
    except Exception:
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


def test_no_file_is_a_pickle_and_json_files_are_json(fitted, tmp_path):
    seg, _ = fitted
    folder = save_model(seg, tmp_path / "m")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["autoencoder.json", "autoencoder.safetensors", "clustering.json", "manifest.json",
                     "preprocessor.json", "schema.json", "settings.json"]
    for path in folder.iterdir():
        data = path.read_bytes()
        assert not _is_pickle(data), path.name
        if path.suffix == ".json":
            json.loads(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["versions"]) == {"custseg", "torch", "scikit-learn", "numpy"}


def test_refuses_other_format_version(fitted, tmp_path):
    seg, _ = fitted
    folder = save_model(seg, tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=f"format version {FORMAT_VERSION + 1}"):
        load_model(folder)


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_refuses_damaged_files(fitted, tmp_path, damage):
    seg, _ = fitted
    folder = save_model(seg, tmp_path / "m")
    target = folder / "autoencoder.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "edit":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    with pytest.raises(ModelFormatError, match="autoencoder.safetensors"):
        load_model(folder)


def test_saving_again_replaces_whole_folder_and_refuses_foreign_folder(fitted, tmp_path):
    seg, _ = fitted
    folder = save_model(seg, tmp_path / "m")
    (folder / "stale.txt").write_text("from an earlier run")
    save_model(seg, folder)
    assert not (folder / "stale.txt").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not a model")
    with pytest.raises(DataError, match="refusing to replace it"):
        save_model(seg, foreign)
    assert (foreign / "holiday.jpg").read_bytes() == b"not a model"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
