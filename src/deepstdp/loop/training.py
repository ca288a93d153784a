"""The DeepCluster loop: features -> PCA-whitening -> clustering -> pseudo-labels -> train.

Epoch 0 clusters the features of the untrained network; each later epoch trains one pass on the
previous epoch's pseudo-labels, then re-clusters. That clustering is both the epoch's evaluation
and the next epoch's targets, so no features are computed twice.

Every random draw of an epoch comes from generators seeded by (seed, epoch), so a run resumed
from a checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from tqdm import tqdm

from deepstdp import __version__
from deepstdp.clustering.base import Clusterer
from deepstdp.clustering.kmeans import KMeansClustering
from deepstdp.clustering.pca import PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.data.augment import Augmentation
from deepstdp.data.datasets import Data, ImageTensor
from deepstdp.loop.targets import centroids, sinkhorn, uniform_sample
from deepstdp.measures.metrics import cluster_metrics, cluster_sizes, majority_metrics
from deepstdp.measures.probes import knn_accuracy, linear_probe_accuracy
from deepstdp.network.features import batch_on, embed, extract_features
from deepstdp.network.firing import FiringCost
from deepstdp.network.models import ConvNet
from deepstdp.registry import check_settings, kind_of, make_clusterer, show_progress
from deepstdp.run.loaded import clusterers_from_checkpoint
from deepstdp.run.rundir import CURVES, EVALUATED, PICTURES, TARGETS, Checkpoint, RunDir
from deepstdp.run.tensorboard import TensorBoardLog
from deepstdp.run.tensorboard import check_available as check_tensorboard
from deepstdp.runtime import devices, threads
from deepstdp.runtime.devices import Compute
from deepstdp.runtime.distributed import ALONE, World, joined
from deepstdp.runtime.util import DeepSTDPError, SettingError, peak_memory_gib


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent 63-bit seeds per (run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, np.uint64)[0] >> 1)


def k_train_of(cfg: TrainConfig, k: int) -> int:
    return cfg.k_train or 10 * k


class Clusterings(NamedTuple):
    """The epoch's two clusterings by the same kind of clusterer: `evaluated` at k clusters
    (the reported ACC/NMI/ARI) and `targets` at k_train (the training labels). With
    k_train == k they are one and the same object."""

    evaluated: Clusterer
    targets: Clusterer

    def state_dict(self) -> dict[str, Any]:
        return {EVALUATED: self.evaluated.state_dict(), TARGETS: self.targets.state_dict()}


def make_clusterings(cfg: TrainConfig, k: int, k_train: int, seed: int,
                     verbose: bool = False) -> Clusterings:
    evaluated = make_clusterer(cfg, k, seed, verbose)
    targets = evaluated if k_train == k else make_clusterer(cfg, k_train, seed + 1, verbose)
    return Clusterings(evaluated, targets)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Step `step` (0-based, counted from epoch 1) of linear warm-up then cosine decay."""
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / total))


class Targets(NamedTuple):
    """An epoch's training signal: one label per image, for the centroid head the unit-norm
    centroid of each label's images in embedding space, and which images train (`keep`)."""

    labels: np.ndarray
    prototypes: torch.Tensor
    keep: np.ndarray


def make_targets(cfg: TrainConfig, embeddings: np.ndarray, labels: np.ndarray,
                 k_train: int, margins: np.ndarray | None = None) -> Targets:
    """The targets clusterer's labels (Sinkhorn-balanced if configured), their centroids, and
    the images that train: with cfg.target_keep < 1 the surest fraction of each cluster by
    `margins` (the clusterer's confidence in each image)."""
    e = torch.from_numpy(embeddings)
    protos = centroids(e, labels, k_train)
    if cfg.balance == "sinkhorn":
        # Standardised scores make the soft assignments peaked enough that their argmax keeps
        # the balance; raw cosines of ReLU features differ too little.
        cosine = nn.functional.normalize(e, dim=1) @ protos.T
        labels = sinkhorn((cosine - cosine.mean()) / cosine.std()).argmax(dim=1).numpy()
        protos = centroids(e, labels, k_train)
    keep = np.ones(len(labels), bool)
    if cfg.target_keep < 1 and margins is not None:
        keep = surest(labels, margins, cfg.target_keep)
    return Targets(labels, protos, keep)


