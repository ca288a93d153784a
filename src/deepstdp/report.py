"""Figures of a run: learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deepstdp.util import atomic_write  # noqa: E402


def plot_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """ACC, NMI and ARI per epoch, train solid and val dashed."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    for ax, m in zip(axes, ("acc", "nmi", "ari"), strict=True):
        ax.plot(epochs, [r[m] for r in rows], "o-", ms=3, label="train")
        ax.plot(epochs, [r[f"val_{m}"] for r in rows], "s--", ms=3, label="val")
        ax.set_title(m.upper())
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
