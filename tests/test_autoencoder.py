import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from custseg import Autoencoder, AutoencoderEmbedder, NotFittedError
from custseg.embedders.autoencoder import manual_backward


def _data(n=400, d=9, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, d)) + 0.1 * rng.normal(size=(n, d))
    y = np.where(latent[:, 0] > 0, "A", "B")
    return X.astype("float32"), y


def test_reference_architecture():
    net = Autoencoder(9)
    widths = [(l.in_features, l.out_features) for l in [*net.encoder, *net.decoder]]
    assert widths == [(9, 16), (16, 12), (12, 8), (8, 12), (12, 16), (16, 9)]
    assert net.dropout == 0.2
    net.eval()
    z = net.encode(torch.randn(5, 9))
    assert z.shape == (5, 8) and bool((z >= 0).all())  # ReLU bottleneck


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_manual_backward_equals_autograd(dropout):
    torch.manual_seed(0)
    net = Autoencoder(9, (16, 12), 8, dropout)
    x = torch.randn(32, 9)
    sizes = [16, 12, 8, 12, 16, 9]
    masks = [None if (dropout == 0 or i in (2, 5)) else (torch.rand(32, w) < 0.8).float() / 0.8
             for i, w in enumerate(sizes)]

    def forward(h):
        for i, layer in enumerate([*net.encoder, *net.decoder]):
            h = layer(h)
            if i < 5:
                h = torch.relu(h)
                if masks[i] is not None:
                    h = h * masks[i]
        return h

    nn.functional.mse_loss(forward(x), x).backward()
    expected = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        diff = manual_backward(net, x, masks)
    for got, want in zip([p.grad for p in net.parameters()], expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(diff, forward(x).detach() - x)


def test_training_reduces_loss_and_restores_best_weights():
    X, y = _data()
    ae = AutoencoderEmbedder(max_epochs=40, patience=5, random_state=0).fit(X, y)
    hist = ae.history_
    assert list(hist.columns) == ["epoch", "loss", "val_loss", "mae", "val_mae", "lr"]
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    assert ae.best_epoch_ == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    # the weights in use are those of the best epoch: recomputing the validation loss gives its value
    idx = np.sort(ae._split(len(X), y, 0)[1])
    err = np.mean((ae.reconstruct(X[idx]) - X[idx]) ** 2)
    assert err == pytest.approx(hist["val_loss"].min(), rel=1e-5)


def test_early_stopping_and_learning_rate_schedule():
    X, y = _data()
    # a learning rate this large makes the validation loss stall at once
    ae = AutoencoderEmbedder(max_epochs=100, patience=6, lr_patience=2, learning_rate=0.5, min_lr=0.1,
                             random_state=0).fit(X, y)
    hist = ae.history_
    assert ae.stopped_early_ and len(hist) < 100
    assert len(hist) - ae.best_epoch_ == 6  # stopped after exactly `patience` epochs without improvement
    lrs = hist["lr"].to_numpy()
    assert np.all(np.diff(lrs) <= 0) and lrs.min() >= 0.1 and lrs[-1] < 0.5
    assert set(np.round(lrs, 6)) <= {0.5, 0.25, 0.125, 0.1}


def test_validation_split_is_stratified():
    y = np.array(["A"] * 300 + ["B"] * 100)
    ae = AutoencoderEmbedder(validation_fraction=0.2)
    train_idx, val_idx = ae._split(400, y, 0)
    assert len(val_idx) == 80 and len(set(train_idx) & set(val_idx)) == 0
    assert (y[val_idx] == "B").sum() == 20


def test_same_seed_same_weights_other_seed_differs_and_global_rng_untouched():
    X, y = _data()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = AutoencoderEmbedder(max_epochs=3, random_state=1).fit(X, y)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = AutoencoderEmbedder(max_epochs=3, random_state=1).fit(X, y)
    c = AutoencoderEmbedder(max_epochs=3, random_state=2).fit(X, y)
    assert np.array_equal(a.transform(X), b.transform(X))
    assert not np.array_equal(a.transform(X), c.transform(X))


def test_encode_decode_reconstruct_and_error():
    X, y = _data()
    ae = AutoencoderEmbedder(max_epochs=3, latent_dim=4, random_state=0).fit(X, y)
    Z = ae.encode(X)
    assert Z.shape == (len(X), 4)
    np.testing.assert_allclose(ae.decode(Z), ae.reconstruct(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ae.reconstruction_error(X), ((ae.reconstruct(X) - X) ** 2).mean(axis=1), rtol=1e-5)
    assert list(ae.get_feature_names_out()) == [f"latent_{i}" for i in range(4)]
    with pytest.raises(ValueError, match="expects 9"):
        ae.encode(X[:, :5])


def test_sklearn_contract():
    ae = AutoencoderEmbedder(latent_dim=5, random_state=3)
    assert clone(ae).get_params() == ae.get_params()
    with pytest.raises(NotFittedError):
        ae.transform(np.zeros((2, 9)))
    with pytest.raises(Exception, match="'latent_dim' parameter"):
        AutoencoderEmbedder(latent_dim=0).fit(np.zeros((10, 3)))


def test_state_round_trip_reproduces_encoding():
    X, y = _data()
    ae = AutoencoderEmbedder(max_epochs=3, random_state=0).fit(X, y)
    meta, weights = ae.get_state()
    again = AutoencoderEmbedder.from_state(meta, weights)
    np.testing.assert_array_equal(again.encode(X), ae.encode(X))
    assert again.best_epoch_ == ae.best_epoch_ and len(again.history_) == len(ae.history_)
