"""The mixed-type autoencoder: its input encoding, its losses, guidance, batched members, JSON state."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from custseg.clustering import ConsensusKMeans
from custseg.embedders.mixed import (BatchedAutoencoder, MixedAutoencoderEmbedder, MixedInputEncoder,
                                     reconstruction_loss)
from custseg.exceptions import ConfigError, NotFittedError, SchemaError

from conftest import make_customers

ROLES = {"numeric": ["Age", "Income", "Family_Size"], "categorical": ["Gender", "Profession", "Spending"]}


def small(**kw) -> MixedAutoencoderEmbedder:
    params = dict(hidden_dims=(16,), latent_dim=3, max_epochs=15, batch_size=64, learning_rate=0.01,
                  random_state=0, **ROLES)
    params.update(kw)
    return MixedAutoencoderEmbedder(**params)


@parametrize_with_checks([MixedAutoencoderEmbedder(max_epochs=2, batch_size=16, random_state=0),
                          MixedAutoencoderEmbedder(max_epochs=2, batch_size=16, n_members=3, random_state=0),
                          ConsensusKMeans(n_clusters=3, n_members=1, n_init=2, random_state=0)])
def test_sklearn_contract(estimator, check):
    check(estimator)


# -- the input encoding -------------------------------------------------------------------------------------------
def test_encoder_layout_names_and_values(customers):
    enc = MixedInputEncoder(**ROLES).fit(customers)
    names = list(enc.get_feature_names_out())
    assert names[:3] == ["Age", "Income", "Family_Size"]
    # Age and Profession have missing values in the fixture, so each gets an indicator
    assert names[3:5] == ["missing=Age", "missing=Profession"]
    assert names[5:7] == ["Gender=Female", "Gender=Male"]
    n_professions = customers["Profession"].nunique()
    assert enc.blocks_ == {"numeric": 3, "indicators": 2, "groups": [2, n_professions, 3]}
    X = enc.transform(customers)
    assert X.shape == (len(customers), len(names)) and X.dtype == np.float32
    np.testing.assert_allclose(X[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_array_equal(X[:, 3], customers["Age"].isna().to_numpy())
    # every row has exactly one category per group, missing professions imputed with the mode
    assert (X[:, 5:].sum(axis=1) == 3).all()


def test_encoder_unseen_category_is_all_zeros_and_missing_column_is_named(customers):
    enc = MixedInputEncoder(**ROLES).fit(customers)
    new = customers.head(3).copy()
    new["Profession"] = ["Astronaut", "Doctor", "Doctor"]
    X = enc.transform(new)
    prof = [j for j, n in enumerate(enc.get_feature_names_out()) if n.startswith("Profession=")]
    assert X[0, prof].sum() == 0 and X[1, prof].sum() == 1
    with pytest.raises(SchemaError, match=r"columns are missing: \{'Income'\}"):
        enc.transform(customers.drop(columns="Income"))


@pytest.mark.parametrize("dtype", [object, "category"])
def test_encoder_counts_only_unseen_categories_present(customers, dtype):
    # a categorical column (how a streamed block is typed) counts all its categories, zeros included: those are
    # not unseen categories, and predict had printed "'Female' x0, 'Male' x0" for every column
    enc = MixedInputEncoder(**ROLES).fit(customers)
    seen = customers.head(50).astype({c: dtype for c in ROLES["categorical"]})
    assert enc.unseen_categories(seen) == {}
    new = customers.head(5).copy()
    new["Profession"] = ["Astronaut", "Doctor", "Astronaut", "Doctor", "Chef"]
    new = new.astype({c: dtype for c in ROLES["categorical"]})
    assert enc.unseen_categories(new) == {"Profession": {"Astronaut": 2, "Chef": 1}}


def _column_transformer_output(enc: MixedInputEncoder, table) -> np.ndarray:
    return np.ascontiguousarray(enc.transformer_.transform(enc._input(table)), dtype="float32")


def test_encoding_is_the_column_transformers_bit_for_bit(customers):
    # transform computes the fitted ColumnTransformer's numbers itself (no per-call sklearn checks): the same
    # bytes on the training table, single rows, and awkward new rows (missing everywhere, an unseen category,
    # numbers stored as text, categories stored as numbers and booleans, a row with every value missing)
    train = customers.assign(Flag=[True, False] * (len(customers) // 2), Code=np.arange(len(customers)) % 3)
    enc = MixedInputEncoder(numeric=ROLES["numeric"], categorical=ROLES["categorical"] + ["Flag", "Code"]).fit(train)
    new = train.head(8).astype(object)
    new.loc[0, "Profession"] = "Astronaut"
    new.loc[1, "Age"] = "41"
    new.loc[2, ["Age", "Income", "Family_Size", "Gender", "Profession", "Spending", "Flag", "Code"]] = None
    new.loc[3, "Code"] = 2.0
    new.loc[4, "Gender"] = np.nan
    new.loc[5, "Flag"] = "True"
    # and as a streamed block types them: category columns as pandas categoricals
    categorical = {c: "category" for c in ROLES["categorical"] + ["Flag", "Code"]}
    for table in (train, new, train.iloc[[0]], new.iloc[[2]], new.iloc[[0]], train.astype(categorical),
                  new.astype(categorical)):
        got = enc.transform(table)
        assert got.dtype == np.float32 and got.tobytes() == _column_transformer_output(enc, table).tobytes()
    onehot = enc.transform(new)[:, enc.blocks_["numeric"] + enc.blocks_["indicators"]:]
    # one category per group and row (missing ones take the mode), none for the unseen profession
    assert onehot.sum(axis=1).tolist() == [len(enc.blocks_["groups"]) - 1] + [len(enc.blocks_["groups"])] * 7


def test_encoding_of_the_shipped_tables_is_the_column_transformers(tmp_path):
    from conftest import SHIPPED_TEST, SHIPPED_TRAIN
    from custseg.io.reading import read_table

    train = read_table(SHIPPED_TRAIN).frame
    enc = MixedInputEncoder(numeric=["Age", "Work_Experience", "Family_Size"],
                            categorical=["Gender", "Ever_Married", "Graduated", "Profession", "Spending_Score",
                                         "Var_1"]).fit(train)
    restored = MixedInputEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    for table in (train, read_table(SHIPPED_TEST).frame):
        for e in (enc, restored):
            assert e.transform(table).tobytes() == _column_transformer_output(e, table).tobytes()
            assert e.transform(table.iloc[[5]]).tobytes() == _column_transformer_output(e, table.iloc[[5]]).tobytes()


def test_transform_with_error_is_transform_and_reconstruction_error(customers):
    for kw in ({"n_members": 3}, {"n_members": 2, "categorical_loss": "mse"}):
        emb = small(max_epochs=2, **kw).fit(customers)
        for table in (customers, customers.iloc[[3]]):
            latent, error = emb.transform_with_error(table)
            assert latent.tobytes() == emb.transform(table).tobytes()
            assert error.tobytes() == emb.reconstruction_error(table).tobytes()
            assert latent.shape == (len(table), 3 * kw["n_members"]) and error.shape == (len(table),)


def test_encoder_json_round_trip_gives_the_same_encoding(customers):
    enc = MixedInputEncoder(**ROLES).fit(customers)
    again = MixedInputEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(again.transform(customers), enc.transform(customers))
    assert list(again.get_feature_names_out()) == list(enc.get_feature_names_out())


# -- the losses -------------------------------------------------------------------------------------------------------
def test_reconstruction_loss_is_cross_entropy_per_group_and_squared_error_on_numbers():
    blocks = {"numeric": 1, "indicators": 1, "groups": [3]}
    target = torch.tensor([[2.0, 1.0, 0.0, 1.0, 0.0]])
    output = torch.tensor([[[1.0, 0.5, 0.1, 0.2, 0.3]]])
    got = reconstruction_loss(output, target, blocks)
    squared = (1.0 - 2.0) ** 2
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(0.5), torch.tensor(1.0)))
    ce = float(torch.nn.functional.cross_entropy(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([1])))
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx((squared + bce + ce) / 3, rel=1e-6)
    mse = reconstruction_loss(output, target, blocks, "mse")
    assert float(mse) == pytest.approx(float(((output[0] - target) ** 2).mean()), rel=1e-6)


def test_batched_members_are_independent_networks():
    torch.manual_seed(0)
    net = BatchedAutoencoder(3, 5, (4,), 2)
    x = torch.randn(7, 5)
    out = net(x)
    assert out.shape == (3, 7, 5)
    # member 1 by hand, with its own weights only
    w = [p[1] for p in net.encoder] + [p[1] for p in net.decoder]
    h = torch.relu(x @ w[0] + w[1])
    z = h @ w[2] + w[3]
    h = torch.relu(z @ w[4] + w[5])
    torch.testing.assert_close(out[1], h @ w[6] + w[7])
    # the gradient of member 0's loss leaves member 2's weights alone
    out[0].pow(2).sum().backward()
    assert all(p.grad[2].abs().sum() == 0 for p in net.parameters())
    assert net.decoder[-1].grad[0].abs().sum() > 0  # the output bias always gets a gradient


# -- the estimator ----------------------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_latent_features_separate_the_groups(customers):
    emb = small(max_epochs=60).fit(customers)
    hist = emb.history_
    assert list(hist.columns) == ["epoch", "loss", "reconstruction", "guidance"]
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0] * 0.8
    Z = emb.transform(customers)
    assert Z.shape == (len(customers), 3)
    labels = ConsensusKMeans(n_clusters=3, random_state=0).fit_predict(Z)
    # not 1: the latent space also keeps gender and family size, which are noise here (chance is 0)
    assert adjusted_rand_score(customers["Segment"], labels) > 0.6


def test_same_seed_same_bytes_other_seed_other_weights(customers):
    a = small().fit(customers).transform(customers)
    b = small().fit(customers).transform(customers)
    c = small(random_state=1).fit(customers).transform(customers)
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c)


def test_members_side_by_side_and_each_different(customers):
    emb = small(n_members=4, max_epochs=3).fit(customers)
    per_member = emb.transform_members(customers)
    assert per_member.shape == (4, len(customers), 3)
    wide = emb.transform(customers)
    assert wide.shape == (len(customers), 12)
    np.testing.assert_array_equal(wide[:, 3:6], per_member[1])
    assert not np.allclose(per_member[0], per_member[1])
    assert list(emb.get_feature_names_out()[:4]) == ["member0_latent0", "member0_latent1", "member0_latent2",
                                                     "member1_latent0"]


def test_guidance_uses_known_rows_only_and_helps_predict_them(customers):
    y = customers["Segment"].copy()
    y.iloc[::2] = None  # half the segments unknown
    emb = small(guidance_weight=2.0, max_epochs=30).fit(customers, y)
    assert list(emb.classes_) == ["G0", "G1", "G2"]
    assert emb.history_["guidance"].iloc[-1] < emb.history_["guidance"].iloc[0]
    proba = emb.predict_segment_proba(customers)
    predicted = emb.classes_[proba.argmax(axis=1)]
    unknown = y.isna().to_numpy()
    # rows whose segment was hidden are predicted from what the known rows taught the head
    assert (predicted[unknown] == customers["Segment"].to_numpy()[unknown]).mean() > 0.9
    unsupervised = small().fit(customers, y)
    assert unsupervised.classes_ is None and (unsupervised.history_["guidance"] == 0).all()


def test_guidance_without_labels_is_unsupervised(customers):
    a = small(guidance_weight=1.0).fit(customers).transform(customers)
    b = small().fit(customers).transform(customers)
    assert a.tobytes() == b.tobytes()


def test_fit_ignores_other_columns_and_transform_names_a_missing_one(customers):
    emb = small(max_epochs=2).fit(customers)  # ID and Segment are in the table, not in the roles
    assert list(emb.feature_names_in_) == ["Age", "Income", "Family_Size", "Gender", "Profession", "Spending"]
    with pytest.raises(SchemaError, match=r"columns are missing: \{'Gender'\}"):
        emb.transform(customers.drop(columns="Gender"))


@pytest.mark.parametrize("param, value, expected", [
    ("latent_dim", 0, "an int >= 1"), ("n_members", 1.5, "an int >= 1"), ("guidance_weight", -1, "a float >= 0"),
    ("categorical_loss", "l1", "'cross_entropy' or 'mse'"), ("hidden_dims", (8, 0), "a tuple of ints >= 1"),
])
def test_bad_parameters_are_named(customers, param, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"The '{param}' parameter of MixedAutoencoderEmbedder must be "
                                                    f"{expected}. Got {value!r} instead.")):
        small(**{param: value}).fit(customers)


def test_not_fitted_is_also_sklearns_error(customers):
    from sklearn.exceptions import NotFittedError as SkNotFitted
    with pytest.raises(NotFittedError):
        small().transform(customers)
    with pytest.raises(SkNotFitted):
        small().state_tensors()


def test_json_and_tensors_round_trip_give_the_same_latent_features(customers):
    y = customers["Segment"]
    emb = small(n_members=2, guidance_weight=1.0, max_epochs=3).fit(customers, y)
    tensors = {k: v.clone() for k, v in emb.state_tensors().items()}
    again = MixedAutoencoderEmbedder.from_dict(json.loads(json.dumps(emb.to_dict())), tensors)
    assert again.transform(customers).tobytes() == emb.transform(customers).tobytes()
    np.testing.assert_array_equal(again.predict_segment_proba(customers), emb.predict_segment_proba(customers))
    assert clone(again).get_params() == emb.get_params()


def test_shipped_shape_other_table(tmp_path):
    # a table with only categories still trains (no numeric block)
    frame = make_customers(120, seed=3)[["Gender", "Profession", "Spending"]]
    emb = MixedAutoencoderEmbedder(hidden_dims=(8,), latent_dim=2, max_epochs=2, random_state=0).fit(frame)
    assert emb.encoder_.blocks_["numeric"] == 0
    assert emb.transform(frame).shape == (120, 2)


def test_progress_gets_every_epoch_as_the_history_records_it(customers):
    """`custseg train`'s progress bar follows the ensemble's epochs (it stood at 0 of 10 before)."""
    seen = []
    embedder = small(max_epochs=3, n_members=2, random_state=0).fit(customers.drop(columns=["ID", "Segment"]),
                                                                   progress=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert [r["loss"] for r in seen] == embedder.history_["loss"].tolist()
    # the same fit without a callback learns the same weights
    again = small(max_epochs=3, n_members=2, random_state=0).fit(customers.drop(columns=["ID", "Segment"]))
    assert again.history_.equals(embedder.history_)
