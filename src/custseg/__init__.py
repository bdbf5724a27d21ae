"""custseg: customer segmentation with autoencoders.

Learn a compressed representation of customers with an autoencoder, cluster it with
K-Means, evaluate and describe the segments, map them to known segments and assign
new customers.

>>> import custseg
>>> sorted(custseg.__all__)[:3]
['AutoencoderEmbedder', 'CustomerPreprocessor', 'CustsegError']
"""

from ._version import __version__

from .embedders.autoencoder import Autoencoder, AutoencoderEmbedder  # noqa: E402
from .clustering import assign_to_centroids, map_clusters_to_segments
from .evaluation.selection import scan_k  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402
from .exceptions import (  # noqa: E402
    ConfigError, CustsegError, DataError, ModelFormatError, NotFittedError, SchemaError)
from .io.reading import read_table  # noqa: E402
from .evaluation.metrics import external_metrics, internal_metrics  # noqa: E402
from .persistence import load_model, save_model  # noqa: E402
from .pipeline import SegmentationPipeline  # noqa: E402
from .preprocessing import CustomerPreprocessor  # noqa: E402
from .schema import Schema, infer_schema  # noqa: E402

__all__ = [
    "__version__",
    "Autoencoder",
    "AutoencoderEmbedder",
    "ConfigError",
    "CustomerPreprocessor",
    "CustsegError",
    "DataError",
    "ModelFormatError",
    "NotFittedError",
    "RunConfig",
    "Schema",
    "SchemaError",
    "SegmentationPipeline",
    "assign_to_centroids",
    "external_metrics",
    "infer_schema",
    "internal_metrics",
    "load_config",
    "load_model",
    "map_clusters_to_segments",
    "read_table",
    "save_model",
    "scan_k",
]