def surest(labels: np.ndarray, margins: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ceil(fraction * size) highest-margin images of every cluster (ties: the
    lower index), so that no cluster loses its training signal."""
    keep = np.zeros(len(labels), bool)
    order = np.lexsort((np.arange(len(labels)), -margins, labels))  # by cluster, surest first
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    rank = np.arange(len(labels)) - np.repeat(starts, sizes)
    keep[order[rank < np.ceil(fraction * np.repeat(sizes, sizes))]] = True
    return keep


def kept_targets(last: np.ndarray | None, new: np.ndarray) -> float | None:
    """Fraction of images whose target is the same as last epoch's once the two epochs'
    cluster ids are matched one to one (Hungarian on the contingency table), so that it is
    fair to a clusterer whose ids permute each epoch (k-means) and one whose ids carry over."""
    if last is None:
        return None
    k = int(max(last.max(), new.max())) + 1
    table = np.zeros((k, k), np.int64)
    np.add.at(table, (last, new), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(new))


def train_epoch(model: ConvNet, optimizer: torch.optim.Optimizer, x: torch.Tensor | ImageTensor,
                targets: Targets, cfg: TrainConfig, epoch: int, compute: Compute,
                aug: Augmentation, progress: bool, world: World = ALONE) -> float:
    """One pass of len(x) images (`views` augmentations each) on the targets; mean loss.

    In a world of several processes each takes its share of every batch (all draw the same
    sample order), augments it from its own stream, and DDP averages the gradients.
    """
    rng = np.random.default_rng(epoch_seed(cfg.seed, epoch, 1))
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 2) + world.rank)
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 3) + world.rank)  # dropout, new top layer
    top_opt = None
    if cfg.head == "centroid":
        model.set_prototypes(targets.prototypes, cfg.temperature)
    else:
        model.reset_top(len(targets.prototypes))  # DDP hands every process rank 0's
        top_opt = torch.optim.SGD(model.top.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
    if cfg.sampling == "uniform":
        idx = torch.from_numpy(uniform_sample(targets.labels, len(x), rng, targets.keep))
    else:
        idx = torch.from_numpy(rng.permutation(np.flatnonzero(targets.keep)))
    y = torch.from_numpy(targets.labels)
    net, scaler = world.parallel(model), compute.scaler()
    model.train()
    total, count = 0.0, 0
    per_epoch = len(idx) // cfg.batch_size  # drop the last partial batch: BatchNorm
    share = cfg.batch_size // world.size
    # The firing penalty's hooks hold each batch's activations: only while training.
    firing = FiringCost(model, batch_on(x, idx[:1], compute)) if cfg.sparsity else None
    with firing or contextlib.nullcontext():
        for i in tqdm(range(per_epoch), desc=f"train {epoch}", disable=not progress, leave=False):
            lr = learning_rate(cfg, (epoch - 1) * per_epoch + i, per_epoch)
            for opt in (optimizer, top_opt):
                for group in opt.param_groups if opt else ():
                    group["lr"] = lr
            b = idx[i * cfg.batch_size:(i + 1) * cfg.batch_size][world.rank * share:][:share]
            xb = aug.views(batch_on(x, b, compute), cfg.views, gen)
            with compute.autocast():
                logits = net(xb.contiguous(memory_format=torch.channels_last)).float()
            loss = nn.functional.cross_entropy(logits, compute.put(y[b].repeat(cfg.views)))
            if firing:
                loss = loss + cfg.sparsity * firing.pop()
            if not torch.isfinite(loss):
                raise DeepSTDPError(f"training diverged: loss is {loss.item()} at epoch {epoch}, "
                                    f"batch {i}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            if top_opt:
                top_opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            if top_opt:
                scaler.step(top_opt)
            scaler.update()
            total += loss.item() * len(b)
            count += len(b)
    total, count = world.total(total, count)
    return total / max(count, 1)


def fit_clusterings(cfg: TrainConfig, emb: np.ndarray, last: Clusterings | None,
            last_pca: PCAWhitening | None, k: int, k_train: int,
            epoch: int, progress: bool = False) -> tuple[PCAWhitening, Clusterings]:
    """PCA-whiten and cluster; the spiking layers may continue from last epoch's weights.
    progress: the clusterers' own progress bars, where they have them."""
    pca = PCAWhitening(cfg.pca_dim).fit(emb)
    if cfg.align_pca and last_pca is not None:
        pca.align_to(last_pca, emb)
    z = pca.transform(emb)
    carry = last is not None and kind_of(cfg.clusterer).carries_state
    one_layer = last is not None and last.targets is last.evaluated
    if carry and (cfg.stdp_carry == "continue" or cfg.stdp_carry == "targets" and one_layer):
        for c in dict.fromkeys(last):  # once each, when evaluated and targets are one
            show_progress(c, progress).partial_fit(z)
        return pca, last
    seed = epoch_seed(cfg.seed, epoch, 0) % 2**31
    if carry and cfg.stdp_carry == "targets":
        # The targets layer goes on; the evaluated one meets today's features afresh.
        show_progress(last.targets, progress).partial_fit(z)
        evaluated = make_clusterer(cfg, k, seed, progress)
        evaluated.fit(z)
        return pca, Clusterings(evaluated, last.targets)
    new = make_clusterings(cfg, k, k_train, seed, progress)
    if cfg.kmeans_warm and last is not None:
        for c, before in zip(new, last, strict=True):
            if isinstance(c, KMeansClustering):
                c.set_params(init=warm_centres(z, before.labels_, c.n_clusters, seed))
    for c in dict.fromkeys(new):
        c.fit(z)
    return pca, new


def warm_centres(z: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The means of today's embeddings `z` over last epoch's clusters `labels`: where k-means
    starts when warm. The basis of z may have turned since (a new PCA), the images' clusters
    not; a cluster gone empty starts at a random image (seeded)."""
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, labels, z)
    counts = np.bincount(labels, minlength=k)
    empty = counts == 0
    centres = sums / np.maximum(counts, 1)[:, None]
    if empty.any():
        pick = np.random.default_rng(seed).choice(len(z), int(empty.sum()), replace=False)
        centres[empty] = z[pick]
    return centres.astype(np.float32)


class TargetClusters(NamedTuple):
    """The targets clusterer's k_train clusters of the train images (before any balancing)
    and of the val images: what the majority-vote readout names and scores."""

    train: np.ndarray
    val: np.ndarray
    n: int


TIMES = ("time_train", "time_features", "time_cluster", "time_eval")
"""An epoch's seconds by phase: training, feature extraction, clustering (with the next
targets), and measuring (val clusters, scores, k-NN and probe)."""
MACHINE = (*TIMES, "peak_memory_gib")
"""The row's measures of the machine rather than of the run (`peak_memory_gib`: the process's
peak resident memory so far): identical runs differ in them, and only in them."""

LABEL_SCORES = ("acc", "nmi", "ari", "val_acc", "val_nmi", "val_ari", "mv_acc", "val_mv_acc",
                "knn_acc", "probe_acc", "target_nmi")
"""An epoch's scores against the true labels: None where a split has no labelled image."""


