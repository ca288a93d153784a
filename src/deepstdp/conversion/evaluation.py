"""Evaluation of a run: its CNN pipeline and, image by image, its spiking version.

The spiking feature layer's rates, scaled back to activations, go through the run's own
projection, PCA-whitening and clusterer, so the two pipelines can be compared on the same images
(docs/conversion.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deepstdp.conversion.converter import load_or_convert, spread
from deepstdp.conversion.network import PJ_PER_AC, PJ_PER_MAC, SpikingNet
from deepstdp.conversion.settings import CODINGS, READOUTS, check_timesteps
from deepstdp.measures.metrics import cluster_metrics, majority_metrics
from deepstdp.run.rundir import SPIKING_PLOT, SPIKING_ROWS, SPIKING_TABLE, RunDir
from deepstdp.runtime.threads import pinned
from deepstdp.runtime.util import DeepSTDPError, SettingError, write_json_atomic, write_text_atomic

MAX_BATCH = 4096
"""The most images simulated at once: a batch's membranes of every layer are held together
(at 64 px about 1 MB an image), so a larger one only risks the machine's memory."""
SPLITS = (("train", ""), ("val", "val_"))
"""Split names and the prefix of their metrics in a row."""


def spiking_features(snn: SpikingNet, x: torch.Tensor, timesteps: Sequence[int],
                     batch: int = 256, progress: bool = False, desc: str = "spiking",
                     readout: str = READOUTS[0], coding: str = CODINGS[0]
                     ) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, float]]:
    """Feature activations decoded by `readout` (SpikingNet.features), and the mean SOPs and
    simulation seconds per image, at each T, with spikes propagated by `coding`."""
    feats: dict[int, list[torch.Tensor]] = {t: [] for t in timesteps}
    sops = {t: 0.0 for t in timesteps}
    seconds = {t: 0.0 for t in timesteps}
    for i in tqdm(range(0, len(x), batch), desc=desc, disable=not progress, leave=False):
        res = snn.simulate(x[i:i + batch], timesteps, coding=coding)
        for t in timesteps:
            feats[t].append(snn.features(res, t, readout))
            sops[t] += float(res.sops[t].sum())
            seconds[t] += res.seconds[t]
    return ({t: torch.cat(f).float().cpu().numpy() for t, f in feats.items()},
            {t: s / len(x) for t, s in sops.items()},
            {t: s / len(x) for t, s in seconds.items()})


def evaluate_run(run_dir: str | Path, timesteps: Sequence[int] | None = None,
                 limit: int | None = None, batch: int = 256, threads: int | None = None,
                 progress: bool = False, readout: str = READOUTS[0],
                 device: str = "auto", coding: str = CODINGS[0]) -> dict[str, Any]:
    """The CNN pipeline's metrics and, with `timesteps`, the spiking pipeline's at each T.

    With timesteps, writes RUN_DIR/spiking.json (one object per T), spiking.md (the table) and
    spiking.png. Returns {"ann": metrics, "rows": [per-T objects]}. The CNN and the
    simulation run on `device` (devices.resolve), the CNN in the run's own precision.
    """
    from deepstdp.data.datasets import Data
    from deepstdp.run.loaded import load_run
    from deepstdp.runtime.devices import resolve, resumed

    if limit is not None and limit < 1:
        raise SettingError("limit", f"must be at least 1 image, got {limit}")
    if not 1 <= batch <= MAX_BATCH:
        raise SettingError("batch", f"must be in [1, {MAX_BATCH}] images, got {batch}")
    if readout not in READOUTS:
        raise DeepSTDPError(f"unknown readout {readout!r}: use {' or '.join(READOUTS)}")
    if timesteps:
        check_timesteps(timesteps, coding)
    dev = resolve(device)
    with pinned(threads) as n_threads:
        run = load_run(run_dir)
        run.model.to(dev)
        # In the run's own precision, so that the CNN's metrics are metrics.jsonl's.
        compute = resumed(run.checkpoint.precision, dev)
        data = Data(**run.config.data_options(), progress=progress)

        def cluster(features: np.ndarray) -> np.ndarray:
            return run.clusterer.predict(run.whiten(features))

        splits, targets = {}, {}
        for name, x, y in (("train", data.x_train, data.train.labels),
                           ("val", data.x_val, data.val.labels)):
            idx = spread(len(x), limit)
            xs = x[idx]
            z = run.embeddings(xs, compute)
            splits[name] = Split(xs.to(dev), y[idx.numpy()], run.clusterer.predict(z),
                                 run.margin(z))
            targets[name] = run.targets.predict(z)
        ann = {f"{p}{m}": v for name, p in SPLITS
               for m, v in cluster_metrics(splits[name].labels, splits[name].pred).items()}
        # Diehl & Cook's readout: the target clusters named on the (evaluated) train images.
        ann.update(majority_metrics(splits["train"].labels, targets["train"],
                                    splits["val"].labels, targets["val"],
                                    len(run.checkpoint.prototypes)))
        if not timesteps:
            return {"ann": ann, "rows": []}
        snn = load_or_convert(run_dir, progress)
        note = calibration_mismatch(snn.settings, coding, readout)
        for name, split in splits.items():
            split.simulate(snn, timesteps, batch, progress, name, readout, coding)
        rows = [{"timesteps": t, "readout": readout, "coding": coding,
                 **_spiking_metrics(splits, t, cluster),
                 **snn.costs(_per_image(splits, "sops", t), t),
                 "seconds_per_image": _per_image(splits, "seconds", t), "threads": n_threads,
                 **{f"ann_{m}": v for m, v in ann.items()},
                 "images_train": len(splits["train"].x), "images_val": len(splits["val"].x)}
                for t in timesteps]
    write_outputs(Path(run_dir), ann, rows)
    return {"ann": ann, "rows": rows, "note": note}


