"""Rate-based ANN-to-SNN conversion of the CNN (Rueckauer et al. 2017, Sengupta et al. 2019,
and Bu et al. 2022 for QCFS networks).

Every ReLU or QCFS layer of the CNN becomes a layer of integrate-and-fire (IF) neurons whose
firing rate times its threshold approximates the activation. docs/conversion.md explains each
choice:

- BatchNorm is folded into the preceding conv/linear weights and bias (exact in eval mode).
- Thresholds: a ReLU layer fires at lambda_l, the `percentile`-th percentile of its positive
  activations on training images (threshold balancing; a percentile rather than the maximum
  keeps a few outliers from making every other neuron fire too slowly). A QCFS layer fires at
  its trained lambda, which makes the network at T = L steps equal its CNN on average. The
  weights fed by a layer's spikes are multiplied by its lambda, so one spike carries the
  activation it stands for.
- Reset by subtraction (`reset="subtract"`) keeps the charge above threshold, so no input is lost;
  `reset="zero"` is the classic, lossier alternative.
- Membranes start at `v_init` * threshold (default half: QCFS's shift), which turns the floor of
  spike counting into rounding and halves the quantisation error.
- Input: analog. The normalised image goes through the fixed Sobel filter and the first conv once;
  that constant current drives the first IF layer at every step.
- Average pooling is linear and acts on spikes unchanged (AdaptiveAvgPool2d becomes AvgPool2d when
  its windows are even), optionally re-encoded by pooling neurons; max pooling becomes Rueckauer
  et al.'s gate (network.max_gate). Dropout is the identity at inference.
- Readout: the feature layer's spike count / T * its threshold approximates the features, which
  then take the run's own projection, PCA-whitening and clusterer (conversion.evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepstdp import __version__
from deepstdp.config import ACTIVATIONS
from deepstdp.conversion.network import Op, SpikingNet, run_ops
from deepstdp.conversion.settings import CODINGS, READOUTS, ConversionSettings
from deepstdp.data.datasets import Data
from deepstdp.network.activations import QCFS, qcfs
from deepstdp.network.models import BATCHNORM, ConvNet, Sobel, fold_batchnorm
from deepstdp.network.synapses import WEIGHTED, pair, pool_link
from deepstdp.run.loaded import model_from_checkpoint
from deepstdp.run.rundir import (
    SPIKING_NET,
    RunDir,
    checkpoint_digest,
    load_checkpoint,
    load_torch_file,
)
from deepstdp.runtime.util import DeepSTDPError, atomic_write


def _fold_weighted(name: str, m: nn.Conv2d | nn.Linear, bn: nn.Module | None) -> Op:
    """A conv or linear layer with the BatchNorm that follows it (if any) folded in."""
    if isinstance(m, nn.Conv2d) and (m.groups != 1 or pair(m.dilation) != (1, 1)
                                     or m.padding_mode != "zeros"):
        raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: only plain "
                            "convolutions (no groups, dilation or padding modes)")
    w, b = m.weight.detach(), m.bias
    if bn is not None:
        w, b = fold_batchnorm(w, b, bn)
    b = None if b is None else b.detach().clone()
    if isinstance(m, nn.Linear):
        return Op("linear", name, w.clone(), b)
    return Op("conv", name, w.clone(), b, pair(m.stride), pair(m.padding))


def _fold_module(name: str, m: nn.Module, bn: nn.Module | None,
                 map_size: Sequence[int]) -> Op | None:
    """The op of one CNN module (None for those that vanish at inference)."""
    if isinstance(m, Sobel):
        # Gray (per-pixel mean) commutes with zero padding, so it folds into the kernel.
        return Op("conv", name, (m.kernel * m.gray.reshape(1, -1, 1, 1)).clone(), None,
                  padding=m.padding)
    if isinstance(m, nn.Conv2d | nn.Linear):
        return _fold_weighted(name, m, bn)
    if isinstance(m, nn.ReLU):
        return Op("relu", name)
    if isinstance(m, QCFS):
        if not m.initialised:  # never trained: it is a ReLU (activations.QCFS)
            return Op("relu", name)
        if not m.threshold > 0:
            raise DeepSTDPError(f"layer {name} (QCFS) cannot be converted: its threshold is "
                                f"{float(m.threshold):.4g}, not positive")
        return Op("qcfs", name, threshold=float(m.threshold), levels=m.levels)
    if isinstance(m, nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.MaxPool2d):
        link = pool_link(name, m, map_size)  # None: the identity
        return None if link is None else Op(link.kind, name, kernel=link.kernel,
                                            stride=link.stride)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: only Flatten(1, -1)")
        return Op("flatten", name)
    if isinstance(m, nn.Dropout | nn.Identity):
        return None
    raise DeepSTDPError(f"layer {name} ({type(m).__name__}) cannot be converted to spiking "
                        "neurons")


def fold_network(model: ConvNet, input_shape: Sequence[int]) -> list[Op]:
    """The CNN's feature path (Sobel, body, head) as ops with BatchNorm folded in.

    Raises DeepSTDPError naming the first layer that has no spiking counterpart.
    """
    mods = [("sobel", model.sobel)]
    mods += [(f"body.{i}", m) for i, m in enumerate(model.body)]
    mods += [(f"head.{i}", m) for i, m in enumerate(model.head)]
    probe = torch.zeros(1, *input_shape)  # tracks the map size that adaptive pooling sees
    ops: list[Op] = []
    model.eval()
    with torch.no_grad():
        for i, (name, m) in enumerate(mods):
            if isinstance(m, BATCHNORM):
                if not ops or ops[-1].kind not in WEIGHTED or ops[-1].name != mods[i - 1][0]:
                    raise DeepSTDPError(f"layer {name} ({type(m).__name__}) cannot be "
                                        "converted: BatchNorm must follow a conv or linear "
                                        "layer to fold")
            else:
                bn = mods[i + 1][1] if i + 1 < len(mods) else None
                op = _fold_module(name, m, bn if isinstance(bn, BATCHNORM) else None,
                                  probe.shape[-2:])
                ops += [op] if op is not None else []
            probe = m(probe)
    if not ops or ops[-1].kind not in ACTIVATIONS:
        raise DeepSTDPError("the feature layer must end in a ReLU or QCFS to become spiking "
                            "neurons")
    return ops


@torch.no_grad()
def relu_percentiles(ops: Sequence[Op], x: torch.Tensor, percentile: float,
                     batch: int = 64, per_batch: int = 1_000_000) -> list[float]:
    """Per ReLU layer, the `percentile`-th percentile of its positive activations on x.

    Zeros are left out (as in Rueckauer et al.'s SNN toolbox): they say nothing about the scale of a
    layer, and sparser layers would otherwise get lower thresholds. At most `per_batch` values
    per layer and batch are kept (a seeded random sample) to bound memory on large maps.
    """
    gen = torch.Generator().manual_seed(0)
    kept: list[list[torch.Tensor]] = [[] for op in ops if op.kind == "relu"]
    if not kept:
        return []
    for i in range(0, len(x), batch):
        a, layer = x[i:i + batch], 0
        for op in ops:
            a = op(a)
            if op.kind == "relu":
                pos = a[a > 0]
                if len(pos) > per_batch:
                    pos = pos[torch.randint(len(pos), (per_batch,), generator=gen)]
                kept[layer].append(pos)
                layer += 1
    out = []
    for values in kept:
        v = torch.cat(values).double().numpy()
        out.append(float(np.percentile(v, percentile)) if len(v) else 1.0)
    return out


def convert(model: ConvNet, x_calib: torch.Tensor,
            settings: ConversionSettings | None = None) -> SpikingNet:
    """Fold BatchNorm, set the thresholds (balanced on x_calib for ReLU layers, the trained
    lambda for QCFS layers), bias-calibrate on x_calib if `settings.calibrate_steps`, and
    return the spiking network; it records `settings` (None: the defaults) with the number of
    calibration images it had. Pooling neurons (the setting `pool_neurons`) re-encode each
    average-pooled cell's mean rate as spikes: exactly, on average, since the mean of spikes
    never exceeds one per step.
    """
    settings = (settings or ConversionSettings()).validate()
    ops = fold_network(model, x_calib.shape[1:])
    lambdas = iter(relu_percentiles(ops, x_calib, settings.percentile))
    out: list[Op] = []
    scale = 1.0  # what one unit of the current input stands for: 1 for the analog image
    spikes = False  # whether the current input is spikes (pooled or not)
    for i, op in enumerate(ops):
        if op.kind in ACTIVATIONS:
            scale, spikes = next(lambdas) if op.kind == "relu" else op.threshold, True
            out.append(Op("if", op.name, threshold=scale, levels=op.levels))
        elif op.kind in WEIGHTED:
            out.append(dataclasses.replace(op, weight=op.weight * scale))
            scale, spikes = 1.0, False
        elif op.kind == "maxpool":
            if out[-1].kind != "if":
                raise DeepSTDPError(f"layer {op.name} (MaxPool2d) cannot be converted: max "
                                    "pooling must follow a ReLU or QCFS")
            out.append(dataclasses.replace(op, kind="maxgate"))
        else:
            out.append(op)
            last_pool = i + 1 == len(ops) or ops[i + 1].kind != "avgpool"
            if settings.pool_neurons and spikes and op.kind == "avgpool" and last_pool:
                out.append(Op("if", f"{op.name}.neurons", threshold=1.0))
    snn = SpikingNet(out, x_calib.shape[1:],
                     dataclasses.replace(settings, calib_images=len(x_calib)))
    if settings.calibrate_steps:
        calibrate(snn, x_calib, settings.calibrate_steps, settings.calibrate_readout,
                  coding=settings.calibrate_coding)
    return snn


# --------------------------------------------------------------------------- calibration


@torch.no_grad()
def analog_rates(snn: SpikingNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Each spiking stage's output in the network the SNN stands for, in spikes per step: an
    IF layer's activation (its QCFS, or the ReLU clipped at the threshold) over its threshold,
    a gate's max pooling of the rates it routes."""
    a, out = run_ops(snn.analog, x), []
    for op, post in snn.stages:
        if op.kind == "if":
            u = a / op.threshold
            r = qcfs(u, 1.0, op.levels) if op.levels else u.clamp(0, 1)
        else:
            r = torch.nn.functional.max_pool2d(a, op.kernel, op.stride)
        out.append(r)
        a = run_ops(post, r)
    return out


def _feeding_bias(snn: SpikingNet, k: int) -> Op | None:
    """The weighted op whose bias drives spiking stage k (through average pooling or
    flattening), or None where spikes feed it without a bias (pooling neurons, gates)."""
    i = snn.ops.index(snn.stages[k][0])
    for op in reversed(snn.ops[:i]):
        if op.kind in WEIGHTED:
            return op
        if op.kind not in ("avgpool", "flatten"):
            return None
    return None


@torch.no_grad()
def calibrate(snn: SpikingNet, x: torch.Tensor, steps: int, readout: str = READOUTS[0],
              batch: int = 256, coding: str = CODINGS[0]) -> SpikingNet:
    """Bias calibration for `steps` steps (Li et al. 2021, "A free lunch from ANN: towards
    efficient, accurate spiking neural networks calibration"), in place.

    Layer by layer from the input, each IF layer's mean rate per channel after `steps` steps is
    compared, on the images x, with the rate of the network the SNN stands for; the bias that
    drives the layer moves by the difference (times the threshold: a current), so that the
    layer's expected error at that T is zero once the layers before it are corrected. The
    feature layer is compared through `readout`, as it will be read. No retraining; the
    correction is exact in expectation only where the neuron is not clipped.
    """
    if steps < 1:
        raise DeepSTDPError(f"calibration steps must be at least 1, got {steps}")
    if readout not in READOUTS:
        raise DeepSTDPError(f"unknown readout {readout!r}: use {' or '.join(READOUTS)}")
    batches = [x[i:i + batch] for i in range(0, len(x), batch)]
    target = [sum(r) for r in zip(*(_channel_sums(analog_rates(snn, b)) for b in batches),
                                  strict=True)]
    last = len(snn.stages) - 1
    for k, (op, _) in enumerate(snn.stages):
        feeding = _feeding_bias(snn, k)
        if op.kind != "if" or feeding is None:
            continue
        got = 0.0
        for b in batches:
            res = snn.simulate(b, [steps], every_layer=True, coding=coding)
            rate = (snn.features(res, steps, readout) / op.threshold if k == last
                    else res.layer_counts[steps][k] / res.levels[steps])
            got = got + _channel_sums([rate])[0]
        delta = (target[k] - got) / len(x) * op.threshold
        bias = torch.zeros(len(delta)) if feeding.bias is None else feeding.bias
        feeding.bias = bias + delta.to(bias.dtype)
    snn.settings = dataclasses.replace(snn.settings, calibrate_steps=steps,
                                       calibrate_readout=readout, calibrate_coding=coding)
    return snn


def _channel_sums(rates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per tensor, the sum over images of each channel's mean over positions."""
    return [r.double().flatten(2).mean(2).sum(0) if r.dim() > 2 else r.double().sum(0)
            for r in rates]


# --------------------------------------------------------------------------- a run's network


def spread(n: int, limit: int | None) -> torch.Tensor:
    """`limit` indices spread evenly over range(n) (all of them without a limit)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long()


def convert_run(run_dir: str | Path, settings: ConversionSettings | None = None,
                progress: bool = False) -> SpikingNet:
    """Convert the run's CNN (`settings` None: the defaults; calibrated where they say) and
    save it to RUN_DIR/spiking.pt (atomically)."""
    settings = (settings or ConversionSettings()).validate()
    ck = load_checkpoint(run_dir)
    model = model_from_checkpoint(ck)
    data = Data(**ck.config.data_options(), progress=progress)
    x_calib = data.x_train[spread(len(data.x_train), settings.calib_images)]
    snn = convert(model, x_calib, settings)
    state = {**snn.state_dict(), "checkpoint_sha256": checkpoint_digest(run_dir),
             "checkpoint_epoch": ck.epoch, "version": __version__}
    atomic_write(RunDir(run_dir) / SPIKING_NET, lambda p: torch.save(state, p))
    return snn


def load_or_convert(run_dir: str | Path, progress: bool = False) -> SpikingNet:
    """RUN_DIR/spiking.pt; converted now (default settings, or those of a stale file) when it
    is missing or was converted from another checkpoint."""
    path = RunDir(run_dir) / SPIKING_NET
    digest = checkpoint_digest(run_dir)
    settings = None
    if path.exists():
        remedy = "convert the run again (it overwrites the file)"
        state = load_torch_file(path, "converted network", {"checkpoint_sha256", "settings"},
                                remedy)
        try:
            if state["checkpoint_sha256"] == digest:
                return SpikingNet.from_state_dict(state)
            settings = ConversionSettings.from_dict(state["settings"])
        except DeepSTDPError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DeepSTDPError(f"{path} is not a deepstdp converted network ({e!r}); "
                                f"{remedy}") from None
    if progress:
        why = "is from another checkpoint" if settings else "is missing"
        print(f"{path} {why}: converting with "
              f"{settings.to_dict() if settings else 'the default settings'}")
    return convert_run(run_dir, settings, progress=progress)
