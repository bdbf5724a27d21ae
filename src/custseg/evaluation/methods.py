"""The clustering methods :mod:`custseg.evaluation.comparison` compares, and the space they are measured in.

:data:`METHODS` is the registry: method name -> :class:`Method`. Each method's ``fit``
takes ``(frame, schema, n_clusters, seed, config)`` and returns a
:class:`FittedClustering` (labels, its own space, a predict function).

Adding a method
---------------
Write a function ``fit(frame, schema, n_clusters, seed, config) -> FittedClustering``
and add a :class:`Method` to :data:`METHODS` (or call :func:`register_method`);
the comparison, its tables and its figure follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import FunctionTransformer

from ..config import GUIDANCE_WEIGHT, RunConfig
from ..clustering import ConsensusKMeans
from ..embedders.autoencoder import AutoencoderEmbedder
from ..embedders.mixed import MixedAutoencoderEmbedder
from ..exceptions import ConfigError, DataError, NotFittedError
from ..pipeline import SegmentationPipeline
from ..preprocessing import CustomerPreprocessor
from ..schema import Schema, category_text

__all__ = ["Method", "FittedClustering", "METHODS", "register_method", "ReferenceEncoder", "build_pipeline",
           "KPROTOTYPES_N_INIT", "GMM_N_INIT", "LATENT_CLASS_N_INIT", "LATENT_CLASS_MAX_ITER", "LATENT_CLASS_TOL",
           "LATENT_CLASS_REG_COVAR", "feature_roles"]

#: K-Prototypes initialisations per fit. kmodes is pure Python: one init takes about 3.5 s on
#: 8,000 customers, so the library's default of 10 would make it the slowest method by far.
KPROTOTYPES_N_INIT = 3
#: Gaussian-mixture initialisations per fit.
GMM_N_INIT = 3
#: Latent class model (StepMix): EM initialisations per fit. On the shipped data three seeds' fits with
#: three initialisations each found the same optimum (seed-to-seed ARI 0.97-0.98) at about 2 CPU-s a fit.
LATENT_CLASS_N_INIT = 3
#: ... its cap on EM iterations per initialisation (the shipped data converge in 20-60).
LATENT_CLASS_MAX_ITER = 500
#: ... its stopping rule: EM stops when the mean log-likelihood per customer gains less than this.
LATENT_CLASS_TOL = 1e-4
#: ... the variance floor of its Gaussian indicators (standardized numeric features). With sklearn's usual
#: 1e-6, one of three seeds put a class on a single value of a count (Family_Size, or the median that fills
#: Work_Experience's 829 missing cells): a higher likelihood from a near-zero variance, not a segment.
LATENT_CLASS_REG_COVAR = 1e-2


# -- the reference space ---------------------------------------------------------------------------------
class ReferenceEncoder(TransformerMixin, BaseEstimator):
    """Numeric (and ordinal) features standardized, categorical features one-hot encoded.

    Imputation is :class:`~custseg.preprocessing.CustomerPreprocessor`'s (median, most
    frequent category), and so is the handling of unseen categories (they become the
    training mode). One-hot columns stay 0/1, so two customers differing in one category
    are sqrt(2) apart, about as far as 1.4 standard deviations of one numeric feature.

    Parameters
    ----------
    numeric, categorical, ordinal
        As in :class:`~custseg.preprocessing.CustomerPreprocessor`.

    Attributes
    ----------
    preprocessor_ : CustomerPreprocessor
    feature_names_out_ : ndarray of str
        ``Age`` for a numeric column, ``Profession=Artist`` for a one-hot column.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"Age": [20.0, 40.0], "Gender": ["Male", "Female"]})
    >>> enc = ReferenceEncoder(numeric=["Age"], categorical=["Gender"]).fit(df)
    >>> list(enc.get_feature_names_out())
    ['Age', 'Gender=Female', 'Gender=Male']
    >>> enc.transform(df).tolist()
    [[-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """

    def __init__(self, numeric=None, categorical=None, ordinal=None):
        self.numeric = numeric
        self.categorical = categorical
        self.ordinal = ordinal

    def fit(self, X: pd.DataFrame, y=None) -> "ReferenceEncoder":
        self.preprocessor_ = CustomerPreprocessor(numeric=self.numeric, categorical=self.categorical,
                                                  ordinal=self.ordinal).fit(X)
        names = []
        for name in self.preprocessor_.feature_names_in_:
            if self.preprocessor_.kinds_[name] == "categorical":
                names += [f"{name}={c}" for c in self.preprocessor_.categories_[name]]
            else:
                names.append(name)
        self.feature_names_out_ = np.array(names, dtype=object)
        self.n_features_in_ = self.preprocessor_.n_features_in_
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "preprocessor_"):
            raise NotFittedError("This ReferenceEncoder instance is not fitted yet. Call 'fit' first.")
        pre = self.preprocessor_
        z = pre.transform(X)
        blocks = []
        for j, name in enumerate(pre.feature_names_in_):
            if pre.kinds_[name] == "categorical":
                codes = np.rint(z[:, j] * pre.scale_[j] + pre.mean_[j]).astype(int)
                blocks.append(np.eye(len(pre.categories_[name]))[codes])
            else:
                blocks.append(z[:, [j]])
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if not hasattr(self, "feature_names_out_"):
            raise NotFittedError("This ReferenceEncoder instance is not fitted yet. Call 'fit' first.")
        return self.feature_names_out_.copy()


def feature_roles(schema: Schema) -> dict[str, Any]:
    """The column-role arguments of :class:`~custseg.preprocessing.CustomerPreprocessor` for ``schema``."""
    return {"numeric": schema.names("numeric"), "categorical": schema.names("categorical"),
            "ordinal": schema.ordinal_orders or None}


# -- the methods ------------------------------------------------------------------------------------------
@dataclass
class FittedClustering:
    """A method fitted on the training rows.

    Attributes
    ----------
    labels : ndarray of int
        Cluster of each training row.
    space : ndarray or None
        The training rows in the method's own space (where its internal metrics are computed).
    predict : callable
        Table of customers -> their clusters.
    """

    labels: np.ndarray
    space: np.ndarray | None
    predict: Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Method:
    """A clustering method the comparison runs.

    Attributes
    ----------
    name : str
        Short identifier (the ``method`` column of ``comparison.csv``).
    label : str
        Human-readable name for tables and figures.
    space : str
        What its own space is.
    fit : callable
        ``fit(frame, schema, n_clusters, seed, config) -> FittedClustering``.
    uses_known_segments : bool
        True if fitting learns from the known segments (the label column of ``frame``):
        the comparison then scores it on held-out folds, never on rows it learned from.
    """

    name: str
    label: str
    space: str
    fit: Callable[..., FittedClustering]
    uses_known_segments: bool = False


def _fit_segmentation(pipeline: SegmentationPipeline, frame: pd.DataFrame, y) -> FittedClustering:
    pipeline.fit(frame, y)
    return FittedClustering(labels=pipeline.labels_, space=pipeline.transform(frame), predict=pipeline.predict)


def _kmeans_pipeline(preprocessor, embedder, n_clusters: int, seed: int, config) -> SegmentationPipeline:
    return SegmentationPipeline(preprocessor=preprocessor, embedder=embedder, n_clusters=n_clusters,
                                n_init=config.clustering.n_init, max_iter=config.clustering.max_iter,
                                random_state=seed)


def _fit_kmeans_features(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pipeline = _kmeans_pipeline(CustomerPreprocessor(**feature_roles(schema)), FunctionTransformer(), n_clusters, seed,
                                config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_kmeans_onehot(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pipeline = _kmeans_pipeline(ReferenceEncoder(**feature_roles(schema)), FunctionTransformer(), n_clusters, seed,
                                config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_pca_kmeans(frame, schema, n_clusters, seed, config) -> FittedClustering:
    n_features = len(schema.feature_columns)
    pca = PCA(n_components=min(config.autoencoder.latent_dim, n_features), random_state=seed)
    pipeline = _kmeans_pipeline(CustomerPreprocessor(**feature_roles(schema)), pca, n_clusters, seed, config)
    return _fit_segmentation(pipeline, frame, None)


def _fit_gmm(frame, schema, n_clusters, seed, config) -> FittedClustering:
    pre = CustomerPreprocessor(**feature_roles(schema)).fit(frame)
    X = pre.transform(frame)
    gmm = GaussianMixture(n_components=n_clusters, covariance_type="full", n_init=GMM_N_INIT,
                          random_state=seed).fit(X)
    return FittedClustering(labels=gmm.predict(X), space=X, predict=lambda f: gmm.predict(pre.transform(f)))


def _fit_kprototypes(frame, schema, n_clusters, seed, config) -> FittedClustering:
    from kmodes.kprototypes import KPrototypes  # imported here: only this method needs it

    pre = CustomerPreprocessor(**feature_roles(schema)).fit(frame)
    names = list(pre.feature_names_in_)
    cat_idx = [j for j, n in enumerate(names) if pre.kinds_[n] == "categorical"]
    num_idx = [j for j in range(len(names)) if j not in cat_idx]

    def mixed(f: pd.DataFrame) -> np.ndarray:
        z = pre.transform(f)
        out = np.empty(z.shape, dtype=object)
        out[:, num_idx] = z[:, num_idx]
        for j in cat_idx:
            codes = np.rint(z[:, j] * pre.scale_[j] + pre.mean_[j]).astype(int)
            out[:, j] = np.asarray(pre.categories_[names[j]], dtype=object)[codes]
        return out

    X = mixed(frame)
    if not cat_idx or not num_idx:
        raise DataError("K-Prototypes needs both numeric and categorical features; leave it out of --methods")
    kp = KPrototypes(n_clusters=n_clusters, init="Cao", n_init=KPROTOTYPES_N_INIT, random_state=seed)
    labels = np.asarray(kp.fit_predict(X, categorical=cat_idx), dtype=int)
    # Its cost is squared Euclidean on the numeric features plus gamma per categorical mismatch;
    # a mismatch is half the squared distance of two one-hot vectors, so the cost is exactly the
    # squared Euclidean distance in [numeric, sqrt(gamma / 2) * one-hot]: its own space.
    onehot = ReferenceEncoder(numeric=[], categorical=[names[j] for j in cat_idx]).fit(frame).transform(frame)
    space = np.hstack([X[:, num_idx].astype("float64"), np.sqrt(kp.gamma / 2.0) * onehot])
    return FittedClustering(labels=labels, space=space,
                            predict=lambda f: np.asarray(kp.predict(mixed(f), categorical=cat_idx), dtype=int))


def _fit_latent_class(frame, schema, n_clusters, seed, config) -> FittedClustering:
    """A latent class model (StepMix) with ``n_clusters`` classes on the mixed table.

    Each customer's features are independent given their class: a numeric feature is a
    Gaussian indicator (StepMix's ``continuous``: a mean and a variance per class, on the
    standardized feature, variances floored at :data:`LATENT_CLASS_REG_COVAR`), a categorical
    or ordinal feature a categorical indicator (``categorical``: a probability per class and
    category; the order of an ordinal feature is not used). The model is fitted by EM
    (:data:`LATENT_CLASS_N_INIT` random starts seeded by ``seed``, the best likelihood kept),
    and a customer's cluster is their class of highest posterior probability.

    Missing values are imputed as everywhere in custseg
    (:class:`~custseg.preprocessing.CustomerPreprocessor`: the median, the most frequent
    category; an unseen category becomes the training mode), not by StepMix's ``*_nan``
    models (full-information likelihood): their Gaussian has no variance floor (one of three
    seeds on the shipped data ended with a zero variance and a NaN likelihood), and their
    categorical model took three times as long a fit (7 CPU-s against 2), agreed no more
    with the known segments and less from seed to seed (ARI 0.57-0.98 against 0.97-0.98).
    """
    from stepmix.stepmix import StepMix  # imported here: only this method needs it
    from stepmix.utils import get_mixed_descriptor

    pre = CustomerPreprocessor(**feature_roles(schema)).fit(frame)
    names = list(pre.feature_names_in_)
    numeric = [n for n in names if pre.kinds_[n] == "numeric"]
    categorical = [n for n in names if pre.kinds_[n] != "numeric"]

    def indicators(f: pd.DataFrame) -> pd.DataFrame:
        z = pd.DataFrame(pre.transform(f), columns=names)
        # categories as 0-based integer codes, which StepMix's categorical model one-hot encodes itself
        codes = pd.DataFrame(pre.scaler_.inverse_transform(z.to_numpy()), columns=names)
        return pd.concat([z[numeric], codes[categorical].round()], axis=1)

    models = {model: columns for model, columns in (("continuous", numeric), ("categorical", categorical)) if columns}
    X, descriptor = get_mixed_descriptor(indicators(frame), **models)
    if numeric:
        descriptor["continuous"]["reg_covar"] = LATENT_CLASS_REG_COVAR
    if categorical:
        # the category counts of this fit, not those the codes of its rows happen to reach
        levels = [len(pre.categories_[n]) for n in categorical]
        descriptor["categorical"].update(max_n_outcomes=max(levels), total_outcomes=sum(levels))
    model = StepMix(n_components=n_clusters, measurement=descriptor, n_init=LATENT_CLASS_N_INIT,
                    max_iter=LATENT_CLASS_MAX_ITER, abs_tol=LATENT_CLASS_TOL, init_params="random",
                    random_state=seed, progress_bar=0, verbose=0).fit(X)
    space = ReferenceEncoder(**feature_roles(schema)).fit(frame).transform(frame)
    return FittedClustering(labels=np.asarray(model.predict(X), dtype=int), space=space,
                            predict=lambda f: np.asarray(model.predict(indicators(f)[X.columns]), dtype=int))


def build_pipeline(config: RunConfig, schema: Schema) -> SegmentationPipeline:
    """The segmentation pipeline a run's settings describe.

    ``autoencoder.kind = "reference"``: the reference design (label-encoded features, the
    16-12-8 autoencoder, K-Means). ``"mixed"``: the table goes as it is to a
    :class:`~custseg.embedders.mixed.MixedAutoencoderEmbedder` of ``n_members`` members and
    a :class:`~custseg.clustering.ConsensusKMeans` clusters them (one member: K-Means).
    ``custseg train`` fits it; the comparison fits the reference one as ``autoencoder_kmeans``.
    """
    ae = config.autoencoder
    if ae.kind == "mixed":
        return SegmentationPipeline(
            preprocessor="passthrough",
            embedder=MixedAutoencoderEmbedder(
                **feature_roles(schema), hidden_dims=tuple(ae.hidden_dims), latent_dim=ae.latent_dim,
                n_members=ae.n_members, guidance_weight=ae.guidance_weight, max_epochs=ae.max_epochs,
                batch_size=ae.batch_size, learning_rate=ae.learning_rate, categorical_loss=ae.categorical_loss,
                n_threads=ae.n_threads, random_state=config.seed),
            clusterer=ConsensusKMeans(n_members=ae.n_members) if ae.n_members > 1 else None,
            n_clusters=config.clustering.n_clusters, n_init=config.clustering.n_init,
            max_iter=config.clustering.max_iter, random_state=config.seed)
    return SegmentationPipeline(
        preprocessor=CustomerPreprocessor(numeric=schema.names("numeric"), categorical=schema.names("categorical"),
                                          ordinal=schema.ordinal_orders or None),
        embedder=AutoencoderEmbedder(
            hidden_dims=tuple(ae.hidden_dims), latent_dim=ae.latent_dim, dropout=ae.dropout,
            learning_rate=ae.learning_rate, batch_size=ae.batch_size, max_epochs=ae.max_epochs,
            patience=ae.patience, lr_factor=ae.lr_factor, lr_patience=ae.lr_patience, min_lr=ae.min_lr,
            validation_fraction=ae.validation_fraction, n_threads=ae.n_threads, random_state=config.seed),
        n_clusters=config.clustering.n_clusters, n_init=config.clustering.n_init,
        max_iter=config.clustering.max_iter, random_state=config.seed)


def _fit_autoencoder(frame, schema, n_clusters, seed, config) -> FittedClustering:
    # the reference design: the config's own autoencoder if it is one, else preset 'reference''s
    autoencoder = config.autoencoder if config.autoencoder.kind == "reference" else \
        RunConfig.from_preset("reference").autoencoder
    config = config.model_copy(deep=True, update={"autoencoder": autoencoder})
    config.seed = seed
    config.clustering.n_clusters = n_clusters
    y = None
    if schema.label_column:
        y = frame[schema.label_column].map(lambda v: v if pd.isna(v) else category_text(v))
    return _fit_segmentation(build_pipeline(config, schema), frame, y)


def _mixed_config(config: RunConfig, seed: int, n_clusters: int, guided: bool) -> RunConfig:
    """``config`` with the ensemble of the row: preset 'guided' (``guided``) or 'mixed', with the config's own
    changes to a mixed-type autoencoder laid over it; seed and k from the comparison.

    The changes are the settings in which the config's mixed-type autoencoder differs from its
    preset's ('mixed''s for a config over any other preset), so ``[autoencoder] n_members = 80``
    reaches both rows whichever of the two presets the file is laid over. A config of the reference
    design changes neither row. The mixed row never learns from the segments; the guided row does,
    with the config's weight if it gives one, else the guided preset's (:data:`GUIDANCE_WEIGHT` if
    that is 0). Before, the guided row took the whole config's autoencoder whenever it was a mixed
    one, and the default settings are preset 'mixed''s: it fitted the mixed preset's 32-8 members
    with a head (held-out NMI 0.172 where the guided preset reaches 0.186).
    """
    autoencoder = RunConfig.from_preset("guided" if guided else "mixed").autoencoder
    own = config.autoencoder
    if own.kind == "mixed":
        base = RunConfig.from_preset(config.preset if config.preset in ("mixed", "guided") else "mixed").autoencoder
        changes = {name: value for name, value in own if name != "guidance_weight" and value != getattr(base, name)}
        autoencoder = autoencoder.model_copy(update=changes)
    weight = 0.0
    if guided:
        weight = (own.guidance_weight if own.kind == "mixed" and own.guidance_weight > 0 else
                  autoencoder.guidance_weight or GUIDANCE_WEIGHT)
    out = config.model_copy(deep=True, update={"autoencoder": autoencoder.model_copy(update={"guidance_weight": weight}),
                                               "seed": seed})
    out.clustering.n_clusters = n_clusters
    return out


def _fit_mixed_ensemble(frame, schema, n_clusters, seed, config) -> FittedClustering:
    return _fit_segmentation(build_pipeline(_mixed_config(config, seed, n_clusters, False), schema), frame, None)


def _fit_guided_ensemble(frame, schema, n_clusters, seed, config) -> FittedClustering:
    y = frame[schema.label_column].map(lambda v: v if pd.isna(v) else category_text(v))
    return _fit_segmentation(build_pipeline(_mixed_config(config, seed, n_clusters, True), schema), frame, y)


#: Every clustering method of the comparison, in the order of its tables. Extend this to add one.
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("kmeans_features", "K-Means on features",
           "the label-encoded, standardized features (CustomerPreprocessor)", _fit_kmeans_features),
    Method("kmeans_onehot", "K-Means on one-hot features",
           "standardized numeric + one-hot categorical features (the reference space)", _fit_kmeans_onehot),
    Method("pca_kmeans", "PCA + K-Means",
           "principal components of the features, as many as the autoencoder's latent features", _fit_pca_kmeans),
    Method("gmm_features", "Gaussian mixture on features",
           "the label-encoded, standardized features; full covariances", _fit_gmm),
    Method("kprototypes", "K-Prototypes (mixed types)",
           "standardized numeric + sqrt(gamma/2)-scaled one-hot categorical features, where K-Prototypes' "
           "cost is the squared Euclidean distance", _fit_kprototypes),
    Method("latent_class", "Latent class model (StepMix, mixed types)",
           "the reference space (a latent class model has no distance of its own; its indicators are the "
           "standardized numeric features, Gaussian, and the categorical features, categorical)", _fit_latent_class),
    Method("autoencoder_kmeans", "Autoencoder + K-Means (custseg)",
           "the autoencoder's latent features (reference design)", _fit_autoencoder),
    Method("mixed_ensemble", "Mixed-type autoencoder ensemble + consensus K-Means (preset 'mixed')",
           "the members' latent features side by side (consensus K-Means standardizes each member's block)",
           _fit_mixed_ensemble),
    Method("guided_ensemble", "Guided mixed-type ensemble + consensus K-Means (preset 'guided')",
           "the members' latent features side by side, trained with a known-segment head", _fit_guided_ensemble,
           uses_known_segments=True),
]}


def register_method(method: Method) -> None:
    """Add ``method`` to :data:`METHODS` (its name must be new)."""
    if method.name in METHODS:
        raise ConfigError(f"a method named {method.name!r} is already registered; give it another name")
    METHODS[method.name] = method
