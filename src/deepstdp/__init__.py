"""deepstdp: deep unsupervised learning with spike-timing-dependent plasticity."""

from deepstdp.clustering import KMeansClustering, PCAWhitening
from deepstdp.snn import STDPClustering

__version__ = "0.2.0"
__all__ = ["KMeansClustering", "PCAWhitening", "STDPClustering", "__version__"]
