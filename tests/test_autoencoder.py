import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from torch import nn
from torch.nn import functional as F

from custseg import Autoencoder, AutoencoderEmbedder, ConfigError, NotFittedError
from custseg.embedders.autoencoder import manual_backward, reconstruction_mse, reference_fast_step
from custseg.embedders.training import (FusedAdam, PlateauSchedule, TrainingSettings, fused_adam_supported,
                                       make_adam, train_module)


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
    z = net.encode(torch.randn(5, 9) * 10)
    assert bool((z >= 0).all()) and bool((z == 0).any())  # ReLU bottleneck: clipped at 0


def _masked_forward(net: Autoencoder, x: torch.Tensor, masks) -> torch.Tensor:
    """The reference forward pass written out with given dropout masks (None: no dropout)."""
    layers = [*net.encoder, *net.decoder]
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1:
            x = torch.relu(x)
            if masks is not None and masks[i] is not None:
                x = x * masks[i]
    return x


ARCHITECTURES = [(9, (16, 12), 8, 0.2), (9, (16, 12), 8, 0.0), (5, (), 2, 0.0), (7, (10,), 3, 0.3),
                 (4, (6, 5, 4), 2, 0.1)]


@pytest.mark.parametrize("n_features, hidden, latent, dropout", ARCHITECTURES)
def test_manual_backward_equals_autograd_and_the_module_forward(n_features, hidden, latent, dropout):
    torch.manual_seed(0)
    net = Autoencoder(n_features, hidden, latent, dropout)
    x = torch.randn(32, n_features)
    widths = [*hidden, latent, *reversed(hidden), n_features]
    n_enc = len(hidden) + 1
    masks = [None if (dropout == 0 or i in (n_enc - 1, len(widths) - 1))
             else (torch.rand(32, w) < 1 - dropout).float() / (1 - dropout) for i, w in enumerate(widths)]
    # the written-out forward is the module's: without dropout it gives net(x)
    net.eval()
    torch.testing.assert_close(_masked_forward(net, x, None), net(x), rtol=0, atol=0)
    net.train()
    F.mse_loss(_masked_forward(net, x, masks), x).backward()
    expected = [p.grad.clone() for p in net.parameters()]
    if dropout == 0:  # autograd through net(x) itself gives the same gradients
        net.zero_grad()
        F.mse_loss(net(x), x).backward()
        for got, want in zip([p.grad for p in net.parameters()], expected):
            torch.testing.assert_close(got, want)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        diff = manual_backward(net, x, masks)
    for got, want in zip([p.grad for p in net.parameters()], expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(diff, _masked_forward(net, x, masks).detach() - x)


@pytest.mark.parametrize("n_features, hidden, latent, dropout", ARCHITECTURES)
@pytest.mark.parametrize("rows", [32, 5, 1])
def test_training_step_gives_autograds_gradients_with_the_masks_it_drew(n_features, hidden, latent, dropout, rows):
    """The NumPy step training runs (not only manual_backward) against autograd, dropout included."""
    torch.manual_seed(1)
    net = Autoencoder(n_features, hidden, latent, dropout)
    step = reference_fast_step(net, reconstruction_mse)
    x = torch.randn(40 + rows, n_features)
    step.start_epoch(len(x))
    with torch.no_grad():
        step.step((x[:40],))  # a first batch: the second one reads the masks' later rows
        diff = step.step((x[40:],))
    got = [p.grad.clone() for p in net.parameters()]
    # the masks the step used for the second batch, layer by layer
    masks = [None if drop is None else torch.from_numpy(step.masks[40:, drop[0]:drop[1]].copy())
             for *_, drop in step.plan]
    net.train()
    net.zero_grad()
    F.mse_loss(_masked_forward(net, x[40:], masks), x[40:]).backward()
    for mine, want in zip(got, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diff, (_masked_forward(net, x[40:], masks) - x[40:]).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    if dropout > 0:
        assert any(m is not None and (m == 0).any() for m in masks) or rows == 1


def test_fast_training_is_silent_where_torch_is(recwarn):
    X, y = _data()
    AutoencoderEmbedder(max_epochs=2, random_state=0).fit(X * np.float32(1e34), y)  # products overflow float32
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


class _TanhAutoencoder(Autoencoder):
    def encode(self, x):
        for layer in self.encoder:
            x = torch.tanh(layer(x))
        return x


def test_fast_path_refuses_any_other_module_or_loss():
    net = _TanhAutoencoder(4, (3,), 2, 0.0)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(TypeError, match="reference Autoencoder only, not _TanhAutoencoder"):
        manual_backward(net, torch.randn(8, 4))
    assert reference_fast_step(net, reconstruction_mse) is None
    reference = Autoencoder(4, (3,), 2, 0.0)
    assert reference_fast_step(reference, reconstruction_mse) is not None
    assert reference_fast_step(reference, lambda module, batch: reconstruction_mse(module, batch)) is None


class _TanhEmbedder(AutoencoderEmbedder):
    def _build_module(self, n_features):
        return _TanhAutoencoder(n_features, self.hidden_dims_, self.latent_dim_, float(self.dropout))


def test_a_subclass_trains_through_autograd():
    X, y = _data()
    ae = _TanhEmbedder(max_epochs=15, dropout=0.0, random_state=0).fit(X, y)
    z = ae.transform(X)
    assert z.min() < 0  # tanh, not the reference's ReLU, produced the codes
    assert ae.history_["val_loss"].iloc[-1] < 0.5 * ae.history_["val_loss"].iloc[0]


def test_fast_path_and_autograd_train_the_same_network():
    X, y = _data()
    kw = dict(max_epochs=3, dropout=0.0, random_state=0)  # without dropout no random mask tells them apart
    fast = AutoencoderEmbedder(**kw).fit(X, y)
    slow = AutoencoderEmbedder(fast_backward=False, **kw).fit(X, y)
    np.testing.assert_allclose(fast.transform(X), slow.transform(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.history_["val_loss"], slow.history_["val_loss"], rtol=1e-4)


def test_trainer_takes_any_loss_and_extra_tensors_and_reports_each_epoch():
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    target = (x @ torch.tensor([[1.0], [-2.0], [0.5]])).squeeze(1)
    net = nn.Linear(3, 1)

    def l1(module, batch):
        features, labels = batch
        err = (module(features).squeeze(1) - labels).abs()
        return {"loss": err.mean(), "max": err.max()}

    seen = []
    result = train_module(net, (x[:160], target[:160]), (x[160:], target[160:]), l1,
                          TrainingSettings(learning_rate=0.05, max_epochs=40, patience=40), progress=seen.append)
    hist = result.history
    assert list(hist.columns) == ["epoch", "loss", "val_loss", "max", "val_max", "lr"]
    assert [r["epoch"] for r in seen] == hist["epoch"].tolist() == list(range(1, 41))
    assert hist["val_loss"].iloc[-1] < 0.2 * hist["val_loss"].iloc[0]
    # the best epoch's weights are back in place
    with torch.no_grad():
        val = float(l1(net, (x[160:], target[160:]))["loss"])
    assert val == pytest.approx(hist["val_loss"].min(), rel=1e-6)
    assert result.best_epoch == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])


def test_fused_adam_only_where_torch_has_it_for_cpu():
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    assert fused_adam_supported() == ((major, minor) >= (2, 4))
    opt = make_adam([nn.Parameter(torch.zeros(2))], 0.01)
    assert isinstance(opt, FusedAdam if fused_adam_supported() else torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 0.01


@pytest.mark.skipif(not fused_adam_supported(), reason="this torch has no fused Adam kernel for CPU")
@pytest.mark.parametrize("shapes", [[(5, 3), (3,), (4,)], [(50,)]])  # several tensors; one flat buffer
def test_fused_adam_gives_torch_adams_weights_bit_for_bit(shapes):
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(*shape)) for shape in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    mine, reference = FusedAdam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01, fused=True)
    for step in range(30):
        grads = [torch.randn_like(p) for p in ours]
        for params in (ours, theirs):
            for i, (p, g) in enumerate(zip(params, grads)):
                # the last parameter gets no gradient on some steps: Adam leaves it (and its step count) alone
                p.grad = None if (i == 2 and step % 3 == 0) else g.clone()
        if step == 20:  # a plateau halves the rate
            mine.param_groups[0]["lr"] = reference.param_groups[0]["lr"] = 0.005
        mine.step()
        reference.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    mine.zero_grad()
    assert all(p.grad is None for p in ours)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        FusedAdam(torch.zeros(3))


