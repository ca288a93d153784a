"""The rate-based CNN: VGG-style convolutions, a feature layer, and DeepCluster's top layer.

Only ReLU (or QCFS), BatchNorm (foldable into the weights), pooling and linear layers are used,
so the trained network converts to integrate-and-fire neurons by rate-based ANN-to-SNN conversion.
"""

from __future__ import annotations

from copy import deepcopy as copy_module

import torch
from torch import nn

from deepstdp.config import POOLS, TrainConfig, parse_widths
from deepstdp.network.activations import make_activation
from deepstdp.runtime.util import DeepSTDPError

BATCHNORM = nn.BatchNorm1d | nn.BatchNorm2d


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None,
                   bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of a conv or linear layer with the eval-mode BatchNorm `bn` that
    follows it folded in: BN(W x + b) = (W * g) x + (b - mean) * g + beta, with
    g = gamma / sqrt(var + eps). Exact up to float rounding."""
    g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    b = torch.zeros_like(bn.running_mean) if bias is None else bias.detach()
    w = weight.detach() * g.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean) * g + bn.bias.detach()


def _folded(seq: nn.Sequential) -> nn.Sequential:
    """`seq` (eval mode) with each BatchNorm that directly follows a conv or linear layer folded
    into that layer."""
    out: list[nn.Module] = []
    for m in seq:
        last = out[-1] if out else None
        if isinstance(m, BATCHNORM) and isinstance(last, nn.Conv2d | nn.Linear):
            w, b = fold_batchnorm(last.weight, last.bias, m)
            last.weight = nn.Parameter(w, requires_grad=False)
            last.bias = nn.Parameter(b, requires_grad=False)
        else:
            out.append(m)
    return nn.Sequential(*out)


class Sobel(nn.Module):
    """Grayscale then Sobel x/y gradients: DeepCluster's fixed input filter.

    It removes colour, which otherwise lets the clustering latch onto trivial colour statistics.
    """

    padding = (1, 1)
    """Zero padding of the 3x3 gradients (same-size maps), read by the conversion and the
    firing penalty's synapse count."""

    def __init__(self, in_channels: int):
        super().__init__()
        gray = torch.full((1, in_channels, 1, 1), 1.0 / in_channels)
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("gray", gray)
        self.register_buffer("kernel", torch.stack([gx, gx.t()]).unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = nn.functional.conv2d(x, self.gray)
        return nn.functional.conv2d(g, self.kernel, padding=self.padding)


class _WarmStart:
    """BatchNorm whose running statistics start from the data: the first batch replaces the
    initial (0, 1), then the average of the first n batches, until the momentum falls to its
    usual 0.1 after ten (the bias correction of an exponential average).

    With the plain start the eval-mode statistics still lean on (0, 1) for dozens of steps
    (31% after an epoch of digits). A ReLU ignores the resulting scale error; a QCFS, whose
    levels are fixed in the units of the training batches, quantises everything to zero.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.momentum = max(0.1, 1 / (int(self.num_batches_tracked) + 1))
        return super().forward(x)


class WarmBatchNorm1d(_WarmStart, nn.BatchNorm1d):
    pass


class WarmBatchNorm2d(_WarmStart, nn.BatchNorm2d):
    pass


class ConvNet(nn.Module):
    """VGG-style body -> `feat_dim` ReLU features -> embedding -> top layer (a logit a cluster).

    The embedding is what gets clustered: an L2-normalised linear projection of the features
    (`proj_dim` > 0, DeepCluster-v2 and SwAV) or the features themselves. The top layer is
    either a fresh linear layer (`reset_top`, DeepCluster) or fixed cluster centroids
    (`set_prototypes`, DeepCluster-v2). Every nonlinearity is `activation`: 'relu', or 'qcfs'
    (activations.QCFS with `qcfs_levels` levels), which converts to spiking neurons in few steps,
    comes after its block's average pooling, and has BatchNorm with a warm start. With
    `pool_first` a ReLU too comes after its block's average pooling.
    """

    def __init__(
        self,
        in_channels: int,
        n_clusters: int,
        widths: str = "64,M,128,M,256,M,512,M",
        feat_dim: int = 512,
        sobel: bool = True,
        pool: str = "max",
        dropout: float = 0.3,
        proj_dim: int = 0,
        activation: str = "relu",
        qcfs_levels: int = 8,
        pool_first: bool = False,
    ):
        super().__init__()
        self.inference_only = False
        """True for a `for_inference` copy: BatchNorm folded, not for training."""
        if pool not in POOLS:
            raise DeepSTDPError(f"unknown pooling {pool!r}: use {' or '.join(POOLS)}")
        self.sobel = Sobel(in_channels) if sobel else nn.Identity()
        layers: list[nn.Module] = []
        c = 2 if sobel else in_channels
        qcfs = activation == "qcfs"
        norm1d, norm2d = ((WarmBatchNorm1d, WarmBatchNorm2d) if qcfs
                          else (nn.BatchNorm1d, nn.BatchNorm2d))
        for w in parse_widths(widths):
            if w == "M":
                # Average pooling of the block's (BatchNorm-ed) input rather than its output
                # (always for QCFS, for ReLU with `pool_first`), so that every spiking layer of
                # the converted network sits on a pooled map (no pooling neurons, whose extra
                # rounding and delay cost the conversion its few steps). Max pooling commutes
                # with the monotone activations: either order is the same network.
                first = (qcfs or pool_first) and pool == "avg" and layers
                at = len(layers) - 1 if first else len(layers)
                layers.insert(at, nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), norm2d(w),
                           make_activation(activation, qcfs_levels)]
                c = w
        # A fixed 2x2 grid keeps some spatial layout and makes the head independent of image size.
        layers.append(nn.AdaptiveAvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * c, feat_dim, bias=False),
            norm1d(feat_dim), make_activation(activation, qcfs_levels),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
        # torch's default init: the scale is normalised away, and tiny weights would make the
        # normalisation's gradient huge.
        self.proj = nn.Linear(feat_dim, proj_dim) if proj_dim else None
        self.embed_dim = proj_dim or feat_dim
        self.top = nn.Linear(self.embed_dim, n_clusters)
        self.reset_top(n_clusters)

    @classmethod
    def from_config(cls, cfg: TrainConfig, in_channels: int, n_clusters: int) -> ConvNet:
        """The network a run's settings describe (the one place that maps them)."""
        return cls(in_channels, n_clusters, widths=cfg.widths, feat_dim=cfg.feat_dim,
                   sobel=cfg.sobel, pool=cfg.pool, dropout=cfg.dropout, proj_dim=cfg.proj_dim,
                   activation=cfg.activation, qcfs_levels=cfg.qcfs_levels,
                   pool_first=cfg.pool_first)

    def reset_top(self, n_clusters: int) -> None:
        """Fresh top layer: DeepCluster re-initialises it because cluster ids permute each epoch."""
        device = self.top.weight.device
        self.top = nn.Linear(self.embed_dim, n_clusters).to(device)
        nn.init.normal_(self.top.weight, 0, 0.01)
        nn.init.zeros_(self.top.bias)

    def set_prototypes(self, prototypes: torch.Tensor, temperature: float) -> None:
        """Top layer = fixed unit-norm cluster centroids / temperature, so that a logit is the
        cosine similarity to a centroid, sharpened. Not trained: the targets move each epoch."""
        k, d = prototypes.shape
        if d != self.embed_dim:
            raise DeepSTDPError(f"prototypes have {d} dimensions, the embedding {self.embed_dim}")
        self.top = nn.Linear(d, k, bias=False).to(self.top.weight.device)
        self.top.weight.data.copy_(prototypes / temperature)
        self.top.weight.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.sobel(x)))

    def for_inference(self) -> ConvNet:
        """A copy in eval mode with every BatchNorm folded into the layer before it: the same
        features up to float rounding (about 1e-6 relative), a quarter less time at 32 px on a
        CPU, where BatchNorm took a quarter of an eval forward pass (docs/pipeline.md). Not
        for training: the copy shares nothing with the original. An inference copy is its own
        (so a caller may fold once, then extract features batch after batch)."""
        if self.inference_only:
            return self
        copy = copy_module(self).eval()
        copy.body, copy.head = _folded(copy.body), _folded(copy.head)
        copy.inference_only = True
        return copy

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return features
        return nn.functional.normalize(self.proj(features), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.embed_features(self.features(x)))

    def load_body(self, state: dict[str, torch.Tensor]) -> None:
        """Load every weight but the top layer's, which is rebuilt from each epoch's clusters."""
        state = {k: v for k, v in state.items() if not k.startswith("top.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("top.")]
        if missing or unexpected:
            raise DeepSTDPError(f"checkpoint does not fit the network: missing {missing}, "
                                f"unexpected {unexpected}")

    def body_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("top.")}
