"""The autoencoder: a plain torch module and the sklearn-style estimator that trains it.

:class:`Autoencoder` is an ``nn.Module`` and nothing more. :class:`AutoencoderEmbedder`
trains it with the generic trainer of :mod:`custseg.embedders.training` (Adam, MSE
loss, early stopping on validation loss with the best weights restored, learning rate
reduced on plateaus, a stratified validation split) and
exposes ``transform`` (= :meth:`~AutoencoderEmbedder.encode`), ``decode``,
``reconstruct`` and per-row ``reconstruction_error``. Defaults are the reference
design: 9 -> 16 -> 12 -> 8 (ReLU) -> 12 -> 16 -> 9 (linear), dropout 0.2.

Training runs with a fixed number of torch threads (1 by default: for a network this
small, a second thread costs more in synchronisation than it gains) and inside a
forked torch RNG, so ``random_state`` fixes the result without touching the caller's
global torch seed.

Training goes through autograd, except for one case: the exact reference
:class:`Autoencoder` class (not a subclass) with the MSE loss has a hand-written
backward pass (:func:`manual_backward`; training runs it in NumPy on the same memory,
several times faster than autograd for a network this small: ``benchmarks/bench_train.py``
times both).
It is used only when ``type(module) is Autoencoder``; anything else (a subclass with
another activation, another loss) trains through autograd, and :func:`manual_backward`
refuses modules it does not cover.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError
from sklearn.utils.validation import check_array, validate_data
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from ..exceptions import ConfigError, NotFittedError
from .inference import run_in_tiles, torch_threads
from .training import TrainingSettings, train_module

__all__ = ["Autoencoder", "AutoencoderEmbedder", "manual_backward", "reconstruction_mse", "reference_fast_step"]

_add_reduce = np.add.reduce

HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "mae", "val_mae", "lr"]


class Autoencoder(nn.Module):
    """Symmetric fully connected autoencoder.

    Encoder: ``n_features -> hidden_dims... -> latent_dim`` with ReLU after every layer
    (the bottleneck included) and dropout after every hidden layer but the bottleneck.
    Decoder: the mirror image, ending in a linear layer of ``n_features`` outputs.

    ``forward`` calls ``torch.nn.functional`` directly instead of nesting one module
    per activation: for a network this small, per-module call overhead is a third of
    the training time.
    """

    def __init__(self, n_features: int, hidden_dims: tuple[int, ...] = (16, 12), latent_dim: int = 8,
                 dropout: float = 0.2):
        super().__init__()
        enc = [n_features, *hidden_dims, latent_dim]
        dec = [latent_dim, *reversed(hidden_dims), n_features]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:]))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))
        self.dropout = float(dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.encoder) - 1
        for i, layer in enumerate(self.encoder):
            x = F.relu(layer(x))
            if i < last and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            z = layer(z)
            if i < last:
                z = F.relu(z)
                if self.dropout > 0:
                    z = F.dropout(z, self.dropout, self.training)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def manual_backward(module: Autoencoder, x: torch.Tensor, masks: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """One training forward pass of ``module`` on batch ``x`` with the gradients of the
    MSE reconstruction loss written into each parameter's ``.grad``; returns ``output - x``.

    This is exactly ``F.mse_loss(module(x), x).backward()`` with ``module`` in training
    mode, written out layer by layer. For a network this small autograd's bookkeeping
    costs more than the arithmetic; the training step does it by hand (:class:`_ReferenceMSEStep`).
    ``masks`` (one per layer, None where there is no dropout) replaces the random
    dropout masks; the tests use it to check the gradients against autograd.

    Raises
    ------
    TypeError
        If ``module`` is not exactly an :class:`Autoencoder` (a subclass may compute
        anything in ``forward``; its gradients would be silently wrong).
    """
    if type(module) is not Autoencoder:
        raise TypeError(f"manual_backward covers the reference Autoencoder only, not {type(module).__name__}; "
                        "train it through autograd")
    layers = [*module.encoder, *module.decoder]
    n_enc, last = len(module.encoder), len(layers) - 1
    keep = 1.0 - module.dropout
    inputs, relu_masks, drop_masks = [], [], []
    h = x
    for i, layer in enumerate(layers):
        inputs.append(h)
        h = torch.addmm(layer.bias, h, layer.weight.t())
        if i == last:
            relu_masks.append(None)
            drop_masks.append(None)
            break
        positive = h > 0
        h = h * positive
        relu_masks.append(positive)
        mask = None
        if module.dropout > 0 and i != n_enc - 1:  # no dropout on the bottleneck
            mask = masks[i] if masks is not None else (torch.rand_like(h) < keep).to(h.dtype).div_(keep)
            h = h * mask
        drop_masks.append(mask)
    diff = h - x
    grad = diff * (2.0 / diff.numel())
    for i in range(last, -1, -1):
        if drop_masks[i] is not None:
            grad = grad * drop_masks[i]
        if relu_masks[i] is not None:
            grad = grad * relu_masks[i]
        layer = layers[i]
        torch.mm(grad.t(), inputs[i], out=layer.weight.grad)
        torch.sum(grad, 0, out=layer.bias.grad)
        if i > 0:
            grad = grad.mm(layer.weight)
    return diff


def reconstruction_mse(module: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The reference loss: mean squared reconstruction error (and the mean absolute error, recorded)."""
    x = batch[0]
    diff = module(x) - x
    return {"loss": diff.pow(2).mean(), "mae": diff.abs().mean()}


