"""Batched augmentation: crops and flips, colour jitter, grayscale, views."""

from __future__ import annotations

import pytest
import torch

from deepstdp.data.augment import (
    Augmentation,
    color_jitter,
    random_grayscale,
    random_resized_crop_flip,
)
from deepstdp.runtime.util import DeepSTDPError


def _batch() -> torch.Tensor:
    return torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_augmentation_shape_and_determinism() -> None:
    x = _batch()
    a = random_resized_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_resized_crop_flip(x, torch.Generator().manual_seed(0))
    c = random_resized_crop_flip(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1]) and a.min() >= 0 and a.max() <= 1


def test_augmentation_full_crop_is_identity_and_flips() -> None:
    x = _batch()
    g = torch.Generator().manual_seed(0)
    same = random_resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip_p=0)
    flipped = random_resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip_p=1)
    assert torch.allclose(same, x, atol=1e-5)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)


def test_augmentation_crops_a_box_and_resizes_it() -> None:
    # A left-half-black, right-half-white image: every crop keeps a black-to-white ramp.
    x = torch.zeros(64, 1, 16, 16)
    x[..., 8:] = 1
    out = random_resized_crop_flip(x, torch.Generator().manual_seed(0), flip_p=0)
    columns = out[:, 0].mean(dim=1)
    assert (columns[:, 1:] >= columns[:, :-1] - 1e-5).all()  # never decreasing left to right
    assert not torch.allclose(out, x)


def test_color_jitter_keeps_range_varies_per_image_and_is_seeded() -> None:
    x = _batch()
    a = color_jitter(x, torch.Generator().manual_seed(0), p=1.0)
    b = color_jitter(x, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    change = (a - x).abs().mean(dim=(1, 2, 3))
    assert (change > 1e-3).all() and change.std() > 0
    assert torch.equal(color_jitter(x, torch.Generator(), p=0.0), x)
    # Strength 0 and no hue shift leave the image as it is.
    assert torch.allclose(color_jitter(x, torch.Generator(), 0.0, 0.0, 1.0), x, atol=1e-5)
    with pytest.raises(DeepSTDPError, match="RGB"):
        color_jitter(x[:, :1], torch.Generator())


def test_grayscale_makes_equal_channels_holding_the_luma() -> None:
    x = _batch()
    g = random_grayscale(x, torch.Generator(), p=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        assert torch.allclose(g[:, c], luma, atol=1e-6)
    assert torch.equal(random_grayscale(x, torch.Generator(), p=0.0), x)


def test_views_are_stacked_view_major_and_differ() -> None:
    x = _batch()
    aug = Augmentation(torch.full((3,), 0.5), torch.full((3,), 0.25))
    v = aug.views(x, 3, torch.Generator().manual_seed(0))
    assert v.shape == (18, 3, 12, 12)
    assert not torch.equal(v[:6], v[6:12])
    again = aug.views(x, 3, torch.Generator().manual_seed(0))
    assert torch.equal(v, again)


def test_single_channel_images_skip_colour_operations() -> None:
    x = _batch()[:, :1]
    aug = Augmentation(torch.zeros(1), torch.ones(1), crop_scale=1.0)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
