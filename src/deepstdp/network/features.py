"""Features of the network: extraction batch by batch on the run's device and precision, and
the embedding that is clustered (always float32 on the host, where the clusterers run)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from deepstdp.data.datasets import ImageTensor
from deepstdp.network.models import ConvNet
from deepstdp.runtime.devices import CPU_FP32, Compute
from deepstdp.runtime.util import DeepSTDPError


@torch.no_grad()
def extract_features(model: ConvNet, x: torch.Tensor | ImageTensor,
                     compute: Compute = CPU_FP32, batch: int = 256, progress: bool = False,
                     desc: str = "features") -> np.ndarray:
    """float32 (N, feat_dim) features of the images `x`, by the model on `compute.device`,
    written batch by batch into one host array (a list of batches joined at the end would hold
    the whole matrix twice). The model runs with its BatchNorm folded in
    (ConvNet.for_inference)."""
    model = model.for_inference()
    out = None
    for i in tqdm(range(0, len(x), batch), desc=desc, disable=not progress, leave=False):
        xb = batch_on(x, slice(i, i + batch), compute).contiguous(
            memory_format=torch.channels_last)
        with compute.autocast():
            f = model.features(xb).float().cpu()
        if out is None:  # the width is known from the first batch
            out = np.empty((len(x), f.shape[1]), dtype=np.float32)
        out[i:i + len(f)] = f.numpy()
    if out is None:
        raise DeepSTDPError("no images to extract features from")
    return out


def batch_on(x: torch.Tensor | ImageTensor, index: slice | torch.Tensor,
             compute: Compute) -> torch.Tensor:
    """Images `x[index]` on the device. An ImageTensor sends its uint8 rows and converts them
    there: a quarter of the bytes."""
    if isinstance(x, ImageTensor):
        return x.rows_on(index, compute.put)
    return compute.put(x[index])


@torch.no_grad()
def embed(model: ConvNet, features: np.ndarray) -> np.ndarray:
    """What the clusterer sees: the network's float32 embedding of extracted features."""
    model.eval()
    device = next(model.parameters()).device
    return model.embed_features(torch.from_numpy(features).to(device)).cpu().numpy()
