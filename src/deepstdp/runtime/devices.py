"""Where the network runs and in what precision: the one place that knows device names, which
precision each device gets, and how a batch of images reaches the device.

A run's files never depend on its device: checkpoints hold CPU tensors and load with
map_location="cpu" (rundir.py), so a run trained on a GPU resumes, converts and evaluates on a
CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepstdp.runtime.util import SettingError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(name: str) -> torch.device:
    """The device `name` names: 'auto' (a CUDA GPU if torch sees one, else the CPU), 'cpu',
    'cuda', 'cuda:N' or 'mps'; a device that is not there is a SettingError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SettingError("device", f"must be {DEVICE_CHOICES}, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"{name!r} was asked for, but torch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError("device", f"{name!r} was asked for, but torch sees only "
                               f"{torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SettingError("device", "'mps' was asked for, but this torch has no MPS device")
    elif device.type != "cpu" or device.index not in (None, 0):
        raise SettingError("device", f"must be {DEVICE_CHOICES}, got {name!r}")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs a GPU (CPU autocast in fp16 is emulated); bf16 on CUDA needs Ampere or
    later."""
    if precision == "fp16" and device.type == "cpu":
        raise SettingError("precision", "fp16 needs a CUDA or MPS device; on the CPU use bf16 "
                           "or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SettingError("precision", f"bf16 is not supported by {device}; use fp16")


@dataclass(frozen=True)
class Compute:
    """A device and the autocast precision the network runs in there ('fp32': none)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    @contextmanager
    def autocast(self) -> Iterator[None]:
        amp = _AMP[self.precision]
        if amp is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=amp):
            yield

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling where fp16 gradients would underflow without it; a no-op otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def put(self, x: torch.Tensor) -> torch.Tensor:
        """`x` on the device; from pinned host memory, asynchronously, for a CUDA device."""
        if self.device.type == "cpu":
            return x
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)


CPU_FP32 = Compute()
"""The default: the network in float32 on the CPU."""


def resumed(precision: str, device: torch.device) -> Compute:
    """A saved run's precision on `device`: as it was, but fp16 becomes fp32 on a CPU (no fast
    fp16 there; the weights are float32 anyway)."""
    return Compute(device, "fp32" if precision == "fp16" and device.type == "cpu" else precision)


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX512-BF16), not by emulation."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _step_seconds(model: nn.Module, x: torch.Tensor, compute: Compute, steps: int = 3) -> float:
    """Seconds per training step of a throw-away copy of `model` on the batch `x`."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    y = torch.zeros(len(x), dtype=torch.int64)
    x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):  # the first step builds oneDNN's kernels: not timed
        if i == 1:
            t = time.perf_counter()
        with compute.autocast():
            loss = nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def choose(precision: str, device: torch.device, model: nn.Module, x: torch.Tensor) -> Compute:
    """The Compute a run uses: `precision` as asked, or for 'auto' per device. CUDA: bf16 where
    the GPU supports it, else fp16 (with loss scaling). MPS: fp32 (unmeasured). CPU: bf16 only
    where the CPU reports native bf16 *and* a few timed training steps of this network on the
    CPU batch `x` run at least 10% faster in it.

    The CPU flag alone misleads: an AMD EPYC with AVX512-BF16 trained 2x faster in bf16, while a
    Xeon reporting AVX512-BF16 (no AMX) trained 32x32 images 3.7x slower (docs/pipeline.md).
    """
    check_precision(precision, device)
    if precision != "auto":
        return Compute(device, precision)
    if device.type == "cuda":
        return Compute(device, "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if device.type != "cpu" or not native_bf16():
        return Compute(device, "fp32")
    faster = _step_seconds(model, x, Compute(device, "bf16")) < \
        0.9 * _step_seconds(model, x, Compute(device, "fp32"))
    return Compute(device, "bf16" if faster else "fp32")
