"""A generic trainer for the torch networks of the embedders: any loss, autograd by default.

Every embedder of custseg trains its network the same way, so the loop lives here
once: Adam, mini-batches reshuffled every epoch, a validation set monitored every
epoch, the learning rate reduced on plateaus (Keras' ``ReduceLROnPlateau``: an
absolute improvement of ``1e-4`` resets the count), early stopping with the best
weights restored, and the per-epoch history returned as a DataFrame.

Interface
---------
:func:`train_module` ``(module, train, val, loss, settings, progress=None, fast_step=None)``

``module``
    Any ``torch.nn.Module``. It is switched to ``train()`` for the optimisation
    steps and to ``eval()`` for validation; on return it holds the weights of the
    best epoch and is in ``eval()`` mode.
``train`` / ``val``
    A tuple of tensors with the same number of rows (features, and for example
    labels or sample weights), or a single tensor. ``val`` may be None: the training
    loss is then monitored instead.
``loss``
    ``loss(module, batch) -> Tensor | dict[str, Tensor]`` written as plain torch code;
    ``batch`` is a tuple of tensors (the rows of ``train`` or ``val``). Return the
    scalar to minimise, or a dict whose ``"loss"`` entry is that scalar and whose
    other entries are scalar metrics to record (``"mae"``, say). The trainer calls
    ``.backward()`` on it; nothing else is needed. The same callable computes the
    validation metrics (one call on the whole validation set, in eval mode, without
    gradients).
``settings``
    A :class:`TrainingSettings` (learning rate, batch size, epochs, patience, the
    plateau schedule).
``progress``
    Called after every epoch with that epoch's history record (a dict).
``fast_step``
    Optional :class:`FastStep`: a hand-written replacement of forward + backward for
    one exact network and loss (see
    :func:`custseg.embedders.autoencoder.reference_fast_step`). It must compute the
    same gradients as ``loss`` does through autograd; the caller decides whether it
    applies. Validation always goes through ``loss``.

The result is a :class:`TrainingResult`: ``history`` (one row per epoch: ``epoch``,
then each metric and its ``val_`` twin, then ``lr``), ``best_epoch`` and
``stopped_early``. Randomness (shuffling, dropout) comes from torch's global
generator: seed it (inside ``torch.random.fork_rng`` to leave the caller's state
alone) before calling.

Example
-------
>>> import torch
>>> net = torch.nn.Linear(3, 3)
>>> x = torch.randn(64, 3)
>>> mse = lambda module, batch: torch.nn.functional.mse_loss(module(batch[0]), batch[0])
>>> result = train_module(net, x, None, mse, TrainingSettings(max_epochs=5))
>>> list(result.history.columns)
['epoch', 'loss', 'lr']
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["TrainingSettings", "TrainingResult", "FastStep", "train_module", "make_adam", "fused_adam_supported",
           "FusedAdam", "PlateauSchedule"]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], "torch.Tensor | dict[str, torch.Tensor]"]


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: Adam's learning rate, batches, epochs, early stopping and the plateau schedule.

    Parameters
    ----------
    learning_rate : float, default=0.001
    batch_size : int, default=32
    max_epochs : int, default=100
    patience : int, default=15
        Stop after this many epochs without a lower monitored loss.
    lr_factor : float, default=0.5
        Multiply the learning rate by this after ``lr_patience`` flat epochs.
    lr_patience : int, default=5
    min_lr : float, default=1e-6
    """

    learning_rate: float = 0.001
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 15
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 1e-6


@dataclass
class TrainingResult:
    """What :func:`train_module` returns."""

    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool


class FastStep(Protocol):
    """A hand-written forward + backward pass for one network and loss.

    ``step(batch)`` runs the training forward pass on ``batch``, writes each
    parameter's gradient into its preallocated ``.grad`` and returns whatever
    ``epoch_metrics`` needs; ``epoch_metrics(outputs)`` turns the epoch's list of
    those into the training metrics of the history (``{"loss": ..., "mae": ...}``).
    """

    def step(self, batch: Batch) -> Any: ...

    def epoch_metrics(self, outputs: list) -> dict[str, float]: ...


