"""A mixed-type autoencoder: its own input encoding, a loss per column type, optional guidance, batched members.

:class:`MixedInputEncoder` turns a customer table into the network's input with
scikit-learn parts (a ``ColumnTransformer`` of ``SimpleImputer``, ``MissingIndicator``,
``StandardScaler`` and ``OneHotEncoder``): standardized numbers, one 0/1 indicator per
feature column that had missing values in training, and one-hot categories. Its state
is plain JSON.

:class:`BatchedAutoencoder` is a plain ``nn.Module`` holding ``n_members`` independent
autoencoders as one network: every weight has a leading member dimension and the layers
are ``torch.baddbmm`` calls, so one forward / backward / optimizer step trains every member
(40 members cost a few times one member, not forty).

:class:`MixedAutoencoderEmbedder` is the sklearn estimator that trains it through
autograd. Loss per row: squared error on the numeric columns, binary cross-entropy on the
missing-value indicators, cross-entropy per one-hot category group, averaged over those
blocks; with ``guidance_weight > 0`` plus that weight times the cross-entropy of a linear
head on the latent space predicting the known segment (rows without one contribute
reconstruction only). The latent space stays unconstrained otherwise: the number of
clusters made in it is free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F

from ..exceptions import ConfigError, NotFittedError, SchemaError
from ..schema import category_codes, category_text
from .inference import run_in_tiles, torch_threads
from .training import make_adam

__all__ = ["MixedInputEncoder", "BatchedAutoencoder", "MixedAutoencoderEmbedder"]

MIXED_HISTORY_COLUMNS = ["epoch", "loss", "reconstruction", "guidance"]


# -- the input encoding --------------------------------------------------------------------------------------
class MixedInputEncoder(TransformerMixin, BaseEstimator):
    """Standardized numbers, missing-value indicators and one-hot categories of a customer table.

    Parameters
    ----------
    numeric : list of str, optional
        Numeric columns: median-imputed, then standardized. If both ``numeric`` and
        ``categorical`` are None, numeric dtypes are numeric and the rest categorical.
    categorical : list of str, optional
        Categorical columns: most-frequent imputed, then one-hot encoded (categories in
        sorted order; a category unseen in training is all zeros).
    ordinal : dict, optional
        Ordinal column -> its categories; one-hot encoded in that order.

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        The feature columns it reads, in table order.
    numeric_ : list of str
    categorical_ : list of str
    indicator_columns_ : list of str
        Feature columns with missing values in training; each gets a 0/1 indicator.
    categories_ : dict
        Categorical column -> its categories (the one-hot order).
    blocks_ : dict
        ``{"numeric": n, "indicators": n, "groups": [sizes of the one-hot groups]}``: the
        layout of the output, numeric first, then indicators, then the groups.
    transformer_ : sklearn.compose.ColumnTransformer

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Age": [20.0, 40.0, None], "Gender": ["Male", "Female", "Male"]})
    >>> enc = MixedInputEncoder().fit(df)
    >>> list(enc.get_feature_names_out())
    ['Age', 'missing=Age', 'Gender=Female', 'Gender=Male']
    """

    def __init__(self, numeric=None, categorical=None, ordinal=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal

    def fit(self, X: pd.DataFrame, y=None) -> "MixedInputEncoder":
        X = _as_frame(X)
        ordinal = dict(self.ordinal or {})
        if self.numeric is None and self.categorical is None:
            numeric = [c for c in X.columns if c not in ordinal and pd.api.types.is_numeric_dtype(X[c])
                       and not pd.api.types.is_bool_dtype(X[c])]
            categorical = [c for c in X.columns if c not in ordinal and c not in numeric]
        else:
            numeric, categorical = list(self.numeric or []), list(self.categorical or [])
        wanted = set(numeric) | set(categorical) | set(ordinal)
        missing = sorted(c for c in wanted if c not in X.columns)
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        self.feature_names_in_ = np.array([c for c in X.columns if c in wanted], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.numeric_ = [c for c in self.feature_names_in_ if c in numeric]
        self.categorical_ = [c for c in self.feature_names_in_ if c not in numeric]
        self.indicator_columns_ = [c for c in self.feature_names_in_ if X[c].isna().any()]
        text = self._text(X)
        self.categories_ = {c: (list(ordinal[c]) if c in ordinal else sorted(text[c].dropna().unique().tolist()))
                            for c in self.categorical_}
        self.transformer_ = self._build().fit(self._input(X, text))
        self._set_blocks()
        return self

    def _text(self, X: pd.DataFrame) -> pd.DataFrame:
        # categories compared as text, so 1 and "1" and 1.0 are one category
        return pd.DataFrame({c: _category_texts(X[c]) for c in self.categorical_}, index=X.index)

    def _input(self, X: pd.DataFrame, text: pd.DataFrame | None = None) -> pd.DataFrame:
        text = self._text(X) if text is None else text
        numbers = {c: pd.to_numeric(X[c], errors="coerce").astype("float64") for c in self.numeric_}
        frame = pd.DataFrame({**numbers, **{c: text[c].astype(object) for c in self.categorical_}}, index=X.index)
        return frame[list(self.feature_names_in_)]

    def _build(self) -> ColumnTransformer:
        parts = []
        if self.numeric_:
            parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                   StandardScaler()), self.numeric_))
        if self.indicator_columns_:
            parts.append(("indicators", MissingIndicator(features="all"), self.indicator_columns_))
        if self.categorical_:
            cats = [np.asarray(self.categories_[c], dtype=object) for c in self.categorical_]
            parts.append(("categories", make_pipeline(
                SimpleImputer(strategy="most_frequent", missing_values=np.nan, keep_empty_features=True),
                OneHotEncoder(categories=cats, handle_unknown="ignore", sparse_output=False)), self.categorical_))
        return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)

    def _set_blocks(self) -> None:
        self.blocks_ = {"numeric": len(self.numeric_), "indicators": len(self.indicator_columns_),
                        "groups": [len(self.categories_[c]) for c in self.categorical_]}

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Encoded rows (float32): numeric, then indicators, then one-hot groups."""
        check_is_fitted(self, "transformer_")
        X = _as_frame(X)
        missing = sorted(c for c in self.feature_names_in_ if c not in X.columns)
        if missing:
            raise SchemaError(f"columns are missing: {set(missing)}")
        return self._encode(X)

    def _encode(self, X: pd.DataFrame) -> np.ndarray:
        """``transformer_.transform(self._input(X))`` as float32, computed from its fitted numbers.

        The same operations in the same order as the ``ColumnTransformer``'s parts (median
        fill, ``(x - mean_) / scale_``, ``x != x`` indicators, mode fill, one-hot with
        unknown categories all zeros), so the same numbers, bit for bit (a test compares
        them); without sklearn's checks of every part on every call, which cost a single
        customer's request about 10 ms. Assumes the columns were checked (:meth:`transform`).
        """
        n = len(X)
        blocks = []
        named = self.transformer_.named_transformers_
        if self.numeric_:
            imputer, scaler = (step for _, step in named["numeric"].steps)
            numbers = np.column_stack([pd.to_numeric(X[c], errors="coerce").astype("float64").to_numpy()
                                       for c in self.numeric_]) if n else np.empty((0, len(self.numeric_)))
            missing = np.isnan(numbers)
            numbers[missing] = np.broadcast_to(imputer.statistics_, numbers.shape)[missing]
            numbers -= scaler.mean_
            numbers /= scaler.scale_
            blocks.append(numbers)
        # each category column's distinct values looked up once (a streamed block's columns are
        # categoricals already): code -1 is a missing cell
        coded = {c: category_codes(X[c]) for c in self.categorical_}
        if self.indicator_columns_:
            blocks.append(np.column_stack(
                [coded[c][0] < 0 if c in self.categorical_ else pd.to_numeric(X[c], errors="coerce").isna().to_numpy()
                 for c in self.indicator_columns_]).astype("float64").reshape(n, -1))
        if self.categorical_:
            modes = named["categories"].steps[0][1].statistics_
            for c, mode in zip(self.categorical_, modes):
                lookup = {v: i for i, v in enumerate(self.categories_[c])}
                # position of each distinct text, then of the mode for a missing cell (code -1 takes the
                # last); an unseen category is -1: a row of zeros, as OneHotEncoder's "ignore"
                row_codes, texts = coded[c]
                position = np.array([lookup.get(v, -1) for v in texts.tolist()] + [lookup.get(mode, -1)],
                                    dtype=np.intp)
                codes = position[row_codes]
                onehot = np.zeros((n, len(lookup)))
                known = np.flatnonzero(codes >= 0)
                onehot[known, codes[known]] = 1.0
                blocks.append(onehot)
        return np.ascontiguousarray(np.hstack(blocks) if blocks else np.empty((n, 0)), dtype="float32")

    def unseen_categories(self, X: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Categories of ``X`` never seen in training, per column, with their counts (they encode as all zeros)."""
        check_is_fitted(self, "transformer_")
        X = _as_frame(X)
        present = [c for c in self.categorical_ if c in X.columns]
        text = self._text(X[present]) if present else pd.DataFrame(index=X.index)
        report = {}
        for c in present:
            values = text[c].dropna()
            counts = values[~values.isin(self.categories_[c])].value_counts()
            counts = counts[counts > 0]  # a categorical column counts every one of its categories, seen ones too
            if len(counts):
                report[str(c)] = {str(k): int(v) for k, v in counts.sort_index().items()}
        return report

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "transformer_")
        names = list(self.numeric_) + [f"missing={c}" for c in self.indicator_columns_]
        names += [f"{c}={v}" for c in self.categorical_ for v in self.categories_[c]]
        return np.array(names, dtype=object)

    # -- JSON state -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Fitted state as plain JSON-able data."""
        check_is_fitted(self, "transformer_")
        state: dict[str, Any] = {
            "params": {"numeric": self.numeric, "categorical": self.categorical, "ordinal": self.ordinal},
            "feature_names_in": list(self.feature_names_in_), "numeric": self.numeric_,
            "categorical": self.categorical_, "indicator_columns": self.indicator_columns_,
            "categories": self.categories_,
        }
        if self.numeric_:
            imputer, scaler = self.transformer_.named_transformers_["numeric"].steps[0][1], \
                self.transformer_.named_transformers_["numeric"].steps[1][1]
            state.update(medians=imputer.statistics_.tolist(), mean=scaler.mean_.tolist(),
                         scale=scaler.scale_.tolist())
        if self.categorical_:
            imputer = self.transformer_.named_transformers_["categories"].steps[0][1]
            state["modes"] = [str(v) for v in imputer.statistics_]
        return state

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MixedInputEncoder":
        """Rebuild a fitted encoder from :meth:`to_dict`'s output.

        The ``ColumnTransformer`` is rebuilt from the saved settings, fitted on a small
        table that contains every saved category, and its learned numbers (medians,
        modes, means, scales) are then replaced by the saved ones.
        """
        enc = cls(**data["params"])
        enc.feature_names_in_ = np.array(data["feature_names_in"], dtype=object)
        enc.n_features_in_ = len(enc.feature_names_in_)
        enc.numeric_, enc.categorical_ = list(data["numeric"]), list(data["categorical"])
        enc.indicator_columns_ = list(data["indicator_columns"])
        enc.categories_ = {k: list(v) for k, v in data["categories"].items()}
        n = max([2] + [len(v) for v in enc.categories_.values()])
        proto = pd.DataFrame({c: (np.arange(n, dtype="float64") if c in enc.numeric_ else
                                  np.resize(np.asarray(enc.categories_[c], dtype=object), n))
                              for c in enc.feature_names_in_})
        enc.transformer_ = enc._build().fit(proto)
        if enc.numeric_:
            imputer, scaler = (step for _, step in enc.transformer_.named_transformers_["numeric"].steps)
            imputer.statistics_ = np.asarray(data["medians"], dtype="float64")
            scaler.mean_ = np.asarray(data["mean"], dtype="float64")
            scaler.scale_ = np.asarray(data["scale"], dtype="float64")
            scaler.var_ = scaler.scale_ ** 2
        if enc.categorical_:
            imputer = enc.transformer_.named_transformers_["categories"].steps[0][1]
            imputer.statistics_ = np.asarray(data["modes"], dtype=object)
        enc._set_blocks()
        return enc


#: Rows per call of the ensemble at inference (see :mod:`~custseg.embedders.inference`). Its 40
#: members make a padded row cost 40 small networks: 128 rows keep a single customer's request at
#: about 2 ms of CPU, and were the fastest tile for big tables too (100,000 shipped rows: 64 rows
#: 1.9 CPU-s, 128 1.05, 256 1.14, 512 2.2, untiled blocks of 20,000 2.9; 2-core Xeon, under load).
MIXED_INFERENCE_TILE = 128


# -- the network ---------------------------------------------------------------------------------------------
class BatchedAutoencoder(nn.Module):
    """``n_members`` fully connected autoencoders evaluated as one network.

    Weights have shape ``(n_members, fan_in, fan_out)`` and each layer is
    ``torch.baddbmm(bias, x, weight)`` on inputs of shape ``(n_members, rows, fan_in)``.
    Encoder: ReLU after every hidden layer, a linear bottleneck (a ReLU there leaves dead
    latent features that K-Means cannot use). Decoder: the mirror image, linear output.
    An optional linear head on the latent space predicts ``n_classes`` known segments.
    Each layer is initialised as ``nn.Linear`` would be, independently per member.
    """

    def __init__(self, n_members: int, n_features: int, hidden_dims: tuple[int, ...] = (64, 32),
                 latent_dim: int = 8, n_classes: int = 0):
        super().__init__()
        self.n_members = int(n_members)
        enc = [n_features, *hidden_dims, latent_dim]
        dec = [latent_dim, *reversed(hidden_dims), n_features]
        self.encoder = nn.ParameterList()
        self.decoder = nn.ParameterList()
        for sizes, params in ((enc, self.encoder), (dec, self.decoder)):
            for a, b in zip(sizes[:-1], sizes[1:]):
                params.extend(self._layer(a, b))
        self.head = nn.ParameterList(self._layer(latent_dim, n_classes) if n_classes else [])

    def _layer(self, fan_in: int, fan_out: int) -> list[nn.Parameter]:
        bound = 1.0 / np.sqrt(fan_in)  # nn.Linear's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
        w = torch.empty(self.n_members, fan_in, fan_out).uniform_(-bound, bound)
        b = torch.empty(self.n_members, 1, fan_out).uniform_(-bound, bound)
        return [nn.Parameter(w), nn.Parameter(b)]

    @staticmethod
    def _run(params: nn.ParameterList, x: torch.Tensor, activate_last: bool) -> torch.Tensor:
        n_layers = len(params) // 2
        for i in range(n_layers):
            x = torch.baddbmm(params[2 * i + 1], x, params[2 * i])
            if i < n_layers - 1 or activate_last:
                x = F.relu(x)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(n_members, rows, n_features)`` (or ``(rows, n_features)``, shared) -> latent per member."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_members, -1, -1)
        return self._run(self.encoder, x, activate_last=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(self.decoder, z, activate_last=False)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the known segments from the latent features (needs ``n_classes > 0``)."""
        return torch.baddbmm(self.head[1], z, self.head[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, blocks: dict[str, Any],
                        categorical_loss: str = "cross_entropy", dim: int = -1) -> torch.Tensor:
    """Per-member, per-row loss: mean over the blocks (numeric columns, indicators, category groups).

    Squared error for numeric columns, binary cross-entropy (on logits) for missing-value
    indicators, cross-entropy for each one-hot group (``categorical_loss="mse"``: squared error on
    indicators and one-hot columns alike, every column one block). ``output`` and ``target`` have shape
    ``(n_members, rows, n_features)`` (target may be ``(rows, n_features)``); returns ``(n_members, rows)``.
    ``dim`` is the features' axis: the exported graph (:mod:`custseg.export`) computes with the rows
    last, ``(n_members, n_features, rows)`` and ``dim=1``.
    """
    if categorical_loss == "mse":  # a (rows, n_features) target broadcasts: no copy per member
        # a square as a product: the same bits and gradients as pow(2), and one multiplication in the exported
        # graph, where onnxruntime's Pow took twice as long
        diff = output - target
        return (diff * diff).mean(dim)
    target = target.expand_as(output)

    def block(tensor: torch.Tensor, start: int, size: int) -> torch.Tensor:
        return tensor.narrow(dim, start, size)

    shape = list(output.shape)
    del shape[dim]
    total = output.new_zeros(shape)
    start = 0
    n_num, n_ind = blocks["numeric"], blocks["indicators"]
    if n_num:
        diff = block(output, 0, n_num) - block(target, 0, n_num)
        total = total + (diff * diff).sum(dim)
        start = n_num
    if n_ind:
        total = total + F.binary_cross_entropy_with_logits(block(output, start, n_ind), block(target, start, n_ind),
                                                           reduction="none").sum(dim)
        start += n_ind
    for size in blocks["groups"]:
        # one-hot target: cross-entropy is minus the log-softmax at the true category
        total = total - (F.log_softmax(block(output, start, size), dim=dim) * block(target, start, size)).sum(dim)
        start += size
    n_blocks = max(1, n_num + n_ind + len(blocks["groups"]))
    return total / n_blocks


# -- the estimator -------------------------------------------------------------------------------------------
class MixedAutoencoderEmbedder(TransformerMixin, BaseEstimator):
    """Latent features of customers from a mixed-type autoencoder (one or many members).

    Parameters
    ----------
    numeric, categorical, ordinal
        Column roles, as in :class:`MixedInputEncoder`. A numeric array is read as
        numeric columns.
    hidden_dims : tuple of int, default=(64, 32)
    latent_dim : int, default=8
    n_members : int, default=1
        Autoencoders trained together, each with its own initial weights, batch order
        and noise. ``transform`` returns their latent features side by side.
    guidance_weight : float, default=0.0
        Weight of the known-segment cross-entropy of a linear head on the latent
        space; 0 trains without the segments (unsupervised).
    max_epochs : int, default=60
    batch_size : int, default=256
    learning_rate : float, default=0.001
        Adam's learning rate.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the inputs while training
        (a denoising autoencoder when > 0).
    categorical_loss : {"cross_entropy", "mse"}, default="cross_entropy"
        Loss of the one-hot groups and missing-value indicators (numbers always use squared error).
    n_threads : int, default=1
        Torch threads while training and encoding.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, batch order and noise.

    Attributes
    ----------
    encoder_ : MixedInputEncoder
    module_ : BatchedAutoencoder
        The trained network, in eval mode.
    classes_ : ndarray or None
        The known segments the guidance head predicts (None without guidance).
    history_ : pandas.DataFrame
        One row per epoch: epoch, loss, reconstruction, guidance (means over members).
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> emb = MixedAutoencoderEmbedder(max_epochs=2, random_state=0).fit(X)
    >>> emb.transform(X).shape
    (50, 8)
    """

    def __init__(self, numeric=None, categorical=None, ordinal=None, hidden_dims=(64, 32), latent_dim=8,
                 n_members=1, guidance_weight=0.0, max_epochs=60, batch_size=256, learning_rate=0.001,
                 noise=0.0, categorical_loss="cross_entropy", n_threads=1, random_state=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.n_members = n_members
        self.guidance_weight = guidance_weight
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.noise = noise
        self.categorical_loss = categorical_loss
        self.n_threads = n_threads
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed and flagged by the input encoding
        return tags

    def _validate_params(self) -> None:
        def is_int(v, low):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        def is_num(v, low, strict):
            return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and (
                v > low if strict else v >= low)

        checks = [
            ("hidden_dims", isinstance(self.hidden_dims, (tuple, list)) and all(is_int(h, 1) for h in self.hidden_dims),
             "a tuple of ints >= 1"),
            ("latent_dim", is_int(self.latent_dim, 1), "an int >= 1"),
            ("n_members", is_int(self.n_members, 1), "an int >= 1"),
            ("guidance_weight", is_num(self.guidance_weight, 0, False), "a float >= 0"),
            ("max_epochs", is_int(self.max_epochs, 1), "an int >= 1"),
            ("batch_size", is_int(self.batch_size, 1), "an int >= 1"),
            ("learning_rate", is_num(self.learning_rate, 0, True), "a float > 0"),
            ("noise", is_num(self.noise, 0, False), "a float >= 0"),
            ("n_threads", is_int(self.n_threads, 1), "an int >= 1"),
            ("categorical_loss", self.categorical_loss in ("cross_entropy", "mse"), "'cross_entropy' or 'mse'"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"The '{name}' parameter of MixedAutoencoderEmbedder must be {expected}. "
                                  f"Got {getattr(self, name)!r} instead.")

    def _as_table(self, X, reset: bool) -> pd.DataFrame:
        """The feature table: a DataFrame's columns as they are, an array as numeric columns x0, x1, ..."""
        if isinstance(X, pd.DataFrame):
            return X
        arr = validate_data(self, X, reset=reset, dtype="float64", ensure_all_finite="allow-nan",
                            ensure_min_samples=2 if reset else 1)
        return pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])

    def fit(self, X, y=None, progress=None, sample=None) -> "MixedAutoencoderEmbedder":
        """Train on a customer table (or a numeric array).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, n_features)
        y : array-like, optional
            Known segments, used only when ``guidance_weight > 0``; missing values (None,
            NaN) mark rows without a known segment.
        progress : callable, optional
            Called after every epoch with its history record (epoch, loss, reconstruction,
            guidance; the members' mean).
        sample : array of int, optional
            Train the network on these rows (positions) only. The input encoding (medians,
            scales, categories) still learns from every row, so no category of the table
            is unseen to the fitted model.
        """
        self._validate_params()
        table = self._as_table(X, reset=True)
        if isinstance(X, pd.DataFrame):
            if len(X) < 2:
                raise ValueError(f"Found array with {len(X)} sample(s) while a minimum of 2 is required.")
        numeric, categorical = self.numeric, self.categorical
        if not isinstance(X, pd.DataFrame):
            numeric, categorical = list(table.columns), []
        self.encoder_ = MixedInputEncoder(numeric=numeric, categorical=categorical, ordinal=self.ordinal).fit(table)
        if isinstance(X, pd.DataFrame):
            # the columns it reads; other columns of the table (an ID, the segment) are ignored
            self.feature_names_in_ = self.encoder_.feature_names_in_.copy()
            self.n_features_in_ = len(self.feature_names_in_)
        if sample is not None:
            table = table.iloc[np.asarray(sample)]
            y = None if y is None else np.asarray(y, dtype=object)[np.asarray(sample)]
        x = torch.from_numpy(self.encoder_.transform(table))
        targets, self.classes_ = self._targets(y, len(table))
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with torch_threads(self.n_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = BatchedAutoencoder(self.n_members, x.shape[1], tuple(int(h) for h in self.hidden_dims),
                                        int(self.latent_dim), 0 if self.classes_ is None else len(self.classes_))
            history = self._train(module, x, targets, progress)
        module.eval()
        self.module_ = module
        self.history_ = pd.DataFrame(history, columns=MIXED_HISTORY_COLUMNS)
        return self

    def _targets(self, y, n: int) -> tuple[torch.Tensor | None, np.ndarray | None]:
        if not self.guidance_weight or y is None:
            return None, None
        labels = pd.Series(np.asarray(y, dtype=object))
        if len(labels) != n:
            raise ValueError(f"y has {len(labels)} rows but X has {n}.")
        known = labels.notna().to_numpy()
        text = labels.map(lambda v: None if pd.isna(v) else category_text(v))
        classes = np.array(sorted(text[known].unique().tolist()), dtype=object)
        if len(classes) < 2:
            return None, None  # nothing to tell apart: guidance has no signal
        lookup = {c: i for i, c in enumerate(classes)}
        codes = np.where(known, text.map(lookup).fillna(-1).to_numpy(), -1).astype("int64")
        return torch.from_numpy(codes), classes

    def _train(self, module: BatchedAutoencoder, x: torch.Tensor, targets: torch.Tensor | None,
               progress=None) -> list[dict]:
        optimizer = make_adam(module.parameters(), self.learning_rate)
        blocks = self.encoder_.blocks_
        n, bs, members = len(x), int(self.batch_size), self.n_members
        history = []
        for epoch in range(1, self.max_epochs + 1):
            module.train()
            # every member draws its own batch order: members that saw the same batches would share
            # that randomness, and averaging over them could not remove it
            order = torch.argsort(torch.rand(members, n), dim=1)
            sums = {"loss": 0.0, "reconstruction": 0.0, "guidance": 0.0}
            for start in range(0, n, bs):
                idx = order[:, start:start + bs]  # (members, rows)
                batch = x[idx]
                inputs = batch if self.noise <= 0 else batch + self.noise * torch.randn(batch.shape)
                z = module.encode(inputs)
                recon = reconstruction_loss(module.decode(z), batch, blocks, self.categorical_loss).mean(1)  # per member
                loss = recon
                guide = torch.zeros_like(recon)
                if targets is not None:
                    t = targets[idx]
                    known = (t >= 0).to(z.dtype)
                    ce = F.cross_entropy(module.classify(z).transpose(1, 2), t.clamp_min(0), reduction="none")
                    # rows without a known segment contribute reconstruction only
                    guide = (ce * known).sum(1) / known.sum(1).clamp_min(1)
                    loss = recon + self.guidance_weight * guide
                optimizer.zero_grad(set_to_none=True)
                # members share no weights, so the summed loss gives each member its own gradient
                loss.sum().backward()
                optimizer.step()
                w = idx.shape[1] / n
                sums["loss"] += w * float(loss.detach().mean())
                sums["reconstruction"] += w * float(recon.detach().mean())
                sums["guidance"] += w * float(guide.detach().mean())
            history.append({"epoch": epoch, **sums})
            if progress is not None:
                progress(dict(history[-1]))
        return history

    # -- using it ----------------------------------------------------------------------------------------------
    def _encoded(self, X) -> np.ndarray:
        if not hasattr(self, "module_"):
            raise NotFittedError("This MixedAutoencoderEmbedder instance is not fitted yet. Call 'fit' first.")
        if isinstance(X, pd.DataFrame):
            table = X
        else:
            table = self._as_table(X, reset=False)
        return self.encoder_.transform(table)

    def _infer(self, X, net):
        """``net`` on the encoded table, in tiles of :data:`MIXED_INFERENCE_TILE` rows (see
        :mod:`~custseg.embedders.inference`: a customer's numbers do not depend on the others scored with it)."""
        return run_in_tiles(net, self._encoded(X), self.n_threads, MIXED_INFERENCE_TILE)

    def _error(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-row reconstruction loss of input ``x`` from latent ``z``, mean over members."""
        return reconstruction_loss(self.module_.decode(z), x, self.encoder_.blocks_, self.categorical_loss).mean(0)

    def unseen_categories(self, X) -> dict[str, dict[str, int]]:
        """Categories of table ``X`` never seen in training, per column, with their counts."""
        if not hasattr(self, "module_"):
            raise NotFittedError("This MixedAutoencoderEmbedder instance is not fitted yet. Call 'fit' first.")
        return self.encoder_.unseen_categories(X) if isinstance(X, pd.DataFrame) else {}

    def transform_members(self, X) -> np.ndarray:
        """Latent features of every member: shape ``(n_members, n_rows, latent_dim)``, float64."""
        return self._infer(X, lambda x: self.module_.encode(x).transpose(0, 1)).transpose(1, 0, 2)

    def transform(self, X) -> np.ndarray:
        """Latent features, the members side by side: shape ``(n_rows, n_members * latent_dim)``."""
        z = self.transform_members(X)
        return np.ascontiguousarray(z.transpose(1, 0, 2).reshape(z.shape[1], -1))

    def reconstruction_error(self, X) -> np.ndarray:
        """Per-row reconstruction loss (the training loss without guidance), mean over members."""
        return self._infer(X, lambda x: self._error(x, self.module_.encode(x)))

    def transform_with_error(self, X) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform` and :meth:`reconstruction_error` of ``X`` from one encoding and one encoder pass.

        The same numbers as the two calls (the same operations on the same input); scoring
        needs both, and the input encoding and the members' encoder are half of its cost.
        """
        def net(x):
            z = self.module_.encode(x)
            return z.transpose(0, 1), self._error(x, z)

        z, error = self._infer(X, net)
        return np.ascontiguousarray(z.reshape(len(z), -1)), error

    def predict_segment_proba(self, X) -> np.ndarray:
        """The guidance head's probabilities of the known segments (``classes_`` order), mean over members."""
        if getattr(self, "classes_", None) is None:
            raise NotFittedError("This MixedAutoencoderEmbedder has no guidance head: fit it with "
                                 "guidance_weight > 0 and known segments.")
        return self._infer(X, lambda x: F.softmax(self.module_.classify(self.module_.encode(x)), dim=-1).mean(0))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if not hasattr(self, "module_"):
            raise NotFittedError("This MixedAutoencoderEmbedder instance is not fitted yet. Call 'fit' first.")
        if self.n_members == 1:
            return np.array([f"latent{j}" for j in range(self.latent_dim)], dtype=object)
        return np.array([f"member{m}_latent{j}" for m in range(self.n_members) for j in range(self.latent_dim)],
                        dtype=object)

    # -- persistence: tensors for safetensors, everything else JSON -----------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The network's weights by name (for ``safetensors.torch.save_file``)."""
        if not hasattr(self, "module_"):
            raise NotFittedError("This MixedAutoencoderEmbedder instance is not fitted yet. Call 'fit' first.")
        return {k: v.detach().contiguous() for k, v in self.module_.state_dict().items()}

    def to_dict(self) -> dict[str, Any]:
        """Parameters, input encoding, classes and history as plain JSON-able data."""
        if not hasattr(self, "module_"):
            raise NotFittedError("This MixedAutoencoderEmbedder instance is not fitted yet. Call 'fit' first.")
        params = self.get_params()
        params["hidden_dims"] = [int(h) for h in params["hidden_dims"]]
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None
        return {
            "params": params,
            "encoder": self.encoder_.to_dict(),
            "classes": None if self.classes_ is None else [str(c) for c in self.classes_],
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": [str(c) for c in getattr(self, "feature_names_in_", [])] or None,
            "history": self.history_.to_dict(orient="list"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "MixedAutoencoderEmbedder":
        """Rebuild a fitted embedder from :meth:`to_dict` and :meth:`state_tensors`."""
        params = dict(data["params"])
        params["hidden_dims"] = tuple(params["hidden_dims"])
        est = cls(**params)
        est.encoder_ = MixedInputEncoder.from_dict(data["encoder"])
        est.classes_ = None if data["classes"] is None else np.array(data["classes"], dtype=object)
        est.n_features_in_ = int(data["n_features_in"])
        if data.get("feature_names_in"):
            est.feature_names_in_ = np.array(data["feature_names_in"], dtype=object)
        n_in = sum([est.encoder_.blocks_["numeric"], est.encoder_.blocks_["indicators"],
                    *est.encoder_.blocks_["groups"]])
        module = BatchedAutoencoder(est.n_members, n_in, est.hidden_dims, est.latent_dim,
                                    0 if est.classes_ is None else len(est.classes_))
        module.load_state_dict(tensors, strict=True)
        module.eval()
        est.module_ = module
        est.history_ = pd.DataFrame(data["history"], columns=MIXED_HISTORY_COLUMNS)
        return est


def _category_texts(column: pd.Series) -> pd.Series:
    """``category_text`` of every value, NaN where missing."""
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        # text already (how a table is read): category_text(s) is s; one vectorised pass, not one call a value
        return column.where(column.notna(), np.nan)
    return column.map(lambda v: np.nan if pd.isna(v) else category_text(v))


def _as_frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    raise TypeError(f"MixedInputEncoder expects a pandas DataFrame with named columns, got {type(X).__name__}")
