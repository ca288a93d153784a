"""Figures and markdown of runs and comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepstdp.util import atomic_write  # noqa: E402


def plot_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """ACC, NMI and ARI per epoch (train solid, val dashed), and the feature diagnostics."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4), constrained_layout=True)
    for ax, m in zip(axes, ("acc", "nmi", "ari"), strict=False):
        ax.plot(epochs, [r[m] for r in rows], "o-", ms=3, label="train")
        ax.plot(epochs, [r[f"val_{m}"] for r in rows], "s--", ms=3, label="val")
        ax.set_title(m.upper())
    axes[0].legend()
    ax = axes[3]
    for m, label in (("knn_acc", "k-NN"), ("probe_acc", "linear probe")):
        ax.plot(epochs, [r.get(m, np.nan) for r in rows], "o-", ms=3, label=label)
    ax.set_title("features: val accuracy")
    ax.legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plot_compare_curves(data: dict[str, dict[str, Any]], path: str | Path) -> None:
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
                mean, std = vals.mean(0), vals.std(0)
                line, = ax.plot(d["epoch"], mean, "o-", ms=3, label=name)
                ax.fill_between(d["epoch"], mean - std, mean + std, color=line.get_color(),
                                alpha=0.2)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def plot_cluster_grid(images: Any, labels: Any, path: str | Path, per_cluster: int = 10,
                      seed: int = 0) -> None:
    """A row of random member images per cluster (largest cluster first)."""
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
    ax.set_xlabel("cluster")
    ax.set_title(title, fontsize=9)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def comparison_markdown(summary: dict[str, Any], names: list[str], command: str,
                        seconds: float) -> str:
    """report.md: the table of means and stds, the gains, and the pictures."""
    rows = [("train ACC (final)", "final_acc"), ("train ACC (best)", "best_acc"),
            ("train NMI", "final_nmi"), ("train ARI", "final_ari"),
            ("val ACC", "final_val_acc"), ("val NMI", "final_val_nmi"),
            ("val ARI", "final_val_ari"), ("val k-NN accuracy", "final_knn_acc"),
            ("val linear probe", "final_probe_acc"), ("train ACC at epoch 0", "epoch0_acc"),
            ("val k-NN at epoch 0", "epoch0_knn_acc")]
    lines = [
        "# Deep-STDP against DeepCluster (k-means)", "",
        f"{summary['epochs']} epochs, seeds {summary['seeds']}; mean ± std over seeds.", "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(summary[n][key]) for n in names) + " |")
    lines.append("| s/epoch | " + " | ".join(f"{summary[n]['seconds_per_epoch']:.1f}"
                                              for n in names) + " |")
    if "relative_acc_gain_pct" in summary:
        iso = summary["iso_accuracy_speedup_epochs"]
        iso_s = summary["iso_accuracy_speedup_seconds"]
        lines += [
            "",
            f"- Relative ACC gain of STDP over k-means (final): "
            f"{summary['relative_acc_gain_pct']:+.1f}% "
            f"({summary['absolute_acc_gain']:+.3f} ACC); at the best epoch: "
            f"{summary['relative_acc_gain_pct_best']:+.1f}%. Paper: +24.56%.",
            f"- Iso-accuracy (k-means's best mean ACC {summary['iso_accuracy_target']:.3f}): "
            + ", ".join(f"{name} never reaches it" if e is None
                        else f"{name} reaches it at epoch {e}"
                        for name, e in summary["iso_accuracy_epoch"].items())
            + " → speed-up "
            f"{'not reached' if iso is None else f'{iso:.2f}x'} in epochs, "
            f"{'not reached' if iso_s is None else f'{iso_s:.2f}x'} in seconds. Paper: 3.5x.",
        ]
    lines += [
        "", f"Command: `{command}`  ",
        f"Run time: {seconds / 60:.1f} min summed over the runs (divide by `--jobs` for wall "
        "time when runs go side by side).", "",
        "![curves](curves.png)", "", "![clusters](clusters.png)", "",
        "![confusion](confusion.png)", "",
    ]
    return "\n".join(lines)
