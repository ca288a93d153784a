"""Deep-STDP's spiking clustering layer, a Diehl & Cook (2015) network trained by STDP.

- `settings`: `STDPSettings`, every setting with its default and range; light (no numba), so
  the settings and the command line read it without compiling anything.
- `kernels`: the compiled time loop and the passes over a data set (functions of arrays).
- `estimator`: `STDPClustering`, the scikit-learn estimator that holds the state and calls them.
- `plots`: pictures of a fitted layer.

Nothing is imported here, so that importing `deepstdp.clustering.stdp.settings` stays light.
"""
