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


# Every bad input: one line naming the option or file and what is allowed, exit 2, and nothing
# written. Each row: extra arguments to `train` (after SMALL), then the expected message.
BAD_TRAIN = [
    (["--k", "1"], "--k must be in [2, 1000000], got 1"),
    (["--k", "5000"], "--k = 5000 exceeds the 1437 training images"),
    (["--k-train", "1"], "--k-train must be in [2,"),
    (["--k-train", "5000"], "--k-train = 5000 exceeds the 1437 training images"),
    (["--epochs", "0"], "--epochs must be in [1,"),
    (["--epochs", "-3"], "--epochs must be in [1,"),
    (["--widths", "16,X"], "--widths entry 'X' is neither a positive integer nor 'M'"),
    (["--widths", "M,M"], "--widths needs at least one convolution width"),
    (["--widths", "16,M,M,M,M"], "--widths '16,M,M,M,M' has 4 pooling stages; 12-pixel images "
                                 "allow at most 3"),
    (["--classes", "5"], "digits always has its 10 classes"),
    (["--dataset", "tiny-imagenet", "--data-root", "/nonexistent"], "/nonexistent"),
    (["--dataset", "tiny-imagenet", "--data-root", "/tmp", "--classes", "0"],
     "--classes count must be positive"),
    (["--stdp", "novalue"], "use KEY=VALUE"),
    (["--stdp", "bogus=1"],
     "--stdp has no setting bogus: the settings are anneal, consolidation, drive,"),
    (["--stdp", "nu_post=-1"], "--stdp nu_post must be a finite number >= 0, got -1"),
    (["--stdp", "time=0"], "--stdp time must be an integer >= 1, got 0"),
    (["--stdp", "v_rest=nan"], "--stdp v_rest must be"),
    (["--stdp", "synapse=gap"], "--stdp synapse must be one of excitatory, push-pull"),
    (["--stdp", "n_init=0"], "--stdp n_init must be an integer >= 1, got 0"),
    (["--target-keep", "0"], "--target-keep must be in (0, 1], got 0"),
    (["--target-keep", "1.5"], "--target-keep must be in (0, 1], got 1.5"),
    (["--views", "0"], "--views must be in [1, 64], got 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "-0.1"], "--lr must be a finite number > 0"),
    (["--momentum", "-5"], "--momentum must be in [0, 1), got -5"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["--seed", "-1"], "--seed must be in [0, 9223372036854775808)"),
    (["--seed", "123456789012345678901"], "--seed must be in [0, 9223372036854775808)"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--jitter", "2"], "--jitter must be in [0, 1)"),
    (["--grayscale", "1.5"], "--grayscale must be in [0, 1]"),
    (["--crop-scale", "0"], "--crop-scale must be in (0, 1]"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--feat-dim", "0"], "--feat-dim must be in [1, 65536]"),
    (["--proj-dim", "-1"], "--proj-dim must be in [0, 65536]"),
    (["--pca-dim", "1"], "--pca-dim must be in [2, 65536]"),
    (["--batch-size", "1"], "--batch-size must be in [2, 65536]"),
    (["--image-size", "4"], "--image-size must be in [8, 512]"),
    (["--image-size", "100000"], "--image-size must be in [8, 512]"),
    (["--threads", "0"], "--threads must be in [1, 4096]"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--device", "cpu", "--precision", "fp16"], "--precision fp16 needs a CUDA or MPS device"),
    (["--knn-k", "0"], "--knn-k must be in [1, 10000]"),
    (["--probe-every", "0"], "--probe-every must be in [1, 100000]"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be in [0, 100000]"),
    (["--qcfs-levels", "0"], "--qcfs-levels must be in [1, 1024]"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--resume", "--force"], "resume and force exclude each other"),
    (["--resume"], "nothing to resume"),
    (["--config", "/nonexistent.json"], "config file not found: /nonexistent.json"),
]


@pytest.mark.parametrize("args, message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("DEEPSTDP_DATA", raising=False)
    with pytest.raises(SystemExit) if "two" in args else _no_exit() as exit_info:
        code = main(["train", "--out", str(tmp_path / "run"), *SMALL, *args])
    if exit_info is not None:
        code = exit_info.value.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # validated before anything was written


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("content, message", [
    ('{"epochs": "two"}', "--epochs must be an integer in [1, 100000], got 'two'"),
    ('{"lr": null}', "--lr must be a finite number > 0, got None"),
    ('{"sobel": 1}', "--sobel must be of type bool, got 1"),
    ('{"epochz": 1}', "unknown setting(s) in config: epochz"),
    ("[1, 2]", "must hold a JSON object"),
    ("{not json", "is not valid JSON"),
])
def test_bad_config_files(tmp_path, capsys, content, message):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(content)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_bad_output_places(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["train", "--out", str(afile), *SMALL]) == 2
    assert f"output {afile} is a file" in capsys.readouterr().err
    assert main(["train", "--out", str(afile / "run"), *SMALL]) == 2
    assert "is a file" in capsys.readouterr().err
    assert afile.read_text() == "x"


@pytest.mark.parametrize("argv, message", [
    (["compare", "--clusterer", "kmeans", "--out", "X"], "unrecognized arguments: --clusterer"),
    (["compare", "--jobs", "0", "--out", "X"], "--jobs must be an integer >= 1"),
    (["compare", "--seeds", "1,1", "--out", "X"], "must be non-empty without repeats"),
    (["compare", "--clusterers", "kmeans,dbscan", "--out", "X"], "'dbscan' is unknown"),
    (["cluster", "--widths", "16,M", "--out", "X"], "unrecognized arguments: --widths"),
    (["cluster", "--epochs", "3", "--out", "X"], "unrecognized arguments: --epochs"),
    (["cluster", "--image-size", "16", "--out", "X"], "unrecognized arguments: --image-size"),
    (["train", "--clusterer", "dbscan"], "invalid choice: 'dbscan'"),
    (["train", "--ep", "3"], "unrecognized arguments: --ep"),  # no silent abbreviations
])
def test_conflicting_or_ignored_options_are_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "X").exists()


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
    assert main(args) == 2 and "already holds a clustering; replace it (force)" in \
        capsys.readouterr().err


def test_every_default_the_command_line_shows_or_uses_is_the_librarys():
    """Options of settings default to None, so that the library's default applies, and their
    help shows that default; other options default to what the library function they feed
    does; choices are the library's tuples; no options make the library's defaults."""
    import argparse
    import dataclasses
    import inspect

    from deepstdp import cli, registry
    from deepstdp.clustering.stdp.settings import STDPSettings
    from deepstdp.config import RULES, TrainConfig
    from deepstdp.conversion.evaluation import evaluate_run
    from deepstdp.conversion.nir_export import export_run
    from deepstdp.conversion.settings import (
        BINARY_POOLINGS,
        CODINGS,
        NIR_FORMATS,
        READOUTS,
        RESETS,
        ConversionSettings,
        SpikingCheck,
    )
    from deepstdp.loop.compare import run_all

    parser = cli.build_parser()
    commands = next(a for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    settings = {"train": TrainConfig(), "compare": TrainConfig(), "cluster": TrainConfig(),
                "convert": ConversionSettings()}
    functions = {"compare": run_all, "evaluate": evaluate_run, "export": export_run}
    choices = {**{name: rule.choices for name, rule in RULES.items() if rule.choices},
               "clusterer": registry.names(), "reset": RESETS, "readout": READOUTS,
               "calibrate_readout": READOUTS, "format": NIR_FORMATS, "coding": CODINGS,
               "calibrate_coding": CODINGS, "spiking_coding": CODINGS,
               "binary_pooling": BINARY_POOLINGS}
    check = SpikingCheck()
    compare_check = {"spiking_timesteps": check.timesteps, "spiking_coding": check.coding,
                     "spiking_limit": check.limit}
    checked = 0
    for command, sub in commands.items():
        fields = {f.name for f in dataclasses.fields(settings[command])} \
            if command in settings else set()
        params = inspect.signature(functions[command]).parameters if command in functions \
            else {}
        for action in sub._actions:
            name, help_text = action.dest, action.help or ""
            if action.choices is not None:
                assert tuple(action.choices) == choices[name], (command, name)
            if name == "stdp":
                for f in dataclasses.fields(STDPSettings):
                    assert f"{f.name} ({cli.shown(getattr(STDPSettings(), f.name))})" in help_text
            elif name in fields:
                value = getattr(settings[command], name)
                assert action.default is None, (command, name)
                if value is not None:
                    assert f"(default {cli.shown(value)})" in help_text, (command, name)
                checked += 1
            elif name == "timesteps":
                pass  # the command's own choice: evaluate_run's None means "no simulation"
            elif command == "compare" and name in compare_check:
                assert action.default == compare_check[name], name
                checked += 1
            elif {"format": "fmt"}.get(name, name) in params:
                library = params[{"format": "fmt"}.get(name, name)].default
                if library is not inspect.Parameter.empty:
                    assert action.default == library, (command, name)
                    checked += 1
    assert checked > 100
    assert cli.config_from_args(parser.parse_args(["train"])) == TrainConfig()
    assert cli.config_from_args(parser.parse_args(["train"])).stdp == STDPSettings()
    assert cli.conversion_from_args(parser.parse_args(["convert", "RUN"])) == \
        ConversionSettings()
