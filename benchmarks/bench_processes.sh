#!/bin/bash
# Epoch time against processes (docs/pipeline.md, "Scaling"): one process of one and of two
# threads, and two single-threaded processes under torchrun (gloo), one run at a time.
#   benchmarks/bench_processes.sh DATA_ROOT CLASSES EPOCHS [OUT_PREFIX]
# e.g. benchmarks/bench_processes.sh ../shared/data 10 3; then read OUT_PREFIX-*/metrics.jsonl.
set -euo pipefail
root=$1 classes=$2 epochs=$3 out=${4:-runs/scale-$2}
args=(train --dataset tiny-imagenet --data-root "$root" --classes "$classes" --epochs "$epochs"
      --precision fp32 --quiet)
deepstdp "${args[@]}" --threads 2 --out "$out-1x2"
torchrun --standalone --nproc-per-node 2 "$(command -v deepstdp)" "${args[@]}" --threads 1 \
    --out "$out-2x1"
deepstdp "${args[@]}" --threads 1 --out "$out-1x1"
for run in "$out-1x1" "$out-1x2" "$out-2x1"; do
    python - "$run" <<'PY'
import json, sys
row = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")][-1]
secs = sum(row[f"time_{p}"] for p in ("train", "features", "cluster", "eval"))
print(f"{sys.argv[1]}: last epoch {secs:.1f} s (training {row['time_train']:.1f} s), "
      f"ACC {row['acc']:.3f}, k-NN {row['knn_acc']:.3f}, probe {row['probe_acc']:.3f}")
PY
done