@pytest.mark.parametrize("seed", range(6))
def test_plateau_schedule_is_torchs_reduce_lr_on_plateau(seed):
    rng = np.random.default_rng(seed)
    # losses that improve, stall, wobble by less than the threshold and jump: every branch of the rule
    losses = np.cumsum(rng.choice([-0.01, -5e-5, 0.0, 3e-5, 0.02], size=80, p=[0.3, 0.2, 0.2, 0.2, 0.1])) + 1
    patience, factor, min_lr = int(rng.integers(0, 4)), float(rng.choice([0.5, 0.1])), float(rng.choice([1e-6, 2e-3]))
    ours = make_adam([nn.Parameter(torch.zeros(1))], 0.01)
    schedule = PlateauSchedule(ours, factor=factor, patience=patience, min_lr=min_lr)
    theirs = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, mode="min", factor=factor, patience=patience,
                                                           threshold=1e-4, threshold_mode="abs", min_lr=min_lr)
    rates = []
    for loss in losses:
        schedule.step(loss)
        reference.step(loss)
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]
        rates.append(ours.param_groups[0]["lr"])
    assert len(set(rates)) > 1  # the rule did reduce the rate


@pytest.mark.skipif(not fused_adam_supported(), reason="without the fused CPU kernel the trainers use torch.optim.Adam")
def test_training_does_not_import_torch_dynamo():
    """torch.optim's optimizers import torch._dynamo when built (1.4 s); the trainers do not build one."""
    code = ("import sys, numpy as np\n"
            "from custseg.embedders.autoencoder import AutoencoderEmbedder\n"
            "from custseg.embedders.mixed import MixedAutoencoderEmbedder\n"
            "X = np.random.default_rng(0).normal(size=(64, 4))\n"
            "AutoencoderEmbedder(max_epochs=2, random_state=0).fit(X)\n"
            "AutoencoderEmbedder(max_epochs=2, random_state=0, fast_backward=False).fit(X)\n"
            "MixedAutoencoderEmbedder(n_members=2, max_epochs=2, random_state=0).fit(X)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
    b = AutoencoderEmbedder(max_epochs=3, random_state=np.int64(1)).fit(X, y)
    c = AutoencoderEmbedder(max_epochs=3, random_state=2).fit(X, y)
    assert np.array_equal(a.transform(X), b.transform(X))
    assert not np.array_equal(a.transform(X), c.transform(X))


def test_random_state_none_is_fresh_and_a_random_state_instance_is_accepted():
    X, y = _data(n=100)
    kw = dict(max_epochs=1, hidden_dims=(4,), latent_dim=2)

    def weights(embedder):  # not the latent features: a ReLU bottleneck of 2 can be all zeros for two fits
        return np.concatenate([p.detach().numpy().ravel() for p in embedder.module_.parameters()])

    first = AutoencoderEmbedder(**kw).fit(X, y)
    second = AutoencoderEmbedder(**kw).fit(X, y)
    assert not np.array_equal(weights(first), weights(second))
    a = AutoencoderEmbedder(random_state=np.random.RandomState(5), **kw).fit(X, y).transform(X)
    b = AutoencoderEmbedder(random_state=np.random.RandomState(5), **kw).fit(X, y).transform(X)
    np.testing.assert_array_equal(a, b)


def test_numpy_integers_are_valid_sizes_and_learned_sizes_survive_set_params():
    X, y = _data(n=100)
    ae = AutoencoderEmbedder(max_epochs=1, hidden_dims=(np.int64(6),), latent_dim=np.int64(3), random_state=0)
    ae.fit(X, y)
    assert ae.latent_dim_ == 3 and ae.hidden_dims_ == (6,)
    Z = ae.transform(X)
    ae.set_params(latent_dim=5)  # a parameter, not what the fitted network is
    np.testing.assert_allclose(ae.decode(Z), ae.reconstruct(X), rtol=1e-5, atol=1e-6)
    assert len(ae.get_feature_names_out()) == 3


def test_refuses_missing_and_empty_input():
    X, y = _data(n=50)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        AutoencoderEmbedder(max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="0 sample"):
        AutoencoderEmbedder(max_epochs=1).fit(np.zeros((0, 4)))


def test_encode_decode_reconstruct_and_error():
    X, y = _data()
    ae = AutoencoderEmbedder(max_epochs=3, latent_dim=4, random_state=0).fit(X, y)
    Z = ae.encode(X)
    assert Z.shape == (len(X), 4)
    np.testing.assert_allclose(ae.decode(Z), ae.reconstruct(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ae.reconstruction_error(X), ((ae.reconstruct(X) - X) ** 2).mean(axis=1), rtol=1e-5)
    assert list(ae.get_feature_names_out()) == [f"latent_{i}" for i in range(4)]
    with pytest.raises(ValueError, match="X has 5 features, but AutoencoderEmbedder is expecting 9"):
        ae.encode(X[:, :5])
    with pytest.raises(ValueError, match="latent_dim_=4"):
        ae.decode(Z[:, :3])


def test_sklearn_contract():
    ae = AutoencoderEmbedder(latent_dim=5, random_state=3)
    assert clone(ae).get_params() == ae.get_params()
    with pytest.raises(NotFittedError):
        ae.transform(np.zeros((2, 9)))
    with pytest.raises(ConfigError, match="The 'latent_dim' parameter of AutoencoderEmbedder must be an int in the "
                                          r"range \[1, inf\). Got 0 instead."):
        AutoencoderEmbedder(latent_dim=0).fit(np.zeros((10, 3)))
    with pytest.raises(ConfigError, match="'hidden_dims' parameter"):
        AutoencoderEmbedder(hidden_dims=(4, 0)).fit(np.zeros((10, 3)))


def test_state_round_trip_reproduces_encoding():
    X, y = _data()
    ae = AutoencoderEmbedder(max_epochs=3, random_state=0).fit(X, y)
    meta, weights = ae.get_state()
    again = AutoencoderEmbedder.from_state(meta, weights)
    np.testing.assert_array_equal(again.encode(X), ae.encode(X))
    assert again.get_params() == ae.get_params()
    assert again.best_epoch_ == ae.best_epoch_
    pd.testing.assert_frame_equal(again.history_, ae.history_)


def test_latent_features_do_not_depend_on_the_other_rows_scored_with_them():
    # Streamed scoring cuts a table into chunks of any size: a customer's numbers must be the
    # same bits whichever rows share its call (float32 kernels round differently by batch shape).
    rng = np.random.default_rng(3)
    X = rng.normal(size=(9000, 5)).astype("float32")
    emb = AutoencoderEmbedder(hidden_dims=(8,), latent_dim=3, max_epochs=2, random_state=0).fit(X[:500])
    whole = emb.transform(X)
    pieces = np.concatenate([emb.transform(X[i:i + 7]) for i in range(0, 70, 7)])
    assert np.array_equal(pieces, whole[:70])
    assert np.array_equal(emb.transform(X[4095:4099]), whole[4095:4099])
    assert np.array_equal(emb.reconstruction_error(X[8990:]), emb.reconstruction_error(X)[8990:])
