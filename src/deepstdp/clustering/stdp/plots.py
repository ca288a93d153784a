"""Pictures of a fitted STDPClustering: receptive fields and neuron activity over training."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepstdp.clustering.stdp.estimator import STDPClustering  # noqa: E402
from deepstdp.runtime.util import DeepSTDPError, atomic_write  # noqa: E402


def _fields(clusterer: STDPClustering) -> np.ndarray:
    """(neurons, D) signed receptive fields: on-cell minus off-cell weights."""
    if not hasattr(clusterer, "weights_"):
        raise DeepSTDPError("the clusterer must be fitted before plotting")
    d = clusterer.n_features_in_
    return (clusterer.weights_[:d] - clusterer.weights_[d:]).T


def plot_receptive_fields(clusterer: STDPClustering, path: str | Path,
                          image_shape: tuple[int, ...] | None = None) -> None:
    """Each neuron's input weights (on minus off), as Diehl & Cook's grid of images when the
    inputs are pixels (`image_shape`, e.g. (8, 8)), else as a neurons x inputs heatmap.

    One symmetric colour scale for all neurons, so strong and weak fields compare; titles give
    the neuron's cluster when neurons outnumber clusters.
    """
    fields = _fields(clusterer)
    n, d = fields.shape
    lim = float(np.abs(fields).max()) or 1.0
    style = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
    if image_shape is None:
        fig, ax = plt.subplots(figsize=(min(14.0, 4 + d / 20), min(12.0, 2 + n / 8)),
                               constrained_layout=True)
        im = ax.imshow(fields, aspect="auto", interpolation="nearest", **style)
        ax.set_xlabel("input dimension")
        ax.set_ylabel("neuron")
        fig.colorbar(im, ax=ax, label="weight on - off")
    else:
        if math.prod(image_shape) != d:
            raise DeepSTDPError(f"image_shape {tuple(image_shape)} does not hold {d} inputs")
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 1, 1.2 * rows + 0.4),
                                 squeeze=False, constrained_layout=True)
        overclustered = clusterer.n_neurons_ > clusterer.n_clusters
        for j, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if j < n:
                im = ax.imshow(fields[j].reshape(image_shape), **style)
                if overclustered:
                    ax.set_title(f"c{clusterer.neuron_cluster_[j]}", fontsize=7)
        fig.colorbar(im, ax=axes, shrink=0.6, label="weight on - off")
    fig.suptitle(f"receptive fields of {n} neurons")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plot_neuron_activity(clusterer: STDPClustering, path: str | Path) -> None:
    """Per-neuron spike counts and thresholds (theta) after each training pass.

    Healthy training shows every neuron spiking (no dead rows) and thetas that level off;
    a row that stays dark or a theta far above the others marks a neuron that lost or hogged
    the competition.
    """
    if not getattr(clusterer, "history_", {}).get("spikes"):
        raise DeepSTDPError("the clusterer must be fitted before plotting")
    spikes = np.array(clusterer.history_["spikes"]).T  # (neurons, passes)
    theta = np.array(clusterer.history_["theta"]).T
    wins = np.array(clusterer.history_["wins"])[-1]
    n, passes = spikes.shape
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    im = axes[0].imshow(spikes, aspect="auto", interpolation="nearest", cmap="viridis",
                        extent=(0.5, passes + 0.5, n - 0.5, -0.5))
    axes[0].set(xlabel="training pass", ylabel="neuron", title="spikes per pass")
    fig.colorbar(im, ax=axes[0])
    x = np.arange(1, passes + 1)
    if n <= 20:
        axes[1].plot(x, theta.T, "o-", ms=3, lw=1)
    else:
        lo, mid, hi = np.percentile(theta, [0, 50, 100], axis=0)
        axes[1].fill_between(x, lo, hi, alpha=0.3, label="min-max")
        axes[1].plot(x, mid, "o-", ms=3, label="median")
        axes[1].legend()
    axes[1].set(xlabel="training pass", ylabel="theta (mV)", title="adaptive thresholds")
    axes[1].grid(alpha=0.3)
    axes[2].bar(np.arange(n), wins, width=1.0)
    axes[2].axhline(wins.mean(), color="k", lw=1, ls="--", label="balanced")
    axes[2].set(xlabel="neuron", ylabel="samples won", title="wins in the last pass")
    axes[2].legend()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
