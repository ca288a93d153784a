"""Throughput of the DeepCluster loop on the Tiny ImageNet subset, per device and precision.

Prints images/s for feature extraction and training of the default network, then the seconds
of one real epoch (train + features + clustering + evaluation) of `deepstdp train`. On the CPU
fp32 and bf16 are measured, on a CUDA GPU fp32, bf16 (where supported) and fp16.

    python benchmarks/bench_pipeline.py [--data-root ../shared/data] [--threads 2]
        [--image-size 32] [--device auto|cpu|cuda|cuda:N|mps]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from deepstdp.config import TrainConfig
from deepstdp.data.augment import random_resized_crop_flip
from deepstdp.data.datasets import Data
from deepstdp.loop.training import train
from deepstdp.network.features import batch_on, extract_features
from deepstdp.network.models import ConvNet
from deepstdp.runtime import devices
from deepstdp.runtime.devices import Compute


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(cfg: TrainConfig, data: Data, compute: Compute,
               n: int = 2048) -> tuple[float, float]:
    torch.manual_seed(0)
    model = ConvNet(3, 10, widths=cfg.widths, feat_dim=cfg.feat_dim, sobel=cfg.sobel,
                    proj_dim=cfg.proj_dim).to(compute.device, memory_format=torch.channels_last)
    x = data.x_train.take(slice(0, n))
    extract_features(model, x.take(slice(0, 256)), compute)  # warm-up: kernels are built
    t = time.perf_counter()
    extract_features(model, x, compute)
    feat = n / (time.perf_counter() - t)

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = compute.scaler()
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,))
    bs = cfg.batch_size
    t = None
    for i in range(0, n, bs):
        if i == 2 * bs:
            _sync(compute.device)
            t = time.perf_counter()
        xb = random_resized_crop_flip(batch_on(x, slice(i, i + bs), compute), gen)
        with compute.autocast():
            logits = model(xb.contiguous(memory_format=torch.channels_last)).float()
        loss = torch.nn.functional.cross_entropy(logits, compute.put(y[i:i + bs]))
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(compute.device)
    return feat, (n - 2 * bs) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = devices.resolve(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{device} ({name}), threads {args.threads}, {args.image_size}x{args.image_size}, "
          f"native CPU bf16: {devices.native_bf16()}")
    base = TrainConfig(dataset="tiny-imagenet", data_root=args.data_root, threads=args.threads,
                       image_size=args.image_size, device=str(device))
    data = Data(**base.data_options(), progress=False)
    precisions = ["fp32", "bf16"]
    if device.type == "cuda":
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    print(f"{'precision':>9} {'features img/s':>15} {'train img/s':>12} {'epoch s':>8}")
    for precision in precisions:
        feat, tr = throughput(base, data, Compute(device, precision))
        cfg = TrainConfig(**{**base.to_dict(), "precision": precision, "epochs": 1})
        with tempfile.TemporaryDirectory() as out:
            row = train(cfg, out, quiet=True)[-1]
        epoch = sum(row[k] for k in ("time_train", "time_features", "time_cluster", "time_eval"))
        print(f"{precision:>9} {feat:15.0f} {tr:12.0f} {epoch:8.1f}")


if __name__ == "__main__":
    main()
