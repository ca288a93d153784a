"""A run directory: the one module that knows its layout, writes it and reads it back. Other
modules take its file names and its `Checkpoint` from here, and resume by its rule
(`RESUMABLE_CHANGES`, `check_resume_or_force`); `deepstdp.run.loaded` builds a usable model,
PCA and clusterer from a checkpoint.

RUN/
  config.json     the resolved settings and the package version
  checkpoint.pt   the last complete epoch (`Checkpoint`): weights, optimiser, clusterers, PCA,
                  targets and every metrics row so far; tensors and plain types only, so a
                  plain `torch.load(path)` (weights_only) opens it
  metrics.jsonl   the same rows, one JSON object per epoch, for people and plots
  curves.png, stdp_*.png             pictures of that epoch
  spiking.pt, spiking.json/.md/.png  written by convert and evaluate
  tensorboard/    event files, with the tensorboard option
  .lock           held (flock) while a process trains here

Crash safety: the checkpoint is the truth. It is replaced atomically, and metrics.jsonl is then
rewritten from the rows inside it; a crash in between leaves metrics.jsonl one epoch behind,
and resuming rewrites it from the checkpoint and removes stale temp files. Nothing is written
before every input has been validated, and a start that fails before its first checkpoint
leaves the directory as it found it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepstdp.clustering.choices import STDP_ACTIVITY, STDP_WEIGHTS
from deepstdp.config import TrainConfig
from deepstdp.runtime.util import DeepSTDPError, atomic_write, remove_stale_tmp, write_json_atomic

if TYPE_CHECKING:
    import torch

CONFIG, CHECKPOINT, METRICS, LOCK = "config.json", "checkpoint.pt", "metrics.jsonl", ".lock"
TENSORBOARD = "tensorboard"
CURVES = "curves.png"
PICTURES = (CURVES, STDP_WEIGHTS, STDP_ACTIVITY)
"""Drawn after every epoch (the spiking layer's two only for the spiking clusterer)."""
SPIKING_NET, SPIKING_ROWS = "spiking.pt", "spiking.json"
SPIKING_TABLE, SPIKING_PLOT = "spiking.md", "spiking.png"
"""The converted network (convert), and the spiking evaluation's rows, table and picture."""
REPORT_HTML = "report.html"
"""`deepstdp report`'s page, in the run's or the comparison's folder."""
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, *PICTURES, SPIKING_NET, SPIKING_ROWS, SPIKING_TABLE,
             SPIKING_PLOT, REPORT_HTML)
COMPARISON, CLUSTERING = "compare.json", "cluster.json"
"""What marks a comparison's folder (`deepstdp compare`) and a clustering's (`deepstdp
cluster`), as config.json and checkpoint.pt mark a run's."""
RUNS, SUMMARY, REPORT = "runs", "summary.json", "report.md"
CLUSTERS, CONFUSION = "clusters.png", "confusion.png"
"""A comparison's folder: its runs' folder, summary, report and pictures (with CURVES)."""
EVALUATED, TARGETS = "evaluated", "targets"
"""The checkpoint's two clusterer states (its `clusterer` entry): k clusters, and k_train."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: the files that mark it, and the one whose presence means the
    folder holds work (finished, or to resume where the kind resumes)."""

    markers: tuple[str, ...]
    holds: str
    resumable: bool


KINDS = {"run": OutputKind((CONFIG, CHECKPOINT), CHECKPOINT, True),
         "comparison": OutputKind((COMPARISON,), COMPARISON, True),
         "clustering": OutputKind((CLUSTERING,), CLUSTERING, False)}
"""The kinds of output folder: a command that writes one kind refuses a folder of another
(`check_kind`), so no command overwrites another's files, and every kind starts by one rule
(`check_start`)."""
RESUMABLE_CHANGES = ("epochs", "threads", "device")
"""Settings that may differ when a run (or a comparison of runs) is resumed: the length, and
where it computes: thread count and device (the continuation is reproducible only for the same
ones)."""


