"""Figures and markdown of runs and comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from deepstdp.runtime.util import atomic_write  # noqa: E402


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    """A metric per row, NaN (no point) where a row lacks it or holds None (no labels)."""
    return [np.nan if r.get(key) is None else r[key] for r in rows]


def _measured(epochs: Any, values: Any, *more: Any) -> list[np.ndarray]:
    """The epochs where `values` is a number, with the values (and `more`, alike) there: the
    lines join the epochs measured across those skipped (`probe_every`)."""
    keep = np.isfinite(np.asarray(values, dtype=float))
    return [np.asarray(a)[keep] for a in (epochs, values, *more)]


def plot_curves(rows: list[dict[str, Any]], path: str | Path, title: str | None = None) -> None:
    """ACC, NMI and ARI per epoch (train solid, val dashed), the majority-vote readout of the
    target clusters beside ACC where the rows have it, and the feature diagnostics."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), constrained_layout=True)
    for ax, m in zip(axes, ("acc", "nmi", "ari"), strict=False):
        ax.plot(epochs, _values(rows, m), "o-", ms=3, label="train")
        ax.plot(epochs, _values(rows, f"val_{m}"), "s--", ms=3, label="val")
        ax.set_title(m.upper())
    if any("mv_acc" in r for r in rows):
        n = next(r["mv_clusters"] for r in rows if "mv_clusters" in r)
        axes[0].plot(epochs, _values(rows, "mv_acc"), "^-", ms=3,
                     label=f"train, majority vote of {n}")
        axes[0].plot(epochs, _values(rows, "val_mv_acc"), "v--", ms=3,
                     label=f"val, majority vote of {n}")
        axes[0].set_title("ACC (Hungarian at k; majority vote)")
    axes[0].legend(fontsize=8)
    ax = axes[3]
    for m, label in (("knn_acc", "k-NN"), ("probe_acc", "linear probe")):
        ax.plot(*_measured(epochs, _values(rows, m)), "o-", ms=3, label=label)
    ax.set_title("features: val accuracy")
    ax.legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plot_compare_curves(data: dict[str, dict[str, Any]], path: str | Path,
                        title: str | None = None) -> None:
    """Mean over seeds per clusterer with a +-1 std band; top row train, bottom row val, the
    right column the feature diagnostics (k-NN above, linear probe below)."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4), constrained_layout=True, sharex=True)
    panels = [[("acc", "train ACC"), ("nmi", "train NMI"), ("ari", "train ARI"),
               ("knn_acc", "val k-NN accuracy")],
              [("val_acc", "val ACC"), ("val_nmi", "val NMI"), ("val_ari", "val ARI"),
               ("probe_acc", "val linear-probe accuracy")]]
    for row, panel_row in enumerate(panels):
        for col, (m, title) in enumerate(panel_row):
            ax = axes[row, col]
            for name, d in data.items():
                vals = d[m]
                epochs, mean, std = _measured(d["epoch"], vals.mean(0), vals.std(0))
                line, = ax.plot(epochs, mean, "o-", ms=3, label=name)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(),
                                alpha=0.2)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend()
    for ax in axes[1]:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plot_cluster_grid(images: Any, labels: Any, path: str | Path, per_cluster: int = 10,
                      seed: int = 0, title: str | None = None) -> None:
    """A row of random member images per cluster (largest cluster first), under `title`."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-np.bincount(labels))
    order = [c for c in order if (labels == c).any()]
    fig, axes = plt.subplots(len(order), per_cluster, squeeze=False,
                             figsize=(per_cluster * 0.9, len(order) * 0.95))
    for r, c in enumerate(order):
        members = np.flatnonzero(labels == c)
        pick = rng.choice(members, min(per_cluster, len(members)), replace=False)
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(pick):
                img = images[pick[j]]
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        axes[r, 0].set_title(f"cluster {c} ({len(members)})", fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)


