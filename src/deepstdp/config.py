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


@dataclass
class TrainConfig:
    # Data
    dataset: str = "digits"
    """'digits' (scikit-learn's 1,797 8x8 digits, shipped, no download) or 'tiny-imagenet'."""
    data_root: str | None = None
    """Tiny ImageNet root (or the folder holding it); falls back to $DEEPSTDP_DATA."""
    classes: str = "10"
    """A class count N (first N wnids in sorted order) or comma-separated wnids."""
    image_size: int | None = None
    """Side the images are resized to; None: 64 for Tiny ImageNet, 32 for digits."""

    # Network
    widths: str = "32,M,64,M,128,M,256,M"
    """VGG-style body: conv widths, 'M' a 2x2 pooling. Narrow so an epoch on 5,000 64x64 images
    takes about 20 s on 2 cores (fp32); '64,M,128,M,256,M,512,M' is about 3x slower."""
    feat_dim: int = 512
    """Width of the ReLU feature layer that is clustered."""
    sobel: bool = True
    """DeepCluster's grayscale+Sobel input filter, against clustering by colour."""
    pool: str = "max"
    """'max' or 'avg'; 'avg' converts to spiking neurons without a spiking max-pool."""
    dropout: float = 0.3
    precision: str = "auto"
    """'bf16' autocast + channels_last, 'fp32', or 'auto': bf16 only where the CPU has native
    bf16 (AMX or AVX512-BF16); emulated bf16 was 2.5-3x slower than fp32 on an AVX-512-only CPU."""

    # Clustering
    clusterer: str = "kmeans"
    """'kmeans' (DeepCluster) or 'stdp' (Deep-STDP's spiking clustering layer)."""
    k: int | None = None
    """Number of clusters; None: the number of classes."""
    pca_dim: int = 32
    """PCA-whitening dimension, capped by the sample count and feature width. DeepCluster used
    256 for ImageNet; on these few-thousand-image sets whitening that many directions lifts
    noise to the weight of signal (digits: ACC 0.42-0.48 at 256 against 0.82-0.91 at 32)."""
    stdp: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for STDPClustering (see docs/snn.md)."""
    stdp_carry: str = "continue"
    """'continue': the spiking layer goes on from last epoch's weights (partial_fit);
    'fresh': a new one each epoch."""

    # Optimisation
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    crop_scale: float = 0.3
    """Smallest area fraction of the random resized crop."""

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
        if self.lr <= 0:
            raise DeepSTDPError(f"--lr must be positive, got {self.lr}")
        if self.pca_dim < 2:
            raise DeepSTDPError(f"--pca-dim must be at least 2, got {self.pca_dim}")
        if self.image_size is not None and self.image_size < 8:
            raise DeepSTDPError(f"--image-size must be at least 8, got {self.image_size}")
        if self.threads is not None and self.threads < 1:
            raise DeepSTDPError(f"--threads must be at least 1, got {self.threads}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise DeepSTDPError(f"unknown precision {self.precision!r}: use auto, bf16 or fp32")
        if self.stdp_carry not in ("continue", "fresh"):
            raise DeepSTDPError(f"unknown --stdp-carry {self.stdp_carry!r}: use continue or fresh")
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
