#!/usr/bin/env bash
# The reproduction matrix of docs/reproduction.md (issue 31): k-means against STDP, 3 seeds,
# 40 epochs, both ../shared subsets, under the deepcluster recipe at 32 px, the v2 recipe at
# 64 px and (last, where time allows) the paper recipe (deepcluster at 64 px). Two queues of
# one-thread comparisons run side by side, one per subset; every comparison resumes where it
# stopped, so the script is simply run again after an interruption.
#
#   benchmarks/reproduction.sh OUT_ROOT [SHARED_DATA]
#
# Each comparison lands in OUT_ROOT/<recipe>-<size>px-<subset>/ with its report.md.
set -uo pipefail
out=${1:?usage: reproduction.sh OUT_ROOT [SHARED_DATA]}
data=${2:-../shared/data}
deepstdp=${DEEPSTDP:-deepstdp}
mkdir -p "$out"

compare() {  # recipe size subset-name data-root
    local dir="$out/$1-$2px-$3" resume=()
    [ -f "$dir/compare.json" ] && resume=(--resume)
    $deepstdp compare --recipe "$1" --image-size "$2" --dataset tiny-imagenet \
        --data-root "$4" --precision fp32 --clusterers kmeans,stdp --seeds 0,1,2 --epochs 40 \
        --jobs 1 --threads 1 --no-spiking --quiet --out "$dir" "${resume[@]}" \
        >> "$dir.log" 2>&1
}

queue() {  # subset-name data-root
    compare deepcluster 32 "$1" "$2" && compare v2 64 "$1" "$2" && compare paper 64 "$1" "$2"
}

queue shared "$data" &
queue second10 "$data/second10" &
wait
