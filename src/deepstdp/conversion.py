"""Rate-based ANN-to-SNN conversion of the CNN (Rueckauer et al. 2017, Sengupta et al. 2019).

Every ReLU of the CNN becomes a layer of integrate-and-fire (IF) neurons whose firing rate times
its threshold approximates the ReLU activation. docs/conversion.md explains each choice:

- BatchNorm is folded into the preceding conv/linear weights and bias (exact in eval mode).
- Threshold balancing: layer l fires at threshold lambda_l, the `percentile`-th percentile of its
  positive ReLU activations on training images, and the weights fed by its spikes are multiplied
  by lambda_l, so one spike carries the activation it stands for. A percentile rather than the
  maximum keeps a few outliers from making every other neuron fire too slowly.
- Reset by subtraction (`reset="subtract"`) keeps the charge above threshold, so no input is lost;
  `reset="zero"` is the classic, lossier alternative.
- Membranes start at `v_init` * threshold (default half), which turns the floor of spike counting
  into rounding and halves the quantisation error.
- Input: analog. The normalised image goes through the fixed Sobel filter and the first conv once;
  that constant current drives the first IF layer at every step.
- Average pooling is linear and acts on spikes unchanged (AdaptiveAvgPool2d becomes AvgPool2d when
  its windows are even); max pooling has no rate-preserving spiking form and is refused. Dropout is
  the identity at inference.
- Readout: the feature layer's spike count / T * its threshold approximates the ReLU features,
  which then take the run's own PCA-whitening and clusterer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from deepstdp import __version__
from deepstdp.clustering import Clusterer, PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.metrics import cluster_metrics
from deepstdp.models import ConvNet, Sobel
from deepstdp.util import DeepSTDPError, atomic_write, write_json_atomic

PJ_PER_MAC = 4.6  # 32-bit float multiply-accumulate at 45 nm (Horowitz 2014)
PJ_PER_AC = 0.9  # 32-bit float add at 45 nm (Horowitz 2014)
WEIGHTED = ("conv", "linear")


@dataclass(eq=False)
class Op:
    """One step of the folded network: conv, linear, avgpool, flatten, relu (ANN) or if (SNN)."""

    kind: str
    name: str
    """The CNN module it comes from (e.g. 'body.4'), for messages and NIR node names."""
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kernel: tuple[int, int] = (1, 1)
    threshold: float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The linear ops; `relu` is the ANN's nonlinearity (IF layers are simulated apart)."""
        if self.kind == "conv":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if self.kind == "linear":
            return F.linear(x, self.weight, self.bias)
        if self.kind == "avgpool":
            return F.avg_pool2d(x, self.kernel, self.stride)
        if self.kind == "flatten":
            return x.flatten(1)
        if self.kind == "relu":
            return F.relu(x)
        raise ValueError(f"{self.kind} is not a feed-forward op")

    def to(self, dtype: torch.dtype) -> Op:
        return dataclasses.replace(
            self, weight=None if self.weight is None else self.weight.to(dtype),
            bias=None if self.bias is None else self.bias.to(dtype))


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None,
             bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(W x + b) = (W * g) x + (b - mean) * g + beta, g = gamma / sqrt(var + eps)."""
    g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    b = torch.zeros_like(bn.running_mean) if bias is None else bias.detach()
    w = weight.detach() * g.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean) * g + bn.bias.detach()


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
            bn_next = i + 1 < len(mods) and isinstance(mods[i + 1][1],
                                                       nn.BatchNorm1d | nn.BatchNorm2d)
            if isinstance(m, Sobel):
                # Gray (per-pixel mean) commutes with zero padding, so it folds into the kernel.
                w = m.kernel * m.gray.reshape(1, -1, 1, 1)
                ops.append(Op("conv", name, w.clone(), None, padding=(1, 1)))
            elif isinstance(m, nn.Conv2d):
                if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros":
                    raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: only plain "
                                        "convolutions (no groups, dilation or padding modes)")
                w, b = (m.weight.detach(), m.bias)
                if bn_next:
                    w, b = _fold_bn(w, b, mods[i + 1][1])
                ops.append(Op("conv", name, w.clone(), None if b is None else b.detach().clone(),
                              _pair(m.stride), _pair(m.padding)))
            elif isinstance(m, nn.Linear):
                w, b = m.weight.detach(), m.bias
                if bn_next:
                    w, b = _fold_bn(w, b, mods[i + 1][1])
                ops.append(Op("linear", name, w.clone(),
                              None if b is None else b.detach().clone()))
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                if not ops or ops[-1].kind not in WEIGHTED or ops[-1].name != mods[i - 1][0]:
                    raise DeepSTDPError(f"layer {name} ({type(m).__name__}) cannot be converted: "
                                        "BatchNorm must follow a conv or linear layer to fold")
            elif isinstance(m, nn.ReLU):
                ops.append(Op("relu", name))
            elif isinstance(m, nn.AvgPool2d):
                if _pair(m.padding) != (0, 0) or m.ceil_mode:
                    raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: "
                                        "average pooling needs padding=0 and ceil_mode=False")
                ops.append(Op("avgpool", name, kernel=_pair(m.kernel_size),
                              stride=_pair(m.stride or m.kernel_size)))
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                h, w_ = probe.shape[-2:]
                oh, ow = _pair(m.output_size)
                if h % oh or w_ % ow:
                    raise DeepSTDPError(
                        f"layer {name} (AdaptiveAvgPool2d) cannot be converted: a {h}x{w_} map "
                        f"gives uneven {oh}x{ow} windows; use an image size that the pooling "
                        "layers divide evenly")
                k = (h // oh, w_ // ow)
                ops.append(Op("avgpool", name, kernel=k, stride=k))
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: "
                                        "only Flatten(1, -1)")
                ops.append(Op("flatten", name))
            elif isinstance(m, nn.MaxPool2d):
                raise DeepSTDPError(
                    f"layer {name} (MaxPool2d) cannot be converted: max pooling has no "
                    "rate-preserving spiking form; train with --pool avg")
            elif not isinstance(m, nn.Dropout | nn.Identity):
                raise DeepSTDPError(f"layer {name} ({type(m).__name__}) cannot be converted "
                                    "to spiking neurons")
            probe = m(probe)
    if not ops or ops[-1].kind != "relu":
        raise DeepSTDPError("the feature layer must end in a ReLU to become spiking neurons")
    return ops


def run_ops(ops: Sequence[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op(x)
    return x


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


@dataclass
class SimResult:
    """Spiking-simulation record at each requested number of steps T."""

    counts: dict[int, torch.Tensor]
    """(images, features) spike counts of the feature layer after T steps."""
    sops: dict[int, torch.Tensor]
    """(images,) synaptic operations (accumulates caused by spikes) in the first T steps."""


class SpikingNet:
    """The converted network: linear ops and IF layers, with their thresholds.

    `ops` before the first IF layer form the analog input stage, computed once per image; after
    it, every op acts on the previous IF layer's spikes (weights already scaled by that layer's
    threshold, so a spike is a unit event).
    """

    def __init__(self, ops: list[Op], input_shape: Sequence[int],
                 settings: dict[str, Any]):
        self.ops = ops
        self.input_shape = tuple(int(s) for s in input_shape)
        self.settings = settings
        self.reset = settings["reset"]
        self.v_init = float(settings["v_init"])
        ifs = [i for i, op in enumerate(ops) if op.kind == "if"]
        self.analog = ops[:ifs[0]]
        # Stage k: IF layer k, then the linear ops its spikes feed (none after the last).
        self.stages = [(ops[i], ops[i + 1:j]) for i, j in zip(ifs, [*ifs[1:], len(ops)],
                                                                strict=True)]
        self.shapes = self._shapes()
        self.fanouts = [self._fanout(post, self.shapes[i]) for i, post in
                        zip(ifs, (post for _, post in self.stages), strict=True)]

    @property
    def feature_threshold(self) -> float:
        return self.stages[-1][0].threshold

    def _shapes(self) -> list[tuple[int, ...]]:
        """Shape (without batch) of each op's output."""
        x, out = torch.zeros(1, *self.input_shape), []
        for op in self.ops:
            x = x if op.kind == "if" else op(x)
            out.append(tuple(x.shape[1:]))
        return out

    @staticmethod
    def _fanout(post: Sequence[Op], shape: tuple[int, ...]) -> torch.Tensor:
        """Synapses each neuron's spike reaches: to the first weighted op after it (or to the
        pooling neurons), through pooling (each pooled cell it belongs to) and flattening.
        Zero-padding is not counted.

        It is the gradient of the summed output of the same ops with all-ones weights and sum
        pooling, since that output counts every (input, synapse) pair once.
        """
        if not post:  # the feature layer: read out, not propagated
            return torch.zeros(shape, dtype=torch.float64)
        x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
        y = x
        for op in post:
            if op.kind in WEIGHTED:
                ones = Op(op.kind, op.name, torch.ones_like(op.weight, dtype=torch.float64),
                          None, op.stride, op.padding)
                y = ones(y)
                break
            y = op(y) * (op.kernel[0] * op.kernel[1] if op.kind == "avgpool" else 1)
        y.sum().backward()
        return x.grad[0]

    def synapses(self, ops: Sequence[Op] | None = None) -> int:
        """Synapses of the weighted ops (all by default): the MACs of one ANN forward pass."""
        ops = self.ops if ops is None else ops
        shapes = [self.input_shape, *self.shapes]
        return sum(int(self._fanout([op], shapes[i]).sum()) for i, op in enumerate(self.ops)
                   if op.kind in WEIGHTED and any(op is o for o in ops))

    def n_neurons(self, driven: bool = False) -> int:
        """IF neurons; with `driven`, only those that add a constant current every step (the
        first layer's input, or a bias), i.e. not the pooling neurons."""
        return sum(int(np.prod(self.shapes[i])) for i, op in enumerate(self.ops)
                   if op.kind == "if" and (not driven or i == len(self.analog) or
                                           self.ops[i - 1].bias is not None))

    @torch.no_grad()
    def simulate(self, x: torch.Tensor, timesteps: Sequence[int],
                 dtype: torch.dtype = torch.float32) -> SimResult:
        """Run the batch x for max(timesteps) steps, recording at each T in timesteps."""
        marks = set(timesteps)
        analog = [op.to(dtype) for op in self.analog]
        stages = [(op, [p.to(dtype) for p in post], fan.to(dtype).flatten())
                  for (op, post), fan in zip(self.stages, self.fanouts, strict=True)]
        current = run_ops(analog, x.to(dtype))
        v = [None] * len(stages)
        counts = torch.zeros(len(x), *self.shapes[-1], dtype=dtype)
        sops = torch.zeros(len(x), dtype=torch.float64)
        result = SimResult({}, {})
        for t in range(1, max(marks) + 1):
            inp = current
            for k, (op, post, fan) in enumerate(stages):
                th = op.threshold
                v[k] = inp + (self.v_init * th if v[k] is None else v[k])
                s = (v[k] > th).to(dtype)
                v[k] = v[k] - th * s if self.reset == "subtract" else v[k] * (1 - s)
                if post:
                    sops += (s.flatten(1) @ fan).double()
                    inp = run_ops(post, s)
            counts += s
            if t in marks:
                result.counts[t] = counts.clone()
                result.sops[t] = sops.clone()
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"ops": [dataclasses.asdict(op) for op in self.ops],
                "input_shape": list(self.input_shape), "settings": self.settings}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SpikingNet:
        ops = [Op(**{**d, "stride": tuple(d["stride"]), "padding": tuple(d["padding"]),
                     "kernel": tuple(d["kernel"])}) for d in state["ops"]]
        return cls(ops, state["input_shape"], state["settings"])


