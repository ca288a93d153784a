"""Clustering a data set's images directly, with no network: raw pixels (Diehl & Cook's own
experiment, where the spiking layer's receptive fields are digits) or their PCA whitening
(the baseline row the CNN's features must beat). `deepstdp cluster` is this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepstdp import registry
from deepstdp.clustering.base import Clusterer
from deepstdp.clustering.pca import PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.data.cache import SPLITS
from deepstdp.data.datasets import load_dataset
from deepstdp.measures.metrics import cluster_metrics, cluster_sizes
from deepstdp.run.rundir import CLUSTERING, check_start
from deepstdp.runtime import threads
from deepstdp.runtime.util import write_json_atomic


def cluster_images(cfg: TrainConfig, out: str | Path, pixels: bool = False, force: bool = False,
                   progress: bool = False) -> dict[str, Any]:
    """Fit `cfg`'s clusterer (k: cfg.k or the classes) to the train images' pixels in [0, 1]
    (`pixels`) or their PCA whitening to cfg.pca_dim, score train and val, and write OUT's
    cluster.json (and the clusterer's pictures, pixels drawn as images when they are single
    channel). Returns what cluster.json holds."""
    registry.check_settings(cfg)
    out = Path(out)
    check_start(out, "clustering", resume=False, force=force)
    with threads.pinned(cfg.threads):
        result, clusterer, shape = _fit(cfg, pixels, progress)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CLUSTERING, result)
    pictures = registry.kind_of(cfg.clusterer).pictures
    if pictures is not None:
        pictures(clusterer, out, image_shape=shape)
    return result


def _fit(cfg: TrainConfig, pixels: bool,
         progress: bool) -> tuple[dict[str, Any], Clusterer, tuple[int, int] | None]:
    sets = [load_dataset(cfg.dataset, split, **cfg.set_options(), progress=progress)
            for split in SPLITS]
    x_train, x_val = (s.images.reshape(len(s.images), -1) / 255.0 for s in sets)
    if pixels:
        shape = sets[0].images.shape[1:3] if sets[0].images.shape[-1] == 1 else None
    else:
        pca = PCAWhitening(cfg.pca_dim).fit(x_train)
        x_train, x_val, shape = pca.transform(x_train), pca.transform(x_val), None
    k = cfg.k or sets[0].n_classes
    clusterer = registry.make_clusterer(cfg, k, cfg.seed, progress)
    labels = clusterer.fit_predict(x_train)
    result = {"train": cluster_metrics(sets[0].labels, labels),
              "val": cluster_metrics(sets[1].labels, clusterer.predict(x_val)),
              "cluster_sizes": cluster_sizes(labels, k), "config": cfg.to_dict(),
              "input": "pixels" if pixels else f"pca{cfg.pca_dim}"}
    return result, clusterer, shape
