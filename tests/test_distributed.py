"""Data-parallel training through torchrun with gloo on the CPU (distributed.py)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fault_site

from deepstdp.config import TrainConfig
from deepstdp.loop.training import MACHINE, train
from deepstdp.run.loaded import load_run
from deepstdp.runtime.distributed import ALONE, World

DEEPSTDP = str(Path(sys.executable).parent / "deepstdp")
ARGS = ["--epochs", "2", "--threads", "1", "--precision", "fp32", "--quiet"]
SMALL = ["--threads", "1", "--precision", "fp32", "--quiet", "--k-train", "20",
         "--widths", "16,M", "--feat-dim", "32", "--pca-dim", "16", "--image-size", "12"]

# Imported by every process of a torchrun below (PYTHONPATH): any process but rank 0 that
# writes, renames, removes or creates anything in the run directory stops with an error.
WATCH = '''
import os, sys
RUN = os.environ.get("WATCHED_RUN")
if RUN and os.environ.get("RANK", "0") != "0":
    WRITES = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            writing = any(c in str(args[1] or "") for c in "wax+")
            if writing and os.path.abspath(args[0]).startswith(RUN):
                raise RuntimeError(f"rank {os.environ['RANK']} opened {args[0]} to write")
        if event in WRITES and any(os.path.abspath(str(a)).startswith(RUN) for a in args[:2]
                                   if isinstance(a, (str, os.PathLike))):
            raise RuntimeError(f"rank {os.environ['RANK']}: {event} {args}")
    sys.addaudithook(hook)
if os.environ.get("RANK"):
    import atexit
    def gloo_threads():  # a process group still alive: its threads would meet finalization
        names = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                pass
        left = [n for n in names if "gloo" in n]
        if left:
            sys.stderr.write(f"gloo threads alive at exit (rank {os.environ['RANK']}): {left}\\n")
    atexit.register(gloo_threads)
'''


def torchrun(tmp_path: Path, out: Path, *args: str, env: dict | None = None,
             nproc: int = 2) -> subprocess.CompletedProcess:
    """`deepstdp train --out OUT ARGS` under torchrun; each process imports WATCH and
    conftest.FAULTS (inert without KILL_AT in `env`)."""
    env = {**fault_site(tmp_path / "site", WATCH), "WATCHED_RUN": str(out), **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", DEEPSTDP, "train", "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def said(res: subprocess.CompletedProcess) -> list[str]:
    """deepstdp's own lines on stderr, after checking that no process aborted or left a
    process group running into the interpreter's finalization."""
    assert "gloo threads alive at exit" not in res.stderr, res.stderr[-3000:]
    assert "terminate called" not in res.stderr, res.stderr[-3000:]
    return [line for line in res.stderr.splitlines() if line.startswith("deepstdp: ")]


def exit_codes(res: subprocess.CompletedProcess) -> list[str]:
    """The exit codes in torchrun's failure report (torchrun itself exits 1 whenever a
    process fails)."""
    return re.findall(r"exitcode\s*:\s*(-?\d+)", res.stderr)


