"""Clusters of new images by a trained run (`deepstdp predict`): each image read as the run's
network reads its own (its centred square, resized to the run's image_size, normalised by the
run's training statistics), embedded, whitened, and assigned by the run's clusterers.

Each image is converted on its own and the network runs in eval mode, so an image's cluster
does not depend on the other images of its batch (tests/test_predict.py checks it)."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deepstdp.data.datasets import image_files, normalize, read_image, to_float_tensor
from deepstdp.run.loaded import LoadedRun, load_run
from deepstdp.run.rundir import check_output_file
from deepstdp.runtime import threads
from deepstdp.runtime.util import DeepSTDPError, SettingError, write_text_atomic

MAX_BATCH = 4096
"""The most images converted and embedded at once (their float copies are held together)."""
COLUMNS = ("path", "cluster", "target_cluster", "margin")
"""predict's CSV: the image, its cluster at the run's k, its cluster among the k_train target
clusters (the STDP arm's target neurons), and the evaluated clusterer's margin (empty for a
clusterer without one)."""


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise SettingError("batch", f"must be in [1, {MAX_BATCH}] images, got {batch!r}")


def predict_images(run: LoadedRun, paths: list[Path], batch: int = 256,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Cluster, target cluster and margin (NaN where the clusterer has none) of each image."""
    _check_batch(batch)
    if not paths:
        raise DeepSTDPError("no images to assign")
    channels = len(run.checkpoint.input_mean)
    size = run.config.image_size
    run = dataclasses.replace(run, model=run.model.for_inference())  # folded once, not per batch
    out: dict[str, list[np.ndarray]] = {"cluster": [], "target_cluster": [], "margin": []}
    for i in tqdm(range(0, len(paths), batch), desc="predict", unit="batch", leave=False,
                  disable=not progress):
        x = torch.cat([to_float_tensor(read_image(p, channels)[None], size)
                       for p in paths[i:i + batch]])
        z = run.embeddings(normalize(x, run.checkpoint.input_mean, run.checkpoint.input_std))
        margin = run.margin(z)
        out["cluster"].append(run.clusterer.predict(z))
        out["target_cluster"].append(run.targets.predict(z))
        out["margin"].append(np.full(len(z), np.nan) if margin is None else margin)
    return {k: np.concatenate(v) for k, v in out.items()}


def predict_to_csv(run_dir: str | os.PathLike, inputs: list[str | os.PathLike],
                   out: str | os.PathLike, batch: int = 256, threads_n: int | None = None,
                   force: bool = False, progress: bool = False) -> int:
    """Write OUT (CSV, COLUMNS) for the image files and folders `inputs`; returns the number of
    images. Everything is checked and every image read before OUT is written, at once."""
    check_output_file(str(out), force)
    _check_batch(batch)  # before any image is read
    if threads_n is not None:
        threads.check(threads_n)
    paths = image_files(list(inputs))
    with threads.pinned(threads_n):
        run = load_run(run_dir)
        result = predict_images(run, paths, batch, progress)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for p, c, t, m in zip(paths, result["cluster"], result["target_cluster"], result["margin"],
                          strict=True):
        writer.writerow([str(p), int(c), int(t), "" if np.isnan(m) else f"{float(m):.6g}"])
    write_text_atomic(out, text.getvalue())
    return len(paths)
