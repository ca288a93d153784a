"""The rate-based CNN: VGG-style convolutions, a feature layer, and DeepCluster's top layer.

Only ReLU, BatchNorm (foldable into the weights), pooling and linear layers are used, so the
trained network converts to integrate-and-fire neurons by rate-based ANN-to-SNN conversion.
"""

from __future__ import annotations

import torch
from torch import nn

from deepstdp.util import DeepSTDPError


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
            raise DeepSTDPError(f"bad --widths entry {tok!r}: use positive integers and 'M'")
    if not any(isinstance(t, int) for t in out):
        raise DeepSTDPError("--widths needs at least one convolution width")
    return out


class Sobel(nn.Module):
    """Grayscale then Sobel x/y gradients: DeepCluster's fixed input filter.

    It removes colour, which otherwise lets the clustering latch onto trivial colour statistics.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        gray = torch.full((1, in_channels, 1, 1), 1.0 / in_channels)
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("gray", gray)
        self.register_buffer("kernel", torch.stack([gx, gx.t()]).unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = nn.functional.conv2d(x, self.gray)
        return nn.functional.conv2d(g, self.kernel, padding=1)


class ConvNet(nn.Module):
    """VGG-style body -> `feat_dim` ReLU features -> linear top layer (one logit per cluster)."""

    def __init__(
        self,
        in_channels: int,
        n_clusters: int,
        widths: str = "64,M,128,M,256,M,512,M",
        feat_dim: int = 512,
        sobel: bool = True,
        pool: str = "max",
        dropout: float = 0.3,
    ):
        super().__init__()
        if pool not in ("max", "avg"):
            raise DeepSTDPError(f"unknown pooling {pool!r}: use 'max' or 'avg'")
        self.sobel = Sobel(in_channels) if sobel else nn.Identity()
        layers: list[nn.Module] = []
        c = 2 if sobel else in_channels
        for w in parse_widths(widths):
            if w == "M":
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                c = w
        # A fixed 2x2 grid keeps some spatial layout and makes the head independent of image size.
        layers.append(nn.AdaptiveAvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * c, feat_dim, bias=False),
            nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True),
        )
        self.top = nn.Linear(feat_dim, n_clusters)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
        self.reset_top(n_clusters)

    def reset_top(self, n_clusters: int) -> None:
        """Fresh top layer: DeepCluster re-initialises it because cluster ids permute each epoch."""
        feat_dim = self.top.in_features
        device = self.top.weight.device
        self.top = nn.Linear(feat_dim, n_clusters).to(device)
        nn.init.normal_(self.top.weight, 0, 0.01)
        nn.init.zeros_(self.top.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.sobel(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.features(x))