def without_times(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MACHINE} for r in rows(out)]


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path):
    one = train(TrainConfig(epochs=2, threads=1, precision="fp32"),
                              tmp_path / "one", quiet=True)
    res = torchrun(tmp_path, tmp_path / "two", *ARGS)
    assert res.returncode == 0 and said(res) == [], res.stderr[-3000:]
    two = rows(tmp_path / "two")
    assert [r["epoch"] for r in two] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".tmp") == []
    # Epoch 0 clusters the untrained network's features: sharded extraction, gathered on rank
    # 0, gives the very same features, so the same clustering and probes.
    for key in ("acc", "nmi", "ari", "val_acc", "knn_acc", "probe_acc", "cluster_sizes"):
        assert two[0][key] == one[0][key], key
    # Later epochs differ as BatchNorm sees each process's half batch and each process draws its
    # own augmentations: the stated tolerance on digits after 1 and 2 epochs.
    for a, b in zip(one[1:], two[1:], strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.02 * a["loss"]
        assert abs(a["knn_acc"] - b["knn_acc"]) < 0.03
        assert abs(a["probe_acc"] - b["probe_acc"]) < 0.03
    run = load_run(tmp_path / "two")  # rank 0's checkpoint loads as a one-process run's
    assert run.checkpoint.epoch == 2


def test_a_process_killed_mid_epoch_ends_the_other_and_resume_continues_as_uninterrupted(
        tmp_path):
    ref = torchrun(tmp_path, tmp_path / "ref", *SMALL, "--epochs", "3")
    assert ref.returncode == 0 and said(ref) == [], ref.stderr[-3000:]
    out, note = tmp_path / "run", tmp_path / "killed-at"
    # Rank 1 is SIGKILLed (as an out-of-memory kill would) before a random step of epoch 2's
    # training: a moment of the run's progress (conftest.FAULTS), not of the clock.
    fraction = random.Random(2).random()
    res = torchrun(tmp_path, out, *SMALL, "--epochs", "3",
                   env={"KILL_AT": f"step:2:{fraction:.3f}", "KILL_RANK": "1",
                        "KILL_NOTE": str(note)})
    ended = time.time()
    assert res.returncode != 0 and note.exists(), res.stderr[-3000:]
    assert "-9" in exit_codes(res)  # torchrun names the killed process
    # The other ends at once (gloo's closed connection, or torchrun's SIGTERM, whichever comes
    # first), not after the collective timeout; the bound is generous for a loaded machine.
    assert ended - float(note.read_text()) < 120
    lines = said(res)
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0] == "deepstdp: interrupted (process 0 of 2); continue with --resume" or (
        lines[0].startswith("deepstdp: error: another process of this distributed run failed")
        and lines[0].endswith("continue with --resume")), lines
    assert [r["epoch"] for r in rows(out)] == [0, 1]  # epoch 1's files, whole
    assert load_run(out).checkpoint.epoch == 1
    assert not list(out.glob(".*.tmp"))
    res = torchrun(tmp_path, out, *SMALL, "--epochs", "3", "--resume")
    assert res.returncode == 0 and said(res) == [], res.stderr[-3000:]
    assert without_times(out) == without_times(tmp_path / "ref")


def test_bad_input_under_torchrun_is_one_line_and_exit_2_from_each_process(tmp_path):
    res = torchrun(tmp_path, tmp_path / "run", *ARGS, "--batch-size", "127")
    error = "deepstdp: error: --batch-size = 127 must be divisible by the 2 processes"
    # The processes meet at the end barrier before either exits, and one that torchrun
    # signals after the other's exit keeps its outcome: both lines and exit 2, every time.
    assert said(res) == [error, error], res.stderr[-3000:]
    assert res.returncode == 1 and exit_codes(res) and set(exit_codes(res)) == {"2"}
    assert not (tmp_path / "run").exists()


def test_shards_cover_every_row_once():
    for n in (0, 1, 5, 7, 100):
        for size in (1, 2, 3, 8):
            parts = [World(rank, size).shard(n) for rank in range(size)]
            assert [i for s in parts for i in range(n)[s]] == list(range(n))
    assert ALONE.shard(5) == slice(0, 5)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "tpu", "cpu:1"])
def test_a_device_that_is_not_there_is_a_setting_error(device):
    import torch

    from deepstdp.runtime import devices
    from deepstdp.runtime.util import SettingError

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SettingError, match="device"):
        devices.resolve(device)


def test_the_watch_stops_a_process_other_than_rank_0_that_writes(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(WATCH)
    run = tmp_path / "run"
    run.mkdir()
    code = f"open({str(run / 'x')!r}, 'w')"
    for rank, ok in (("0", True), ("1", False)):
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "WATCHED_RUN": str(run),
               "RANK": rank}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True)
        assert (res.returncode == 0) == ok, res.stderr


@pytest.mark.parametrize("first", [False, True])
def test_the_watch_reports_a_process_group_that_outlives_destroy(tmp_path, first):
    """DDP imports torch.distributed.nn.functional, whose default arguments then hold the
    group: destroy_process_group leaves gloo's threads running to the interpreter's end (what
    joined() avoids by importing it first). The watch sees it."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(WATCH)
    code = "\n".join([
        "import torch, torch.distributed as dist",
        "import torch.distributed.nn.functional" if first else "",
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, "
        "world_size=1)",
        "torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))",
        "dist.destroy_process_group()"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "RANK": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert ("gloo threads alive at exit (rank 1)" in res.stderr) != first, res.stderr
