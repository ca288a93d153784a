"""Batched image augmentation on tensors: crops, flips, colour jitter, grayscale, views.

Everything runs on whole (N, C, H, W) batches with per-sample random parameters drawn from one
torch.Generator, so an epoch's augmentations are reproducible from its seed and cost a few
tensor operations per batch (no per-image PIL work, no torchvision).

Strong augmentation is what makes clustering-based training learn: two crops of one image must
land in the same cluster, so the network has to become invariant to position, scale and colour
rather than reproduce low-level statistics (SimCLR, Chen et al. 2020; SwAV, Caron et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deepstdp.runtime.util import DeepSTDPError

# ITU-R 601 luma weights, as PIL's convert("L") and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ: hue is an angle in the IQ plane, so a hue shift is a rotation there.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: Sequence[float] = (0.3, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> torch.Tensor:
    """A random crop of each image, resized back to its size, and a random horizontal flip.

    Each sample's box covers a fraction of the area uniform in `scale`, with a width/height
    ratio log-uniform in `ratio`. A box that would overflow the image is clipped to it: its area
    shrinks and its ratio moves toward the image's own (staying in range for square images).
    One affine grid samples the whole batch at once.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise DeepSTDPError(f"expected a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise DeepSTDPError(f"bad crop scale {tuple(scale)} or ratio {tuple(ratio)}")
    n, _, h, w = x.shape
    area = _uniform(n, scale[0], scale[1], generator)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator))
    # Box width and height as fractions of the image's width and height.
    box_w = torch.sqrt(area * aspect * h / w).clamp(max=1)
    box_h = torch.sqrt(area / aspect * w / h).clamp(max=1)
    # Box centres in grid_sample's [-1, 1] coordinates, the box lying wholly inside the image.
    centre_x = (2 * _uniform(n, 0, 1, generator) - 1) * (1 - box_w)
    centre_y = (2 * _uniform(n, 0, 1, generator) - 1) * (1 - box_h)
    flip = torch.where(_uniform(n, 0, 1, generator) < flip_p, -1.0, 1.0)

    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = box_w * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = box_h
    theta[:, 1, 2] = centre_y
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = _LUMA
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.4,
                 hue: float = 0.1, p: float = 0.8) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s] and a hue shift of
    up to `hue` turns, applied together to a fraction `p` of the RGB batch `x` in [0, 1].

    SimCLR's colour distortion: without it, crops of one image are matched by their colour
    histogram alone.
    """
    if x.shape[1] != 3:
        raise DeepSTDPError(f"colour jitter needs RGB images, got {x.shape[1]} channels")
    n = len(x)

    def factor() -> torch.Tensor:
        return _uniform(n, 1 - strength, 1 + strength, generator).view(n, 1, 1, 1).to(x)

    bright, contrast, sat = factor(), factor(), factor()
    angle = (_uniform(n, -hue, hue, generator) * 2 * math.pi).to(x)
    apply = (_uniform(n, 0, 1, generator) < p).view(n, 1, 1, 1).to(x)

    y = x * bright
    mean = _luma(y).mean(dim=(2, 3), keepdim=True)
    y = (y - mean) * contrast + mean
    gray = _luma(y)
    y = (y - gray) * sat + gray
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(n, 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    y = torch.einsum("nij,njhw->nihw", _YIQ_INV.to(x) @ rot @ _YIQ.to(x), y).clamp(0, 1)
    return apply * y + (1 - apply) * x


def random_grayscale(x: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Replace a fraction `p` of the RGB images by their luma in all three channels."""
    apply = (_uniform(len(x), 0, 1, generator) < p).view(-1, 1, 1, 1).to(x)
    return apply * _luma(x).expand_as(x) + (1 - apply) * x


@dataclass(frozen=True)
class Augmentation:
    """One training view: crop and flip, then (RGB only) colour jitter and grayscale.

    Works on normalised images: colour operations undo the per-channel normalisation, act on
    [0, 1] values, and normalise again.
    """

    mean: torch.Tensor
    std: torch.Tensor
    crop_scale: float = 0.2
    jitter: float = 0.4
    grayscale: float = 0.2

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_resized_crop_flip(x, generator, scale=(self.crop_scale, 1.0))
        if x.shape[1] != 3 or (self.jitter == 0 and self.grayscale == 0):
            return x
        mean = self.mean.view(1, -1, 1, 1).to(x)
        std = self.std.view(1, -1, 1, 1).to(x)
        rgb = x * std + mean
        if self.jitter > 0:
            rgb = color_jitter(rgb, generator, self.jitter)
        if self.grayscale > 0:
            rgb = random_grayscale(rgb, generator, self.grayscale)
        return (rgb - mean) / std

    def views(self, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` independent views of the batch, stacked view-major: (n * N, C, H, W)."""
        return torch.cat([self(x, generator) for _ in range(n)])
