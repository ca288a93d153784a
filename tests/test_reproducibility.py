"""Same seed, same thread count, same results: for train (tests/test_training.py), evaluate
and compare."""

import json

import pytest

from deepstdp.cli import main

SMALL = ["--precision", "fp32", "--k-train", "20", "--widths", "16,M", "--feat-dim", "32",
         "--pca-dim", "16", "--image-size", "12", "--threads", "1", "--quiet"]
STDP = ["--clusterer", "stdp", "--stdp", "time=100", "--stdp", "epochs=1"]


@pytest.mark.parametrize("clusterer", [[], STDP], ids=["kmeans", "stdp"])
def test_evaluate_repeats_itself_and_the_runs_own_metrics(tmp_path, capsys, clusterer):
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--epochs", "1", *SMALL, *clusterer]) == 0
    capsys.readouterr()
    outputs = []
    for _ in range(2):
        assert main(["evaluate", run, "--threads", "1", "--quiet"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"{last['acc']:.3f}" in outputs[0] and f"{last['val_acc']:.3f}" in outputs[0]


def test_compare_repeats_itself(tmp_path):
    summaries = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["compare", "--clusterers", "kmeans", "--seeds", "0", "--epochs", "1",
                     "--out", str(out), *SMALL]) == 0
        s = json.loads((out / "summary.json").read_text())
        summaries.append({k: v for k, v in s["kmeans"].items() if k != "seconds_per_epoch"})
    assert summaries[0] == summaries[1]
