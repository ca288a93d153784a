"""Stage 6, the loop: `training` (the DeepCluster loop, `train`), `targets` (centroids, Sinkhorn,
sampling: the pseudo-labels the network learns), `compare` (comparisons over clusterers and
seeds)."""
