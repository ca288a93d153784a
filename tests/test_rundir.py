"""Run directories survive crashes, refuse bad starts untouched, and load without pickle."""

import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fault_site, wait_for

from deepstdp import load_run
from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.loop.training import MACHINE, train
from deepstdp.run.rundir import Checkpoint, RunDir
from deepstdp.runtime.util import DeepSTDPError

SMALL = dict(widths="16,M", feat_dim=32, pca_dim=16, image_size=12, threads=1,
             precision="fp32", k_train=20)
SMALL_ARGS = ["--precision", "fp32", "--k-train", "20", "--widths", "16,M", "--feat-dim", "32",
              "--pca-dim", "16", "--image-size", "12", "--threads", "1", "--quiet"]


def rows_without_times(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in MACHINE} for r in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_kill_9_at_moments_chosen_by_progress_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Every try is killed (SIGKILL) at a moment read from the run's own progress, never from
    the clock, so every try kills on any machine; and the run, resumed after each, still ends
    with an uninterrupted run's metrics, row for row."""
    epochs = 4
    cmd = [sys.executable, "-m", "deepstdp.cli", "train", "--epochs", str(epochs), "--seed", "1",
           *SMALL_ARGS]
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "--out", str(ref)], check=True, timeout=600)
    run = tmp_path / "run"
    env = fault_site(tmp_path / "site")
    rng = random.Random(0)

    def done() -> int:  # the checkpoint's epoch, -1 before the first
        return RunDir(run).load_checkpoint().epoch if (run / "checkpoint.pt").exists() else -1

    # Each try: its KILL_AT (conftest.FAULTS; None: killed from outside as soon as epoch 0's row
    # is written), given the next epoch e; and the checkpoint epoch it leaves, given e.
    tries = [
        (lambda e: None, None),
        (lambda e: f"step:{e}:{rng.random():.3f}", lambda e: e - 1),  # inside e's training
        (lambda e: "checkpoint-mid:1", lambda e: e - 1),  # halfway through e's checkpoint
        (lambda e: "checkpoint-after:2", lambda e: e + 1),  # e + 1's in place, metrics behind
        (lambda e: f"step:{e}:{rng.random():.3f}", lambda e: e - 1),
    ]
    for kill_at, leaves in tries:
        e = done() + 1
        spec = kill_at(e)
        resume = ["--resume"] if e > 0 else []
        proc = subprocess.Popen([*cmd, "--out", str(run), *resume],
                                env={**env, "KILL_AT": spec or ""})
        if spec is None:
            wait_for(lambda p=proc: (run / "metrics.jsonl").exists() or p.poll() is not None,
                     what="epoch 0's row")
            proc.kill()
        wait_for(lambda p=proc: p.poll() is not None, what="the killed run's end")
        assert proc.returncode == -signal.SIGKILL, f"try {spec} was not killed"
        ck = RunDir(run).load_checkpoint()  # after any kill: a whole checkpoint, rows inside
        assert [r["epoch"] for r in ck.metrics] == list(range(ck.epoch + 1))
        if leaves is not None:
            assert ck.epoch == leaves(e), spec
        assert ck.epoch < epochs
        if spec == "checkpoint-mid:1":  # the half-written temp file is still there
            assert len(list(run.glob(".checkpoint.pt.*.tmp"))) == 1
        if spec == "checkpoint-after:2":  # metrics.jsonl one epoch behind the checkpoint
            assert [r["epoch"] for r in rows_without_times(run)] == list(range(e + 1))
    subprocess.run([*cmd, "--out", str(run), "--resume"], env=env, check=True, timeout=600)
    assert rows_without_times(run) == rows_without_times(ref)
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()


def test_resume_removes_stale_temp_files_and_rewrites_lagging_metrics(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(epochs=2, **SMALL), run, quiet=True)
    full = (run / "metrics.jsonl").read_text()
    # A crash between the checkpoint's rename and the metrics write, and a half-written file:
    (run / "metrics.jsonl").write_text("".join(full.splitlines(keepends=True)[:2]))
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"partial")
    train(TrainConfig(epochs=2, **SMALL), run, resume=True, quiet=True)
    assert (run / "metrics.jsonl").read_text() == full
    assert not list(run.glob(".*.tmp"))