def convert(model: ConvNet, x_calib: torch.Tensor, percentile: float = 99.9,
            reset: str = "subtract", v_init: float = 0.5,
            pool_neurons: bool = True) -> SpikingNet:
    """Fold BatchNorm, balance thresholds on x_calib, and return the spiking network.

    With `pool_neurons`, IF neurons of threshold one spike re-encode each pooled cell's mean
    rate as spikes (exactly, on average: the mean of spikes never exceeds one per step), so the
    next layer's fan-out is paid once per cell rather than once per pre-pooling neuron.
    """
    if not 0 < percentile <= 100:
        raise DeepSTDPError(f"--percentile must be in (0, 100], got {percentile}")
    if reset not in ("subtract", "zero"):
        raise DeepSTDPError(f"unknown reset {reset!r}: use subtract or zero")
    if not 0 <= v_init < 1:
        raise DeepSTDPError(f"--v-init must be in [0, 1), got {v_init}")
    ops = fold_network(model, x_calib.shape[1:])
    lambdas = iter(relu_percentiles(ops, x_calib, percentile))
    out: list[Op] = []
    scale = 1.0  # what one unit of the current input stands for: 1 for the analog image
    spikes = False  # whether the current input is spikes
    for i, op in enumerate(ops):
        if op.kind == "relu":
            scale, spikes = next(lambdas), True
            out.append(Op("if", op.name, threshold=scale))
        elif op.kind in WEIGHTED:
            out.append(dataclasses.replace(op, weight=op.weight * scale))
            scale, spikes = 1.0, False
        else:
            out.append(op)
            last_pool = i + 1 == len(ops) or ops[i + 1].kind != "avgpool"
            if pool_neurons and spikes and op.kind == "avgpool" and last_pool:
                out.append(Op("if", f"{op.name}.neurons", threshold=1.0))
    settings = {"percentile": percentile, "reset": reset, "v_init": v_init,
                "pool_neurons": pool_neurons, "calib_images": len(x_calib)}
    return SpikingNet(out, x_calib.shape[1:], settings)


