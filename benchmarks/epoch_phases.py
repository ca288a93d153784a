"""Where a run's epochs went: seconds per phase, the share outside training, peak memory.

Reads the rows the loop writes (metrics.jsonl: `time_train`, `time_features`, `time_cluster`,
`time_eval`, `peak_memory_gib`, the process's peak resident memory so far) of each run
directory and prints one line per epoch, then the mean over the epochs that trained (1 on).
"Not training" is features + clustering + measuring, issue 36's target (at most 20% of the
epoch at 200 classes). The CPU is this machine's: run it where the runs ran.

    python benchmarks/epoch_phases.py RUN_DIR [RUN_DIR ...] [--from-epoch 1]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from deepstdp.loop.training import TIMES
from deepstdp.run.rundir import RunDir


def cpu_name() -> str:
    """The CPU's model name (with its family and model where /proc/cpuinfo has them)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--from-epoch", type=int, default=1,
                   help="first epoch of the mean (default 1: epoch 0 trains nothing)")
    a = p.parse_args()
    print(f"CPU here: {cpu_name()}")
    for path in a.runs:
        rows = RunDir(path).metrics()
        print(f"\n{path}: {len(rows)} epochs\n"
              f"{'epoch':>5} {'train':>8} {'features':>8} {'cluster':>8} {'measure':>8} "
              f"{'not training':>13} {'peak GiB':>8}  ACC / NMI, k-NN, probe")
        share = []
        for r in rows:
            t = [r[k] for k in TIMES]
            other = sum(t[1:])
            share.append((r["epoch"], t, other / sum(t)))
            peak = r.get("peak_memory_gib")
            extra = "  ".join(f"{r.get(m):.3f}" if r.get(m) is not None else "-"
                              for m in ("acc", "nmi", "knn_acc", "probe_acc"))
            print(f"{r['epoch']:5d} {t[0]:8.1f} {t[1]:8.1f} {t[2]:8.1f} {t[3]:8.1f} "
                  f"{other:8.1f} {100 * other / sum(t):3.0f}% "
                  f"{'-' if peak is None else f'{peak:.2f}':>8}  {extra}")
        late = [(t, s) for e, t, s in share if e >= a.from_epoch]
        if late:
            mean = np.mean([t for t, _ in late], axis=0)
            print(f"mean of epochs {a.from_epoch}-{rows[-1]['epoch']}: train {mean[0]:.1f} s, "
                  f"features {mean[1]:.1f}, clustering {mean[2]:.1f}, measuring {mean[3]:.1f}; "
                  f"not training {sum(mean[1:]):.1f} s = "
                  f"{100 * sum(mean[1:]) / sum(mean):.1f}% of the epoch")


if __name__ == "__main__":
    main()
