"""deepstdp: deep unsupervised learning with spike-timing-dependent plasticity.

The public names load on first use, so that the command line starts fast: the spiking
clusterer brings numba, the others torch and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.12.0"

_PUBLIC = {
    "KMeansClustering": "deepstdp.clustering.kmeans",
    "PCAWhitening": "deepstdp.clustering.pca",
    "STDPClustering": "deepstdp.clustering.stdp.estimator",
    "TrainConfig": "deepstdp.config",
    "train": "deepstdp.loop.training",
    "load_run": "deepstdp.run.loaded",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'deepstdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