# --------------------------------------------------------------------------- run directories


def checkpoint_path(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise DeepSTDPError(f"no trained run in {run_dir}: {path} not found")
    return path


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    return torch.load(checkpoint_path(run_dir), weights_only=False)


def model_from_checkpoint(ck: dict[str, Any]) -> tuple[ConvNet, TrainConfig]:
    cfg = TrainConfig.from_dict(ck["config"])
    state = ck["model"]
    in_channels = state["sobel.gray"].shape[1] if cfg.sobel else state["body.0.weight"].shape[1]
    model = ConvNet(in_channels, ck["k"], widths=cfg.widths, feat_dim=cfg.feat_dim,
                    sobel=cfg.sobel, pool=cfg.pool, dropout=cfg.dropout, proj_dim=cfg.proj_dim)
    model.load_body(state)
    return model.eval(), cfg


def clusterer_from_checkpoint(ck: dict[str, Any], cfg: TrainConfig) -> Clusterer:
    """The run's evaluated clusterer (k clusters), as fitted at the checkpoint's epoch."""
    from deepstdp.training import make_clusterer

    clusterer = make_clusterer(cfg, ck["k"], 0)
    clusterer.load_state_dict(ck["clusterer"]["evaluated"])
    return clusterer


def spread(n: int, limit: int | None) -> torch.Tensor:
    """`limit` indices spread evenly over range(n) (all of them without a limit)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long()


def checkpoint_digest(run_dir: str | Path) -> str:
    return hashlib.sha256(checkpoint_path(run_dir).read_bytes()).hexdigest()


def convert_run(run_dir: str | Path, percentile: float = 99.9, reset: str = "subtract",
                v_init: float = 0.5, pool_neurons: bool = True, calib_images: int = 512,
                progress: bool = False) -> SpikingNet:
    """Convert the run's CNN and save it to RUN_DIR/spiking.pt (atomically)."""
    from deepstdp.training import Data

    if calib_images < 1:
        raise DeepSTDPError(f"--calib-images must be at least 1, got {calib_images}")
    ck = load_checkpoint(run_dir)
    model, cfg = model_from_checkpoint(ck)
    data = Data(cfg, progress)
    x_calib = data.x_train[spread(len(data.x_train), calib_images)]
    snn = convert(model, x_calib, percentile, reset, v_init, pool_neurons)
    state = {**snn.state_dict(), "checkpoint_sha256": checkpoint_digest(run_dir),
             "checkpoint_epoch": ck["epoch"], "version": __version__}
    atomic_write(Path(run_dir) / "spiking.pt", lambda p: torch.save(state, p))
    return snn


def load_spiking(run_dir: str | Path, progress: bool = False) -> SpikingNet:
    """RUN_DIR/spiking.pt; converted now (default settings, or those of a stale file) when it
    is missing or was converted from another checkpoint."""
    path = Path(run_dir) / "spiking.pt"
    digest = checkpoint_digest(run_dir)
    settings: dict[str, Any] = {}
    if path.exists():
        state = torch.load(path, weights_only=True)
        if state["checkpoint_sha256"] == digest:
            return SpikingNet.from_state_dict(state)
        settings = dict(state["settings"])
    if progress:
        why = "is from another checkpoint" if settings else "is missing"
        print(f"{path} {why}: converting with {settings or 'the default settings'}")
    return convert_run(run_dir, progress=progress, **settings)


# --------------------------------------------------------------------------- evaluation


def parse_timesteps(text: str) -> list[int]:
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens or not all(t.isdigit() and int(t) > 0 for t in tokens):
        raise DeepSTDPError(f"bad --timesteps {text!r}: use positive integers, e.g. 16,64")
    return sorted({int(t) for t in tokens})


def spiking_features(snn: SpikingNet, x: torch.Tensor, timesteps: Sequence[int],
                     batch: int = 256, progress: bool = False,
                     desc: str = "spiking") -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Feature rates scaled back to activations (count / T * threshold) and the mean SOPs per
    image, at each T."""
    feats: dict[int, list[torch.Tensor]] = {t: [] for t in timesteps}
    sops = {t: 0.0 for t in timesteps}
    for i in tqdm(range(0, len(x), batch), desc=desc, disable=not progress, leave=False):
        res = snn.simulate(x[i:i + batch], timesteps)
        for t in timesteps:
            feats[t].append(res.counts[t] / t * snn.feature_threshold)
            sops[t] += float(res.sops[t].sum())
    return ({t: torch.cat(f).float().numpy() for t, f in feats.items()},
            {t: s / len(x) for t, s in sops.items()})


def evaluate_run(run_dir: str | Path, timesteps: Sequence[int] | None = None,
                 limit: int | None = None, batch: int = 256, threads: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """The non-spiking pipeline's metrics and, with `timesteps`, the spiking pipeline's per T.

    With timesteps, writes RUN_DIR/spiking.json (one object per T) and RUN_DIR/spiking.png.
    Returns {"ann": metrics, "rows": [per-T objects]}.
    """
    from deepstdp.training import Data, embed, extract_features

    if limit is not None and limit < 1:
        raise DeepSTDPError(f"--limit must be at least 1, got {limit}")
    if threads is not None and threads < 1:
        raise DeepSTDPError(f"--threads must be at least 1, got {threads}")
    if batch < 1:
        raise DeepSTDPError(f"--batch must be at least 1, got {batch}")
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        ck = load_checkpoint(run_dir)
        model, cfg = model_from_checkpoint(ck)
        pca = PCAWhitening.from_state_dict(ck["pca"])
        clusterer = clusterer_from_checkpoint(ck, cfg)
        data = Data(cfg, progress)
        splits = {}
        for name, x, y in (("train", data.x_train, data.train.labels),
                           ("val", data.x_val, data.val.labels)):
            idx = spread(len(x), limit)
            xs, ys = x[idx], y[idx.numpy()]
            pred = clusterer.predict(pca.transform(embed(model, extract_features(model, xs,
                                                                                bf16=False))))
            splits[name] = (xs, ys, pred)
        ann = {f"{p}{m}": v for name, p in (("train", ""), ("val", "val_"))
               for m, v in cluster_metrics(splits[name][1], splits[name][2]).items()}
        result: dict[str, Any] = {"ann": ann, "rows": []}
        if not timesteps:
            return result
        snn = load_spiking(run_dir, progress)
        macs = snn.synapses()
        input_macs = snn.synapses(snn.analog)
        per: dict[str, tuple[dict[int, np.ndarray], dict[int, float]]] = {
            name: spiking_features(snn, xs, timesteps, batch, progress, f"spiking {name}")
            for name, (xs, _, _) in splits.items()}
        rows = []
        n_train = len(splits["train"][0])
        for t in timesteps:
            row: dict[str, Any] = {"timesteps": t}
            for name, p in (("train", ""), ("val", "val_")):
                _, ys, ann_pred = splits[name]
                pred = clusterer.predict(pca.transform(embed(model, per[name][0][t])))
                row[f"{p}agreement"] = float((pred == ann_pred).mean())
                row.update({f"{p}{m}": v for m, v in cluster_metrics(ys, pred).items()})
            n = n_train + len(splits["val"][0])
            sops = (per["train"][1][t] * n_train + per["val"][1][t] * (n - n_train)) / n
            bias_adds = snn.n_neurons(driven=True) * t
            row.update(
                sops_per_image=sops, macs_per_image=macs, input_macs_per_image=input_macs,
                bias_adds_per_image=bias_adds,
                energy_snn_uj=(input_macs * PJ_PER_MAC + (sops + bias_adds) * PJ_PER_AC) * 1e-6,
                energy_ann_uj=macs * PJ_PER_MAC * 1e-6,
                **{f"ann_{m}": v for m, v in ann.items()},
                images_train=n_train, images_val=n - n_train)
            rows.append(row)
        run_dir = Path(run_dir)
        write_json_atomic(run_dir / "spiking.json", rows)
        plot_spiking(rows, run_dir / "spiking.png")
        result["rows"] = rows
        return result


def plot_spiking(rows: list[dict[str, Any]], path: str | Path) -> None:
    """ACC and agreement with the CNN pipeline (train, val) against T; the CNN's ACC as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["timesteps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    ax.plot(ts, [r["acc"] for r in rows], "o-", label="ACC train (spiking)")
    ax.plot(ts, [r["val_acc"] for r in rows], "s-", label="ACC val (spiking)")
    ax.plot(ts, [r["agreement"] for r in rows], "^--", label="agreement with CNN (train)")
    ax.plot(ts, [r["val_agreement"] for r in rows], "v--", label="agreement with CNN (val)")
    ax.axhline(rows[0]["ann_acc"], color="C0", ls=":", label="ACC train (CNN)")
    ax.axhline(rows[0]["ann_val_acc"], color="C1", ls=":", label="ACC val (CNN)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("time steps T")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def format_rows(ann: dict[str, float], rows: list[dict[str, Any]]) -> str:
    lines = [f"CNN      ACC {ann['acc']:.3f} NMI {ann['nmi']:.3f} ARI {ann['ari']:.3f} | "
             f"val ACC {ann['val_acc']:.3f} NMI {ann['val_nmi']:.3f} ARI {ann['val_ari']:.3f}"]
    for r in rows:
        lines.append(
            f"T={r['timesteps']:<5d} ACC {r['acc']:.3f} NMI {r['nmi']:.3f} ARI {r['ari']:.3f} | "
            f"val ACC {r['val_acc']:.3f} NMI {r['val_nmi']:.3f} ARI {r['val_ari']:.3f} | "
            f"agree {r['agreement']:.3f}/{r['val_agreement']:.3f} | "
            f"SOPs {r['sops_per_image'] / 1e6:.2f}M vs MACs {r['macs_per_image'] / 1e6:.2f}M | "
            f"{r['energy_snn_uj']:.2f} vs {r['energy_ann_uj']:.2f} uJ")
    return "\n".join(lines)