def plot_confusion(matrix: Any, class_names: list[str], path: str | Path, title: str) -> None:
    """Counts of each true class (rows) in each cluster (columns)."""
    fig, ax = plt.subplots(figsize=(1 + 0.45 * matrix.shape[1], 1 + 0.4 * matrix.shape[0]),
                           constrained_layout=True)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xticks(range(matrix.shape[1]))
    ax.tick_params(axis="x", labelsize=6)
    ax.set_xlabel("cluster")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _spiking_lines(spiking: dict[str, Any] | None, names: list[str]) -> list[str]:
    """The converted networks' table of report.md (none without a spiking check)."""
    if not spiking:
        return []
    rows = [("T (smallest with the agreement)", "timesteps"),
            ("agreement with the CNN, train", "agreement"),
            ("agreement, val", "val_agreement"),
            ("agreement, surer half (train)", "agreement_confident"),
            ("SOPs / MACs", "sops_per_mac"), ("energy SNN (uJ)", "energy_snn_uj"),
            ("energy CNN (uJ)", "energy_ann_uj")]
    images = spiking["images_per_split"]
    lines = ["", f"Spiking networks (each final CNN converted; {images or 'all'} images per "
             f"split; {READOUT_NAMES[spiking['readout']]} readout; "
             f"{CODING_NAMES[spiking.get('coding', 'synchronous')]}; T is each run's smallest "
             f"with train agreement >= {spiking['target_agreement']}):", "",
             "| spiking | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(
            _fmt(spiking[n][key]) if key in spiking[n] else "-" for n in names) + " |")
    lines.append("| runs reaching the agreement | " + " | ".join(
        str(spiking[n]["reached"]) for n in names) + " |")
    return lines


READOUT_TITLES = {
    "hungarian": "Hungarian ACC at k, both arms (the deep-clustering protocol)",
    "majority": "majority vote of the k_train target clusters, both arms (Diehl & Cook's "
                "protocol)",
    "cross_protocol": "STDP by majority vote against k-means by Hungarian ACC: a mismatch of "
                      "protocols, not a like-for-like gain",
}


def readout_lines(readouts: dict[str, dict[str, Any]]) -> list[str]:
    """One bullet per readout of the summary: the gains and the iso-accuracy speed-up."""
    lines = []
    for key, r in readouts.items():
        iso, iso_s = r["iso_accuracy_speedup_epochs"], r["iso_accuracy_speedup_seconds"]
        reach = ", ".join(f"{n} never reaches it" if e is None else f"{n} at epoch {e}"
                          for n, e in r["iso_accuracy_epoch"].items())
        lines.append(
            f"- **{READOUT_TITLES.get(key, key)}**: relative gain "
            f"{r['relative_gain_pct_final']:+.1f}% final "
            f"({r['absolute_gain_final']:+.3f}), {r['relative_gain_pct_last']:+.1f}% over the "
            f"last epochs, {r['relative_gain_pct_best']:+.1f}% at the best epoch; "
            f"iso-accuracy (the baseline's best mean {r['iso_accuracy_target']:.3f}: {reach}) "
            f"{'not reached' if iso is None else f'{iso:.2f}x'} in epochs, "
            f"{'not reached' if iso_s is None else f'{iso_s:.2f}x'} in seconds.")
    if lines:
        lines.append("- Paper (abstract): +24.56% ACC and 3.5x faster convergence at "
                     "iso-accuracy.")
    return lines


