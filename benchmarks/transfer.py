"""A trained run's network on another data set's images: do its features transfer?

Issue 36's question: does a network trained on all 200 classes of Tiny ImageNet (20x the
unlabelled images) cluster the 10-class subsets better than networks trained on those subsets
alone? For each run and each data set this prints what the loop reports every epoch, measured
on that set's own train/val split with the run's network frozen:

- val k-NN and linear-probe accuracy of the features (measures.probes, the loop's settings);
- the clusters at k = the set's class count: the loop's pipeline (embedding, a PCA-whitening
  fitted to the set's train embeddings, the run's own clusterer kind and settings from the
  registry), ACC / NMI on train and ACC on val, mean +- std over `--seeds` clusterer seeds.

The images are resized to the run's image size and normalised by the run's own training
statistics, as `deepstdp predict` does. Labels are read only to score.

    python benchmarks/transfer.py RUN_DIR [RUN_DIR ...] --data-root ../shared/data \
        ../shared/data/second10 [--seeds 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepstdp.clustering.pca import PCAWhitening
from deepstdp.data.datasets import ImageTensor, load_dataset
from deepstdp.measures.metrics import cluster_metrics
from deepstdp.measures.probes import knn_accuracy, linear_probe_accuracy
from deepstdp.network.features import embed, extract_features
from deepstdp.registry import make_clusterer
from deepstdp.run.loaded import LoadedRun, load_run
from deepstdp.run.rundir import check_output_file
from deepstdp.runtime import threads
from deepstdp.runtime.util import DeepSTDPError, write_json_atomic


def transfer(run: LoadedRun, data_root: str, seeds: list[int]) -> dict:
    """The run's frozen network on the tiny-imagenet-layout set at `data_root`."""
    cfg, ck = run.config, run.checkpoint
    sets = {s: load_dataset("tiny-imagenet", s, data_root=data_root, progress=False)
            for s in ("train", "val")}
    feats = {s: extract_features(run.model, ImageTensor(d.images, ck.input_mean, ck.input_std,
                                                        cfg.image_size))
             for s, d in sets.items()}
    y_train, y_val = sets["train"].labels, sets["val"].labels
    args = (feats["train"], y_train, feats["val"], y_val)
    res = {"epoch": ck.epoch, "data_root": data_root,
           "knn_acc": knn_accuracy(*args, k=cfg.knn_k), "probe_acc": linear_probe_accuracy(*args)}
    k = int(y_train.max()) + 1
    emb_train, emb_val = embed(run.model, feats["train"]), embed(run.model, feats["val"])
    pca = PCAWhitening(cfg.pca_dim).fit(emb_train)
    z_train, z_val = pca.transform(emb_train), pca.transform(emb_val)
    scores: dict[str, list[float]] = {"acc": [], "nmi": [], "val_acc": []}
    for seed in seeds:
        clusterer = make_clusterer(cfg, k, seed)
        clusterer.fit(z_train)
        train_m = cluster_metrics(y_train, clusterer.labels_)
        scores["acc"].append(train_m["acc"])
        scores["nmi"].append(train_m["nmi"])
        scores["val_acc"].append(cluster_metrics(y_val, clusterer.predict(z_val))["acc"])
    res.update({m: [float(np.mean(v)), float(np.std(v))] for m, v in scores.items()})
    res.update(k=k, clusterer=cfg.clusterer, seeds=seeds)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (their checkpoint.pt)")
    p.add_argument("--data-root", nargs="+", required=True,
                   help="folders in Tiny ImageNet's layout (train/ and val/)")
    p.add_argument("--seeds", type=int, default=5, help="clusterer seeds (default 5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    a = p.parse_args()
    if not 1 <= a.seeds <= 100:
        p.error(f"--seeds must be in [1, 100], got {a.seeds}")
    try:  # every input checked before any work; a library error is one line, exit 2
        threads.check(a.threads)
        if a.json:
            check_output_file(a.json, a.force)
        runs = [(path, load_run(path)) for path in a.runs]
        rows = []
        with threads.pinned(a.threads):
            for path, run in runs:
                for root in a.data_root:
                    t = time.perf_counter()
                    r = {"run": path, **transfer(run, root, list(range(a.seeds)))}
                    rows.append(r)
                    print(f"{path} (epoch {r['epoch']}, {r['clusterer']}) on {root}: "
                          f"k-NN {r['knn_acc']:.3f}  probe {r['probe_acc']:.3f}  "
                          f"ACC {r['acc'][0]:.3f} +- {r['acc'][1]:.3f}  "
                          f"NMI {r['nmi'][0]:.3f}  val ACC {r['val_acc'][0]:.3f}  "
                          f"(k = {r['k']}, {len(r['seeds'])} seeds, "
                          f"{time.perf_counter() - t:.0f} s)", flush=True)
    except DeepSTDPError as e:
        p.error(str(e))
    if a.json:
        write_json_atomic(a.json, rows)


if __name__ == "__main__":
    main()
