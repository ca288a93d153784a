"""End-to-end runs of the loop: real data, real metrics, resume and determinism."""

import json

import numpy as np
import pytest

from deepstdp.config import TrainConfig
from deepstdp.loop.training import MACHINE, train

# Small and quick: fp32 skips the bf16 timing probe, 20 target clusters keep k-means cheap.
# The spiking layer's tests fit 2 starts and 3 consolidation passes (defaults 10 and 10).
QUICK_STDP = {"time": 100, "epochs": 1, "n_init": 2, "consolidation": 3}
SMALL = dict(widths="16,M,32,M", feat_dim=64, pca_dim=32, threads=2, image_size=16,
             precision="fp32", k_train=20)


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in MACHINE} for r in rows]


def test_two_epochs_on_digits_write_a_complete_run(tmp_path):
    rows = train(TrainConfig(epochs=2, **SMALL), tmp_path / "run", quiet=True)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    saved = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert saved == json.loads(json.dumps(rows))
    keys = {"epoch", "acc", "nmi", "ari", "nmi_prev", "val_acc", "val_nmi", "val_ari",
            "cluster_sizes", *MACHINE}
    assert keys <= set(saved[-1])
    assert sum(saved[-1]["cluster_sizes"]) == 1437 and len(saved[-1]["cluster_sizes"]) == 10
    assert saved[0]["nmi_prev"] is None and 0 < saved[-1]["nmi_prev"] <= 1
    # Digits cluster far above the 10% of chance even with this tiny network.
    assert saved[-1]["acc"] > 0.3 and saved[-1]["val_acc"] > 0.3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["version"] and config["widths"] == "16,M,32,M" and config["k"] is None


