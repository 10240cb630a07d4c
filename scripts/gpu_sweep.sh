#!/usr/bin/env bash
# Sweeps on a GPU machine, in parts that each fit one device call of under 9 minutes (issue 20; issue 11's sweep of
# 2026-11-30, towers 1-4 x seeds 0-2 on demo-hard and leaves in one call, is this script's earlier version). For a
# machine with CUDA whose python3 holds torch, torchvision, timm, matplotlib, safetensors, onnx and pyyaml (nothing
# is installed).
#   bash scripts/gpu_sweep.sh PART [OUT_DIR]      (OUT_DIR default $OUT, else runs/gpu-sweep)
# PART:
#   main-a   demo-hard, towers 1-4 x seeds 10-14 (20 runs), the recipe's 16 epochs: the pre-registered sweep, half 1
#   main-b   the same, seeds 15-19; same sweep folder: on a machine still holding main-a's runs its summary pools
#            seeds 10-19
#   dose     demo-hard, towers 1 2 x seeds 10-14 at 4, 8 and 32 epochs (30 runs; DOSE_EPOCHS), one sweep folder per
#            epoch count; the 16-epoch arm is main-a's towers 1-2 (pooled when main-a's folder is there, else at home
#            from its archive): split rate and conv1's distance from random against epochs (dose.csv, dose.png)
# Every run trains side by side with the others: one `sweep --towers N --first-seed S --seeds 1` process per run into
# the part's sweep folder (one loader worker, 16 cores shared out as CPU threads); at the part's time limit
# (STEP_SECONDS; main 330 s, dose 450 s: 20 runs x 16 epochs is about 230 s, from the 2026-11-30 H200 run's
# 1.4 run-epochs a second) runs still training are stopped (they save) and listed as missing; then one
# `sweep --no-train` pass per folder measures every complete run (its split rate, intervals, start-order test).
# What comes back (at most 8 files under OUT_DIR, none in a subfolder), listed at the end as "fetch:":
#   gpu.txt; per folder sweep-NAME.json, .csv, _rates.csv, .png (main: one folder; dose: the .json of each epoch
#   count and dose.csv, dose.png); runs-PART.tar.gz: the part's run folders without weights (args.yaml,
#   summary.csv, sweep_analysis.json, sweep_wall.json, conv1/epoch_0000.npy) and the process logs. At home, the
#   archives of several parts unpacked into one folder make one sweep: the command is printed at the end.
# EPOCHS sets main's epochs (default 16, the recipe's; the folder then is demo-hard-main-eEPOCHS when not 16).
# DRY_RUN=1: print the plan (runs, folders, options, limit, files) and exit; needs neither torch nor CUDA.
# TINY=1: a CPU smoke test of the plumbing (towers 1 2, the part's first seed, one epoch, 64 px, fc_width 64, a
# 12-per-class copy of the data); its numbers mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
out=${2:-${OUT:-runs/gpu-sweep}}
runs=${RUNS_DIR:-runs/gpu-sweep-runs}
py=${PYTHON:-python3}
tiny=${TINY:-0}
dry=${DRY_RUN:-0}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# ---- the plan: per part, the sweep folders and what each trains --------------------------------------------------
epochs=${EPOCHS:-16}
main_name=demo-hard-main; [ "$epochs" = 16 ] || main_name=demo-hard-main-e$epochs
read -r -a dose_epochs <<< "${DOSE_EPOCHS:-4 8 32}"
# one entry per sweep folder: "name|dataset|towers|first seed|seeds|options"
folders=()
case "$part" in
    main-a) folders=("$main_name|demo-hard|1 2 3 4|10|5|--epochs $epochs"); limit=330 ;;
    main-b) folders=("$main_name|demo-hard|1 2 3 4|15|5|--epochs $epochs"); limit=330 ;;
    dose)   for e in "${dose_epochs[@]}"; do folders+=("demo-hard-e$e|demo-hard|1 2|10|5|--epochs $e"); done; limit=450 ;;
    *) echo "usage: bash scripts/gpu_sweep.sh main-a|main-b|dose [OUT_DIR]   (DRY_RUN=1: the plan only)" >&2
       exit 2 ;;
