"""A saved run as objects, ready to use: its network, PCA whitening and fitted clusterers,
built from the checkpoint that `deepstdp.run.rundir` reads, with the one pipeline every user of
a trained run goes through (images -> features -> embedding -> whitening -> clusters).

Apart from rundir because it builds what the files describe (models, clustering, the
clusterer registry), which the run directory itself need not know: rundir stays below them.
The loop's restore, `deepstdp evaluate`, `deepstdp predict` and the NIR export all build their
objects here, so that a checkpoint is read one way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from deepstdp.clustering.base import Clusterer
from deepstdp.clustering.pca import PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.data.datasets import ImageTensor
from deepstdp.network.features import embed, extract_features
from deepstdp.network.models import ConvNet
from deepstdp.registry import make_clusterer
from deepstdp.run.rundir import EVALUATED, TARGETS, Checkpoint, RunDir
from deepstdp.runtime.devices import CPU_FP32, Compute
from deepstdp.runtime.util import DeepSTDPError


@dataclass(frozen=True)
class LoadedRun:
    """A trained run, ready to use: `predict(whiten(features))`, or `clusters(images)` in one
    call. Its preprocessing is the run's own: images resized to its image_size and normalised
    by its training images' channel statistics, features embedded by its network, then
    whitened by its PCA."""

    config: TrainConfig
    model: ConvNet
    pca: PCAWhitening
    clusterer: Clusterer
    """The evaluated clusterer (k clusters)."""
    checkpoint: Checkpoint
    targets: Clusterer
    """The targets clusterer (k_train clusters, the STDP arm's target neurons): what the
    majority-vote readout names (metrics.majority_names). The same object as `clusterer` when
    the run has one layer (k_train == k)."""

    def whiten(self, features: np.ndarray) -> np.ndarray:
        """What the clusterers see: the network's embedding of extracted features, whitened."""
        return self.pca.transform(embed(self.model, features))

    def embeddings(self, x: ImageTensor | torch.Tensor, compute: Compute = CPU_FP32,
                   progress: bool = False) -> np.ndarray:
        """Whitened embeddings of images (an ImageTensor, or normalised float tensors)."""
        return self.whiten(extract_features(self.model, x, compute, progress=progress))

    def margin(self, z: np.ndarray) -> np.ndarray | None:
        """The evaluated clusterer's confidence in each sample's cluster; None for a clusterer
        without a margin."""
        try:
            return self.clusterer.margin(z)
        except DeepSTDPError:
            return None


def model_from_checkpoint(ck: Checkpoint) -> ConvNet:
    """The checkpoint's network in eval mode (its top layer is not saved)."""
    cfg, state = ck.config, ck.model
    in_channels = state["sobel.gray"].shape[1] if cfg.sobel else state["body.0.weight"].shape[1]
    model = ConvNet.from_config(cfg, in_channels, ck.k)
    model.load_body(state)
    return model.eval()


def clusterer_from_checkpoint(ck: Checkpoint, which: str = EVALUATED) -> Clusterer:
    """The run's evaluated clusterer (k clusters) or, `which=TARGETS`, its targets clusterer
    (k_train), as fitted at the checkpoint's epoch."""
    n = ck.k if which == EVALUATED else len(ck.prototypes)
    clusterer = make_clusterer(ck.config, n, 0)  # the seed is in the state where it matters
    clusterer.load_state_dict(ck.clusterer[which])
    return clusterer


def clusterers_from_checkpoint(ck: Checkpoint) -> tuple[Clusterer, Clusterer]:
    """(evaluated, targets) as the loop left them: one object when k_train == k, so that a
    one-layer run goes on training that one layer."""
    evaluated = clusterer_from_checkpoint(ck)
    one_layer = len(ck.prototypes) == ck.k
    return evaluated, evaluated if one_layer else clusterer_from_checkpoint(ck, TARGETS)


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Everything needed to use a trained run, from its directory, in one call."""
    ck = RunDir(path).load_checkpoint()
    evaluated, targets = clusterers_from_checkpoint(ck)
    return LoadedRun(ck.config, model_from_checkpoint(ck), PCAWhitening.from_state_dict(ck.pca),
                     evaluated, ck, targets)