def test_force_with_a_bad_input_leaves_the_finished_run_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEEPSTDP_DATA", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", *SMALL_ARGS]) == 0
    before = snapshot(run)
    assert main(["train", "--out", str(run), "--force", "--dataset", "tiny-imagenet",
                 "--data-root", "/nonexistent", *SMALL_ARGS]) == 2
    assert "/nonexistent" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_start_that_fails_before_its_first_checkpoint_leaves_no_trace(tmp_path, monkeypatch):
    import deepstdp.loop.training as training

    def broken(*args, **kwargs):
        raise DeepSTDPError("clustering failed")

    monkeypatch.setattr(training, "fit_clusterings", broken)
    with pytest.raises(DeepSTDPError, match="clustering failed"):
        train(TrainConfig(epochs=1, **SMALL), tmp_path / "new", quiet=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DeepSTDPError):
        train(TrainConfig(epochs=1, **SMALL), tmp_path / "mine", quiet=True)
    assert snapshot(tmp_path / "mine") == {"notes.txt": b"keep"}


def test_resume_cannot_go_below_the_epochs_done(tmp_path):
    train(TrainConfig(epochs=2, **SMALL), tmp_path / "run", quiet=True)
    with pytest.raises(DeepSTDPError, match="to 1 epochs: it has done 2"):
        train(TrainConfig(epochs=1, **SMALL), tmp_path / "run", resume=True, quiet=True)


