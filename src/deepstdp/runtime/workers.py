"""Worker processes that end with their parent.

Kept free of heavy imports: a spawned worker runs `init_worker` before it imports torch, so
that a parent killed during those seconds (even by kill -9) still takes its workers with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def init_worker(parent: int) -> None:
    """Leave Ctrl-C to the parent (which stops the workers) and die with the parent: by the
    kernel's parent-death signal on Linux, else by watching the parent id."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
