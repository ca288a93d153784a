"""The command line: one-line errors with exit code 2, and run directories kept safe."""

import json
import subprocess
import sys

import pytest

from deepstdp.cli import main

SMALL = ["--precision", "fp32", "--k-train", "20",
         "--widths", "16,M", "--feat-dim", "32", "--pca-dim", "16", "--image-size", "12",
         "--threads", "2", "--quiet"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "deepstdp.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k", "1"], "--k must be at least 2"),
        (["--k", "5000"], "k = 5000 exceeds the 1437 training images"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--widths", "16,X"], "bad --widths entry 'X'"),
        (["--classes", "5"], "digits always has its 10 classes"),
        (["--dataset", "tiny-imagenet", "--data-root", "/nonexistent"], "/nonexistent"),
        (["--config", "/nonexistent.json"], "config file not found"),
        (["--stdp", "novalue"], "use KEY=VALUE"),
        (["--views", "0"], "views must be at least 1"),
        (["--k-train", "1"], "k_train must be at least 2"),
        (["--k-train", "5000"], "k_train = 5000 exceeds the 1437 training images"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--momentum", "-5"], "momentum must be in [0, 1)"),
        (["--seed", "-1"], "seed must be in [0, 2**63)"),
        (["--temperature", "0"], "temperature must be positive"),
        (["--jitter", "2"], "jitter must be in [0, 1)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("DEEPSTDP_DATA", raising=False)
    code = main(["train", "--out", str(tmp_path / "run"), *SMALL, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_clusterer_is_rejected_by_the_parser():
    proc = run_cli("train", "--clusterer", "dbscan")
    assert proc.returncode == 2 and "invalid choice: 'dbscan'" in proc.stderr


def test_run_directory_is_never_overwritten_without_asking(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--epochs", "1", *SMALL]) == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    assert main(["train", "--out", out, "--epochs", "1", *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    # Resuming with other settings is refused too; --force replaces.
    assert main(["train", "--out", out, "--epochs", "2", "--resume", *SMALL, "--lr", "0.2"]) == 2
    assert "settings differ" in capsys.readouterr().err
    assert main(["train", "--out", out, "--epochs", "1", "--force", *SMALL, "--seed", "4"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 4


def test_resume_takes_the_runs_own_settings(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--epochs", "1", "--seed", "5", *SMALL]) == 0
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--quiet"]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "none"), "--resume", *SMALL]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_config_file_then_command_line_override(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 1, "seed": 7, "lr": 0.02}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--seed", "8", "--out", str(out), *SMALL]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["seed"], saved["lr"]) == (1, 8, 0.02)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 1}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r2"), *SMALL]) == 2


def test_download_without_network_fails_cleanly(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert main(["download", "--data-root", str(tmp_path), "--quiet"]) == 2


def test_cluster_pixels_with_stdp_draws_the_receptive_field_grid(tmp_path, capsys):
    out = tmp_path / "dc"
    args = ["cluster", "--clusterer", "stdp", "--pixels", "--stdp", "drive=0.2",
            "--stdp", "time=100", "--out", str(out), "--quiet"]
    assert main(args) == 0
    result = json.loads((out / "cluster.json").read_text())
    assert result["input"] == "pixels" and result["train"]["acc"] > 0.6
    assert (out / "stdp_weights.png").stat().st_size > 0
    assert main(args) == 2 and "--force" in capsys.readouterr().err
