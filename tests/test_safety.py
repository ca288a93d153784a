"""What a user types never destroys a file, runs away with the machine or ends in a traceback,
and what the tool says is true (issue 32). The CLI fuzz at the end tries every numeric option
of every subcommand at 0, -1, NaN, inf, huge and empty, and every path option at the places
that have lost files before."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepstdp.cli import build_parser, main
from deepstdp.runtime import threads

SMALL = ["--precision", "fp32", "--k-train", "20", "--widths", "16,M", "--feat-dim", "32",
         "--pca-dim", "16", "--image-size", "12", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained and converted one-epoch run on digits."""
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", *SMALL]) == 0
    assert main(["convert", str(out), "--threads", "1", "--quiet"]) == 0
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_exit_2(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    return err


def test_export_never_writes_over_a_runs_files_nor_an_existing_file(run, capsys, tmp_path):
    before = files(run)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "spiking.pt"):
        err = one_line_exit_2(capsys, ["export", str(run), "--nir", str(run / name), "--force"])
        assert "is one of the files of" in err
    other = tmp_path / "mine.nir"
    other.write_text("keep me")
    assert "exists; replace it" in one_line_exit_2(capsys, ["export", str(run), "--nir",
                                                            str(other)])
    assert "needs a name" in one_line_exit_2(capsys, ["export", str(run), "--nir", ""])
    assert other.read_text() == "keep me" and files(run) == before


def test_a_comparison_refused_for_a_bad_seed_writes_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    err = one_line_exit_2(capsys, ["compare", "--seeds", "0,-1", "--out", str(out), *SMALL])
    assert err.startswith("deepstdp: error: --seeds must be")
    assert not out.exists()
    err = one_line_exit_2(capsys, ["compare", "--clusterers", "kmeans,foo", "--out", str(out),
                                   *SMALL])
    assert "--clusterers 'foo' is unknown" in err and not out.exists()
    err = one_line_exit_2(capsys, ["compare", "--report-only", "--out", str(out), *SMALL])
    assert "holds no comparison" in err


def test_folders_of_one_kind_are_refused_by_commands_of_another(run, tmp_path, capsys):
    before = files(run)
    assert "holds a run, not a comparison" in one_line_exit_2(
        capsys, ["compare", "--out", str(run), "--force", *SMALL])
    assert "holds a run, not a clustering" in one_line_exit_2(
        capsys, ["cluster", "--out", str(run), "--force", "--threads", "1", "--quiet"])
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "compare.json").write_text("{}")
    assert "holds a comparison, not a run" in one_line_exit_2(
        capsys, ["train", "--out", str(cmp), "--force", *SMALL])
    assert files(run) == before and (cmp / "compare.json").read_text() == "{}"


def test_thread_and_process_counts_are_bounded_by_the_cpus(run, tmp_path, capsys):
    many = str(threads.available() + 1)
    for argv in (["train", "--out", str(tmp_path / "r"), *SMALL, "--threads", many],
                 ["convert", str(run), "--threads", many],
                 ["evaluate", str(run), "--threads", many],
                 ["export", str(run), "--nir", str(tmp_path / "x.nir"), "--threads", many],
                 ["compare", "--out", str(tmp_path / "c"), *SMALL, "--jobs", many]):
        err = one_line_exit_2(capsys, argv)
        assert f"at most the {threads.available()} CPUs" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "RUN", "--spiking", "--coding", "synchronous", "--timesteps", "10000000"],
     "at most 4096 steps"),
    (["convert", "RUN", "--calib-images", "100000000"], "--calib-images must be in [1, 4096]"),
    (["evaluate", "RUN", "--limit", "0"], "--limit must be at least 1 image"),
    (["evaluate", "RUN", "--batch", "100000000"], "--batch must be in [1, 4096]"),
])
def test_sizes_a_user_names_are_bounded(run, capsys, argv, message):
    before = files(run)
    err = one_line_exit_2(capsys, [str(run) if a == "RUN" else a for a in argv])
    assert message in err and files(run) == before


@pytest.mark.parametrize("content", [b"\x00garbage" * 50, "truncated", {"a": 1}])
def test_a_corrupt_converted_network_is_one_line_naming_it(run, tmp_path, capsys, content):
    import shutil

    import torch

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "spiking.pt"
    if content == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content)
    for argv in (["evaluate", str(copy), "--spiking", "--timesteps", "1", "--quiet"],
                 ["export", str(copy), "--nir", str(tmp_path / "x.nir")]):
        err = one_line_exit_2(capsys, argv)
        assert str(path) in err and "convert the run again" in err


def test_a_config_file_that_is_not_utf8(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b'{"lr": \xff\xfe}')
    err = one_line_exit_2(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r"),
                                   *SMALL])
    assert "is not UTF-8 text" in err and not (tmp_path / "r").exists()


def test_16_bit_images_are_scaled_and_wide_ones_refused(tmp_path):
    from deepstdp.data.datasets import _decode
    from deepstdp.runtime.util import DeepSTDPError

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    decoded = _decode(tmp_path / "g16.png")
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded[..., 0].astype(float) - ramp / 257).max() <= 0.5
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(DeepSTDPError, match="f.tiff: its pixels are floats"):
        _decode(tmp_path / "f.tiff")


def test_an_odd_sized_image_is_named_without_blaming_the_others(tmp_path):
    from deepstdp.data.datasets import _decode_all
    from deepstdp.runtime.util import DeepSTDPError

    Image.new("RGB", (64, 64)).save(tmp_path / "a_0.JPEG")
    Image.new("RGB", (1, 1)).save(tmp_path / "a_1.JPEG")
    with pytest.raises(DeepSTDPError) as e:
        _decode_all([tmp_path / "a_0.JPEG", tmp_path / "a_1.JPEG"], "train", False)
    assert "differ in size" in str(e.value) and "a_1.JPEG is 1x1" in str(e.value)


