"""Thread counts: the one place that pins torch, the BLAS/OpenMP pools and numba together.

Results are reproducible for a fixed seed and thread count, not across counts: summation order
in torch's and BLAS's reductions follows the threads, and the loop amplifies such differences
over epochs (digits: ACC 0.887 with one thread, 0.852 with two, same seed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from deepstdp.runtime.util import SettingError


def local_processes() -> int:
    """Processes of this run on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def available() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or `taskset`
    narrows; os.cpu_count() counts the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check(count: int, setting: str = "threads") -> int:
    """`count` threads or processes, refused above the CPUs this process may use: more only
    slow the work down, and thousands starve the machine."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SettingError(setting, f"must be an integer >= 1, got {count!r}")
    if count > available():
        raise SettingError(setting, f"must be at most the {available()} CPUs this process may "
                                    f"use, got {count}")
    return count


def resolve(threads: int | None) -> int:
    """The count a run uses: `threads` (checked), or when None every available CPU, shared
    evenly among the processes that torchrun started on this machine."""
    if threads is None:
        return max(1, available() // local_processes())
    return check(threads)


@contextmanager
def pinned(threads: int | None) -> Iterator[int]:
    """Run the block with torch, BLAS/OpenMP (threadpoolctl) and numba on `threads` threads.

    numba's OpenMP layer shares libgomp with torch: a parallel numba call sets the thread count
    of both to numba's, so numba is pinned to the same count as torch.
    """
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    n = resolve(threads)
    before, before_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(n):
            yield n
    finally:
        numba.set_num_threads(before_numba)
        torch.set_num_threads(before)
