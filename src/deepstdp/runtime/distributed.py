"""Data-parallel runs under torchrun: one process per GPU, or several CPU processes with gloo.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in each process's
environment; a plain start has none of them and is the one process of a world of one, with no
process group and no collective calls. In a world of several, each epoch every process extracts
the features of its own shard of the images, rank 0 gathers them, clusters, computes the
metrics and hands the targets to all; each training step every process takes its share of the
global batch and DistributedDataParallel all-reduces the gradients. Rank 0 alone writes the run
directory.

Every process ends alike (`joined`): on success, on an error and on an interrupt it meets the
others at a barrier of its own small group (bounded by END_TIMEOUT, so that a dead peer cannot
hold it), then destroys the process group, whose C++ threads (gloo's) are joined there, while
the interpreter is alive; from the barrier on, cli's SIGTERM/SIGINT handler lets the process
finish with the outcome it has (`ending`).
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deepstdp.runtime.util import DeepSTDPError, SettingError

T = TypeVar("T")
TIMEOUT = timedelta(hours=2)
"""How long a process waits for the others at a collective call: rank 0's clustering of a
large set (the others wait for its targets) must fit in it."""
END_TIMEOUT = timedelta(seconds=60)
"""How long a process waits for the others at the end of the run: they arrive within moments
of each other after a good run or a bad input; a peer that died lets it go at once (closed
connections), one stuck elsewhere after this."""
_ending = False


class PeerFailed(DeepSTDPError):
    """Another process of the run stopped; this one cannot go on, and the run resumes from its
    last checkpoint (the command line says how)."""


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous block of n items (the last blocks may be shorter)."""
        per = -(-n // self.size)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray | None:
        """Every process's `local` rows (its `shard(n)`), stacked in rank order, on rank 0;
        None on the others."""
        if self.size == 1:
            return local
        per = -(-n // self.size)
        padded = np.zeros((per, *local.shape[1:]), dtype=local.dtype)
        padded[:len(local)] = local
        buf = torch.from_numpy(padded).to(self._comm_device)
        parts = [torch.empty_like(buf) for _ in range(self.size)] if self.main else None
        dist.gather(buf, parts, dst=0)
        if not self.main:
            return None
        return torch.cat(parts).cpu().numpy()[:n]

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() run by rank 0 alone; its result, or its DeepSTDPError, reaches every process."""
        if self.size == 1:
            return fn()
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except DeepSTDPError as e:
                error = (getattr(e, "setting", None), getattr(e, "problem", str(e)))
        result, error = self.broadcast((result, error))
        if error is not None:
            setting, problem = error
            raise SettingError(setting, problem) if setting else DeepSTDPError(problem)
        return result

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every process (pickled)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

    def total(self, *values: float) -> list[float]:
        """Each value summed over the processes."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def parallel(self, model: nn.Module) -> nn.Module:
        """`model` whose backward pass all-reduces (averages) gradients over the processes."""
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


ALONE = World()
"""A plain start: the one process of a world of one."""


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the run's process count, as torchrun set them (0, 1 for a
    plain start)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def joined(device: torch.device) -> Iterator[World]:
    """This process's World, joined to torchrun's process group for the block (NCCL for CUDA,
    gloo otherwise); on CUDA each process takes GPU LOCAL_RANK."""
    rank, size = rank_and_size()
    if size == 1:
        yield World(device=device)
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise SettingError("device", f"{device.type} cannot run several processes; use cuda "
                           "or cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    global _ending
    _ending = False
    # DDP imports torch.distributed.nn.functional, whose functions take `group=group.WORLD` as
    # a default argument: imported while a group exists, they hold it for good, and
    # destroy_process_group then leaves gloo's threads running into the interpreter's
    # finalization, where one that still releases a tensor aborts the process ("terminate
    # called without an active exception"). Imported first, the defaults are None.
    importlib.import_module("torch.distributed.nn.functional")
    dist.init_process_group(backend, timeout=TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    end = dist.new_group(backend="gloo", timeout=END_TIMEOUT)  # its own tags and sockets
    try:
        yield World(rank, size, device)
    except RuntimeError as e:
        if not _lost_peer(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # gloo's: "[.../pair.cc:537] Read error [HOST]:PORT: Connection reset by peer. This is
        # typically caused by ..."; the what, without the source place and the advice.
        first = re.sub(r"^\[[^\]]*\.(cc|cpp|h)(:\d+)?\]\s*", "", first).split(". ")[0]
        raise PeerFailed(f"another process of this distributed run failed ({first}); its "
                         "last checkpoint is intact") from None
    finally:
        _ending = True
        try:
            dist.barrier(group=end)
        except (RuntimeError, ValueError):  # a peer gone or stuck: nothing left to wait for
            pass
        finally:
            del end
            _release_frames()
            dist.destroy_process_group()


def ending() -> bool:
    """Whether this process has begun the end of its distributed run (cli then ignores
    SIGTERM and SIGINT: the outcome is decided, and the shutdown is bounded)."""
    return _ending


def _release_frames() -> None:
    """Drop what the exception in flight, if any, keeps alive (the epoch's DDP wrapper holds
    the process group), so that destroy_process_group frees the group and joins its threads."""
    import sys

    seen, exc = set(), sys.exc_info()[1]
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()


def _lost_peer(e: RuntimeError) -> bool:
    """Whether a collective call failed because another process went away: torch's DistError,
    or the plain RuntimeError that gloo and NCCL raise inside DDP and autograd."""
    return isinstance(e, dist.DistError) or any(
        s in str(e) for s in ("gloo", "NCCL", "Connection closed by peer", "Connection reset"))
