"""Throughput of the DeepCluster loop on the Tiny ImageNet subset, fp32 against bf16.

Prints images/s for feature extraction and training of the default network, then the seconds
of one real epoch (train + features + clustering + evaluation) of `deepstdp train`.

    python benchmarks/bench_pipeline.py [--data-root ../shared/data] [--threads 2] [--image-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from deepstdp.augment import random_resized_crop_flip
from deepstdp.config import TrainConfig
from deepstdp.features import autocast, extract_features, native_bf16
from deepstdp.models import ConvNet
from deepstdp.training import Data, train


def throughput(cfg: TrainConfig, data: Data, bf16: bool, n: int = 1024) -> tuple[float, float]:
    torch.manual_seed(0)
    model = ConvNet(3, 10, widths=cfg.widths, feat_dim=cfg.feat_dim, sobel=cfg.sobel,
                    proj_dim=cfg.proj_dim).to(memory_format=torch.channels_last)
    x = data.x_train[:n]
    extract_features(model, x[:256], bf16)  # warm-up: oneDNN builds its kernels
    t = time.perf_counter()
    extract_features(model, x, bf16)
    feat = n / (time.perf_counter() - t)

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,))
    bs = cfg.batch_size
    t = None
    for i in range(0, n, bs):
        if i == 2 * bs:
            t = time.perf_counter()
        xb = random_resized_crop_flip(x[i:i + bs], gen).contiguous(
            memory_format=torch.channels_last)
        with autocast(bf16):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), y[i:i + bs])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return feat, (n - 2 * bs) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, {args.image_size}x{args.image_size}, "
          f"native bf16: {native_bf16()}")
    base = TrainConfig(dataset="tiny-imagenet", data_root=args.data_root, threads=args.threads,
                       image_size=args.image_size)
    data = Data(base, progress=False)
    print(f"{'precision':>9} {'features img/s':>15} {'train img/s':>12} {'epoch s':>8}")
    for precision in ("fp32", "bf16"):
        feat, tr = throughput(base, data, precision == "bf16")
        cfg = TrainConfig(**{**base.to_dict(), "precision": precision, "epochs": 1})
        with tempfile.TemporaryDirectory() as out:
            row = train(cfg, out, quiet=True)[-1]
        epoch = sum(row[k] for k in ("time_train", "time_features", "time_cluster", "time_eval"))
        print(f"{precision:>9} {feat:15.0f} {tr:12.0f} {epoch:8.1f}")


if __name__ == "__main__":
    main()
