"""Thread counts: the one place that pins torch, the BLAS/OpenMP pools and numba together.

Results are reproducible for a fixed seed and thread count, not across counts: summation order
in torch's and BLAS's reductions follows the threads, and the loop amplifies such differences
over epochs (digits: ACC 0.887 with one thread, 0.852 with two, same seed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from deepstdp.util import SettingError


def local_processes() -> int:
    """Processes of this run on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def resolve(threads: int | None) -> int:
    """The count a run uses: `threads`, or when None every core, shared evenly among the
    processes that torchrun started on this machine."""
    if threads is None:
        return max(1, (os.cpu_count() or 1) // local_processes())
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SettingError("threads", f"must be an integer >= 1, got {threads!r}")
    return threads


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
