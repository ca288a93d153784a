"""The comparison's arithmetic on hand-made runs, and its command line."""

import json

import pytest

from deepstdp.cli import main
from deepstdp.loop.compare import run_dir, summarise


def write_run(out, clusterer, seed, accs, seconds=1.0, mv=None):
    """A run's metrics.jsonl; without `mv` as written before the majority vote (0.8)."""
    path = run_dir(out, clusterer, seed)
    path.mkdir(parents=True)
    rows = []
    for e, a in enumerate(accs):
        rows.append({"epoch": e, "acc": a, "nmi": a / 2, "ari": a / 4, "val_acc": a - 0.01,
                     "val_nmi": a / 3, "val_ari": a / 5, "knn_acc": a + 0.1,
                     "probe_acc": a + 0.2, "time_train": seconds,
                     "time_features": 0.0, "time_cluster": 0.0, "time_eval": 0.0})
        if mv is not None:
            rows[-1].update(mv_acc=mv[e], val_mv_acc=mv[e] - 0.01, mv_clusters=20)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_gains_and_iso_accuracy_speedup(tmp_path):
    # k-means: mean curve 0.10 0.15 0.20 0.20 0.20 -> best 0.20 first at epoch 2.
    write_run(tmp_path, "kmeans", 0, [0.10, 0.14, 0.19, 0.20, 0.21])
    write_run(tmp_path, "kmeans", 1, [0.10, 0.16, 0.21, 0.20, 0.19])
    # stdp: mean curve 0.12 0.22 0.25 0.28 0.30, reaches 0.20 at epoch 1; twice the seconds.
    write_run(tmp_path, "stdp", 0, [0.12, 0.22, 0.25, 0.28, 0.30], seconds=2.0)
    write_run(tmp_path, "stdp", 1, [0.12, 0.22, 0.25, 0.28, 0.30], seconds=2.0)
    s = summarise(tmp_path, ["kmeans", "stdp"], [0, 1])
    assert s["epochs"] == 4 and s["seeds"] == [0, 1]
    assert s["kmeans"]["final_acc"] == pytest.approx({"mean": 0.20, "std": 0.01})
    assert s["kmeans"]["best_acc"]["mean"] == pytest.approx(0.21)
    assert s["stdp"]["final_val_acc"]["mean"] == pytest.approx(0.29)
    h = s["readouts"]["hungarian"]
    assert h["relative_gain_pct_final"] == pytest.approx(50.0)
    assert h["absolute_gain_final"] == pytest.approx(0.10)
    # The last 5 epochs' mean (here all of them): 0.168 and 0.172 against 0.234 twice.
    assert s["last_epochs"] == 5
    assert s["kmeans"]["last_acc"] == pytest.approx({"mean": 0.17, "std": 0.002})
    assert h["relative_gain_pct_last"] == pytest.approx(100 * 0.064 / 0.17)
    assert h["iso_accuracy_target"] == pytest.approx(0.20)
    assert h["iso_accuracy_epoch"] == {"kmeans": 2, "stdp": 1}
    assert h["iso_accuracy_speedup_epochs"] == pytest.approx(2.0)
    # k-means needs 3 epochs of 1 s (epoch 0 counts its own time), stdp 2 of 2 s.
    assert h["iso_accuracy_speedup_seconds"] == pytest.approx(3.0 / 4.0)
    # Runs from before the majority vote: no such readout, the rest as before.
    assert set(s["readouts"]) == {"hungarian"}


def test_iso_accuracy_not_reached_is_null(tmp_path):
    write_run(tmp_path, "kmeans", 0, [0.1, 0.3])
    write_run(tmp_path, "stdp", 0, [0.1, 0.2])
    s = summarise(tmp_path, ["kmeans", "stdp"], [0])
    h = s["readouts"]["hungarian"]
    assert h["iso_accuracy_speedup_epochs"] is None
    assert h["iso_accuracy_speedup_seconds"] is None
    assert h["relative_gain_pct_final"] == pytest.approx(-100 / 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0,x"], "bad --seeds list"),
        (["--seeds", "1,1"], "without repeats"),
        (["--clusterers", "kmeans,dbscan"], "--clusterers 'dbscan' is unknown"),
        (["--jobs", "0"], "--jobs must be an integer >= 1"),
        (["--jobs", "100"], "--jobs must be at most the"),
        (["--seeds", "0,-1"], "--seeds must be"),
    ],
)
def test_compare_rejects_bad_lists(tmp_path, capsys, args, message):
    assert main(["compare", "--out", str(tmp_path / "c"), *args]) == 2
    assert message in capsys.readouterr().err