def test_same_seed_same_metrics_and_resume_matches_uninterrupted(tmp_path):
    cfg = TrainConfig(epochs=2, seed=3, **SMALL)
    a = train(cfg, tmp_path / "a", quiet=True)
    b = train(cfg, tmp_path / "b", quiet=True)
    assert strip_times(a) == strip_times(b)

    train(TrainConfig(epochs=1, seed=3, **SMALL), tmp_path / "c", quiet=True)
    c = train(cfg, tmp_path / "c", resume=True, quiet=True)
    assert strip_times(c) == strip_times(a)
    lines = (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_different_seed_gives_a_different_run(tmp_path):
    a = train(TrainConfig(epochs=1, seed=0, **SMALL), tmp_path / "a", quiet=True)
    b = train(TrainConfig(epochs=1, seed=1, **SMALL), tmp_path / "b", quiet=True)
    assert strip_times(a) != strip_times(b)


def test_one_epoch_on_the_shared_tiny_imagenet_subset(tmp_path, shared_data):
    cfg = TrainConfig(dataset="tiny-imagenet", data_root=str(shared_data), epochs=1, threads=2,
                      image_size=32, precision="fp32")
    rows = train(cfg, tmp_path / "run", quiet=True)
    last = rows[-1]
    assert sum(last["cluster_sizes"]) == 5000 and len(last["cluster_sizes"]) == 10
    assert 0.1 <= last["acc"] <= 1 and 0 <= last["nmi"] <= 1
    assert np.isfinite(last["loss"])
    # Ten classes: the diagnostics sit well above chance (0.1) and far below the supervised 0.56.
    assert 0.2 < last["knn_acc"] < 0.5 and 0.2 < last["probe_acc"] < 0.6


def test_deep_stdp_loop_checkpoints_the_spiking_layer_and_resumes_exactly(tmp_path):
    import torch

    stdp = dict(clusterer="stdp", stdp=QUICK_STDP, seed=2, align_pca=True,
                stdp_carry="continue", **SMALL)
    a = train(TrainConfig(epochs=2, **stdp), tmp_path / "a", quiet=True)
    assert a[-1]["acc"] > 0.3 and min(a[-1]["cluster_sizes"]) > 0
    # Carried over: per epoch (0-2) one online pass and the consolidation passes.
    assert a[-1]["stdp_passes"] == 3 * (1 + 3)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt")  # plain torch.load: weights only
    # Overclustering: a 20-neuron layer makes the targets, a 10-neuron one is evaluated.
    assert ck["clusterer"]["evaluated"]["weights"].shape[1] == 10
    assert ck["clusterer"]["targets"]["weights"].shape[1] == 20
    assert ck["targets"].max() < 20 and ck["labels"].max() < 10
    for name in ("stdp_weights.png", "stdp_activity.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    rotation = ck["pca"]["rotation"]  # aligned to the last epoch's basis: orthogonal, not I
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(len(rotation)), atol=1e-8)
    assert not np.allclose(rotation, np.eye(len(rotation)))

    train(TrainConfig(epochs=1, **stdp), tmp_path / "b", quiet=True)
    b = train(TrainConfig(epochs=2, **stdp), tmp_path / "b", resume=True, quiet=True)
    assert strip_times(b) == strip_times(a)


def test_targets_carry_refits_the_evaluated_layer_and_continues_the_targets(tmp_path):
    import torch

    stdp = dict(clusterer="stdp", stdp=QUICK_STDP, seed=2,
                stdp_carry="targets", **SMALL)
    a = train(TrainConfig(epochs=2, **stdp), tmp_path / "a", quiet=True)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt")
    per_fit = 1 + 3  # one online pass and the consolidation passes
    assert ck["clusterer"]["targets"]["passes"] == 3 * per_fit  # epochs 0-2, carried
    assert ck["clusterer"]["evaluated"]["passes"] == per_fit  # fitted at epoch 2 alone
    assert a[-1]["stdp_passes"] == per_fit and min(a[-1]["cluster_sizes"]) > 0
    assert a[-1]["targets_stdp_passes"] == 3 * per_fit  # the targets layer's own counters
    train(TrainConfig(epochs=1, **stdp), tmp_path / "b", quiet=True)
    b = train(TrainConfig(epochs=2, **stdp), tmp_path / "b", resume=True, quiet=True)
    assert strip_times(b) == strip_times(a)
    # k_train == k: one layer evaluates and makes the targets, and it goes on.
    one = train(TrainConfig(epochs=1, **{**stdp, "k_train": 10}), tmp_path / "c", quiet=True)
    assert one[-1]["stdp_passes"] == 2 * per_fit
    assert not any(key.startswith("targets_") for key in one[-1])


def test_thread_count_survives_the_spiking_layer():
    """numba's OpenMP layer shares libgomp with torch; a parallel predict must not unpin it."""
    import numba
    import torch

    from deepstdp.clustering.stdp.estimator import STDPClustering
    from deepstdp.runtime import threads

    before = torch.get_num_threads()
    with threads.pinned(1):
        z = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
        STDPClustering(3, time=20, epochs=1).fit(z).predict(z)
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        with threads.pinned(2):  # rank 0 clustering while the other processes wait
            STDPClustering(3, time=20, epochs=1).fit(z).predict(z)
            assert torch.get_num_threads() == 2 and numba.get_num_threads() == 2
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_overclustered_targets_and_evaluation_at_k(tmp_path):
    import torch

    train(TrainConfig(epochs=1, **{**SMALL, "k_train": 40}), tmp_path / "a", quiet=True)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt")  # plain torch.load: weights only
    assert ck["k"] == 10 and int(ck["labels"].max()) == 9
    assert int(ck["targets"].max()) == 39 and ck["prototypes"].shape == (40, 128)
    assert torch.allclose(ck["prototypes"].norm(dim=1), torch.ones(40), atol=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").open()]
    assert len(rows[-1]["cluster_sizes"]) == 10 and 0 <= rows[-1]["knn_acc"] <= 1
    assert rows[-1]["knn_acc"] > 0.5 and rows[-1]["probe_acc"] > 0.5  # digits: easy features


def test_reset_head_sinkhorn_and_shuffle_options_run_and_balance(tmp_path):
    import torch

    cfg = TrainConfig(epochs=1, head="reset", balance="sinkhorn", sampling="shuffle", views=1,
                      proj_dim=0, **SMALL)
    rows = train(cfg, tmp_path / "a", quiet=True)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt")  # plain torch.load: weights only
    sizes = np.bincount(ck["targets"].numpy(), minlength=20)
    assert sizes.min() > 0.5 * sizes.mean() and sizes.max() < 1.5 * sizes.mean()
    assert rows[-1]["target_sizes_min_max"] == [int(sizes.min()), int(sizes.max())]
    assert ck["prototypes"].shape == (20, 64)  # proj_dim 0: the features are clustered


def test_confident_targets_train_and_a_run_with_them_resumes_exactly(tmp_path):
    import torch

    cfg = dict(epochs=2, seed=1, target_keep=0.5, **SMALL)
    a = train(TrainConfig(**cfg), tmp_path / "a", quiet=True)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt")  # plain torch.load: weights only
    keep, targets = ck["target_keep"].numpy(), ck["targets"].numpy()
    for c in np.unique(targets):  # the surer half (rounded up) of every cluster
        assert keep[targets == c].sum() == np.ceil(0.5 * (targets == c).sum())
    assert all(abs(r["target_trained"] - keep.mean()) < 1e-12 for r in a[-1:])
    assert a[0]["target_kept"] is None and 0 < a[1]["target_kept"] <= 1
    train(TrainConfig(**{**cfg, "epochs": 1}), tmp_path / "b", quiet=True)
    b = train(TrainConfig(**cfg), tmp_path / "b", resume=True, quiet=True)
    assert strip_times(b) == strip_times(a)


def test_precision_auto_is_a_measured_choice():
    import torch

    from deepstdp.network.models import ConvNet
    from deepstdp.runtime.devices import choose, native_bf16
    from deepstdp.runtime.util import SettingError

    cpu = torch.device("cpu")
    model = ConvNet(3, 4, widths="8,M", feat_dim=16, sobel=False, proj_dim=8)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert choose("bf16", cpu, model, x).precision == "bf16"
    assert choose("fp32", cpu, model, x).precision == "fp32"
    with pytest.raises(SettingError, match="fp16 needs a CUDA or MPS device"):
        choose("fp16", cpu, model, x)
    before = [p.clone() for p in model.parameters()]
    choice = choose("auto", cpu, model, x).precision
    assert choice in ("bf16", "fp32") and (native_bf16() or choice == "fp32")
    assert all((a == b).all() for a, b in zip(before, model.parameters(), strict=True))


def test_recipes_resolve_and_explicit_settings_override_them(tmp_path):
    from deepstdp.cli import build_parser, config_from_args
    from deepstdp.config import RECIPES

    dc = TrainConfig.of_recipe("deepcluster")
    assert (dc.head, dc.sobel, dc.views, dc.pool, dc.lr, dc.schedule) == \
        ("reset", True, 1, "max", 0.05, "constant")
    assert TrainConfig.of_recipe("paper").image_size == 64
    assert TrainConfig.of_recipe("v2") == TrainConfig()
    assert TrainConfig.of_recipe("deepcluster", lr=0.01).lr == 0.01

    def parsed(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    cfg = parsed("--recipe", "deepcluster", "--lr", "0.01", "--views", "2")
    assert (cfg.recipe, cfg.lr, cfg.views, cfg.head) == ("deepcluster", 0.01, 2, "reset")
    # A config file's values stand over its recipe; --recipe replaces the file's recipe.
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"recipe": "deepcluster", "batch_size": 64}))
    cfg = parsed("--config", str(path))
    assert (cfg.batch_size, cfg.head) == (64, "reset")
    cfg = parsed("--config", str(path), "--recipe", "v2")
    assert (cfg.recipe, cfg.batch_size, cfg.head) == ("v2", 64, "centroid")
    # config.json stores every value resolved: it loads as it ran.
    run = tmp_path / "run"
    train(TrainConfig.of_recipe("deepcluster", epochs=1, **SMALL), run, quiet=True)
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe"] == "deepcluster" and saved["head"] == "reset"
    assert all(saved[k] == v for k, v in {**RECIPES["deepcluster"], **SMALL}.items())
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["mv_clusters"] == 20 and 0 <= row["val_mv_acc"] <= 1 and row["mv_acc"] >= 0.3


