"""Run settings: one dataclass, every default documented, saved resolved in config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepstdp.clustering.choices import KMEANS_BACKENDS
from deepstdp.clustering.stdp.settings import BEFORE_0_5, STDPSettings
from deepstdp.runtime.rules import Rule, check_fields
from deepstdp.runtime.util import DeepSTDPError, SettingError

DATASETS = ("digits", "tiny-imagenet", "folder", "cifar10", "cifar100", "cifar100-20", "stl10",
            "stl10-unlabelled", "mnist", "fashion-mnist", "nmnist")
HEADS = ("centroid", "reset")
SAMPLINGS = ("uniform", "shuffle")
BALANCES = ("none", "sinkhorn")
SCHEDULES = ("cosine", "constant")
ACTIVATIONS = ("relu", "qcfs")
POOLS = ("max", "avg")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CARRIES = ("continue", "targets", "fresh")
"""The choices of the settings above, each in one tuple: the modules that implement a
choice, the command line and RULES all read it from here (this module is light)."""
RELU_PERCENTILE = 99.9
"""Where a ReLU layer of the converted network fires: this percentile of its positive
activations. The conversion's default threshold (ConversionSettings.percentile) and the
threshold the firing penalty assumes while training (network.firing), one number."""
_DEEPCLUSTER = {
    "head": "reset", "sobel": True, "views": 1, "pool": "max", "proj_dim": 0, "dropout": 0.5,
    "crop_scale": 0.08, "jitter": 0.0, "grayscale": 0.0, "batch_size": 256, "lr": 0.05,
    "schedule": "constant", "warmup_epochs": 0, "momentum": 0.9, "weight_decay": 1e-5,
    "sampling": "uniform", "balance": "none", "target_keep": 1.0, "k_train": None}
RECIPES: dict[str, dict[str, Any]] = {
    "v2": {}, "deepcluster": _DEEPCLUSTER, "paper": {**_DEEPCLUSTER, "image_size": 64}}
"""Named sets of settings over the defaults (`TrainConfig.of_recipe`, `--recipe`); options
given explicitly override them, and config.json stores every value resolved.

- v2: the defaults, DeepCluster-v2-style (centroid head, k_train = 10 k, two views; the
  sources in docs/learning.md).
- deepcluster: Caron et al. (2018) as their paper and code (facebookresearch/deepcluster,
  main.py and main.sh) fix it, translated to this network: a new linear top layer every epoch
  trained with the network, Sobel input, one view of RandomResizedCrop's default area 0.08-1
  and a flip, no colour augmentation, max pooling, the ReLU features themselves clustered
  (no projection) after PCA-whitening and L2 normalisation, k-means targets at 10x the
  classes sampled uniformly over clusters, dropout 0.5 before the feature layer (AlexNet's
  classifier), SGD batch 256 at a constant lr 0.05, momentum 0.9, weight decay 1e-5. Their PCA
  keeps 256 of AlexNet's 4,096 dimensions (1/16); here pca_dim stays 32 of 512, the same ratio
  (docs/reproduction.md).
