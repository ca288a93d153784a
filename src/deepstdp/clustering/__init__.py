"""Stage 4, clustering: the features made into clusters.

- `choices`: the stage's choice tuples and picture names; light, read by the settings.
- `base`: `Clusterer`, the interface the loop needs (a scikit-learn clusterer with checkpoints),
  and the helpers every clusterer shares.
- `pca`: `PCAWhitening`, the features' PCA whitening before clustering.
- `kmeans`: `KMeansClustering` (scikit-learn or faiss), DeepCluster's clusterer.
- `stdp/`: the spiking layer, `STDPClustering` (Diehl & Cook 2015), Deep-STDP's clusterer.

The classes load on first use (`from deepstdp.clustering import PCAWhitening` works), so that
importing `deepstdp.clustering.choices` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Clusterer": "base", "NotFittedError": "base", "PCAWhitening": "pca",
         "KMeansClustering": "kmeans"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'deepstdp.clustering' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deepstdp.clustering.{_LAZY[name]}"), name)