def test_a_run_saved_before_the_recipes_and_majority_vote_loads_and_reports(tmp_path):
    from deepstdp.conversion.evaluation import evaluate_run

    run = tmp_path / "run"
    train(TrainConfig(epochs=1, **SMALL), run, quiet=True)
    config = json.loads((run / "config.json").read_text())
    del config["recipe"]  # as 0.8 wrote it
    (run / "config.json").write_text(json.dumps(config))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        del r["mv_acc"], r["val_mv_acc"], r["mv_clusters"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from deepstdp.run.rundir import RunDir

    assert RunDir(run).saved_config() == TrainConfig(epochs=1, **SMALL)
    ann = evaluate_run(run)["ann"]
    assert 0 <= ann["mv_acc"] <= 1 and 0 <= ann["val_mv_acc"] <= 1
    from deepstdp.measures.report import plot_curves

    plot_curves(rows, tmp_path / "curves.png", "old run")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_the_spiking_layers_show_their_progress_when_asked(capsys, monkeypatch):
    from deepstdp.loop.training import fit_clusterings

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    cfg = TrainConfig(clusterer="stdp", stdp={"time": 50, "epochs": 1, "n_init": 1}, seed=2,
                      **SMALL)
    emb = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    _, quiet = fit_clusterings(cfg, emb, None, None, 10, 20, 0)
    assert "spiking layer" not in capsys.readouterr().err
    _, loud = fit_clusterings(cfg, emb, None, None, 10, 20, 0, progress=True)
    err = capsys.readouterr().err
    assert "spiking layer (10 clusters)" in err and "spiking layer (20 clusters)" in err
    np.testing.assert_array_equal(quiet.evaluated.labels_, loud.evaluated.labels_)
    fit_clusterings(cfg, emb, loud, None, 10, 20, 1, progress=True)  # the targets layer carried on
    assert "spiking layer (20 clusters)" in capsys.readouterr().err


def test_a_resume_without_settings_takes_the_saved_ones(tmp_path):
    from deepstdp.runtime.util import DeepSTDPError

    cfg = TrainConfig(epochs=1, seed=3, **SMALL)
    with pytest.raises(DeepSTDPError, match="only a resume takes the saved ones"):
        train(None, tmp_path / "run")
    train(cfg, tmp_path / "run", quiet=True)
    rows = train(None, tmp_path / "run", resume=True, quiet=True)
    assert [r["epoch"] for r in rows] == [0, 1]  # nothing left to do: the saved run's epochs
    with pytest.raises(DeepSTDPError, match="nothing to resume"):
        train(None, tmp_path / "none", resume=True)


def test_warm_k_means_starts_from_last_epochs_clusters_and_resumes_exactly(tmp_path):
    from deepstdp.loop.training import warm_centres

    z = np.arange(12, dtype=np.float32).reshape(6, 2)
    centres = warm_centres(z, np.array([0, 0, 1, 1, 1, 0]), 3, seed=0)
    np.testing.assert_allclose(centres[:2], [[4, 5], [6, 7]])
    assert any(np.array_equal(centres[2], row) for row in z)  # an empty cluster: an image
    warm = dict(kmeans_warm=True, seed=4, **SMALL)
    a = train(TrainConfig(epochs=2, **warm), tmp_path / "a", quiet=True)
    assert a[-1]["acc"] > 0.3 and min(a[-1]["cluster_sizes"]) > 0
    assert 1 <= a[-1]["kmeans_iterations"] <= 100 and a[-1]["targets_kmeans_iterations"] >= 1
    train(TrainConfig(epochs=1, **warm), tmp_path / "b", quiet=True)
    b = train(TrainConfig(epochs=2, **warm), tmp_path / "b", resume=True, quiet=True)
    assert strip_times(b) == strip_times(a)


def test_the_probes_run_every_few_epochs_and_always_at_the_first_and_last(tmp_path):
    rows = train(TrainConfig(epochs=3, probe_every=2, **SMALL), tmp_path / "run", quiet=True)
    measured = [r["knn_acc"] is not None and r["probe_acc"] is not None for r in rows]
    assert measured == [True, False, True, True]
    assert rows[1]["acc"] is not None and rows[-1]["peak_memory_gib"] > 0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
