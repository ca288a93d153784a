"""Optional TensorBoard logging of a run: every numeric metric and every picture, per epoch.

`pip install 'deepstdp[tensorboard]'`; then `tensorboard --logdir RUN/tensorboard`. A resumed run
purges the events after its checkpoint's epoch, so a crash never leaves the same epoch twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deepstdp.run.rundir import TENSORBOARD
from deepstdp.runtime.util import DeepSTDPError


def check_available() -> None:
    """Raise the install hint now, before a run directory is touched."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise DeepSTDPError("TensorBoard logging needs the tensorboard package: "
                            "pip install 'deepstdp[tensorboard]'") from None


class TensorBoardLog:
    def __init__(self, run_dir: Path, first_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        check_available()
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=first_epoch or None)

    def write(self, row: dict[str, Any], pictures: Iterable[Path]) -> None:
        """The row's numbers as scalars (grouped: train/, val/, probe/, time/, ...) and the
        PNG pictures as images, all at step = epoch."""
        from matplotlib.image import imread

        epoch = row["epoch"]
        for key, value in row.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key != "epoch" and number and math.isfinite(value):
                self.writer.add_scalar(_tag(key), value, epoch)
        for path in pictures:
            if path.exists():
                self.writer.add_image(path.stem, imread(path)[..., :3], epoch,
                                      dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tag(key: str) -> str:
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key.startswith("time_"):
        return f"time/{key[5:]}"
    if key in ("knn_acc", "probe_acc", "target_nmi"):
        return f"features/{key}"
    return f"train/{key}"