def comparison_markdown(summary: dict[str, Any], names: list[str], command: str,
                        seconds: float, pictures: Sequence[str]) -> str:
    """report.md: the table of means and stds, the gains per readout, and the `pictures`."""
    last = summary["last_epochs"]
    rows = [("train ACC (final)", "final_acc"),
            (f"train ACC (mean of the last {last} epochs)", "last_acc"),
            ("train ACC (best)", "best_acc"),
            ("train NMI", "final_nmi"), ("train ARI", "final_ari"),
            ("val ACC", "final_val_acc"), ("val NMI", "final_val_nmi"),
            ("val ARI", "final_val_ari"),
            ("train majority vote (final)", "final_mv_acc"),
            (f"train majority vote (mean of the last {last} epochs)", "last_mv_acc"),
            ("val majority vote", "final_val_mv_acc"),
            ("val k-NN accuracy", "final_knn_acc"),
            ("val linear probe", "final_probe_acc"), ("train ACC at epoch 0", "epoch0_acc"),
            ("val k-NN at epoch 0", "epoch0_knn_acc")]
    lines = [
        "# Deep-STDP against DeepCluster (k-means)", "",
        f"{plural(summary['epochs'], 'epoch')}, seeds {summary['seeds']}; mean ± std over "
        "seeds. ACC: the k evaluated clusters matched one to one to the classes (Hungarian); "
        "majority vote: each of the k_train target clusters (STDP: its neurons) named by the "
        "train class it holds most of, train and val scored by those names (labels name the "
        "clusters only; neither readout changes training).", "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key in rows:
        if all(np.isfinite(summary[n][key]["mean"]) for n in names):
            lines.append(f"| {label} | " + " | ".join(_fmt(summary[n][key]) for n in names)
                         + " |")
    lines.append("| s/epoch | " + " | ".join(f"{summary[n]['seconds_per_epoch']:.1f}"
                                              for n in names) + " |")
    if summary.get("readouts"):
        lines += ["", *readout_lines(summary["readouts"])]
    lines += _spiking_lines(summary.get("spiking"), names)
    lines += [
        "", f"Command: `{command}`  ",
        f"Run time: {seconds / 60:.1f} min summed over the runs (divide by `--jobs` for wall "
        "time when runs go side by side).", "",
    ]
    for picture in pictures:
        lines += [f"![{Path(picture).stem}]({picture})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- spiking evaluation


def plot_spiking(rows: list[dict[str, Any]], path: str | Path) -> None:
    """ACC and agreement with the CNN pipeline (train, val) against T; the CNN's ACC as lines."""
    ts = [r["timesteps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    ax.plot(ts, [r["acc"] for r in rows], "o-", label="ACC train (spiking)")
    ax.plot(ts, [r["val_acc"] for r in rows], "s-", label="ACC val (spiking)")
    ax.plot(ts, [r["agreement"] for r in rows], "^--", label="agreement with CNN (train)")
    ax.plot(ts, [r["val_agreement"] for r in rows], "v--", label="agreement with CNN (val)")
    ax.axhline(rows[0]["ann_acc"], color="C0", ls=":", label="ACC train (CNN)")
    ax.axhline(rows[0]["ann_val_acc"], color="C1", ls=":", label="ACC val (CNN)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("time steps T")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


READOUT_NAMES = {"count": "spike counts", "membrane": "integrated input"}
CODING_NAMES = {"binary": "binary code, layer by layer (T steps per layer, 2^T - 1 levels)",
                "layered": "rate code, layer by layer (T steps per layer, T levels)",
                "synchronous": "rate code, all layers stepping together (T steps)"}


def _surer(row: dict[str, Any]) -> str:
    """Agreement on the half of the images the clusterer is surest of, train / val ('-' for a
    clusterer without a margin, or a row written before 0.6)."""
    if row.get("agreement_confident") is None:
        return "-"
    return f"{row['agreement_confident']:.3f} / {row['val_agreement_confident']:.3f}"


def spiking_markdown(ann: dict[str, float], rows: list[dict[str, Any]], pj_per_mac: float,
                     pj_per_ac: float, picture: str) -> str:
    """spiking.md: the CNN, then per T the spiking pipeline's metrics, agreement and costs."""
    first = rows[0]
    head = ("| T | ACC | NMI | ARI | val ACC | val NMI | val ARI | agreement train / val | "
            "surer half train / val | SOPs/image | SOPs / MACs | energy (uJ) | ms/image |")
    lines = [
        "# Spiking evaluation", "",
        f"{first['images_train']} train and {first['images_val']} val images; simulated on "
        f"{first['threads']} thread(s); {CODING_NAMES[first.get('coding', 'synchronous')]}; "
        f"features read out from the feature layer's {READOUT_NAMES[first['readout']]}. "
        f"CNN: {first['macs_per_image'] / 1e6:.2f} M MACs per image "
        f"({first['input_macs_per_image'] / 1e6:.2f} M in the analog input stage). "
        f"Energy at 45 nm (Horowitz, ISSCC 2014): {pj_per_mac} pJ per MAC, {pj_per_ac} pJ per "
        "accumulate; the SNN's includes its analog stage and one add per step for each neuron "
        "with a constant input.", "",
        head, "|" + " ---: |" * len(head.strip("|").split("|")),
        f"| CNN | {ann['acc']:.3f} | {ann['nmi']:.3f} | {ann['ari']:.3f} | "
        f"{ann['val_acc']:.3f} | {ann['val_nmi']:.3f} | {ann['val_ari']:.3f} | - | - | - | - | "
        f"{first['energy_ann_uj']:.1f} | - |",
    ]
    for r in rows:
        lines.append(
            f"| {r['timesteps']} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} | "
            f"{r['val_acc']:.3f} | {r['val_nmi']:.3f} | {r['val_ari']:.3f} | "
            f"{r['agreement']:.3f} / {r['val_agreement']:.3f} | {_surer(r)} | "
            f"{r['sops_per_image'] / 1e6:.2f} M | "
            f"{r['sops_per_image'] / r['macs_per_image']:.2f} | {r['energy_snn_uj']:.1f} | "
            f"{r['seconds_per_image'] * 1e3:.2f} |")
    return "\n".join([*lines, "", f"![{Path(picture).stem}]({picture})", ""])