esac
limit=${STEP_SECONDS:-$limit}
if [ "$tiny" = 1 ]; then
    for i in "${!folders[@]}"; do
        IFS='|' read -r name ds _ first _ _ <<< "${folders[$i]}"
        folders[i]="$name|$ds|1 2|$first|1|--epochs 1 --img-size 64 --crop-pct 0.666 --model-kwargs fc_width=64"
    done
fi
declare -A recipe=([demo-hard]=recipes/demo_hard.yaml)
nruns=0
for f in "${folders[@]}"; do IFS='|' read -r _ _ t _ k _ <<< "$f"; n=($t); nruns=$((nruns + ${#n[@]} * k)); done
cores=$(nproc 2>/dev/null || echo 16)
threads=$(( cores / nruns )); [ "$threads" -ge 1 ] || threads=1

fetch=(gpu.txt)
for f in "${folders[@]}"; do
    IFS='|' read -r name _ _ _ _ _ <<< "$f"
    if [ "$part" = dose ]; then fetch+=("sweep-$name.json"); else fetch+=("sweep-$name."{json,csv,png} "sweep-${name}_rates.csv"); fi
done
[ "$part" = dose ] && fetch+=(dose.csv dose.png)
fetch+=("runs-$part.tar.gz")

echo "== gpu_sweep $part: $nruns runs side by side, $threads CPU thread(s) each, training limit ${limit} s"
for f in "${folders[@]}"; do
    IFS='|' read -r name ds towers first k opts <<< "$f"
    echo "   $runs/$name: ${recipe[$ds]}, towers $towers x seeds $first-$((first + k - 1)), options: $opts --workers 1"
    for ((s = first; s < first + k; s++)); do for n in $towers; do echo "      $name/towers$n-seed$s"; done; done
done
echo "   fetch (${#fetch[@]} files, in $out): ${fetch[*]}"
if [ "${#fetch[@]}" -gt 8 ]; then echo "gpu_sweep: $part would bring back ${#fetch[@]} files, more than 8" >&2; exit 2; fi
[ "$dry" = 1 ] && exit 0

# ---- the run ------------------------------------------------------------------------------------------------------
if [ "$tiny" != 1 ] && ! $py -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_sweep: $py has no torch that sees a CUDA device here; run this on a GPU machine (or TINY=1)" >&2
    exit 2
fi
mkdir -p "$out" "$runs"
status=0
if [ "$tiny" = 1 ]; then echo "cpu (TINY=1)" > "$out/gpu.txt"; else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"; fi

prepare() {  # dataset -> the recipe to use, and the data option (TINY: a small copy without demo_data)
    local ds=$1
    if [ "$tiny" = 1 ]; then
        [ -d "$runs/data-$ds" ] || $py -c "from timm_alexnet_split.data import ensure_dataset as e; e('$ds', '$runs/data-$ds', \
train_per_class=12, val_per_class=4)" >/dev/null || return 1
        grep -v -E '^(demo_data|demo_dataset):' "${recipe[$ds]}" > "$runs/tiny-$ds.yaml"
        echo "$runs/tiny-$ds.yaml|--data-dir $runs/data-$ds"
    else
        $py -m timm_alexnet_split demo-data --dataset "$ds" >/dev/null || return 1  # once, not per process
        echo "${recipe[$ds]}|"
    fi
}

pids=()
for f in "${folders[@]}"; do
    IFS='|' read -r name ds towers first k opts <<< "$f"
    IFS='|' read -r rec data_opt <<< "$(prepare "$ds")" || { status=1; continue; }
    [ -n "$rec" ] || { status=1; continue; }
    for ((s = first; s < first + k; s++)); do
        for n in $towers; do
            # shellcheck disable=SC2086  # the options are words
            OMP_NUM_THREADS=$threads timeout "$limit" $py -m timm_alexnet_split sweep --towers "$n" --first-seed "$s" \
                --seeds 1 --recipe "$rec" --out "$runs/$name" -- $opts --workers 1 $data_opt \
                > "$runs/$name-towers$n-seed$s.log" 2>&1 &
            pids+=($!)
            if [ ! -f "$runs/$name/sweep_plan.json" ]; then  # the first process marks the folder before the others look
                while [ ! -f "$runs/$name/sweep_plan.json" ] && kill -0 "${pids[-1]}" 2>/dev/null; do sleep 0.2; done
            fi
        done
    done
done
for p in "${pids[@]}"; do wait "$p" || echo "gpu_sweep: a process ended with $? (see $runs/*-towers*-seed*.log)"; done

members=()  # the run folders of this part, for the archive
for f in "${folders[@]}"; do
    IFS='|' read -r name ds towers first k opts <<< "$f"
    IFS='|' read -r rec data_opt <<< "$(prepare "$ds")"
    rm -f "$runs/$name"/sweep.{json,csv,png} "$runs/$name"/sweep_rates.csv  # each process drew its own run
    seeds_all=(--first-seed "$first" --seeds "$k")
    case "$name" in demo-hard-main*) seeds_all=(--first-seed 10 --seeds 10) ;; esac  # main: seeds 10-19, missing listed
    # shellcheck disable=SC2086
    $py -m timm_alexnet_split sweep --no-train --towers $towers "${seeds_all[@]}" --recipe "$rec" --out "$runs/$name" \
        -- $opts --workers 1 $data_opt 2>&1 | tee "$runs/$name-summary.txt" || status=1
    cp "$runs/$name/sweep.json" "$out/sweep-$name.json" 2>/dev/null || status=1
    if [ "$part" != dose ]; then
        for x in csv png; do cp "$runs/$name/sweep.$x" "$out/sweep-$name.$x" 2>/dev/null || status=1; done
        cp "$runs/$name/sweep_rates.csv" "$out/sweep-${name}_rates.csv" 2>/dev/null || status=1
    fi
    members+=("$name/sweep_plan.json")
    for ((s = first; s < first + k; s++)); do for n in $towers; do
        for x in args.yaml summary.csv sweep_analysis.json sweep_wall.json conv1/epoch_0000.npy; do
            [ -f "$runs/$name/towers$n-seed$s/$x" ] && members+=("$name/towers$n-seed$s/$x"); done
        [ -f "$runs/$name-towers$n-seed$s.log" ] && members+=("$name-towers$n-seed$s.log")
    done; done
done

if [ "$part" = dose ]; then  # the 16-epoch arm from main's folder when it is here, seeds 10-14 at every epoch count
    jsons=()
    for f in "${folders[@]}"; do IFS='|' read -r name _ <<< "$f"; [ -f "$out/sweep-$name.json" ] && jsons+=("$out/sweep-$name.json"); done
    [ -f "$runs/$main_name/sweep.json" ] && jsons+=("$runs/$main_name/sweep.json")
    $py -c "import sys; from timm_alexnet_split.sweep import dose_main; sys.exit(dose_main(sys.argv[1:]))" \
        "$out" "${jsons[@]}" || status=1
fi
tar czf "$out/runs-$part.tar.gz" -C "$runs" "${members[@]}" || status=1
# The weights of measured runs go (0.7-1.4 GB a run; parts run back to back on one 64 GB disk): sweep reports a run
# whose weights were removed from its sweep_analysis.json.
for f in "${folders[@]}"; do
    IFS='|' read -r name _ <<< "$f"
    for a in "$runs/$name"/towers*-seed*/sweep_analysis.json; do
        [ -f "$a" ] && find "$(dirname "$a")" -maxdepth 1 \( -name '*.pth.tar' -o -name '*.safetensors' \) -delete
    done
done
echo "== at home, to pool parts: mkdir -p POOL && tar xzf runs-main-a.tar.gz -C POOL && tar xzf runs-main-b.tar.gz -C POOL"
echo "   timm-alexnet-split sweep --no-train --recipe recipes/demo_hard.yaml --towers 1 2 3 4 --first-seed 10 --seeds 10 \\"
echo "       --out POOL/$main_name -- --epochs $epochs --workers 1"
echo "   dose with the 16-epoch arm: python -c 'import sys; from timm_alexnet_split.sweep import dose_main; \\"
echo "       sys.exit(dose_main(sys.argv[1:]))' DOSE_DIR sweep-demo-hard-e*.json POOL/$main_name/sweep.json"
ls -l "$out"
echo "fetch: ${fetch[*]}"
exit $status
