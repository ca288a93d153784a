"""`deepstdp compare`: one run per (clusterer, seed) on identical settings, then the summary.

OUT/
  compare.json    the settings: the base TrainConfig, the clusterers and the seeds
  runs/CLUSTERER-seedS/   an ordinary run directory (deepstdp.run.rundir) per run, with its
                          converted network and spiking evaluation when the summary has them
  summary.json, report.md, curves.png, clusters.png, confusion.png   the summary

A stopped comparison resumes run by run, by the rule a run resumes by (rundir), and any one of
its runs can be inspected or resumed with `deepstdp train` alike.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepstdp.config import TrainConfig
from deepstdp.conversion.settings import AGREEMENT, SpikingCheck
from deepstdp.loop.training import TIMES, train
from deepstdp.registry import check_settings
from deepstdp.run.rundir import (
    CLUSTERS,
    COMPARISON,
    CONFUSION,
    CURVES,
    REPORT,
    RUNS,
    SUMMARY,
    RunDir,
    changed_settings,
    check_start,
)
from deepstdp.runtime import threads
from deepstdp.runtime.util import DeepSTDPError, SettingError, write_json_atomic, write_text_atomic
from deepstdp.runtime.workers import init_worker

METRICS = ("acc", "nmi", "ari", "val_acc", "val_nmi", "val_ari", "knn_acc", "probe_acc",
           "mv_acc", "val_mv_acc")
"""Per-epoch metrics read from each run; a run written by 0.8 or before lacks the majority
vote (`mv_acc`, `val_mv_acc`), which then reads as NaN and its readouts are left out."""
READOUTS = {"hungarian": ("acc", "acc"), "majority": ("mv_acc", "mv_acc"),
            "cross_protocol": ("acc", "mv_acc")}
"""The comparisons of the summary, as (baseline's metric, challenger's metric): each scored
the deep-clustering way (k clusters matched one to one to the classes, Hungarian), each
scored Diehl & Cook's way (the k_train target clusters named by majority vote), and the
mismatch of the two protocols (k-means by Hungarian against STDP by majority vote) that the
paper's figures may stand on, reported as what it is (docs/reproduction.md)."""


def run_dir(out: Path, clusterer: str, seed: int) -> Path:
    return out / RUNS / f"{clusterer}-seed{seed}"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return RunDir(path).metrics()


def _one_run(job: tuple[TrainConfig, str, bool]) -> str:
    cfg, out, quiet = job
    run = RunDir(out)
    if run.finished(cfg.epochs):
        return f"{run.path.name}: already complete"
    train(cfg, out, resume=run.holds_run(), quiet=quiet)
    return f"{run.path.name}: done"


def check_comparison(base: TrainConfig, clusterers: list[str], out: Path, spec: dict[str, Any],
                     resume: bool, force: bool) -> None:
    """Refuse a comparison that could not proceed, before anything is written: the settings
    of every run, the data, and what OUT already holds."""
    from deepstdp.data.datasets import load_dataset

    check_runs(base, clusterers, spec["seeds"])
    check_start(out, "comparison", resume, force)
    if resume:
        saved = read_spec(out)
        diff = changed_settings(TrainConfig.from_saved(saved["base"]), base)
        diff += [k for k in ("clusterers", "seeds") if saved[k] != spec[k]]
        if diff:
            raise DeepSTDPError(f"cannot resume {out}: the comparison's settings differ "
                                f"({', '.join(diff)})")
    load_dataset(base.dataset, "train", **base.set_options())


def check_runs(base: TrainConfig, clusterers: list[str], seeds: list[int]) -> None:
    """Every run's settings are valid; a bad clusterer or seed is named as the list's."""
    for c in clusterers:
        for s in seeds:
            try:
                check_settings(dataclasses.replace(base, clusterer=c, seed=s))
            except SettingError as e:
                if e.setting in ("clusterer", "seed"):
                    raise SettingError(f"{e.setting}s", e.problem) from None
                raise


def read_spec(out: Path) -> dict[str, Any]:
    """compare.json, with one clear error when it is missing, unreadable or foreign."""
    path = out / COMPARISON
    if not path.exists():
        raise DeepSTDPError(f"{out} holds no comparison: {path} not found")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeepSTDPError(f"{path} is not valid JSON ({e}); start the comparison afresh "
                            "(force)") from None
    if not isinstance(spec, dict) or not {"base", "clusterers", "seeds"} <= set(spec):
        raise DeepSTDPError(f"{path} is not a deepstdp comparison; start it afresh (force)")
    return spec