@dataclass
class Checkpoint:
    """checkpoint.pt: the state after a complete epoch, everything a resumed run and a loaded
    one need. `to_dict` is what the file holds (the keys of 0.2-0.5 files, tensors and plain
    types only, so `torch.load(path)` opens it weights-only, without deepstdp); `from_dict`
    reads files of any of those versions."""

    epoch: int
    config: TrainConfig
    k: int
    """Clusters evaluated."""
    model: dict[str, torch.Tensor]
    """The network's weights, all but its top layer (rebuilt from each epoch's clusters)."""
    optimizer: dict[str, Any]
    labels: torch.Tensor
    """The evaluated clustering's label per training image."""
    targets: torch.Tensor
    """The next epoch's training targets (k_train clusters)."""
    prototypes: torch.Tensor
    """Their unit-norm centroids in embedding space (the centroid head's weights)."""
    target_keep: torch.Tensor
    """Which images train in the next epoch (TrainConfig.target_keep)."""
    clusterer: dict[str, dict[str, Any]]
    """The state dicts of the 'evaluated' and the 'targets' clusterer."""
    pca: dict[str, Any]
    input_mean: torch.Tensor
    input_std: torch.Tensor
    """Per-channel statistics that normalise the images."""
    precision: str
    """What the run computes in; a resumed run keeps it."""
    version: str | None
    metrics: list[dict[str, Any]] | None
    """Every metrics row so far (since 0.3; None before)."""

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # `bf16` is the precision as 0.3 and older readers know it.
        return {**d, "config": self.config.to_dict(), "bf16": self.precision == "bf16"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        """A checkpoint file's contents; those of 0.2-0.4 lack what later versions added."""
        import torch

        names = [f.name for f in dataclasses.fields(cls)]
        missing = sorted(set(names) - {"target_keep", "precision", "metrics", "version"} - set(d))
        if missing:
            raise DeepSTDPError(f"not a deepstdp checkpoint: no {', '.join(missing)}")
        return cls(**{**{k: d[k] for k in names if k in d},
                      "config": TrainConfig.from_saved(d["config"]),
                      "precision": d.get("precision", "bf16" if d.get("bf16") else "fp32"),
                      "target_keep": d.get("target_keep",  # before 0.5 every image trained
                                           torch.ones(len(d["targets"]), dtype=torch.bool)),
                      "version": d.get("version"), "metrics": d.get("metrics")})


def check_resume_or_force(resume: bool, force: bool) -> None:
    """Resuming continues what a directory holds in place; forcing replaces it: never both."""
    if resume and force:
        raise DeepSTDPError("resume and force exclude each other: resume continues the run "
                            "in place, force replaces it")


def changed_settings(saved: TrainConfig, now: TrainConfig) -> list[str]:
    """The settings that keep `now` from resuming a run started with `saved`."""
    old, new = saved.to_dict(), now.to_dict()
    return [k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]]


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON types only (numpy scalars would make the checkpoint need pickle)."""
    return json.loads(json.dumps(rows))


class RunDir:
    """One run directory (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def holds_run(self) -> bool:
        return (self / CHECKPOINT).exists()

    # ------------------------------------------------------------------ before writing

    def check_start(self, resume: bool, force: bool) -> None:
        """Refuse a start that could not proceed, touching nothing (`check_start`)."""
        check_start(self.path, "run", resume, force)

    def finished(self, epochs: int) -> bool:
        """Whether the run has trained `epochs` epochs: its checkpoint says, not metrics.jsonl
        (which a crash may leave an epoch behind)."""
        return self.holds_run() and self.load_checkpoint().epoch >= epochs

    def saved_config(self) -> TrainConfig:
        """The settings the run was started with (its checkpoint's, else config.json)."""
        if self.holds_run():
            return self.load_checkpoint().config
        return TrainConfig.from_file(self / CONFIG, saved=True)

    def check_same(self, cfg: TrainConfig, done_epochs: int) -> None:
        diff = changed_settings(self.saved_config(), cfg)
        if diff:
            raise DeepSTDPError(f"cannot resume {self.path}: settings differ from the saved run "
                                f"({', '.join(diff)})")
        if cfg.epochs < done_epochs:
            raise DeepSTDPError(f"cannot resume {self.path} to {cfg.epochs} epochs: it has "
                                f"done {done_epochs}")

    # ------------------------------------------------------------------ writing

    @contextmanager
    def writing(self, cfg: TrainConfig, resume: bool) -> Iterator[RunDir]:
        """Hold the directory for one process; a fresh start replaces the old run's files
        (the caller has validated everything and checked `check_start`), a failed one before
        its first checkpoint removes what it made."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = open(self / LOCK, "w")  # noqa: SIM115 - held for the whole block
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DeepSTDPError(f"another process is writing to {self.path}") from None
        remove_stale_tmp(self.path)
        if not resume:
            for name in RUN_FILES:
                (self / name).unlink(missing_ok=True)
            shutil.rmtree(self / TENSORBOARD, ignore_errors=True)
        from deepstdp import __version__

        write_json_atomic(self / CONFIG, {**cfg.to_dict(), "version": __version__})
        try:
            yield self
        except BaseException:
            if not resume and not self.holds_run():
                (self / CONFIG).unlink(missing_ok=True)
                remove_stale_tmp(self.path)
            raise
        finally:
            (self / LOCK).unlink(missing_ok=True)
            lock.close()
            if created and not any(self.path.iterdir()):
                self.path.rmdir()

    def save_epoch(self, ck: Checkpoint) -> None:
        """The checkpoint (with every row so far inside it), then metrics.jsonl from it."""
        import torch

        rows = _plain(ck.metrics or [])
        state = {**ck.to_dict(), "metrics": rows}
        atomic_write(self / CHECKPOINT, lambda p: torch.save(state, p))
        self.write_metrics(rows)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        from deepstdp.runtime.util import write_text_atomic

        write_text_atomic(self / METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    # ------------------------------------------------------------------ reading

    def metrics(self) -> list[dict[str, Any]]:
        path = self / METRICS
        if not path.exists():
            return []
        try:
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DeepSTDPError(f"{path} is not valid JSON lines ({e}); resuming the run "
                                "rewrites it from its checkpoint") from None
        if not all(isinstance(r, dict) and "epoch" in r for r in rows):
            raise DeepSTDPError(f"{path} holds rows without an epoch; resuming the run "
                                "rewrites it from its checkpoint")
        return rows

    def load_checkpoint(self) -> Checkpoint:
        """checkpoint.pt on the CPU, read without unpickling code (weights_only)."""
        return load_checkpoint_file(self / CHECKPOINT)

    def checkpoint_rows(self, ck: Checkpoint) -> list[dict[str, Any]]:
        """The metrics rows up to the checkpoint's epoch: carried inside it since 0.3, read
        from metrics.jsonl (trimmed) for older runs."""
        if ck.metrics is not None:
            return list(ck.metrics)
        return [r for r in self.metrics() if r["epoch"] <= ck.epoch]

    def checkpoint_digest(self) -> str:
        return hashlib.sha256(self._existing(CHECKPOINT).read_bytes()).hexdigest()

    def _existing(self, name: str) -> Path:
        path = self / name
        if not path.exists():
            raise DeepSTDPError(f"no trained run in {self.path}: {path} not found")
        return path


def check_start(path: Path, kind: str, resume: bool, force: bool) -> None:
    """The start rule of every output folder (KINDS), checked before anything is written:
    resume and force exclude each other; the folder can be made and holds no other kind; a
    resume needs work to resume; a folder that holds work is continued (resume) or replaced
    (force), never overwritten by a plain start."""
    check_resume_or_force(resume, force)
    check_writable(path)
    check_kind(path, kind)
    spec = KINDS[kind]
    held = (path / spec.holds).exists()
    if resume and not spec.resumable:
        raise DeepSTDPError(f"a {kind} does not resume: start it again")
    if resume and not held:
        raise DeepSTDPError(f"nothing to resume: {path / spec.holds} not found")
    if held and not (resume or force):
        how = "resume it or replace it (force)" if spec.resumable else "replace it (force)"
        raise DeepSTDPError(f"{path} already holds a {kind}; {how}")


def check_kind(path: Path, kind: str) -> None:
    """Refuse to write a `kind` folder (KINDS) where a folder of another kind is."""
    for other, spec in KINDS.items():
        if other != kind and any((path / m).exists() for m in spec.markers):
            raise DeepSTDPError(f"{path} holds a {other}, not a {kind}: choose another folder")


def check_output_file(name: str, force: bool) -> None:
    """A single file a command writes (a NIR export): named, not a folder, never a file of a
    run, comparison or clustering folder, and not an existing file unless `force`."""
    if not name.strip():
        raise DeepSTDPError("the output file needs a name")
    path = Path(name)
    if path.is_dir():
        raise DeepSTDPError(f"{path} is a directory; name the file to write")
    parent = path.parent
    if any((parent / m).exists() for spec in KINDS.values() for m in spec.markers) and \
            path.name in (*RUN_FILES, LOCK, COMPARISON, CLUSTERING):
        raise DeepSTDPError(f"{path} is one of the files of {parent}; name another file")
    if path.exists() and not force:
        raise DeepSTDPError(f"{path} exists; replace it (force) or name another file")
    check_writable(parent)


def check_writable(path: Path) -> None:
    """A run directory can be made at `path`: not a file, and its first existing ancestor is
    a writable directory."""
    if path.exists() and not path.is_dir():
        raise DeepSTDPError(f"output {path} is a file, not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DeepSTDPError(f"cannot create {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DeepSTDPError(f"cannot write to {probe}: permission denied")


def _legacy_numpy_globals() -> list[Any]:
    """What deepstdp <= 0.2 checkpoints pickled besides tensors: numpy arrays (data only)."""
    import numpy as np

    return [np.ndarray, np.dtype, np._core.multiarray._reconstruct,
            *(getattr(np.dtypes, n) for n in ("Int64DType", "Int32DType", "Float32DType",
                                              "Float64DType", "UInt64DType", "BoolDType"))]


def load_torch_file(path: Path, what: str, keys: set[str], remedy: str) -> dict[str, Any]:
    """The dict a deepstdp torch file holds, read on the CPU without unpickling code; one
    clear error naming the file and `remedy` when it is truncated, corrupt or foreign (lacks
    `keys`). Every torch file the package reads back (checkpoint.pt, spiking.pt) comes here."""
    import torch

    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeepSTDPError(f"{path} is corrupt, truncated or not a deepstdp {what} "
                            f"({reason[:120]}); {remedy}") from None
    if not isinstance(state, dict) or not keys <= set(state):
        raise DeepSTDPError(f"{path} is not a deepstdp {what}; {remedy}")
    return state


def load_checkpoint_file(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint on the CPU; a clear error when it is missing, truncated or not ours."""
    path = Path(path)
    if not path.exists():
        raise DeepSTDPError(f"no trained run in {path.parent}: {path} not found")
    ck = load_torch_file(path, "checkpoint", {"epoch", "model", "config", "k"},
                         "train the run again (a run's checkpoint is its only copy)")
    try:
        return Checkpoint.from_dict(ck)
    except DeepSTDPError as e:
        raise DeepSTDPError(f"{path}: {e}") from None


def load_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    return RunDir(run_dir).load_checkpoint()


def checkpoint_digest(run_dir: str | os.PathLike) -> str:
    """Identifies the checkpoint a converted network was made from."""
    return RunDir(run_dir).checkpoint_digest()
