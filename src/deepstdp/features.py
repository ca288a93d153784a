"""Features of the network: extraction batch by batch, the embedding that is clustered, and the
precision they are computed in (bf16 autocast only where it is measured faster).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from deepstdp.data import ImageTensor
from deepstdp.models import ConvNet
from deepstdp.util import DeepSTDPError


@contextmanager
def autocast(bf16: bool) -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        yield


@torch.no_grad()
def extract_features(model: ConvNet, x: torch.Tensor | ImageTensor, bf16: bool,
                     batch: int = 256, progress: bool = False,
                     desc: str = "features") -> np.ndarray:
    """float32 (N, feat_dim) features of the images `x`, written batch by batch into one array
    (a list of batches joined at the end would hold the whole matrix twice)."""
    model.eval()
    out = None
    for i in tqdm(range(0, len(x), batch), desc=desc, disable=not progress, leave=False):
        xb = x[i:i + batch].contiguous(memory_format=torch.channels_last)
        with autocast(bf16):
            f = model.features(xb).float()
        if out is None:  # the width is known from the first batch
            out = np.empty((len(x), f.shape[1]), dtype=np.float32)
        out[i:i + len(f)] = f.numpy()
    if out is None:
        raise DeepSTDPError("no images to extract features from")
    return out


@torch.no_grad()
def embed(model: ConvNet, features: np.ndarray) -> np.ndarray:
    """What the clusterer sees: the network's embedding of extracted features."""
    model.eval()
    return model.embed_features(torch.from_numpy(features)).numpy()


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX512-BF16), not by emulation."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _step_seconds(model: ConvNet, x: torch.Tensor, bf16: bool, steps: int = 3) -> float:
    """Seconds per training step of a throw-away copy of `model` on the batch `x`."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    y = torch.zeros(len(x), dtype=torch.int64)
    x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):  # the first step builds oneDNN's kernels: not timed
        if i == 1:
            t = time.perf_counter()
        with autocast(bf16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def use_bf16(precision: str, model: ConvNet, x: torch.Tensor) -> bool:
    """bf16 as asked; for 'auto', only where the CPU reports native bf16 *and* a few timed
    training steps of this network on the batch `x` run at least 10% faster in it.

    The flag alone misleads: an AMD EPYC with AVX512-BF16 trained 2x faster in bf16, while a
    Xeon reporting AVX512-BF16 (no AMX) trained 32x32 images 3.7x slower (docs/pipeline.md).
    """
    if precision != "auto":
        return precision == "bf16"
    if not native_bf16():
        return False
    return _step_seconds(model, x, True) < 0.9 * _step_seconds(model, x, False)