- paper: deepcluster at 64 px, Tiny ImageNet's own resolution, the paper's setting as far as
  its abstract and baseline tell (docs/reproduction.md)."""
BEFORE_0_6 = {"sparsity": 0.0}
"""The values of the settings that 0.6 added, for the runs saved before them."""


RULES: dict[str, Rule] = {
    "recipe": Rule(choices=tuple(RECIPES)),
    "dataset": Rule(choices=DATASETS), "image_size": Rule(8, 512), "feat_dim": Rule(1, 65536),
    "pool": Rule(choices=POOLS), "activation": Rule(choices=ACTIVATIONS),
    "qcfs_levels": Rule(1, 1024), "sparsity": Rule(0), "dropout": Rule(0, 1, high_open=True),
    "proj_dim": Rule(0, 65536), "precision": Rule(choices=PRECISIONS), "k": Rule(2, 10**6),
    "k_train": Rule(2, 10**6), "pca_dim": Rule(2, 65536), "stdp_carry": Rule(choices=CARRIES),
    "kmeans_backend": Rule(choices=KMEANS_BACKENDS),
    "head": Rule(choices=HEADS), "temperature": Rule(0, low_open=True),
    "sampling": Rule(choices=SAMPLINGS), "balance": Rule(choices=BALANCES),
    "target_keep": Rule(0, 1, low_open=True),
    "views": Rule(1, 64), "crop_scale": Rule(0, 1, low_open=True),
    "jitter": Rule(0, 1, high_open=True), "grayscale": Rule(0, 1), "epochs": Rule(1, 100_000),
    "batch_size": Rule(2, 65536), "lr": Rule(0, low_open=True),
    "schedule": Rule(choices=SCHEDULES), "warmup_epochs": Rule(0, 100_000),
    "momentum": Rule(0, 1, high_open=True), "weight_decay": Rule(0), "knn_k": Rule(1, 10_000),
    "probe_every": Rule(1, 100_000),
    "seed": Rule(0, 2**63, high_open=True), "threads": Rule(1, 4096),
    "val_fraction": Rule(0, 1, low_open=True, high_open=True),
}
"""What each setting allows beyond its type; the clusterer's names are the registry's."""


def stdp_settings(values: Any, base: STDPSettings | None = None) -> STDPSettings:
    """STDPSettings from a JSON object of fields (over `base`, default the defaults)."""
    if isinstance(values, STDPSettings):
        return values
    if not isinstance(values, dict):
        raise SettingError("stdp", f"must be an object of STDP settings, got {values!r}")
    known = {f.name for f in dataclasses.fields(STDPSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingError("stdp", f"has no setting {', '.join(unknown)}: the settings are "
                                   f"{', '.join(sorted(known))}")
    return dataclasses.replace(base or STDPSettings(), **values)


def parse_widths(spec: str) -> list[int | str]:
    """'64,M,128,M' -> [64, 'M', 128, 'M']: conv widths, 'M' for a 2x2 pooling."""
    out: list[int | str] = []
    for tok in spec.split(","):
        tok = tok.strip()
        if tok.upper() == "M":
            out.append("M")
        elif tok.isdigit() and int(tok) > 0:
            out.append(int(tok))
        else:
            raise SettingError("widths", f"entry {tok!r} is neither a positive integer nor 'M'")
    if not any(isinstance(t, int) for t in out):
        raise SettingError("widths", "needs at least one convolution width")
    return out


@dataclass
class TrainConfig:
    recipe: str = "v2"
    """The named set of settings these start from (RECIPES): 'v2' (the defaults below),
    'deepcluster' (Caron et al. 2018) or 'paper' (deepcluster at 64 px). Every other field
    holds the value in force, so a run's config.json says all of it."""

    # Data
    dataset: str = "digits"
    """'digits' (scikit-learn's 1,797 8x8 digits, shipped, no download), 'tiny-imagenet',
    'folder' (any folder of images) or a standard set from its official files: 'cifar10',
    'cifar100', 'cifar100-20' (its superclasses), 'stl10', 'stl10-unlabelled' (its 100,000
    unlabelled images trained on too), 'mnist', 'fashion-mnist' (docs/data.md)."""
    data_root: str | None = None
    """The set's folder (or, but for 'folder', the folder holding it); for Tiny ImageNet and
    the standard sets it falls back to $DEEPSTDP_DATA."""
    classes: str = "10"
    """A class count N (first N wnids in sorted order) or comma-separated wnids."""
    image_size: int = 32
    """Side the images are resized to. At 32 a Tiny ImageNet epoch of the default recipe took
    15-20 s on one thread (docs/learning.md); 64 has four times the pixels."""
    val_fraction: float = 0.1
    """Dataset 'folder' without a train/val pair of folders: the fraction of its images held
    out as the val split (seeded, stratified by class when labelled)."""
    skip_bad: bool = False
    """Dataset 'folder': skip files that are not images (counted in one warning) instead of
    stopping at the first."""

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
    pool: str = "avg"
    """'avg' or 'max'. Average pooling is a linear map, so it converts to spiking neurons
    exactly; max pooling converts through a gate (docs/conversion.md). On the Tiny ImageNet
    subset (k-means, 3 seeds, 40 epochs) avg gave train ACC 0.207 ± 0.015 against max's
    0.197 ± 0.005, val k-NN 0.333 against 0.347, probe 0.396 against 0.377 (docs/learning.md)."""
    pool_first: bool = False
    """With average pooling, pool each block's (BatchNorm-ed) convolution before its ReLU
    rather than after it, as QCFS networks always do: every spiking layer of the converted
    network then sits on a pooled map, with no pooling neurons, which cuts its synaptic
    operations in the binary code (digits: T = 3 at 0.44-0.48x the MACs, the default network
    T = 4 at 0.76-0.77x). Off by
    default: the loop learns less with it on digits (5 seeds: ACC -4.4 points, k-NN -1.0,
    probe -0.8; docs/conversion.md)."""
    activation: str = "relu"
    """'relu', or 'qcfs': Bu et al.'s quantisation-clip-floor-shift activation with a trainable
    threshold per layer, after which the spiking conversion needs about `qcfs_levels` steps
    instead of hundreds (docs/conversion.md)."""
    qcfs_levels: int = 8
    """Quantisation levels L of 'qcfs': the converted network matches the CNN on average after
    T = L steps, so fewer levels mean fewer steps and coarser activations."""
    sparsity: float = 0.0
    """Weight of the firing penalty (firing.FiringCost: the converted network's estimated
    synaptic operations per step, as a fraction of the CNN's MACs) added to the loss: fewer
    spikes per image for the same steps. 0: none."""
    dropout: float = 0.0
    """Dropout before the feature layer. Every run of docs/learning.md used none; DeepCluster's
    0.3 was not measured under the recipe."""
    proj_dim: int = 128
    """Width of the L2-normalised projection of the features that is clustered and trained
    against prototypes (DeepCluster-v2, SwAV); 0: cluster the features themselves."""
    precision: str = "auto"
    """Autocast precision: 'fp32', 'bf16', 'fp16' (GPU only, with loss scaling) or 'auto'. On
    a CUDA GPU auto is bf16 where supported, else fp16; on the CPU, bf16 only where the CPU has
    native bf16 (AMX or AVX512-BF16) and a few timed training steps run faster in it than in
    fp32 (docs/pipeline.md: 2x faster on one CPU with AVX512-BF16, 3.7x slower on another)."""

    # Clustering
    clusterer: str = "kmeans"
    """'kmeans' (DeepCluster) or 'stdp' (Deep-STDP's spiking clustering layer)."""
    kmeans_backend: str = "auto"
    """k-means implementation: 'sklearn', 'faiss' (pip install faiss-cpu; same seeds and
    stopping rule, so the same clusters up to rounding) or 'auto': faiss where installed and
    the problem is as large as where it measured faster (about 1,000 clusters of 100,000
    points), never the case in the default pipeline (docs/clustering.md)."""
    kmeans_warm: bool = False
    """k-means from the second clustering on: one run started from the centres of last epoch's
    clusters in today's embeddings, instead of the best of 5 k-means++ starts (DeepCluster's
    way). Most of the clustering's time at 200 classes (k_train 2,000) is the starts; what it
    does to the clusters: docs/pipeline.md, "Scaling"."""
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
    stdp: STDPSettings = field(default_factory=STDPSettings)
    """The spiking clustering layer's settings (clustering.stdp.settings, docs/snn.md); in a
    config file or config.json an object of the fields that differ from the defaults."""
    align_pca: bool = True
    """Rotate each epoch's PCA basis onto the last epoch's (orthogonal Procrustes on the
    training embeddings), so that a spiking layer carried over meets its inputs in the basis it
    learnt them in. Distances are unchanged, so k-means is indifferent to it."""
    stdp_carry: str = "targets"
    """'continue': the spiking layers go on from last epoch's weights (partial_fit);
    'targets': the targets layer (k_train) goes on, the evaluated one (k) is fitted afresh
    each epoch, so that the reported clustering does not lag the features (with k_train == k
    they are one layer, which goes on; the default since 0.7, docs/learning.md rows 22-24);
    'fresh': new ones each epoch."""

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
    target_keep: float = 1.0
    """Fraction of each target cluster's images, the ones its clusterer is surest of
    (`Clusterer.margin`: the spiking layer's lead of the winner over the runner-up, k-means's
    distance margin), that train the network in the next epoch; the rest sit it out (SCAN's
    self-labelling keeps only confident samples). 1: every image."""

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
    """Neighbours of the k-NN accuracy (docs/learning.md)."""
    probe_every: int = 1
    """The k-NN and linear-probe diagnostics every this many epochs (and always at epochs 0
    and the last); the others report None. They read the features only, never training, and
    at 200 classes cost about 45 s an epoch on two cores, a sixth of training's time
    (docs/pipeline.md, "Scaling")."""

    # Run
    seed: int = 0
    threads: int | None = None
    """torch/BLAS threads; None: all cores. Results are reproducible for a fixed count."""
    device: str = "auto"
    """Where the network runs: 'auto' (a CUDA GPU if torch sees one, else the CPU), 'cpu',
    'cuda', 'cuda:N' or 'mps'. Clustering always runs on the CPU. A run may resume on another
    device (its checkpoints hold CPU tensors)."""

    def __post_init__(self) -> None:
        if isinstance(self.stdp, dict):  # from JSON, or TrainConfig(stdp={"time": 100})
            self.stdp = stdp_settings(self.stdp)

    def validate(self) -> TrainConfig:
        """Check every setting's type and range; raises SettingError naming the first bad one.

        The clusterer's name is checked for its type only: the names are the registry's,
        which builds clusterers and so sits above this module (`registry.check_settings` checks
        both)."""
        check_fields(self, RULES)
        from deepstdp.runtime import devices, threads

        if self.threads is not None:
            threads.check(self.threads)
        devices.check_precision(self.precision, devices.resolve(self.device))
        try:
            self.stdp.validate()
        except DeepSTDPError as e:
            raise SettingError("stdp", str(e)) from None
        pools = parse_widths(self.widths).count("M")
        if 2**pools > self.image_size:
            raise SettingError("widths", f"{self.widths!r} has {pools} pooling stages; "
                               f"{self.image_size}-pixel images allow at most "
                               f"{self.image_size.bit_length() - 1}")
        return self

    def data_options(self) -> dict[str, Any]:
        """The settings that say which images a run sees: `data.datasets.Data`'s arguments."""
        return {"dataset": self.dataset, "image_size": self.image_size, **self.set_options()}

    def set_options(self) -> dict[str, Any]:
        """`data.datasets.load_dataset`'s arguments beyond the set's name and split."""
        return {"data_root": self.data_root, "classes": self.classes,
                "val_fraction": self.val_fraction, "skip_bad": self.skip_bad}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of_recipe(cls, recipe: str = "v2", **settings: Any) -> TrainConfig:
        """The recipe's settings, then `settings` over them."""
        return cls.from_dict({**settings, "recipe": recipe})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Settings from a JSON object: its recipe's (default v2), then the object's own."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DeepSTDPError(f"unknown setting(s) in config: {', '.join(unknown)}")
        recipe = d.get("recipe", cls.recipe)
        if not isinstance(recipe, str) or recipe not in RECIPES:
            raise SettingError("recipe", f"must be {RULES['recipe']}, got {recipe!r}")
        return cls(**{**RECIPES[recipe], **d})

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> TrainConfig:
        """The settings a run saved (its checkpoint or config.json), as that run used them:
        spiking-layer settings it predates take their values from before they existed
        (stdp.settings.BEFORE_0_5, BEFORE_0_6), so an older run still loads, predicts and
        resumes as it ran."""
        d = {**BEFORE_0_6, **d}
        stdp = d.get("stdp")
        if isinstance(stdp, dict) and "synapse" not in stdp:
            d = {**d, "stdp": {**BEFORE_0_5, **stdp}}
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path: str | Path, saved: bool = False,
                  recipe: str | None = None) -> TrainConfig:
        """A config file's settings; `saved`: a run's own config.json (see from_saved);
        `recipe`: the recipe under the file's values, in place of the file's own."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DeepSTDPError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise DeepSTDPError(f"config file {path} is not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise DeepSTDPError(f"config file {path} is not UTF-8 text (a JSON file is)") \
                from None
        except IsADirectoryError:
            raise DeepSTDPError(f"config file {path} is a directory") from None
        if not isinstance(d, dict):
            raise DeepSTDPError(f"config file {path} must hold a JSON object")
        d.pop("version", None)
        if recipe is not None:
            d["recipe"] = recipe
        return cls.from_saved(d) if saved else cls.from_dict(d)
