"""Two-process torchrun runs end cleanly, every time (issue 19).

    python benchmarks/bench_torchrun.py [--runs 20] [--bad 10] [--epochs 2] [--json FILE]

Starts `--runs` good runs (`torchrun --standalone --nproc-per-node 2 deepstdp train`, digits,
a small network, one thread per process) and `--bad` runs with a bad input (`--batch-size
127`, which 2 processes cannot share); every second run of each kind runs while a CPU-bound
process holds core 0, the condition under which a finished run once ended with a rank aborted
(SIGABRT, "terminate called without an active exception").

A good run passes when torchrun exits 0; a bad one when each process printed the one-line
error and torchrun reports exit code 2 for every process it lists (torchrun itself exits 1
whenever a process fails). Every process also imports a sitecustomize that reports gloo threads
still alive at exit: a process group that destroy_process_group did not free, the
precondition of the abort. Prints one line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = ["--threads", "1", "--precision", "fp32", "--quiet", "--k-train", "20",
         "--widths", "16,M", "--feat-dim", "32", "--pca-dim", "16", "--image-size", "12"]
REPORT = '''
import atexit, os, sys
def _gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    if any("gloo" in n for n in names):
        sys.stderr.write(f"gloo threads alive at exit (rank {os.environ['RANK']})\\n")
if os.environ.get("RANK"):
    atexit.register(_gloo_threads)
'''
HOG = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
ERROR = "deepstdp: error: --batch-size = 127 must be divisible by the 2 processes"


def one(kind: str, i: int, hog: bool, epochs: int, work: Path) -> dict:
    deepstdp = str(Path(sys.executable).parent / "deepstdp")
    out = work / f"{kind}{i}"
    args = ["--epochs", str(epochs), *SMALL] + (["--batch-size", "127"] if kind == "bad" else [])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           deepstdp, "train", "--out", str(out), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(work / "site"), os.environ.get("PYTHONPATH")]))}
    hogger = subprocess.Popen([sys.executable, "-c", HOG]) if hog else None
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        if hogger is not None:
            hogger.kill()
            hogger.wait()
    seconds = time.perf_counter() - t0
    said = [line for line in res.stderr.splitlines() if line.startswith("deepstdp: ")]
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", res.stderr)
    aborted = "terminate called" in res.stderr or "-6" in codes or "SIGABRT" in res.stderr
    leaked = res.stderr.count("gloo threads alive at exit")
    if kind == "good":
        ok = res.returncode == 0 and not said
    else:
        ok = said == [ERROR, ERROR] and res.returncode == 1 and set(codes) == {"2"}
    ok = ok and not aborted and not leaked
    row = {"kind": kind, "run": i, "hog": hog, "torchrun_exit": res.returncode,
           "process_exits": codes, "lines": said, "aborted": aborted,
           "processes_with_gloo_threads_at_exit": leaked, "ok": ok, "seconds": round(seconds, 1)}
    if not ok:
        row["stderr_tail"] = res.stderr[-2000:]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="good runs (default 20)")
    p.add_argument("--bad", type=int, default=10, help="bad-input runs (default 10)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of a good run (default 2)")
    p.add_argument("--json", help="write every run's row here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_torchrun_") as tmp:
        work = Path(tmp)
        (work / "site").mkdir()
        (work / "site" / "sitecustomize.py").write_text(REPORT)
        rows = []
        plan = [("good", i) for i in range(a.runs)] + [("bad", i) for i in range(a.bad)]
        for kind, i in plan:
            row = one(kind, i, hog=i % 2 == 1, epochs=a.epochs, work=work)
            rows.append(row)
            print(f"{kind:>4} {i:2d} hog={'yes' if row['hog'] else 'no ':3} "
                  f"torchrun {row['torchrun_exit']} processes {row['process_exits'] or '-'} "
                  f"{'ok' if row['ok'] else 'FAILED'} {row['seconds']:.0f}s", flush=True)
            if not row["ok"]:
                print(row["stderr_tail"], flush=True)
    for kind in ("good", "bad"):
        of = [r for r in rows if r["kind"] == kind]
        for hog in (False, True):
            sub = [r for r in of if r["hog"] == hog]
            if sub:
                mean = sum(r["seconds"] for r in sub) / len(sub)
                print(f"{kind} runs, {'with' if hog else 'without'} the CPU hog: "
                      f"{sum(r['ok'] for r in sub)}/{len(sub)} ok, "
                      f"{sum(r['aborted'] for r in sub)} aborted, "
                      f"{sum(r['processes_with_gloo_threads_at_exit'] for r in sub)} processes "
                      f"with gloo threads at exit, mean {mean:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