def run_all(base: TrainConfig, clusterers: list[str], seeds: list[int], out: Path,
            jobs: int = 1, resume: bool = False, force: bool = False,
            quiet: bool = False) -> None:
    """Train every (clusterer, seed), seed by seed, so that a comparison stopped early holds
    whole pairs; `jobs` runs side by side share the cores between them (and print no epoch
    lines, which would interleave)."""
    spec = {"base": base.to_dict(), "clusterers": clusterers, "seeds": seeds}
    threads.check(jobs, "jobs")
    if jobs * (base.threads or 1) > threads.available():
        raise SettingError("jobs", f"times threads ({jobs} x {base.threads}) must be at most "
                                   f"the {threads.available()} CPUs this process may use")
    check_comparison(base, clusterers, out, spec, resume, force)
    if force:
        shutil.rmtree(out / RUNS, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / COMPARISON, spec)
    n = base.threads or max(1, threads.resolve(None) // jobs)
    work = [(dataclasses.replace(base, clusterer=c, seed=s, threads=n),
             str(run_dir(out, c, s)), quiet or jobs > 1) for s in seeds for c in clusterers]
    t0 = time.perf_counter()
    if jobs == 1:
        for i, msg in enumerate(map(_one_run, work), 1):
            print(f"[{i}/{len(work)}] {msg}  ({time.perf_counter() - t0:.0f}s)", flush=True)
        return
    pool = mp.get_context("spawn").Pool(jobs, initializer=init_worker, initargs=(os.getpid(),))
    try:
        for i, msg in enumerate(pool.imap_unordered(_one_run, work), 1):
            print(f"[{i}/{len(work)}] {msg}  ({time.perf_counter() - t0:.0f}s)", flush=True)
        pool.close()
    except BaseException:
        pool.terminate()  # stop the workers now; their runs resume from the last checkpoint
        raise
    finally:
        pool.join()


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def curves(out: Path, clusterer: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per-metric (seeds, epochs) arrays plus cumulative wall seconds, for one clusterer."""
    runs = [read_metrics(run_dir(out, clusterer, s)) for s in seeds]
    n = min(len(r) for r in runs)
    if n == 0:
        raise DeepSTDPError(f"no finished epoch for {clusterer} in {out}")
    res = {m: np.array([[row.get(m, np.nan) for row in r[:n]] for r in runs], dtype=float)
           for m in METRICS}
    res["seconds"] = np.array([np.cumsum([sum(row[t] for t in TIMES) for row in r[:n]])
                               for r in runs])
    res["epoch"] = np.array([row["epoch"] for row in runs[0][:n]])
    return res


LAST_EPOCHS = 5
"""`last_acc`: each run's ACC averaged over its last epochs. One epoch's k = 10 clustering is a
noisy draw (late in a run, on features that barely move, it varies by about a point from epoch
to epoch), so a final-epoch difference between two clusterers of that size says little."""


def first_reaching(mean_curve: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(mean_curve >= target - 1e-12)
    return int(hits[0]) if len(hits) else None


def summarise(out: Path, clusterers: list[str], seeds: list[int], baseline: str = "kmeans",
              challenger: str = "stdp",
              data: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """The summary.json object; `data` is `curves` per clusterer, read from `out` if not given.

    Per clusterer, the final metrics and each readout's final, best and last-epochs ACC; under
    `readouts`, per comparison of READOUTS, the challenger's gain over the baseline and the
    iso-accuracy speed-up."""
    summary: dict[str, Any] = {"seeds": seeds}
    data = data or {c: curves(out, c, seeds) for c in clusterers}
    for c, d in data.items():
        summary[c] = {f"final_{m}": _stats(d[m][:, -1].tolist()) for m in METRICS}
        for m in ("acc", "mv_acc"):
            summary[c][f"best_{m}"] = _stats(d[m].max(axis=1).tolist())
            summary[c][f"last_{m}"] = _stats(d[m][:, -LAST_EPOCHS:].mean(axis=1).tolist())
            summary[c][f"{m}_curve"] = d[m].mean(axis=0).tolist()
        summary[c]["best_val_acc"] = _stats(d["val_acc"].max(axis=1).tolist())
        summary[c]["epoch0_acc"] = _stats(d["acc"][:, 0].tolist())
        summary[c]["epoch0_knn_acc"] = _stats(d["knn_acc"][:, 0].tolist())
        summary[c]["seconds_per_epoch"] = float(np.diff(d["seconds"], axis=1).mean())
    summary["epochs"] = int(min(d["epoch"][-1] for d in data.values()))
    summary["last_epochs"] = LAST_EPOCHS
    if baseline in data and challenger in data:
        summary["readouts"] = {
            name: gains(data[baseline], data[challenger], summary[baseline], summary[challenger],
                        mb, mc, baseline, challenger)
            for name, (mb, mc) in READOUTS.items()
            if np.isfinite(data[baseline][mb]).all() and np.isfinite(data[challenger][mc]).all()}
    return summary


def gains(b: dict[str, np.ndarray], c: dict[str, np.ndarray], bs: dict[str, Any],
          cs: dict[str, Any], mb: str, mc: str, baseline: str,
          challenger: str) -> dict[str, Any]:
    """The challenger's curves `c[mc]` against the baseline's `b[mb]`: relative and absolute
    gain of the final, best and last-epochs means, and iso-accuracy: the epoch at which each
    mean curve first reaches the baseline's best mean (epoch e = e epochs trained), and the
    speed-up in epochs and in seconds."""
    res: dict[str, Any] = {"baseline_metric": mb, "challenger_metric": mc}
    for when in ("final", "best", "last"):
        bm, cm = bs[f"{when}_{mb}"]["mean"], cs[f"{when}_{mc}"]["mean"]
        res[f"relative_gain_pct_{when}"] = 100 * (cm - bm) / bm
        res[f"absolute_gain_{when}"] = cm - bm
    bcurve, ccurve = b[mb].mean(0), c[mc].mean(0)
    target = float(bcurve.max())
    eb, ec = first_reaching(bcurve, target), first_reaching(ccurve, target)
    res["iso_accuracy_target"] = target
    res["iso_accuracy_epoch"] = {baseline: eb, challenger: ec}
    res["iso_accuracy_speedup_epochs"] = None if ec is None or ec == 0 else eb / ec
    res["iso_accuracy_speedup_seconds"] = (
        None if ec is None else float(b["seconds"].mean(0)[eb] / c["seconds"].mean(0)[ec]))
    return res


def spiking_summary(out: Path, clusterers: list[str], seeds: list[int],
                    check: SpikingCheck, progress: bool = False) -> dict[str, Any]:
    """Per clusterer, mean ± std over seeds at each run's smallest T whose train agreement
    with its CNN's clusters reaches AGREEMENT (the largest T simulated where none does): T,
    agreement (train, val, the surer half), SOPs / MACs and energy. Each run is converted
    (spiking.pt, with its saved settings or the defaults) and simulated; its own spiking.json,
    .md and .png are written as by `deepstdp evaluate --spiking`."""
    from deepstdp.conversion.evaluation import evaluate_run

    keys = ("timesteps", "agreement", "val_agreement", "agreement_confident", "sops_per_mac",
            "energy_snn_uj", "energy_ann_uj")
    res: dict[str, Any] = {"readout": check.readout, "coding": check.coding,
                           "target_agreement": AGREEMENT,
                           "images_per_split": check.limit}
    for c in clusterers:
        picked = []
        for s in seeds:
            rows = evaluate_run(run_dir(out, c, s), check.steps, limit=check.limit,
                                threads=check.threads, readout=check.readout,
                                coding=check.coding, progress=progress)["rows"]
            row = next((r for r in rows if r["agreement"] >= AGREEMENT), rows[-1])
            picked.append({**row, "sops_per_mac": row["sops_per_image"] / row["macs_per_image"],
                           "reached": row["agreement"] >= AGREEMENT})
        res[c] = {k: _stats([p[k] for p in picked]) for k in keys
                  if all(p[k] is not None for p in picked)}
        res[c]["reached"] = sum(p["reached"] for p in picked)
    return res


def write_report(out: Path, clusterers: list[str], seeds: list[int],
                 command: str, spiking: SpikingCheck | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """summary.json, report.md and its pictures, from the finished runs in OUT/runs; with
    `spiking`, each run's converted network too (spiking_summary)."""
    from deepstdp.data.datasets import load_dataset
    from deepstdp.measures.metrics import contingency
    from deepstdp.measures.report import (
        comparison_markdown,
        plot_cluster_grid,
        plot_compare_curves,
        plot_confusion,
    )

    data = {c: curves(out, c, seeds) for c in clusterers}
    summary = summarise(out, clusterers, seeds, data=data)
    if spiking is not None:
        summary["spiking"] = spiking_summary(out, clusterers, seeds, spiking, progress)
    write_json_atomic(out / SUMMARY, summary)
    plot_compare_curves(data, out / CURVES, f"{out.name}: {', '.join(clusterers)}, mean ± std "
                                            f"over seeds {seeds}")
    # Summed over runs from their own logs, so a resumed comparison still counts every epoch.
    seconds = sum(float(d["seconds"][:, -1].sum()) for d in data.values())
    # Pictures of the last seed's final clustering, for the Deep-STDP run if there is one.
    shown = "stdp" if "stdp" in clusterers else clusterers[-1]
    run = run_dir(out, shown, seeds[-1])
    ck = RunDir(run).load_checkpoint()
    cfg = ck.config
    labels = np.asarray(ck.labels)
    train_set = load_dataset(cfg.dataset, "train", **cfg.set_options(), progress=False)
    plot_cluster_grid(train_set.images, labels, out / CLUSTERS,
                      title=f"{out.name}: {shown}, seed {seeds[-1]}, epoch {ck.epoch}")
    m = contingency(train_set.labels, labels)
    plot_confusion(m, train_set.classes, out / CONFUSION,
                   f"{out.name}: {shown}, seed {seeds[-1]}, epoch {ck.epoch}")
    write_text_atomic(out / REPORT, comparison_markdown(summary, clusterers, command, seconds,
                                                        (CURVES, CLUSTERS, CONFUSION)))
    return summary
