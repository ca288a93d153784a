"""The clustering stage's choices and file names, light (no scikit-learn, torch or numba), so
that the settings and the command line read them without loading a clusterer."""

KMEANS_BACKENDS = ("auto", "sklearn", "faiss")
"""KMeansClustering's backends: faiss where installed and large enough ('auto'), or one named."""

STDP_WEIGHTS, STDP_ACTIVITY = "stdp_weights.png", "stdp_activity.png"
"""The pictures a spiking layer draws into its run's folder each epoch (stdp.plots)."""
