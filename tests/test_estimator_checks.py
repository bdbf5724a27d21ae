"""scikit-learn's own estimator checks on custseg's estimators.

The settings are small so that the checks run fast; they exercise the contract
(validation, cloning, fitted state, input types), not the quality of a fit.

Every check passes: no check is expected to fail. (The three array-API checks are
skipped by scikit-learn itself unless SCIPY_ARRAY_API=1 is set.)
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from custseg import AutoencoderEmbedder, CustomerPreprocessor, SegmentationPipeline
from custseg.clustering import ConsensusKMeans
from custseg.embedders.mixed import MixedAutoencoderEmbedder


def _small_embedder(**kw):
    return AutoencoderEmbedder(hidden_dims=(8,), latent_dim=2, max_epochs=3, batch_size=16, random_state=0, **kw)


ESTIMATORS = [
    _small_embedder(),
    CustomerPreprocessor(),
    SegmentationPipeline(embedder=_small_embedder(), n_clusters=3, n_init=2, max_iter=50, random_state=0),
    # the mixed design: the embedder encodes the table itself, a consensus of its members clusters
    SegmentationPipeline(preprocessor="passthrough",
                         embedder=MixedAutoencoderEmbedder(hidden_dims=(8,), latent_dim=2, n_members=3, max_epochs=3,
                                                           batch_size=16),
                         clusterer=ConsensusKMeans(n_init=2), n_clusters=3, random_state=0),
    # the large-table path: the ensemble and its consensus fitted on samples, every row assigned in slices
    SegmentationPipeline(preprocessor="passthrough",
                         embedder=MixedAutoencoderEmbedder(hidden_dims=(8,), latent_dim=2, n_members=3, max_epochs=3,
                                                           batch_size=16),
                         clusterer=ConsensusKMeans(n_init=2), n_clusters=3, random_state=0, fit_sample=15,
                         cluster_sample=12),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
