"""Clusterers by name: the one place that builds a clusterer from a run's settings.

Adding a clusterer to the loop is one class (a `deepstdp.clustering.Clusterer`) and one
`register` call; the settings, the command line, the training loop, checkpoints and the report
then know it by name. Builders import their module when called, so that naming a clusterer
costs nothing until one is used (the spiking one compiles numba kernels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepstdp.clustering.base import Clusterer
    from deepstdp.config import TrainConfig


@dataclass(frozen=True)
class ClustererKind:
    build: Callable[[TrainConfig, int, int], Clusterer]
    """(settings, n_clusters, random_state) -> an unfitted clusterer."""
    carries_state: bool = False
    """Whether the loop may continue it from last epoch's state (`partial_fit`) instead of
    fitting a new one, as the spiking layer does (TrainConfig.stdp_carry)."""
    pictures: Callable[..., None] | None = None
    """(clusterer, folder, image_shape=None): draws the fitted clusterer into a folder after
    each epoch, for clusterers that have pictures; image_shape: inputs that are images."""


_KINDS: dict[str, ClustererKind] = {}


def register(name: str, kind: ClustererKind) -> None:
    _KINDS[name] = kind


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


def kind_of(name: str) -> ClustererKind:
    from deepstdp.runtime.util import SettingError

    if name not in _KINDS:
        raise SettingError("clusterer", f"{name!r} is unknown: choose from {', '.join(_KINDS)}")
    return _KINDS[name]


def check_settings(cfg: TrainConfig) -> TrainConfig:
    """The whole check of a run's settings: `cfg.validate()` (types and ranges), and its
    clusterer's name, which only the registry knows. Returns cfg."""
    cfg.validate()
    kind_of(cfg.clusterer)
    return cfg


def make_clusterer(cfg: TrainConfig, k: int, seed: int, verbose: bool = False) -> Clusterer:
    return show_progress(kind_of(cfg.clusterer).build(cfg, k, seed), verbose)


def show_progress(clusterer: Clusterer, on: bool) -> Clusterer:
    """Turn a clusterer's progress bar on or off, for clusterers that have one (scikit-learn's
    `verbose` parameter): a spiking fit on many samples takes minutes."""
    if "verbose" in clusterer.get_params():
        clusterer.set_params(verbose=on)
    return clusterer


def _kmeans(cfg: TrainConfig, k: int, seed: int) -> Clusterer:
    from deepstdp.clustering.kmeans import KMeansClustering

    return KMeansClustering(k, backend=cfg.kmeans_backend, random_state=seed)


def _stdp(cfg: TrainConfig, k: int, seed: int) -> Clusterer:
    from deepstdp.clustering.stdp.estimator import STDPClustering

    return STDPClustering(k, random_state=seed, **dataclasses.asdict(cfg.stdp))


def _stdp_pictures(clusterer: Clusterer, folder: Path,
                   image_shape: tuple[int, int] | None = None) -> None:
    """The spiking layer's receptive fields and activity, named as a run directory has them."""
    from deepstdp.clustering.choices import STDP_ACTIVITY, STDP_WEIGHTS
    from deepstdp.clustering.stdp.plots import plot_neuron_activity, plot_receptive_fields

    plot_receptive_fields(clusterer, Path(folder) / STDP_WEIGHTS, image_shape)
    plot_neuron_activity(clusterer, Path(folder) / STDP_ACTIVITY)


register("kmeans", ClustererKind(_kmeans))
register("stdp", ClustererKind(_stdp, carries_state=True, pictures=_stdp_pictures))