def probes_due(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch `epoch` runs the k-NN and linear probe (`probe_every`)."""
    return epoch % cfg.probe_every == 0 or epoch == cfg.epochs


def epoch_metrics(cfg: TrainConfig, data: Data, epoch: int, k: int, new: np.ndarray,
                  last: np.ndarray | None, val_pred: np.ndarray, targets: Targets,
                  f_train: np.ndarray, f_val: np.ndarray,
                  last_targets: np.ndarray | None = None,
                  target_clusters: TargetClusters | None = None) -> dict[str, Any]:
    """The epoch's row: the evaluated clustering against the classes (train and val), its NMI
    to last epoch's, the majority-vote readout of the target clusters (`mv_acc`,
    `val_mv_acc`: Diehl & Cook's, docs/reproduction.md), k-NN and linear-probe accuracy of
    the features (on the epochs `probes_due`), and the targets' NMI and size range. The true
    labels are read here only, and only the labelled images are scored (label -1: an image
    without one); a split with none leaves its scores None (LABEL_SCORES)."""
    y_train, y_val = data.train.labels, data.val.labels
    on_train, on_val = y_train >= 0, y_val >= 0
    row: dict[str, Any] = dict.fromkeys(LABEL_SCORES)
    if on_train.any():
        row.update(cluster_metrics(y_train[on_train], new[on_train]))
        row["target_nmi"] = cluster_metrics(y_train[on_train],
                                            targets.labels[on_train])["nmi"]
    if on_val.any():
        row.update({f"val_{m}": v for m, v in
                    cluster_metrics(y_val[on_val], val_pred[on_val]).items()})
    row["nmi_prev"] = None if last is None else cluster_metrics(last, new)["nmi"]
    if target_clusters is not None:
        row["mv_clusters"] = target_clusters.n
        if on_train.any() and on_val.any():
            row.update(majority_metrics(y_train[on_train], target_clusters.train[on_train],
                                        y_val[on_val], target_clusters.val[on_val],
                                        target_clusters.n))
    if on_train.any() and on_val.any() and probes_due(cfg, epoch):
        args = (f_train[on_train], y_train[on_train], f_val[on_val], y_val[on_val])
        row["knn_acc"] = knn_accuracy(*args, k=cfg.knn_k)
        row["probe_acc"] = linear_probe_accuracy(*args)
    row["target_kept"] = None if last_targets is None else kept_targets(last_targets,
                                                                         targets.labels)
    row["target_trained"] = float(targets.keep.mean())
    row["cluster_sizes"] = cluster_sizes(new, k)
    sizes = np.bincount(targets.labels, minlength=len(targets.prototypes))
    row["target_sizes_min_max"] = [int(sizes.min()), int(sizes.max())]
    return row


def train(cfg: TrainConfig | None, out: str | Path, resume: bool = False, force: bool = False,
          quiet: bool = False, tensorboard: bool = False) -> list[dict[str, Any]]:
    """Run (or resume) the DeepCluster loop in the run directory `out`; returns the metrics of
    every epoch. Every input is validated before anything is written (rundir.py).
    `cfg` None resumes the run with the settings it was started with (as `deepstdp train
    --resume` does without options); a `cfg` given to a resume may differ from the saved one
    only in RESUMABLE_CHANGES. `tensorboard`: also log each epoch's metrics and pictures to
    OUT/tensorboard.

    Under torchrun each process calls this alike; they share the work (distributed.py) and
    rank 0 alone writes.
    """
    run = RunDir(out)
    if cfg is None:
        if not resume:
            raise DeepSTDPError("a new run needs its settings: only a resume takes the saved ones")
        run.check_start(resume, force)
        cfg = run.saved_config()
    check_settings(cfg)
    with joined(devices.resolve(cfg.device)) as world, threads.pinned(cfg.threads):
        if cfg.batch_size % world.size:
            raise SettingError("batch_size", f"= {cfg.batch_size} must be divisible by the "
                               f"{world.size} processes")
        world.on_main(lambda: _check_start(run, resume, force, tensorboard))
        ck = run.load_checkpoint() if resume else None
        if ck is not None:
            run.check_same(cfg, ck.epoch)
        data = Data(**cfg.data_options(), progress=not quiet and world.main)
        if not (cfg.k or data.train.n_classes):
            raise SettingError("k", "must be given: the images have no classes to count")
        k = cfg.k or data.train.n_classes
        k_train = k_train_of(cfg, k)
        for name, value in (("k", k), ("k_train", k_train), ("batch_size", cfg.batch_size)):
            if value > len(data.train.labels):
                raise SettingError(name, f"= {value} exceeds the {len(data.train.labels)} "
                                   "training images")
        torch.manual_seed(cfg.seed)
        model = ConvNet.from_config(cfg, data.x_train.shape[1], k_train)
        # channels_last: oneDNN's fast path for convolution and pooling, in fp32 as in bf16.
        model = model.to(world.device, memory_format=torch.channels_last)
        if world.main:
            with run.writing(cfg, resume):
                log = TensorBoardLog(run.path, 0 if ck is None else ck.epoch + 1) \
                    if tensorboard else None
                try:
                    return _train(cfg, run, data, model, k, k_train, ck, log, not quiet, world)
                finally:
                    if log is not None:
                        log.close()
        return _train(cfg, run, data, model, k, k_train, ck, None, False, world)


def _check_start(run: RunDir, resume: bool, force: bool, tensorboard: bool) -> None:
    run.check_start(resume, force)
    if tensorboard:
        check_tensorboard()


@dataclass
class LoopState:
    """What each epoch hands the next: fresh at the start, or restored from a checkpoint."""

    compute: Compute
    start: int = 0
    clusterings: Clusterings | None = None
    pca: PCAWhitening | None = None
    labels: np.ndarray | None = None
    targets: Targets | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


def _restored(run: RunDir, ck: Checkpoint, model: ConvNet, optimizer: torch.optim.Optimizer,
              world: World) -> LoopState:
    """The loop's state after the checkpoint's epoch; the model and optimiser in place."""
    model.load_body(ck.model)
    optimizer.load_state_dict(ck.optimizer)
    clusterings = Clusterings(*clusterers_from_checkpoint(ck))
    rows = run.checkpoint_rows(ck)
    if world.main:
        run.write_metrics(rows)  # a crash may have left metrics.jsonl an epoch behind
    return LoopState(
        compute=devices.resumed(ck.precision, world.device),  # as the run started
        start=ck.epoch + 1, clusterings=clusterings,
        pca=PCAWhitening.from_state_dict(ck.pca), labels=np.asarray(ck.labels),
        targets=Targets(np.asarray(ck.targets), torch.as_tensor(ck.prototypes),
                        np.asarray(ck.target_keep)),
        rows=rows)


def _train(cfg: TrainConfig, run: RunDir, data: Data, model: ConvNet, k: int, k_train: int,
           ck: Checkpoint | None, log: TensorBoardLog | None, progress: bool,
           world: World) -> list[dict[str, Any]]:
    body = [p for n, p in model.named_parameters() if not n.startswith("top.")]
    optimizer = torch.optim.SGD(body, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    aug = Augmentation(data.mean, data.std, cfg.crop_scale, cfg.jitter, cfg.grayscale)
    if ck is not None:
        state = _restored(run, ck, model, optimizer, world)
        if progress:
            print(f"resuming {run.path} after epoch {ck.epoch}")
    else:
        if progress and cfg.precision == "auto":
            print("choosing the precision: a few timed training steps", flush=True)
        state = LoopState(world.on_main(lambda: devices.choose(
            cfg.precision, world.device, model, data.x_train[:cfg.batch_size * cfg.views])))
    compute, rows = state.compute, state.rows
    if progress:
        print(f"precision {compute.precision} on {world.device}", flush=True)

    for epoch in range(state.start, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss = None
        if epoch > 0:
            loss = train_epoch(model, optimizer, data.x_train, state.targets, cfg, epoch,
                               compute, aug, progress, world)
        t1 = time.perf_counter()
        feats = _features(model, data.x_train, compute, world, progress)
        f_val = _features(model, data.x_val, compute, world, False)
        t2 = time.perf_counter()
        row = None
        if world.main:
            row = {"epoch": epoch, "loss": loss, "precision": compute.precision,
                   "bf16": compute.precision == "bf16"}
            # The machine's other processes wait for the targets: their cores cluster too.
            with threads.pinned(min(threads.resolve(cfg.threads) * threads.local_processes(),
                                    threads.available())):
                row.update(_cluster_and_measure(cfg, data, model, k, k_train, epoch, state,
                                                feats, f_val, progress))
            row.update(time_train=t1 - t0, time_features=t2 - t1,
                       peak_memory_gib=peak_memory_gib())
            _save(cfg, run, data, model, optimizer, k, epoch, state, row, log)
            if progress:
                print(format_row(row), flush=True)
        state.targets, row = world.broadcast((state.targets, row))
        if not world.main:
            rows.append(row)
    return rows


def _features(model: ConvNet, x: ImageTensor, compute: Compute, world: World,
              progress: bool) -> np.ndarray | None:
    """Features of all images on rank 0 (each process computes its shard); None elsewhere."""
    shard = world.shard(len(x))
    return world.gather_rows(extract_features(model, x.take(shard), compute, progress=progress),
                             len(x))


def _cluster_and_measure(cfg: TrainConfig, data: Data, model: ConvNet, k: int, k_train: int,
                         epoch: int, state: LoopState, feats: np.ndarray,
                         f_val: np.ndarray, progress: bool) -> dict[str, Any]:
    """Rank 0's part of an epoch: cluster, make the next targets, measure; updates `state`."""
    t2 = time.perf_counter()
    emb = embed(model, feats)
    state.pca, state.clusterings = fit_clusterings(cfg, emb, state.clusterings, state.pca, k,
                                                   k_train, epoch, progress)
    clusterer = state.clusterings.evaluated
    new = clusterer.labels_
    last_targets = None if state.targets is None else state.targets.labels
    margins = None
    if cfg.target_keep < 1:
        margins = state.clusterings.targets.margin(state.pca.transform(emb))
    state.targets = make_targets(cfg, emb, state.clusterings.targets.labels_, k_train, margins)
    t3 = time.perf_counter()
    z_val = state.pca.transform(embed(model, f_val))
    val_pred = clusterer.predict(z_val)
    target_layer = state.clusterings.targets
    target_clusters = TargetClusters(
        target_layer.labels_, val_pred if target_layer is clusterer else
        target_layer.predict(z_val), k_train)
    row = epoch_metrics(cfg, data, epoch, k, new, state.labels, val_pred, state.targets, feats,
                        f_val, last_targets, target_clusters)
    row.update(getattr(clusterer, "diagnostics", dict)())
    if target_layer is not clusterer:
        row.update({f"targets_{key}": value
                    for key, value in getattr(target_layer, "diagnostics", dict)().items()})
    state.labels = new
    t4 = time.perf_counter()
    row.update(time_cluster=t3 - t2, time_eval=t4 - t3)
    return row


def _save(cfg: TrainConfig, run: RunDir, data: Data, model: ConvNet,
          optimizer: torch.optim.Optimizer, k: int, epoch: int, state: LoopState,
          row: dict[str, Any], log: TensorBoardLog | None) -> None:
    """Checkpoint the epoch (CPU tensors: it loads on any device) and draw its pictures."""
    from deepstdp.measures.report import plot_curves

    state.rows.append(row)
    run.save_epoch(Checkpoint(
        epoch=epoch, config=cfg, k=k, model={n: v.cpu() for n, v in model.body_state().items()},
        optimizer=_cpu(optimizer.state_dict()), labels=torch.from_numpy(state.labels),
        targets=torch.from_numpy(state.targets.labels), prototypes=state.targets.prototypes,
        target_keep=torch.from_numpy(state.targets.keep),
        clusterer=state.clusterings.state_dict(), pca=state.pca.state_dict(),
        input_mean=data.mean, input_std=data.std, precision=row["precision"],
        version=__version__, metrics=state.rows))
    plot_curves(state.rows, run / CURVES, f"{run.path.name}: {cfg.clusterer}, seed {cfg.seed}")
    kind = kind_of(cfg.clusterer)
    if kind.pictures is not None:
        kind.pictures(state.clusterings.evaluated, run.path)
    if log is not None:
        log.write(row, [run / name for name in PICTURES])


def _cpu(state: Any) -> Any:
    """A (nested) state dict with every tensor on the host."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_cpu(v) for v in state)
    return state


def format_row(r: dict[str, Any]) -> str:
    """The epoch's line: its scores ('-' where the images have no labels), cluster sizes and
    seconds."""
    def f(key: str) -> str:
        return "-" if r.get(key) is None else f"{r[key]:.3f}"

    sizes = r["cluster_sizes"]
    secs = sum(r[t] for t in TIMES)
    loss = "" if r["loss"] is None else f"loss {r['loss']:.3f}  "
    return (f"epoch {r['epoch']:3d}  {loss}ACC {f('acc')} NMI {f('nmi')} ARI {f('ari')} | "
            f"val ACC {f('val_acc')} NMI {f('val_nmi')} ARI {f('val_ari')} | majority vote of "
            f"{r['mv_clusters']} {f('mv_acc')} val {f('val_mv_acc')} | k-NN {f('knn_acc')} "
            f"probe {f('probe_acc')} | clusters {min(sizes)}-{max(sizes)} | {secs:.1f}s")