@functools.cache
def fused_adam_supported() -> bool:
    """Whether this torch has the fused Adam kernel for CPU tensors (torch >= 2.4).

    Older versions have the kernel for GPUs only, so the test is one call of it on CPU
    tensors rather than a look at the version or the signature.
    """
    kernel = getattr(torch, "_fused_adam_", None)
    if kernel is None:
        return False
    try:
        kernel([torch.zeros(1)], [torch.zeros(1)], [torch.zeros(1)], [torch.zeros(1)], [], [torch.zeros(())], amsgrad=False,
               lr=0.001, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False, grad_scale=None,
               found_inf=None)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


class FusedAdam:
    """``torch.optim.Adam(params, lr, fused=True)``, the same kernel call, without ``torch.optim.Optimizer``.

    Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (``add_param_group``
    is wrapped to disable it): 1.4 s here (``benchmarks/bench_train.py``), a tenth of a
    whole training run of the reference design. This class keeps Adam's state (first and second moments and a
    step count per parameter, created at zero) and calls the fused kernel exactly as
    ``Adam.step`` does for one parameter group without weight decay, amsgrad or
    maximize; the tests check the weights are bitwise those of ``torch.optim.Adam``.
    ``param_groups[0]["lr"]`` is the learning rate, as in an Optimizer. Parameters
    without a gradient are left alone, as ``Adam.step`` does.
    """

    def __init__(self, params, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if isinstance(params, torch.Tensor):  # as torch.optim: a bare tensor would be iterated row by row
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors, but got "
                            + torch.typename(params))
        if not lr > 0 or not eps >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Invalid Adam settings: lr={lr!r}, betas={betas!r}, eps={eps!r}")
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = [{"params": self.params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # Adam(fused=True) keeps its step counts as float32 scalars
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]
        self._kernel = torch._fused_adam_

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:
        group = self.param_groups[0]
        used = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not used:
            return
        params, avgs, sqs, steps = ([seq[i] for i in used]
                                    for seq in (self.params, self.exp_avgs, self.exp_avg_sqs, self.steps))
        grads = [p.grad for p in params]
        if len(steps) == 1:  # one flat parameter (the reference fast step): a third of _foreach_add_'s cost
            steps[0].add_(1)
        else:
            torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        self._kernel(params, grads, avgs, sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                     weight_decay=0.0, eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)


def make_adam(params, learning_rate: float):
    """Adam for the trainers: :class:`FusedAdam` where torch has the fused CPU kernel, else ``torch.optim.Adam``.

    Both have ``zero_grad``, ``step`` and ``param_groups[0]["lr"]``.
    """
    if fused_adam_supported():
        return FusedAdam(params, lr=learning_rate)
    return torch.optim.Adam(params, lr=learning_rate)


class PlateauSchedule:
    """Reduce the learning rate when the monitored loss stops improving (``torch.optim.lr_scheduler.ReduceLROnPlateau``
    with ``mode="min"``, ``threshold_mode="abs"``, no cooldown; Keras' ``ReduceLROnPlateau``).

    After more than ``patience`` epochs without a loss below the best minus
    ``threshold``, the rate is multiplied by ``factor`` (not below ``min_lr``; a change
    smaller than ``eps`` is skipped) and the count starts again. Written here rather
    than taken from ``torch.optim`` because that one accepts only a
    ``torch.optim.Optimizer`` (see :class:`FusedAdam`); the tests compare the two on
    many loss sequences.
    """

    def __init__(self, optimizer, *, factor: float, patience: int, min_lr: float, threshold: float = 1e-4,
                 eps: float = 1e-8):
        self.optimizer, self.factor, self.patience, self.min_lr = optimizer, factor, patience, min_lr
        self.threshold, self.eps = threshold, eps
        self.best, self.bad_epochs = math.inf, 0

    def step(self, loss: float) -> None:
        loss = float(loss)
        if loss < self.best - self.threshold:
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            group = self.optimizer.param_groups[0]
            new = max(group["lr"] * self.factor, self.min_lr)
            if group["lr"] - new > self.eps:
                group["lr"] = new
            self.bad_epochs = 0


def _as_batch(data) -> Batch:
    if data is None:
        return ()
    if isinstance(data, torch.Tensor):
        return (data,)
    return tuple(data)


def _metrics(value) -> dict[str, torch.Tensor]:
    return dict(value) if isinstance(value, dict) else {"loss": value}


def train_module(module: nn.Module, train, val, loss: LossFn, settings: TrainingSettings, *,
                 progress: Callable[[dict], None] | None = None, fast_step: FastStep | None = None) -> TrainingResult:
    """Train ``module`` on ``train``, monitoring ``val``; see the module docstring for the interface."""
    train_data, val_data = _as_batch(train), _as_batch(val)
    if not train_data or len(train_data[0]) == 0:
        raise ValueError("train_module needs at least one training row")
    params = module.parameters()
    if fast_step is not None:
        # the fast step writes the gradients in place, into buffers it may lay out itself
        params = fast_step.parameters() if hasattr(fast_step, "parameters") else list(params)
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
    optimizer = make_adam(params, settings.learning_rate)
    scheduler = PlateauSchedule(optimizer, factor=settings.lr_factor, patience=settings.lr_patience,
                                min_lr=settings.min_lr)
    n, bs = len(train_data[0]), settings.batch_size
    best, best_state, wait = math.inf, None, 0
    history: list[dict] = []
    for epoch in range(1, settings.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        module.train()
        order = torch.randperm(n)
        shuffled = tuple(t[order] for t in train_data)
        if fast_step is not None:
            train_metrics = _fast_epoch(fast_step, optimizer, shuffled, n, bs)
        else:
            train_metrics = _autograd_epoch(module, loss, optimizer, shuffled, n, bs)
        record = {"epoch": epoch, **train_metrics}
        if val_data:
            module.eval()
            with torch.no_grad():
                for name, value in _metrics(loss(module, val_data)).items():
                    record[f"val_{name}"] = float(value)
        record["lr"] = lr
        history.append(record)
        if progress is not None:
            progress(dict(record))
        monitored = record["val_loss"] if val_data else record["loss"]
        scheduler.step(monitored)
        if monitored < best:
            best, wait = monitored, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            wait += 1
            if wait >= settings.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    frame = pd.DataFrame(history, columns=_history_columns(history[0]))
    monitor = frame["val_loss"] if val_data else frame["loss"]
    best_epoch = int(frame["epoch"].iloc[int(monitor.to_numpy().argmin())])
    return TrainingResult(history=frame, best_epoch=best_epoch, stopped_early=len(frame) < settings.max_epochs)


def _history_columns(record: dict) -> list[str]:
    names = [k for k in record if k not in ("epoch", "lr") and not k.startswith("val_")]
    columns = ["epoch"]
    for name in names:
        columns += [name] + ([f"val_{name}"] if f"val_{name}" in record else [])
    return columns + ["lr"]


def _fast_epoch(fast_step: FastStep, optimizer, shuffled: Batch, n: int, bs: int) -> dict[str, float]:
    outputs = []
    step, adam_step = fast_step.step, optimizer.step
    # a fast step may compute in NumPy, which warns on overflow where torch is silent (a diverging fit
    # shows in the loss history either way)
    with torch.no_grad(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if hasattr(fast_step, "start_epoch"):
            fast_step.start_epoch(n)
        # the batches as views, cut once (split makes them in one call)
        for batch in zip(*(t.split(bs) for t in shuffled)):
            outputs.append(step(batch))
            adam_step()
        return fast_step.epoch_metrics(outputs)


def _autograd_epoch(module: nn.Module, loss: LossFn, optimizer, shuffled: Batch, n: int,
                    bs: int) -> dict[str, float]:
    # the epoch's training metrics: means over every row as it was seen, as Keras reports them
    sums: dict[str, float] = {}
    for start in range(0, n, bs):
        batch = tuple(t[start:start + bs] for t in shuffled)
        optimizer.zero_grad()
        values = _metrics(loss(module, batch))
        values["loss"].backward()
        optimizer.step()
        rows = len(batch[0])
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * rows
    return {name: total / n for name, total in sums.items()}