def test_compare_end_to_end_on_digits(tmp_path, capsys):
    small = ["--widths", "16,M", "--feat-dim", "32", "--pca-dim", "16", "--image-size", "12",
             "--threads", "1", "--epochs", "1", "--clusterers", "kmeans", "--seeds", "0,1",
             "--precision", "fp32", "--k-train", "20"]
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), *small]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["kmeans"]["final_acc"]) == {"mean", "std"}
    for name in ("report.md", "curves.png", "clusters.png", "confusion.png"):
        assert (out / name).stat().st_size > 0
    # Every run's final CNN was converted and simulated: the summary has its figures.
    spiking = summary["spiking"]["kmeans"]
    assert 1 <= spiking["timesteps"]["mean"] <= 64
    assert 0 <= spiking["agreement"]["mean"] <= 1 and spiking["sops_per_mac"]["mean"] > 0
    assert 0 <= spiking["reached"] <= 2
    assert (run_dir(out, "kmeans", 1) / "spiking.json").exists()
    assert "Spiking networks" in (out / "report.md").read_text()
    assert "spiking: T" in capsys.readouterr().out
    assert main(["compare", "--out", str(out), *small]) == 2
    assert "already holds a comparison; resume it" in capsys.readouterr().err
    assert main(["compare", "--out", str(out), "--resume", *small]) == 0  # nothing left to run
    assert "already complete" in capsys.readouterr().out


def test_a_comparison_resumes_by_the_rule_its_runs_resume_by(tmp_path):
    """compare.json may differ from the command in what a run may (rundir.RESUMABLE_CHANGES:
    the device included), in nothing else; resume and force exclude each other, as for a run."""
    import dataclasses

    from deepstdp.config import TrainConfig
    from deepstdp.loop.compare import check_comparison
    from deepstdp.run.rundir import COMPARISON as SPEC
    from deepstdp.runtime.util import DeepSTDPError

    def spec(cfg):
        return {"base": cfg.to_dict(), "clusterers": ["kmeans"], "seeds": [0]}

    base, out = TrainConfig(epochs=2), tmp_path / "cmp"
    out.mkdir()
    (out / SPEC).write_text(json.dumps(spec(base)))
    for change in ({"epochs": 3}, {"threads": 1}, {"device": "cpu"}):
        now = dataclasses.replace(base, **change)
        check_comparison(now, ["kmeans"], out, spec(now), resume=True, force=False)
    now = dataclasses.replace(base, lr=0.1)
    with pytest.raises(DeepSTDPError, match=r"settings differ \(lr\)"):
        check_comparison(now, ["kmeans"], out, spec(now), resume=True, force=False)
    with pytest.raises(DeepSTDPError, match="settings differ \\(seeds\\)"):
        check_comparison(base, ["kmeans"], out, {**spec(base), "seeds": [1]}, True, False)
    with pytest.raises(DeepSTDPError, match="resume and force exclude each other"):
        check_comparison(base, ["kmeans"], out, spec(base), resume=True, force=True)


def test_summary_scores_each_readout_and_the_mismatch_of_protocols(tmp_path):
    # Hungarian ACC ties; the majority vote of the target clusters gives STDP +20% and
    # k-means's Hungarian ACC against STDP's majority vote +50%.
    for seed in (0, 1):
        write_run(tmp_path, "kmeans", seed, [0.20, 0.20], mv=[0.25, 0.25])
        write_run(tmp_path, "stdp", seed, [0.20, 0.20], mv=[0.30, 0.30])
    s = summarise(tmp_path, ["kmeans", "stdp"], [0, 1])
    r = s["readouts"]
    assert set(r) == {"hungarian", "majority", "cross_protocol"}
    assert r["hungarian"]["relative_gain_pct_final"] == pytest.approx(0.0)
    assert r["majority"]["relative_gain_pct_final"] == pytest.approx(20.0)
    assert r["cross_protocol"]["relative_gain_pct_final"] == pytest.approx(50.0)
    assert (r["cross_protocol"]["baseline_metric"], r["cross_protocol"]["challenger_metric"]) \
        == ("acc", "mv_acc")
    assert s["stdp"]["final_val_mv_acc"]["mean"] == pytest.approx(0.29)
    from deepstdp.measures.report import comparison_markdown

    text = comparison_markdown(s, ["kmeans", "stdp"], "cmd", 1.0, [])
    assert "train majority vote (final)" in text and "a mismatch of protocols" in text
