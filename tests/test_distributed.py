"""Data-parallel training through torchrun with gloo on the CPU (distributed.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepstdp.config import TrainConfig
from deepstdp.distributed import ALONE, World
from deepstdp.rundir import load_run
from deepstdp.training import train

DEEPSTDP = str(Path(sys.executable).parent / "deepstdp")
ARGS = ["--epochs", "2", "--threads", "1", "--precision", "fp32", "--quiet"]

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
'''


def torchrun(tmp_path: Path, out: Path, *args: str, env: dict | None = None,
             nproc: int = 2) -> subprocess.CompletedProcess:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(WATCH)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "WATCHED_RUN": str(out),
           **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", DEEPSTDP, "train", "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path):
    one = train(TrainConfig(epochs=2, threads=1, precision="fp32"),
                              tmp_path / "one", quiet=True)
    res = torchrun(tmp_path, tmp_path / "two", *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
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
    assert run.checkpoint["epoch"] == 2


def test_a_failed_process_ends_the_run_and_it_resumes(tmp_path):
    out = tmp_path / "run"
    assert torchrun(tmp_path, out, *ARGS[:1], "1", *ARGS[2:]).returncode == 0
    # Rank 1 dies at the start of epoch 2's training (as an out-of-memory kill would).
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text(WATCH + '''
if os.environ.get("RANK") == "1":
    import deepstdp.training as t
    real = t.train_epoch
    def dying(*a, **k):
        if a[5] == 2:
            os._exit(9)
        return real(*a, **k)
    t.train_epoch = dying
''')
    res = torchrun(tmp_path, out, *ARGS[:1], "3", *ARGS[2:],
                   "--resume", env={"PYTHONPATH": str(crash)})
    assert res.returncode != 0
    # torchrun stops rank 0 (SIGTERM), unless gloo sees the peer gone first.
    assert ("deepstdp: interrupted (process 0 of 2); continue with --resume" in res.stderr
            or "deepstdp: error: another process of this distributed run failed" in res.stderr)
    assert [r["epoch"] for r in rows(out)] == [0, 1]  # epoch 1's files, whole
    assert load_run(out).checkpoint["epoch"] == 1
    assert not list(out.glob("*.tmp"))
    res = torchrun(tmp_path, out, *ARGS[:1], "3", *ARGS[2:], "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["epoch"] for r in rows(out)] == [0, 1, 2, 3]


def test_bad_input_under_torchrun_is_one_line_from_each_process(tmp_path):
    res = torchrun(tmp_path, tmp_path / "run", *ARGS, "--batch-size", "127")
    assert res.returncode != 0
    error = "deepstdp: error: --batch-size = 127 must be divisible by the 2 processes"
    said = [line for line in res.stderr.splitlines() if line.startswith("deepstdp: ")]
    # Each process finds it; one that torchrun stops first (after the other exited) says so.
    assert error in said and len(said) <= 2
    assert all(line == error or line.startswith("deepstdp: interrupted (process ")
               for line in said)
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

    from deepstdp import devices
    from deepstdp.util import SettingError

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
