"""A trained run as objects, ready to use: its network, PCA-whitening and fitted clusterer,
built from the checkpoint that `deepstdp.run.rundir` reads.

Apart from rundir because it builds what the files describe (models, clustering, the
clusterer registry), which the run directory itself need not know: rundir stays below them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from deepstdp.clustering.base import Clusterer
from deepstdp.clustering.pca import PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.network.models import ConvNet
from deepstdp.registry import make_clusterer
from deepstdp.run.rundir import Checkpoint, RunDir


class LoadedRun(NamedTuple):
    """A trained run, ready to use: `clusterer.predict(pca.transform(embeddings))`."""

    config: TrainConfig
    model: ConvNet
    pca: PCAWhitening
    clusterer: Clusterer
    checkpoint: Checkpoint
    targets: Clusterer
    """The targets clusterer (k_train clusters, the STDP arm's target neurons): what the
    majority-vote readout names (metrics.majority_names)."""


def model_from_checkpoint(ck: Checkpoint) -> ConvNet:
    """The checkpoint's network in eval mode (its top layer is not saved)."""
    cfg, state = ck.config, ck.model
    in_channels = state["sobel.gray"].shape[1] if cfg.sobel else state["body.0.weight"].shape[1]
    model = ConvNet.from_config(cfg, in_channels, ck.k)
    model.load_body(state)
    return model.eval()


def clusterer_from_checkpoint(ck: Checkpoint, which: str = "evaluated") -> Clusterer:
    """The run's evaluated clusterer (k clusters) or, `which="targets"`, its targets clusterer
    (k_train), as fitted at the checkpoint's epoch."""
    state = ck.clusterer[which]
    n = ck.k if which == "evaluated" else len(ck.prototypes)
    clusterer = make_clusterer(ck.config, n, 0)
    clusterer.load_state_dict(state)
    return clusterer


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Everything needed to use a trained run, from its directory, in one call."""
    ck = RunDir(path).load_checkpoint()
    return LoadedRun(ck.config, model_from_checkpoint(ck), PCAWhitening.from_state_dict(ck.pca),
                     clusterer_from_checkpoint(ck), ck, clusterer_from_checkpoint(ck, "targets"))