class _ReferenceMSEStep:
    """:func:`manual_backward` as a :class:`~custseg.embedders.training.FastStep`, with less per-step cost.

    At 32 rows a batch the arithmetic is a few microseconds; the cost of a step is the
    number of calls and the Python around them, and a NumPy call has far less dispatch
    than a torch CPU operation at these sizes. So the step computes in NumPy on views of
    the very same memory (``Tensor.numpy()`` shares it): the weights the module uses, the
    gradient buffers Adam reads, the dropout masks torch draws. Every parameter and
    gradient is a view of one flat buffer, so Adam (torch's fused kernel) updates a single
    tensor. The weights' transposes and the dropout columns are laid out once. The
    arithmetic, and the order of the random draws, are those of :func:`manual_backward`;
    the tests check both against autograd. ``benchmarks/bench_train.py`` times an epoch
    of this step and of autograd.
    """

    def __init__(self, module: Autoencoder):
        self.module = module
        params = list(module.parameters())
        flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype)
        grads = torch.zeros_like(flat)
        offset = 0
        for p in params:  # weights move into the flat buffer; the module keeps using them as before
            n = p.numel()
            flat[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = flat[offset:offset + n].view_as(p)
            p.grad = grads[offset:offset + n].view_as(p)
            offset += n
        self.flat = nn.Parameter(flat)
        self.flat.grad = grads
        layers = [*module.encoder, *module.decoder]
        n_enc, last = len(module.encoder), len(layers) - 1
        self.keep = 1.0 - module.dropout
        # per layer, as NumPy views of the torch memory: bias, weight, its transpose, the gradient buffers,
        # relu?, columns of the dropout masks
        self.plan, width = [], 0
        for i, layer in enumerate(layers):
            drop = None
            if module.dropout > 0 and i not in (n_enc - 1, last):  # no dropout on the bottleneck
                drop = (width, width + layer.out_features)
                width += layer.out_features
            weight = layer.weight.detach().numpy()
            self.plan.append((layer.bias.detach().numpy(), weight, weight.T, layer.weight.grad.numpy(),
                              layer.bias.grad.numpy(), i != last, drop))
        self.mask_width = width
        self.masks, self.row = None, 0

    def parameters(self) -> list[torch.Tensor]:
        return [self.flat]

    def start_epoch(self, n_rows: int) -> None:
        """Draw the epoch's dropout masks at once (torch's generator): one random call, not one per layer and batch."""
        if self.mask_width:
            self.masks = (torch.rand(n_rows, self.mask_width) < self.keep).to(torch.float32).div_(self.keep).numpy()
        self.row = 0

    def step(self, batch: tuple[torch.Tensor, ...]) -> np.ndarray:
        x = batch[0].numpy()
        rows = len(x)
        masks = self.masks[self.row:self.row + rows] if self.mask_width else None
        self.row += rows
        saved = []
        h = x
        for bias, _, weight_t, _, _, relu, drop in self.plan:
            inp = h
            h = inp @ weight_t
            h += bias
            mask = None
            if relu:
                # ReLU and dropout as one multiplication by a mask that is 0 or 1/keep
                mask = h > 0 if drop is None else masks[:, drop[0]:drop[1]] * (h > 0)
                h *= mask
            saved.append((inp, mask))
        diff = h - x
        grad = diff * np.float32(2.0 / diff.size)
        for i in range(len(self.plan) - 1, -1, -1):
            weight, weight_grad, bias_grad = self.plan[i][1], self.plan[i][3], self.plan[i][4]
            inp, mask = saved[i]
            if mask is not None:
                grad *= mask
            np.matmul(grad.T, inp, out=weight_grad)
            _add_reduce(grad, 0, None, bias_grad)  # np.sum without its Python wrapper
            if i > 0:
                grad = grad @ weight
        return diff

    def epoch_metrics(self, outputs: list[np.ndarray]) -> dict[str, float]:
        # means over every row as it was seen this epoch, as Keras reports them
        diff = torch.from_numpy(np.concatenate(outputs))
        return {"loss": float(diff.pow(2).mean()), "mae": float(diff.abs().mean())}


def reference_fast_step(module: nn.Module, loss) -> _ReferenceMSEStep | None:
    """The hand-written backward pass if it covers ``module`` and ``loss`` exactly, else None.

    The check is on the exact type, not ``isinstance``: a subclass may change the
    activations or the forward pass, which the hand-written gradients do not follow.
    """
    if type(module) is Autoencoder and loss is reconstruction_mse:
        return _ReferenceMSEStep(module)
    return None


def _positive_int(closed_low: int = 1) -> list:
    return [Interval(Integral, closed_low, None, closed="left")]


class AutoencoderEmbedder(TransformerMixin, BaseEstimator):
    """Learn a compressed representation of customers with an autoencoder.

    Parameters
    ----------
    hidden_dims : tuple of int, default=(16, 12)
        Widths of the encoder's hidden layers (the decoder mirrors them).
    latent_dim : int, default=8
        Width of the bottleneck: the number of latent features.
    dropout : float, default=0.2
        Dropout after every hidden layer except the bottleneck.
    learning_rate : float, default=0.001
        Adam's initial learning rate.
    batch_size : int, default=32
    max_epochs : int, default=100
    patience : int, default=15
        Stop after this many epochs without a lower validation loss; the weights of
        the best epoch are restored.
    lr_factor : float, default=0.5
        Multiply the learning rate by this after ``lr_patience`` flat epochs.
    lr_patience : int, default=5
    min_lr : float, default=1e-6
    validation_fraction : float, default=0.2
        Share of rows held out for validation, stratified by ``y`` when it is given.
        0 trains on every row and monitors the training loss.
    n_threads : int, default=1
        Torch threads used while training and encoding.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, dropout, shuffling and the validation split. An
        int is used as the torch seed itself (the same int, the same weights); None
        draws fresh randomness; a ``RandomState`` instance gives the seed it draws.
    fast_backward : bool, default=True
        Use the hand-written backward pass where it applies (the exact reference
        :class:`Autoencoder` with the MSE loss); False always trains through autograd.

    Attributes
    ----------
    module_ : Autoencoder
        The trained network (best epoch), in eval mode.
    history_ : pandas.DataFrame
        One row per epoch: epoch, loss, val_loss, mae, val_mae, lr.
    best_epoch_ : int
    stopped_early_ : bool
    n_features_in_ : int
    hidden_dims_ : tuple of int
        The hidden widths the network was built with.
    latent_dim_ : int
        The bottleneck width the network was built with: the width of ``transform``'s
        output and of ``decode``'s input, whatever ``set_params`` did after ``fit``.
    """

    _parameter_constraints = {
        "hidden_dims": ["array-like"],
        "latent_dim": _positive_int(),
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": _positive_int(),
        "max_epochs": _positive_int(),
        "patience": _positive_int(),
        "lr_factor": [Interval(Real, 0, 1, closed="neither")],
        "lr_patience": _positive_int(0),
        "min_lr": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "n_threads": _positive_int(),
        "random_state": ["random_state"],
        "fast_backward": ["boolean"],
    }

    #: the training loss; a subclass may set another ``loss(module, batch)`` (it then trains through autograd)
    _loss = staticmethod(reconstruction_mse)

    def __init__(self, hidden_dims=(16, 12), latent_dim=8, dropout=0.2, learning_rate=0.001, batch_size=32,
                 max_epochs=100, patience=15, lr_factor=0.5, lr_patience=5, min_lr=1e-6,
                 validation_fraction=0.2, n_threads=1, random_state=None, fast_backward=True):
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.min_lr = min_lr
        self.validation_fraction = validation_fraction
        self.n_threads = n_threads
        self.random_state = random_state
        self.fast_backward = fast_backward

    # -- training -------------------------------------------------------------------------
    def fit(self, X, y=None, progress: Callable[[dict], None] | None = None) -> "AutoencoderEmbedder":
        """Train on ``X`` (rows x features).

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        y : array-like, optional
            Known segments; they stratify the validation split.
        progress : callable, optional
            Called after each epoch with that epoch's history record (a dict).
        """
        self._check_params()
        X = _writable(validate_data(self, X, dtype=np.float32, order="C"))
        seed = _torch_seed(self.random_state)
        self.hidden_dims_ = tuple(int(h) for h in self.hidden_dims)
        self.latent_dim_ = int(self.latent_dim)
        train_idx, val_idx = self._split(len(X), y, seed)
        # the fast step's matrix products run in NumPy's BLAS: it gets the same number of threads as torch
        with torch_threads(self.n_threads), threadpool_limits(limits=int(self.n_threads), user_api="blas"), \
                torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(X.shape[1])
            fast = reference_fast_step(module, self._loss) if self.fast_backward else None
            result = train_module(module, torch.from_numpy(X[train_idx]),
                                  torch.from_numpy(X[val_idx]) if len(val_idx) else None, self._loss,
                                  self._settings(), progress=progress, fast_step=fast)
        self.module_ = module
        self.history_ = result.history.reindex(columns=HISTORY_COLUMNS)
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        return self

    def _build_module(self, n_features: int) -> nn.Module:
        """The untrained network (a subclass may build another one; it then trains through autograd)."""
        return Autoencoder(n_features, self.hidden_dims_, self.latent_dim_, float(self.dropout))

    def _settings(self) -> TrainingSettings:
        return TrainingSettings(learning_rate=float(self.learning_rate), batch_size=int(self.batch_size),
                                max_epochs=int(self.max_epochs), patience=int(self.patience),
                                lr_factor=float(self.lr_factor), lr_patience=int(self.lr_patience),
                                min_lr=float(self.min_lr))

    def _check_params(self) -> None:
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(str(exc)) from None
        if not all(isinstance(h, Integral) and not isinstance(h, bool) and h >= 1 for h in self.hidden_dims):
            raise ConfigError(f"The 'hidden_dims' parameter of {type(self).__name__} must be a sequence of ints "
                              f">= 1. Got {self.hidden_dims!r} instead.")

    def _split(self, n: int, y, seed: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(n)
        n_val = int(math.ceil(n * self.validation_fraction))
        if self.validation_fraction == 0 or n_val < 1 or n - n_val < 1:
            return idx, idx[:0]
        stratify = None
        if y is not None:
            labels = pd.Series(np.asarray(y)).astype(str).to_numpy()
            counts = pd.Series(labels).value_counts()
            # stratify only where every class can be on both sides
            if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
                stratify = labels
        train_idx, val_idx = train_test_split(idx, test_size=self.validation_fraction, random_state=seed,
                                              stratify=stratify)
        return np.sort(train_idx), np.sort(val_idx)

    # -- using the trained network ------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Latent features of ``X`` (same as :meth:`encode`)."""
        return self.encode(X)

    def encode(self, X) -> np.ndarray:
        """Latent features (rows x ``latent_dim_``), float64."""
        return self._run(self._fitted().encode, self._input(X))

    def decode(self, Z) -> np.ndarray:
        """Reconstructed features from latent features (rows x ``latent_dim_``)."""
        module = self._fitted()
        Z = _writable(check_array(Z, dtype=np.float32, order="C"))
        if Z.shape[1] != self.latent_dim_:
            raise ValueError(f"Z has {Z.shape[1]} latent features, but this {type(self).__name__} was fitted "
                             f"with latent_dim_={self.latent_dim_}.")
        return self._run(module.decode, Z)

    def reconstruct(self, X) -> np.ndarray:
        """Encode then decode."""
        return self._run(self._fitted(), self._input(X))

    def reconstruction_error(self, X) -> np.ndarray:
        """Per-row mean squared reconstruction error: high values are customers the model explains poorly."""
        X = self._input(X)
        return np.mean((self._run(self.module_, X) - X) ** 2, axis=1)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``latent_0``, ``latent_1``, ..."""
        self._fitted()
        return np.array([f"latent_{i}" for i in range(self.latent_dim_)], dtype=object)

    def _input(self, X) -> np.ndarray:
        self._fitted()
        return _writable(validate_data(self, X, reset=False, dtype=np.float32, order="C"))

    def _run(self, net: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray) -> np.ndarray:
        return run_in_tiles(net, X, self.n_threads)

    def _fitted(self) -> nn.Module:
        if not hasattr(self, "module_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")
        return self.module_

    # -- persistence ----------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able description, weights) of the fitted estimator; see :mod:`custseg.persistence`.

        A ``RandomState`` instance as ``random_state`` is saved as None (it is not data).
        """
        self._fitted()
        meta = {
            "params": json_params(self),
            "n_features_in": int(self.n_features_in_),
            "hidden_dims": list(self.hidden_dims_),
            "latent_dim": int(self.latent_dim_),
            "best_epoch": self.best_epoch_,
            "stopped_early": self.stopped_early_,
            "history": {c: [None if (isinstance(v, float) and math.isnan(v)) else v for v in self.history_[c]]
                        for c in HISTORY_COLUMNS},
        }
        weights = {k: v.detach().clone().contiguous() for k, v in self.module_.state_dict().items()}
        return meta, weights

    @classmethod
    def from_state(cls, meta: dict[str, Any], weights: dict[str, torch.Tensor]) -> "AutoencoderEmbedder":
        """The fitted estimator :meth:`get_state` described."""
        est = cls(**params_from_json(meta["params"]))
        # folders written before the learned sizes were saved: the parameters were the sizes
        est.hidden_dims_ = tuple(int(h) for h in meta.get("hidden_dims", est.hidden_dims))
        est.latent_dim_ = int(meta.get("latent_dim", est.latent_dim))
        est.n_features_in_ = int(meta["n_features_in"])
        module = est._build_module(est.n_features_in_)
        module.load_state_dict(weights, strict=True)
        module.eval()
        est.module_ = module
        est.best_epoch_ = int(meta["best_epoch"])
        est.stopped_early_ = bool(meta["stopped_early"])
        est.history_ = pd.DataFrame({c: [math.nan if v is None else v for v in meta["history"][c]]
                                     for c in HISTORY_COLUMNS})
        return est


def json_params(estimator: BaseEstimator) -> dict[str, Any]:
    """``get_params(deep=False)`` as JSON data: tuples become lists, a RandomState instance None."""
    out = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.random.RandomState):
            value = None
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = value
    return out


def params_from_json(params: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`json_params` for the embedder: ``hidden_dims`` back to a tuple."""
    params = dict(params)
    if isinstance(params.get("hidden_dims"), list):
        params["hidden_dims"] = tuple(params["hidden_dims"])
    return params


def _torch_seed(random_state) -> int:
    """The torch seed: an int is its own seed (same int, same bytes); otherwise drawn from the RandomState."""
    rng = check_random_state(random_state)
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(rng.randint(np.iinfo(np.int32).max))


def _writable(arr: np.ndarray) -> np.ndarray:
    # torch.from_numpy warns on read-only arrays (a memory map, say); a copy is cheap next to the network
    return arr if arr.flags.writeable else arr.copy()
