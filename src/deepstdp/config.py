"""Run settings: one dataclass, every default documented, saved resolved in config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepstdp.util import DeepSTDPError

CLUSTERERS = ("kmeans", "stdp")
DATASETS = ("digits", "tiny-imagenet")
HEADS = ("centroid", "reset")
SAMPLINGS = ("uniform", "shuffle")
BALANCES = ("none", "sinkhorn")
SCHEDULES = ("cosine", "constant")
ACTIVATIONS = ("relu", "qcfs")


@dataclass
class TrainConfig:
    # Data
    dataset: str = "digits"
    """'digits' (scikit-learn's 1,797 8x8 digits, shipped, no download) or 'tiny-imagenet'."""
    data_root: str | None = None
    """Tiny ImageNet root (or the folder holding it); falls back to $DEEPSTDP_DATA."""
    classes: str = "10"
    """A class count N (first N wnids in sorted order) or comma-separated wnids."""
    image_size: int = 32
    """Side the images are resized to. At 32 a Tiny ImageNet epoch of the default recipe took
    15-20 s on one thread (docs/learning.md); 64 has four times the pixels."""

    # Network
    widths: str = "32,M,64,M,128,M,256,M"
    """VGG-style body: conv widths, 'M' a 2x2 pooling. Narrow so an epoch on 5,000 64x64 images
    takes about 20 s on 2 cores (fp32); '64,M,128,M,256,M,512,M' is about 3x slower."""
    feat_dim: int = 512
    """Width of the ReLU feature layer that is clustered."""
    sobel: bool = False
    """DeepCluster's grayscale+Sobel input filter, against clustering by colour. Off by
    default: colour jitter and random grayscale (below) remove the colour shortcut while
    keeping colour as a cue (docs/learning.md)."""
    pool: str = "max"
    """'max' or 'avg'; 'avg' converts to spiking neurons without a spiking max-pool."""
    activation: str = "relu"
    """'relu', or 'qcfs': Bu et al.'s quantisation-clip-floor-shift activation with a trainable
    threshold per layer, after which the spiking conversion needs about `qcfs_levels` steps
    instead of hundreds (docs/conversion.md)."""
    qcfs_levels: int = 8
    """Quantisation levels L of 'qcfs': the converted network matches the CNN on average after
    T = L steps, so fewer levels mean fewer steps and coarser activations."""
    dropout: float = 0.0
    """Dropout before the feature layer. Every run of docs/learning.md used none; DeepCluster's
    0.3 was not measured under the recipe."""
    proj_dim: int = 128
    """Width of the L2-normalised projection of the features that is clustered and trained
    against prototypes (DeepCluster-v2, SwAV); 0: cluster the features themselves."""
    precision: str = "auto"
    """'bf16' autocast + channels_last, 'fp32', or 'auto': bf16 only where the CPU has native
    bf16 (AMX or AVX512-BF16) and a few timed training steps run faster in it than in fp32
    (docs/pipeline.md: 2x faster on one CPU with AVX512-BF16, 3.7x slower on another)."""

    # Clustering
    clusterer: str = "kmeans"
    """'kmeans' (DeepCluster) or 'stdp' (Deep-STDP's spiking clustering layer)."""
    k: int | None = None
    """Number of clusters evaluated; None: the number of classes."""
    k_train: int | None = None
    """Clusters that make the training targets (overclustering); None: 10 * k, DeepCluster's
    ratio. Evaluation stays at k: k-means fits both partitions; the spiking clusterer runs a
    k_train-neuron layer for the targets and a k-neuron layer that is evaluated."""
    pca_dim: int = 32
    """PCA-whitening dimension, capped by the sample count and feature width. DeepCluster used
    256 for ImageNet; on these few-thousand-image sets whitening that many directions lifts
    noise to the weight of signal (digits: ACC 0.42-0.48 at 256 against 0.82-0.91 at 32)."""
    stdp: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for STDPClustering (see docs/snn.md)."""
    align_pca: bool = False
    """Rotate each epoch's PCA basis onto the last epoch's (orthogonal Procrustes on the
    training embeddings), so that a spiking layer carried over meets its inputs in the basis it
    learnt them in. Distances are unchanged, so k-means is indifferent to it."""
    stdp_carry: str = "continue"
    """'continue': the spiking layer goes on from last epoch's weights (partial_fit);
    'fresh': a new one each epoch."""

    # Targets and top layer
    head: str = "centroid"
    """'centroid': the top layer's weights are the k_train cluster centroids of the projected
    features, fixed for the epoch, logits = cosine / temperature (DeepCluster-v2); 'reset':
    a new linear layer every epoch, trained with the network (DeepCluster)."""
    temperature: float = 0.1
    """Softmax temperature of the centroid head."""
    sampling: str = "uniform"
    """'uniform': each epoch draws equally from every cluster (DeepCluster); 'shuffle': every
    image once."""
    balance: str = "none"
    """'sinkhorn': re-assign the targets with equal cluster sizes by Sinkhorn-Knopp on the
    similarity to the centroids (SeLa); 'none': the clusterer's own assignment."""

    # Augmentation
    views: int = 2
    """Augmented views of each image per step, each trained on the image's target."""
    crop_scale: float = 0.2
    """Smallest area fraction of the random resized crop."""
    jitter: float = 0.4
    """Colour jitter strength (brightness, contrast, saturation; hue shifts up to 0.1 turn);
    RGB images only; behind the Sobel filter only brightness and contrast reach the network."""
    grayscale: float = 0.2
    """Probability of a grayscale view; RGB images only."""

    # Optimisation
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.03
    """Peak learning rate of SGD for `batch_size`. 0.1 (SimCLR's scale) wiped out more of the
    untrained network's k-NN accuracy than it gave back (docs/learning.md)."""
    schedule: str = "cosine"
    """'cosine': linear warm-up, then cosine decay to 0 at the last epoch; 'constant'."""
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4

    # Diagnostics
    knn_k: int = 20
    """Neighbours of the k-NN accuracy reported every epoch (docs/learning.md)."""

    # Run
    seed: int = 0
    threads: int | None = None
    """torch/BLAS threads; None: all cores. Results are reproducible for a fixed count."""

    def validate(self) -> TrainConfig:
        if self.dataset not in DATASETS:
            raise DeepSTDPError(
                f"unknown dataset {self.dataset!r}: choose from {', '.join(DATASETS)}")
        if self.clusterer not in CLUSTERERS:
            raise DeepSTDPError(
                f"unknown clusterer {self.clusterer!r}: choose from {', '.join(CLUSTERERS)}")
        if self.k is not None and self.k < 2:
            raise DeepSTDPError(f"--k must be at least 2, got {self.k}")
        if self.epochs < 1:
            raise DeepSTDPError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise DeepSTDPError(f"--batch-size must be at least 2, got {self.batch_size}")
        if not 0 < self.lr < float("inf"):
            raise DeepSTDPError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1 or not 0 <= self.weight_decay < float("inf"):
            raise DeepSTDPError(f"momentum must be in [0, 1) and weight_decay >= 0, got "
                                f"{self.momentum} and {self.weight_decay}")
        if not 0 <= self.seed < 2**63:
            raise DeepSTDPError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.pca_dim < 2:
            raise DeepSTDPError(f"--pca-dim must be at least 2, got {self.pca_dim}")
        if self.image_size < 8:
            raise DeepSTDPError(f"--image-size must be at least 8, got {self.image_size}")
        if self.threads is not None and self.threads < 1:
            raise DeepSTDPError(f"--threads must be at least 1, got {self.threads}")
        if self.activation not in ACTIVATIONS:
            raise DeepSTDPError(f"unknown activation {self.activation!r}: use "
                                f"{' or '.join(ACTIVATIONS)}")
        if self.qcfs_levels < 1:
            raise DeepSTDPError(f"qcfs_levels must be at least 1, got {self.qcfs_levels}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise DeepSTDPError(f"unknown precision {self.precision!r}: use auto, bf16 or fp32")
        if self.stdp_carry not in ("continue", "fresh"):
            raise DeepSTDPError(f"unknown --stdp-carry {self.stdp_carry!r}: use continue or fresh")
        for name, value, allowed in (("head", self.head, HEADS),
                                     ("sampling", self.sampling, SAMPLINGS),
                                     ("balance", self.balance, BALANCES),
                                     ("schedule", self.schedule, SCHEDULES)):
            if value not in allowed:
                raise DeepSTDPError(f"unknown {name} {value!r}: use {', '.join(allowed)}")
        if self.k_train is not None and self.k_train < 2:
            raise DeepSTDPError(f"k_train must be at least 2, got {self.k_train}")
        if self.views < 1:
            raise DeepSTDPError(f"views must be at least 1, got {self.views}")
        if self.proj_dim < 0:
            raise DeepSTDPError(f"proj_dim must be 0 or more, got {self.proj_dim}")
        if self.head == "centroid" and not 0 < self.temperature < float("inf"):
            raise DeepSTDPError(f"temperature must be positive, got {self.temperature}")
        if not 0 <= self.jitter < 1 or not 0 <= self.grayscale <= 1:
            raise DeepSTDPError(f"jitter must be in [0, 1) and grayscale in [0, 1], got "
                                f"{self.jitter} and {self.grayscale}")
        if self.warmup_epochs < 0 or self.knn_k < 1:
            raise DeepSTDPError("warmup_epochs must be >= 0 and knn_k >= 1")
        if not 0 < self.crop_scale <= 1:
            raise DeepSTDPError(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DeepSTDPError(f"unknown setting(s) in config: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DeepSTDPError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise DeepSTDPError(f"config file {path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise DeepSTDPError(f"config file {path} must hold a JSON object")
        d.pop("version", None)
        return cls.from_dict(d)
