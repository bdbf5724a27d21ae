"""custseg: customer segmentation with autoencoders.

Learn a compressed representation of customers with an autoencoder, cluster it with
K-Means, evaluate and describe the segments, map them to known segments and assign
new customers.

The names below are imported on first use (PEP 562), so ``import custseg`` and the
command line's ``--help`` and option errors do not pay for torch and scikit-learn.

>>> import custseg
>>> sorted(custseg.__all__)[:3]
['AutoencoderEmbedder', 'CustomerPreprocessor', 'CustsegError']
"""

from importlib import import_module

from ._version import __version__

#: public name -> the module that defines it
_PUBLIC = {
    "Autoencoder": ".embedders.autoencoder",
    "AutoencoderEmbedder": ".embedders.autoencoder",
    "ConfigError": ".exceptions",
    "CustomerPreprocessor": ".preprocessing",
    "CustsegError": ".exceptions",
    "DataError": ".exceptions",
    "ModelFormatError": ".exceptions",
    "NotFittedError": ".exceptions",
    "RunConfig": ".config",
    "Schema": ".schema",
    "SchemaError": ".exceptions",
    "SegmentationPipeline": ".pipeline",
    "assign_to_centroids": ".clustering",
    "external_metrics": ".evaluation.metrics",
    "infer_schema": ".schema",
    "internal_metrics": ".evaluation.metrics",
    "load_config": ".config",
    "load_model": ".persistence",
    "map_clusters_to_segments": ".clustering",
    "read_table": ".io.reading",
    "save_model": ".persistence",
    "scan_k": ".evaluation.selection",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'custseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
