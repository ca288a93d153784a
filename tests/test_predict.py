"""Your own images end to end: train on an image folder, assign new images (`deepstdp
predict`), with and without labels."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.data.datasets import Data
from deepstdp.loop.training import train
from deepstdp.run.loaded import load_run
from deepstdp.run.predict import predict_images

SMALL = dict(widths="16,M", feat_dim=32, pca_dim=8, image_size=8, threads=1, precision="fp32",
             k_train=6, epochs=1, dataset="folder", batch_size=16)
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def folder(root: Path, labelled: bool = True, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (8, 8, 3)), 0, 255)
            where = root / name if labelled else root
            where.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(where / f"{name}{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("own")
    images = folder(base / "images")
    train(TrainConfig(data_root=str(images), **SMALL), base / "run", quiet=True)
    return base / "run"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_gives_the_runs_own_clusters_and_ignores_the_batch(run, tmp_path, capsys):
    loaded = load_run(run)
    cfg = loaded.config
    data = Data(**cfg.data_options())
    z = loaded.embeddings(data.x_train)
    # The training images' files, in the order the folder loader lists them.
    files = sorted(Path(cfg.data_root).rglob("*.png"))
    out = tmp_path / "clusters.csv"
    assert main(["predict", str(run), cfg.data_root, "--out", str(out), "--quiet",
                 "--threads", "1"]) == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert set(rows[0]) == {"path", "cluster", "target_cluster", "margin"}
    by_path = {r["path"]: r for r in rows}
    # Every training image: the cluster its run gives it (the folder keeps val images apart).
    both = predict_images(loaded, files)
    alone = [predict_images(loaded, [f], batch=1) for f in files[:5]]
    for i, one in enumerate(alone):
        assert one["cluster"][0] == both["cluster"][i]
        assert one["target_cluster"][0] == both["target_cluster"][i]
        assert one["margin"][0] == pytest.approx(both["margin"][i], rel=1e-5, abs=1e-6)
    assert int(by_path[str(files[0])]["cluster"]) == both["cluster"][0]
    train_pred = loaded.clusterer.predict(z)
    assert set(np.unique(train_pred)) <= set(range(loaded.checkpoint.k))
    # The run's own training images come out as it clusters them.
    assert np.isin(both["cluster"], np.arange(loaded.checkpoint.k)).all()
    assert sorted(np.bincount(both["cluster"], minlength=3))[-1] <= len(files)
    assert float(rows[0]["margin"]) >= 0


def test_predict_matches_the_run_on_its_training_images(run):
    loaded = load_run(run)
    data = Data(**loaded.config.data_options())
    # The folder loader keeps no paths, so rebuild the training images from the same pixels.
    z = loaded.embeddings(data.x_train)
    tmp = Path(loaded.config.data_root).parent / "again"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for i, image in enumerate(data.train.images[:20]):
        Image.fromarray(image).save(tmp / f"{i:03d}.png")
    got = predict_images(loaded, sorted(tmp.iterdir()))
    assert np.array_equal(got["cluster"], loaded.clusterer.predict(z[:20]))
    assert np.array_equal(got["target_cluster"], loaded.targets.predict(z[:20]))


def test_predict_refuses_bad_input_in_one_line_and_writes_nothing(run, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    out = tmp_path / "out.csv"
    assert main(["predict", str(run), str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err and not out.exists()
    assert main(["predict", str(run), str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    out.write_text("keep me")
    image = folder(tmp_path / "one", per_class=1) / "cat" / "cat0.png"
    assert main(["predict", str(run), str(image), "--out", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["predict", str(run), str(image), "--out", str(out), "--quiet", "--force"]) == 0
    assert len(read_csv(out)) == 1
    assert main(["predict", str(run), str(image), "--out", str(out), "--batch", "0",
                 "--force"]) == 2
    assert main(["predict", str(run), str(image), "--out", str(run / "config.json"),
                 "--force"]) == 2
    assert "files of" in capsys.readouterr().err


def test_a_folder_without_labels_trains_and_leaves_its_scores_out(tmp_path, capsys):
    images = folder(tmp_path / "flat", labelled=False)
    args = ["train", "--dataset", "folder", "--data-root", str(images), "--out",
            str(tmp_path / "run"), "--epochs", "1", "--widths", "16,M", "--feat-dim", "32",
            "--pca-dim", "8", "--image-size", "8", "--threads", "1", "--precision", "fp32",
            "--k-train", "6"]
    assert main(args) == 2
    assert "--k must be given" in capsys.readouterr().err
    args += ["--k", "3"]
    assert main(args) == 2
    assert "--batch-size = 128 exceeds the 32 training images" in capsys.readouterr().err
    assert main([*args, "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "ACC - NMI - ARI -" in out and "k-NN - probe -" in out and "no labels" in out
    rows = load_run(tmp_path / "run").checkpoint.metrics
    assert rows[-1]["acc"] is None and rows[-1]["nmi_prev"] is not None
    assert sum(rows[-1]["cluster_sizes"]) == 32 and rows[-1]["loss"] > 0
    assert main(["evaluate", str(tmp_path / "run"), "--threads", "1", "--quiet"]) == 0
    assert "CNN      ACC - NMI - ARI -" in capsys.readouterr().out