def test_an_interrupt_offers_resume_only_where_there_is_something_to_resume(run, tmp_path):
    from deepstdp.cli import _resume_hint

    parse = build_parser().parse_args
    assert _resume_hint(parse(["train", "--out", str(run)])) == "; continue with --resume"
    assert _resume_hint(parse(["train", "--out", str(tmp_path / "new")])) == \
        "; nothing was saved"
    assert _resume_hint(parse(["evaluate", str(run)])) == ""
    assert _resume_hint(parse(["convert", str(run)])) == ""


def test_an_interrupt_after_a_checkpoint_offers_resume(tmp_path):
    """A real SIGINT, sent when the run begins training epoch 1 (conftest.FAULTS' hold point,
    after epoch 0's checkpoint): exit 130 and the true advice."""
    import subprocess
    import sys

    from conftest import fault_site, wait_for

    held = tmp_path / "held"
    held.mkdir()
    env = {**fault_site(tmp_path / "site"), "KILL_AT": "hold:1", "HOLD_DIR": str(held)}
    proc = subprocess.Popen([sys.executable, "-m", "deepstdp.cli", "train", "--out",
                             str(tmp_path / "r"), "--epochs", "2", *SMALL], env=env,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(held.iterdir()), what="the run reaching epoch 1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted; continue with --resume" in err


NUMBERS = ["0", "-1", "nan", "inf", "1e30", ""]


class Reported(Exception):
    """Raised by the stubbed report of a comparison that ran through."""


def numeric_options(command: str) -> list[str]:
    """The options of `command` that take a number (int or float), from the parser itself."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return [a.option_strings[0] for a in sub._actions
            if a.option_strings and a.type in (int, float)]


@pytest.mark.parametrize("command", ["train", "compare", "cluster", "convert", "evaluate",
                                     "export"])
def test_cli_fuzz_numbers(run, tmp_path, capsys, monkeypatch, command):
    """Every numeric option at every awkward value: exit 0 or 2, one line on error, no
    traceback, nothing of the run lost. The loop's and comparison's work itself is stubbed
    out (everything before it runs: parsing, validation, data, the output folder's checks)."""
    import deepstdp.loop.compare
    import deepstdp.loop.training

    row = {"acc": 0.0, "val_acc": 0.0}
    monkeypatch.setattr(deepstdp.loop.training, "_train", lambda *a, **k: [row])
    monkeypatch.setattr(deepstdp.loop.compare, "train", lambda *a, **k: [row])
    def report(*args, **kwargs):
        raise Reported

    monkeypatch.setattr(deepstdp.loop.compare, "write_report", report)
    import shutil

    before = files(run)
    copy = tmp_path / "copy"  # convert writes spiking.pt: it works on a copy
    shutil.copytree(run, copy)
    options = numeric_options(command)
    assert options
    for option in options:
        for value in NUMBERS:
            out = tmp_path / f"o{abs(hash((option, value)))}"
            base = {"train": ["train", "--out", str(out), *SMALL],
                    "compare": ["compare", "--out", str(out), "--seeds", "0",
                                "--clusterers", "kmeans", "--no-spiking", *SMALL],
                    "cluster": ["cluster", "--out", str(out), "--pca-dim", "8", "--quiet"],
                    "convert": ["convert", str(copy), "--quiet"],
                    "evaluate": ["evaluate", str(run), "--quiet", "--limit", "20"],
                    "export": ["export", str(run), "--nir", str(out) + ".nir"]}[command]
            try:
                code = main([*base, option, value])
            except SystemExit as e:
                code = e.code
            except Reported:  # the comparison got as far as its report: a correct run
                code = 0
            err = capsys.readouterr().err
            assert code in (0, 2), (option, value, code, err)
            assert "Traceback" not in err and (code == 0 or err.count("\n") == 1), \
                (option, value, err)
    assert files(run) == before


@pytest.mark.parametrize("place", ["file", "runfile", "missing", "readonly"])
def test_cli_fuzz_paths(run, tmp_path, capsys, monkeypatch, place):
    """Every output path option at an existing file, a run's own file, a folder that does not
    exist yet and a place that cannot be written: a correct run or one line and exit 2, and
    no file lost."""
    import deepstdp.loop.training

    monkeypatch.setattr(deepstdp.loop.training, "_train", lambda *a, **k: [{"acc": 0.0,
                                                                       "val_acc": 0.0}])
    mine = tmp_path / "mine.txt"
    mine.write_text("keep me")
    target = {"file": mine, "runfile": run / "checkpoint.pt",
              "missing": tmp_path / "a" / "b" / "c", "readonly": Path("/proc/deepstdp/x")}[place]
    before = files(run)
    for argv in (["train", "--out", str(target), *SMALL],
                 ["compare", "--out", str(target), "--seeds", "0", "--clusterers", "kmeans",
                  "--no-spiking", *SMALL],
                 ["cluster", "--out", str(target), "--pca-dim", "8", "--quiet"],
                 ["export", str(run), "--nir", str(target)],
                 ["train", "--config", str(target), "--out", str(tmp_path / "r"), *SMALL]):
        if place == "missing" and argv[0] in ("compare", "export"):
            continue  # would do real work: a correct run, tested elsewhere
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, (argv, err)
    assert files(run) == before and mine.read_text() == "keep me"
    assert os.path.exists(run / "checkpoint.pt")
