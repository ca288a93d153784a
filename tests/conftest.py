import os
import threading
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session temp dir, never the user's cache."""
    monkeypatch.setenv("DEEPSTDP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "tiny-imagenet-200" / "wnids.txt").exists():
        pytest.skip("../shared/data/tiny-imagenet-200 is not beside the repository")
    return SHARED_DATA


def pytest_configure(config):
    os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def wait_for(condition, guard_s: float = 600.0, what: str = "the condition", every_s=0.05):
    """Poll `condition()` until it returns a true value, and return that value.

    A test waits on what a process has done (a file it wrote, its exit), never on a guessed
    duration; `guard_s` only stops a hung test (it fails, naming `what`), and a faster or
    slower machine changes nothing but how many polls it takes."""
    pause = threading.Event()  # never set: its wait is the pause between polls
    deadline = time.monotonic() + guard_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within the {guard_s:.0f} s guard")
        pause.wait(every_s)
    return value


# Imported at start-up (as sitecustomize, through PYTHONPATH) by the processes of the fault
# tests: KILL_AT makes a process SIGKILL itself at a moment of the run's progress, never of the
# clock, so that every try kills on any machine. With KILL_RANK only that torchrun rank does;
# KILL_NOTE names a file that gets the time of the kill.
#   step:E:F            before optimisation step floor(F * steps) of epoch E (0 <= F < 1)
#   checkpoint-mid:N    halfway through writing its N-th checkpoint (half a temp file left)
#   checkpoint-after:N  once its N-th checkpoint is in place, before metrics.jsonl follows
#   hold:E              not a kill: at the start of epoch E's training, write HOLD_DIR/<pid>
#                       and wait for a signal (the test then stops the process itself)
FAULTS = '''
import os, signal, time
_spec, _rank = os.environ.get("KILL_AT"), os.environ.get("RANK", "0")
if _spec and os.environ.get("KILL_RANK", _rank) == _rank:
    _when, *_arg = _spec.split(":")

    def _die():
        if os.environ.get("KILL_NOTE"):
            with open(os.environ["KILL_NOTE"], "w") as f:
                f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)

    if _when in ("step", "hold"):
        import deepstdp.loop.training as _training
        _real_epoch = _training.train_epoch

        def _train_epoch(model, optimizer, x, targets, cfg, epoch, *rest, **kw):
            if _when == "hold" and epoch == int(_arg[0]):
                open(os.path.join(os.environ["HOLD_DIR"], str(os.getpid())), "w").close()
                while True:
                    signal.pause()
            if _when == "step" and epoch == int(_arg[0]):
                at, done, real_step = int(float(_arg[1]) * (len(x) // cfg.batch_size)), [0], \\
                    optimizer.step

                def step(*a, **k):
                    if done[0] == at:
                        _die()
                    done[0] += 1
                    return real_step(*a, **k)
                optimizer.step = step
            return _real_epoch(model, optimizer, x, targets, cfg, epoch, *rest, **kw)
        _training.train_epoch = _train_epoch
    else:
        import deepstdp.run.rundir as _rundir
        _real_write, _count = _rundir.atomic_write, [0]

        def _atomic_write(path, write):
            if path.name == "checkpoint.pt":
                _count[0] += 1
                if _count[0] == int(_arg[0]) and _when == "checkpoint-after":
                    _real_write(path, write)
                    _die()
                if _count[0] == int(_arg[0]) and _when == "checkpoint-mid":
                    def half(tmp):
                        write(tmp)
                        os.truncate(tmp, os.path.getsize(tmp) // 2)
                        _die()
                    return _real_write(path, half)
            return _real_write(path, write)
        _rundir.atomic_write = _atomic_write
'''


def fault_site(folder: Path, extra: str = "") -> dict[str, str]:
    """Environment that makes Python processes import FAULTS (then `extra`) at start-up."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(FAULTS + extra)
    return {**os.environ, "PYTHONPATH": str(folder)}
