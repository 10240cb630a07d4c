#!/usr/bin/env bash
# Issue 11's larger sweep in one device call: towers 1-4 x 3 seeds on the demo data's hard variant (96 px, its
# recipe's 16 epochs) and on the leaves data (64 px, 24 epochs), at the datasets' native sizes, for a machine with
# CUDA whose python3 holds torch, torchvision, timm, matplotlib, safetensors, onnx and pyyaml (nothing installed).
#   bash scripts/gpu_sweep.sh [OUT_DIR]      (default $OUT, else runs/gpu-sweep)
# Every run trains side by side with the others (one `sweep --towers N --first-seed S --seeds 1` process each, same
# sweep folder, 2 CPU threads and one loader worker each: 12 processes on a 16-core machine); a last
# `sweep --no-train` per dataset measures every complete run and writes the figures. Each dataset has its own time
# limit, sized from the H200 run of 2026-11-30 (12 runs side by side: demo-hard ~130 s a run, leaves ~11.6 s an
# epoch): 170 s for demo-hard, 330 s for leaves, about 9 minutes in all; STEP_SECONDS sets one limit for both. Runs
# still training at the limit are stopped (they save their last epoch) and listed as missing, the rest reported.
# DATASETS (default "demo-hard leaves") picks the datasets.
# OUT_DIR gets what comes back from the device (at most 8 files): per dataset sweep-<dataset>.png, .json, .csv, and
# gpu.txt with the card. The run folders stay in RUNS_DIR (default runs/gpu-sweep-runs).
# TINY=1: a CPU smoke test of this script (demo-hard only, towers 1 2, one seed, one epoch, 64 px, fc_width 64,
# 12 training images per class): checks the plumbing in a few minutes; its numbers mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu-sweep}}
runs=${RUNS_DIR:-runs/gpu-sweep-runs}
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out" "$runs"
status=0

if [ "${TINY:-0}" = 1 ]; then
    datasets=(demo-hard); towers=(1 2); seeds=1; workers=1
    declare -A options=([demo-hard]='--epochs 1 --img-size 64 --crop-pct 0.666 --model-kwargs fc_width=64')
else
    if ! $py -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        echo "gpu_sweep: $py has no torch that sees a CUDA device here; run this on a GPU machine (or TINY=1)" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    read -r -a datasets <<< "${DATASETS:-demo-hard leaves}"; towers=(1 2 3 4); seeds=3; workers=1
    # native sizes; the recipes' schedules (cosine over the epochs), longer for leaves (still learning at 8)
    declare -A options=([demo-hard]='--epochs 16' [leaves]='--epochs 24')
fi
declare -A recipe=([demo-hard]=recipes/demo_hard.yaml [leaves]=recipes/leaves.yaml [demo]=recipes/demo.yaml)
declare -A limit=([demo-hard]=170 [leaves]=330 [demo]=120)

for ds in "${datasets[@]}"; do
    echo "== $ds: towers ${towers[*]} x $seeds seed(s), options: ${options[$ds]}"
    rec=${recipe[$ds]}
    data_opt=()
    if [ "${TINY:-0}" = 1 ]; then  # a small copy of the dataset and the recipe without demo_data, so that it is quick
        $py -c "from timm_alexnet_split.data import ensure_dataset as e; e('$ds', '$runs/data-$ds', \
train_per_class=12, val_per_class=4)" || { status=1; continue; }
        rec=$runs/tiny-$ds.yaml
        grep -v -E '^(demo_data|demo_dataset):' "${recipe[$ds]}" > "$rec"
        data_opt=(--data-dir "$runs/data-$ds")
    else
        $py -m timm_alexnet_split demo-data --dataset "$ds" >/dev/null || { status=1; continue; }  # once, not per process
    fi
    sweep_dir=$runs/$ds
    step=${STEP_SECONDS:-${limit[$ds]}}
    # shellcheck disable=SC2086  # the options are words
    common=(--recipe "$rec" --out "$sweep_dir" -- ${options[$ds]} --workers "$workers" "${data_opt[@]}")
    pids=()
    for ((seed = 0; seed < seeds; seed++)); do
        for n in "${towers[@]}"; do
            OMP_NUM_THREADS=2 timeout "$step" $py -m timm_alexnet_split sweep --towers "$n" --first-seed "$seed" \
                --seeds 1 "${common[@]}" > "$runs/$ds-towers$n-seed$seed.log" 2>&1 &
            pids+=($!)
            if [ ${#pids[@]} = 1 ]; then  # the first process marks the sweep folder before the others look at it
                while [ ! -f "$sweep_dir/sweep_plan.json" ] && kill -0 "${pids[0]}" 2>/dev/null; do sleep 0.2; done
            fi
        done
    done
    for p in "${pids[@]}"; do wait "$p" || echo "gpu_sweep: a $ds process ended with $? (see $runs/$ds-towers*.log)"; done
    tail -n 2 "$runs/$ds"-towers*.log
    rm -f "$sweep_dir"/sweep.{json,csv,png}  # each process drew its own run; only the pass over all of them counts
    $py -m timm_alexnet_split sweep --no-train --towers "${towers[@]}" --seeds "$seeds" "${common[@]}" 2>&1 | tee "$runs/$ds-summary.txt" \
        || status=1
    for f in png json csv; do cp "$sweep_dir/sweep.$f" "$out/sweep-$ds.$f" 2>/dev/null || status=1; done
done
ls -l "$out"
exit $status