def test_files_follow_the_umask_and_checkpoints_load_without_pickle(tmp_path):
    old = os.umask(0o027)
    try:
        train(TrainConfig(epochs=1, **SMALL), tmp_path / "run", quiet=True)
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "curves.png"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o640, name
    ck = torch.load(tmp_path / "run" / "checkpoint.pt")  # torch's default: weights_only=True
    assert ck["epoch"] == 1 and len(ck["metrics"]) == 2
    run = load_run(tmp_path / "run")
    x = torch.randn(4, 1, 12, 12)  # digits: one channel
    with torch.no_grad():
        emb = run.model.embed_features(run.model.features(x)).numpy()
    assert run.clusterer.predict(run.pca.transform(emb)).shape == (4,)
    assert run.config.widths == "16,M"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys, damage):
    run = tmp_path / "run"
    train(TrainConfig(epochs=1, **SMALL), run, quiet=True)
    data = (run / "checkpoint.pt").read_bytes()
    damaged = {"truncate": data[:len(data) // 2], "garbage": b"not a checkpoint" * 10,
               "empty": b""}[damage]
    (run / "checkpoint.pt").write_bytes(damaged)
    for argv in (["evaluate", str(run), "--quiet"],
                 ["train", "--out", str(run), "--resume", "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is corrupt, truncated or not a deepstdp checkpoint" in err
        assert err.count("\n") == 1


def _children(pid: int) -> list[int]:
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_compare_workers_end_with_the_command(tmp_path, how):
    held = tmp_path / "held"
    held.mkdir()
    # Each worker holds at the start of its run's epoch 1 (conftest.FAULTS): the signal comes
    # while both are mid-run, however fast the machine.
    env = {**fault_site(tmp_path / "site"), "KILL_AT": "hold:1", "HOLD_DIR": str(held)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepstdp.cli", "compare", "--clusterers", "kmeans",
         "--seeds", "0,1", "--jobs", "2", "--epochs", "2", "--out", str(tmp_path / "cmp"),
         *SMALL_ARGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = wait_for(lambda: len(list(held.iterdir())) == 2 or proc.poll() is not None,
                       what="two workers held mid-run") and [int(p.name) for p in held.iterdir()]
    assert len(workers) == 2 and set(workers) <= set(_children(proc.pid))
    proc.send_signal(how)
    wait_for(lambda: proc.poll() is not None, what="the command's end")
    wait_for(lambda: not any(_alive(w) for w in workers), what="the workers' end")
    if how == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL


def test_tensorboard_log_has_every_epochs_scalars_and_pictures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(TrainConfig(epochs=1, **SMALL), tmp_path / "run", quiet=True, tensorboard=True)
    train(TrainConfig(epochs=2, **SMALL), tmp_path / "run", resume=True, quiet=True,
          tensorboard=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/acc")] == [0, 1, 2]
    assert [e.step for e in events.Scalars("val/acc")] == [0, 1, 2]
    assert "features/knn_acc" in events.Tags()["scalars"]
    assert [e.step for e in events.Images("curves")] == [0, 1, 2]


def test_a_run_saved_before_0_5_loads_with_the_spiking_layer_it_ran():
    from deepstdp.clustering.stdp.settings import BEFORE_0_5
    from deepstdp.config import TrainConfig

    saved = TrainConfig(clusterer="stdp").to_dict()
    for name in ("synapse", "weight_norm", "consolidation", "n_init", "anneal", "inference"):
        del saved["stdp"][name]  # as 0.4 wrote it
    saved["stdp"]["init"] = "data"
    cfg = TrainConfig.from_saved(saved)
    assert {k: getattr(cfg.stdp, k) for k in BEFORE_0_5} == BEFORE_0_5
    assert TrainConfig.from_saved(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize("version", ["0.2", "0.4"])
def test_checkpoints_of_older_versions_load_and_resume(tmp_path, version):
    """A Checkpoint writes the keys the files of 0.2-0.5 hold, and reads the files of each:
    0.5 added target_keep, 0.3 the precision and the metrics rows (0.2 kept numpy arrays)."""
    run = tmp_path / "run"
    train(TrainConfig(epochs=1, **SMALL), run, quiet=True)
    raw = torch.load(run / "checkpoint.pt")
    assert set(raw) == {"epoch", "model", "optimizer", "labels", "targets", "prototypes", "k",
                        "target_keep", "clusterer", "pca", "input_mean", "input_std", "config",
                        "precision", "bf16", "version", "metrics"}  # as 0.5 wrote them
    assert list(Checkpoint.from_dict(raw).to_dict()) == list(raw)
    del raw["target_keep"]
    if version == "0.2":
        del raw["precision"], raw["metrics"]
        raw["labels"], raw["targets"] = raw["labels"].numpy(), raw["targets"].numpy()
    torch.save(raw, run / "checkpoint.pt")
    ck = RunDir(run).load_checkpoint()
    assert ck.precision == "fp32" and bool(ck.target_keep.all()) and ck.epoch == 1
    assert (ck.metrics is None) == (version == "0.2")
    assert load_run(run).config == TrainConfig(epochs=1, **SMALL)
    rows = train(TrainConfig(epochs=2, **SMALL), run, resume=True, quiet=True)
    assert [r["epoch"] for r in rows] == [0, 1, 2]


@pytest.mark.parametrize("kind", ["run", "comparison", "clustering"])
def test_every_output_folder_starts_by_one_rule(tmp_path, kind):
    from deepstdp.run.rundir import KINDS, check_start
    from deepstdp.runtime.util import DeepSTDPError

    spec = KINDS[kind]
    check_start(tmp_path / "new", kind, resume=False, force=False)  # a new folder: fine
    with pytest.raises(DeepSTDPError, match="exclude each other"):
        check_start(tmp_path / "new", kind, resume=True, force=True)
    held = tmp_path / "held"
    held.mkdir()
    (held / spec.holds).write_text("{}")
    with pytest.raises(DeepSTDPError, match=f"already holds a {kind}"):
        check_start(held, kind, resume=False, force=False)
    check_start(held, kind, resume=False, force=True)
    if spec.resumable:
        check_start(held, kind, resume=True, force=False)
        with pytest.raises(DeepSTDPError, match="nothing to resume"):
            check_start(tmp_path / "new", kind, resume=True, force=False)
    else:
        with pytest.raises(DeepSTDPError, match="does not resume"):
            check_start(held, kind, resume=True, force=False)
    for other in KINDS:
        if other != kind:
            with pytest.raises(DeepSTDPError, match=f"holds a {kind}, not a {other}"):
                check_start(held, other, resume=False, force=True)


def test_a_run_is_finished_by_its_checkpoint_not_its_metrics(tmp_path):
    from deepstdp.run.rundir import METRICS, RunDir

    run = RunDir(tmp_path / "run")
    assert not run.finished(1)
    train(TrainConfig(epochs=1, **SMALL), run.path, quiet=True)
    (run / METRICS).write_text("")  # a crash may leave metrics.jsonl behind its checkpoint
    assert run.finished(1) and not run.finished(2)