def calibration_mismatch(settings: Any, coding: str, readout: str) -> str | None:
    """A warning where the network's biases were calibrated for another code or readout than
    the one simulated: its agreement then says little about either."""
    if not settings.calibrate_steps:
        return None
    if (settings.calibrate_coding, settings.calibrate_readout) == (coding, readout):
        return None
    return (f"the network's biases were calibrated for the {settings.calibrate_coding} code "
            f"with the {settings.calibrate_readout} readout ({settings.calibrate_steps} "
            f"steps), not for the {coding} code with the {readout} readout simulated here; "
            "convert it again for this one")


@dataclass
class Split:
    """The evaluated images of one split, their classes, the CNN pipeline's clusters and,
    once simulated, the spiking features, SOPs and seconds per image at each T."""

    x: torch.Tensor
    labels: np.ndarray
    pred: np.ndarray
    margin: np.ndarray | None
    """The clusterer's margin of each image's CNN cluster (Clusterer.margin), if it has one."""
    features: dict[int, np.ndarray] = field(default_factory=dict)
    sops: dict[int, float] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)

    def simulate(self, snn: SpikingNet, timesteps: Sequence[int], batch: int, progress: bool,
                 name: str, readout: str, coding: str) -> None:
        self.features, self.sops, self.seconds = spiking_features(
            snn, self.x, timesteps, batch, progress, f"spiking {name}", readout, coding)


def _spiking_metrics(splits: dict[str, Split], t: int,
                     cluster: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    """Per split, agreement with the CNN pipeline's clusters (all images, and the half the
    clusterer is surest of: the images near a boundary, where any perturbation flips the
    cluster, are apart) and ACC/NMI/ARI, at T = t."""
    out: dict[str, float | None] = {}
    for name, p in SPLITS:
        split = splits[name]
        pred = cluster(split.features[t])
        same = pred == split.pred
        out[f"{p}agreement"] = float(same.mean())
        out[f"{p}agreement_confident"] = (None if split.margin is None else
                                          float(same[split.margin >= np.median(split.margin)]
                                                .mean()))
        out.update({f"{p}{m}": v for m, v in cluster_metrics(split.labels, pred).items()})
    return out


def _per_image(splits: dict[str, Split], what: str, t: int) -> float:
    """Mean per image over both splits of `what` ('sops' or 'seconds') at T = t."""
    total = sum(getattr(s, what)[t] * len(s.x) for s in splits.values())
    return total / sum(len(s.x) for s in splits.values())


def write_outputs(run_dir: Path, ann: dict[str, float], rows: list[dict[str, Any]]) -> None:
    """spiking.json (the rows), spiking.md (the table) and spiking.png (ACC and agreement)."""
    from deepstdp.measures.report import plot_spiking, spiking_markdown

    run = RunDir(run_dir)
    write_json_atomic(run / SPIKING_ROWS, rows)
    write_text_atomic(run / SPIKING_TABLE, spiking_markdown(ann, rows, PJ_PER_MAC, PJ_PER_AC,
                                                       SPIKING_PLOT))
    plot_spiking(rows, run / SPIKING_PLOT)


def _confident(row: dict[str, Any]) -> str:
    """' (surer half a/b)' where the clusterer has a margin."""
    if row.get("agreement_confident") is None:
        return ""
    return f" (surer half {row['agreement_confident']:.3f}/{row['val_agreement_confident']:.3f})"


def format_rows(ann: dict[str, float], rows: list[dict[str, Any]]) -> str:
    """The printed summary: the CNN, then one line per T ('-': no labels to score)."""
    def f(r: dict[str, Any], key: str) -> str:
        return "-" if r.get(key) is None else f"{r[key]:.3f}"

    def scores(r: dict[str, Any]) -> str:
        return (f"ACC {f(r, 'acc')} NMI {f(r, 'nmi')} ARI {f(r, 'ari')} | val ACC "
                f"{f(r, 'val_acc')} NMI {f(r, 'val_nmi')} ARI {f(r, 'val_ari')}")

    lines = [f"CNN      {scores(ann)} | majority vote {f(ann, 'mv_acc')} val "
             f"{f(ann, 'val_mv_acc')}"]
    if rows:
        lines[0] += (f" | MACs {rows[0]['macs_per_image'] / 1e6:.2f}M "
                     f"{rows[0]['energy_ann_uj']:.2f} uJ")
        lines.append(f"spiking: {rows[0].get('coding', 'synchronous')} coding, "
                     f"{rows[0]['readout']} readout")
    for r in rows:
        lines.append(
            f"T={r['timesteps']:<5d} {scores(r)} | "
            f"agree {r['agreement']:.3f}/{r['val_agreement']:.3f}"
            f"{_confident(r)} | "
            f"SOPs {r['sops_per_image'] / 1e6:.2f}M | {r['energy_snn_uj']:.2f} uJ | "
            f"{r['seconds_per_image'] * 1e3:.2f} ms/image")
    return "\n".join(lines)
