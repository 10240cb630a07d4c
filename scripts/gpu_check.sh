#!/usr/bin/env bash
# Every GPU check and timing in one call, for a machine with CUDA whose python3 already holds torch, torchvision,
# timm, onnx, onnxscript, onnxruntime, matplotlib, safetensors and pytest (no venv, nothing installed): the GPU
# tests, the placement tests (their CUDA case), then `bench` on the GPU (LRN ratios in fp32 and bf16 +
# channels_last, torchvision's alexnet, torch.compile, towers placed vs unplaced), then `bench --data` (nvjpeg
# decoding of 256-px shard batches vs the network's bf16 training images/s, and the CPU pipelines on this
# machine's cores), then `bench --train-input` (training through `train` from shards with each decoder against
# synthetic on-device input: loss finite and falling, images/s per epoch). The onnxruntime rows are CPU figures,
# measured on the CPU machine.
#   bash scripts/gpu_check.sh [OUT_DIR]        (default runs/gpu-check; `make gpu-check` does the same)
# A device call brings back at most 8 files: write to a folder outside $OUT; where $OUT is set the script packs
# that folder into $OUT/gpu-check-PART.tgz after every step (a call killed at its limit keeps what ran), e.g.
#   PART=1 bash scripts/gpu_check.sh /tmp/gc
# Ends with the data bench's ratios; full logs, bench.json and bench-data.json in OUT_DIR. Each step has its own
# time limit: PART=1 (tests, bench, the LRN block) 540 s at most, PART=2 (bench --data, bench --train-input) 275 s;
# one device call may run 10 min, so they are two calls, and with $OUT set a PART is required. PART unset runs
# both (make gpu-check on a machine of your own). A 15-minute device session holds PART=1 and PART=2 (with the
# machine's start) or the sweep's main-a and main-b (scripts/gpu_sweep.sh), not both.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
part=${PART:-all}
if [ -n "${OUT:-}" ] && [ "$part" = all ]; then
    echo "gpu_check: under a device call (\$OUT is set) run PART=1, then PART=2 in a second call: together they take" \
         "longer than one call may run" >&2
    exit 2
fi
if ! $py -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_check: $py has no torch that sees a CUDA device here; run this on a GPU machine" >&2
    exit 2
fi
mkdir -p "$out"
status=0
install_wheels() {  # $1: module, $2: what goes without it, then the wheels' patterns under .whl/
    local module=$1 without=$2 files=() pattern f
    shift 2
    $py -c "import $module" 2>/dev/null && return 0  # the GPU machine lacks it: scripts/gpu_wheels.sh fetched it
    for pattern in "$@"; do
        for f in .whl/$pattern; do [ -e "$f" ] && files+=("$f"); done
    done
    if [ ${#files[@]} -gt 0 ] && $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/site "${files[@]}"; then
        export PYTHONPATH=${PYTHONPATH:-}:/tmp/site
    else
        echo "gpu_check: no $module here and no wheel of it in .whl/ for this Python (run scripts/gpu_wheels.sh" \
             "here first and carry .whl): $without" >&2
    fi
}
install_wheels webdataset 'the shard training steps will fail' 'webdataset-*.whl' 'braceexpand-*.whl'
install_wheels simplejpeg 'CPU decoding of the shards falls back to PIL (same pixels, slower)' 'simplejpeg-*.whl'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch, timm, onnx, onnxruntime; print('torch', torch.__version__, '| timm', timm.__version__,
'| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__)" | tee "$out/versions.txt" || status=1
keep() {  # the results so far, packed where the device call brings files back
    if [ -n "${OUT:-}" ] && [ "$(cd "$out" && pwd)" != "$(cd "$OUT" && pwd)" ]; then
        tar czf "$OUT/gpu-check-$part.tgz" -C "$out" . || status=1
    fi
}
if [ "$part" != 2 ]; then
echo '== GPU tests (pytest -m gpu), then the placement tests (one case on cuda:0)'
timeout 120 $py -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/pytest-gpu.txt" | tail -15 || status=1
timeout 45 $py -m pytest -q -p no:cacheprovider tests/test_parallel.py 2>&1 | tee "$out/pytest-parallel.txt" \
    | tail -5 || status=1
keep
echo '== bench on the GPU'
rm -f "$out/bench.json"  # bench never overwrites a result
timeout 270 $py -m timm_alexnet_split bench --skip-onnx --rounds 5 --json "$out/bench.json" 2>&1 \
    | tee "$out/bench.txt" || status=1
keep
# ---- issue 19: Triton LRN kernels; one block, at most 105 s ---------------------------------------------------
echo '== LRN: one demo epoch with the Triton kernels vs the reference LRN (same seed), then one profiled training step'
timeout 60 $py scripts/lrn_train_check.py --device cuda --json "$out/lrn-train-check.json" 2>&1 \
    | tee "$out/lrn-train-check.txt" | tail -3 || status=1
keep
timeout 45 $py -c "import json, sys, torch; from timm_alexnet_split.bench import profile_step
torch.backends.cudnn.benchmark = True
p = profile_step('ours', torch.device('cuda'), 256, True, True); json.dump(p, open(sys.argv[1], 'w'), indent=2)
print(f'one bf16 + channels_last training step, batch 256: {p[\"total_self_ms\"]:.2f} ms of CUDA kernels')
[print(f'  {k[\"self_ms\"]:8.3f} ms x{k[\"count\"]:<4} {k[\"name\"][:90]}') for k in p['kernels'][:10]]" \
    "$out/profile.json" 2>&1 | tee "$out/profile.txt" | tail -11 || status=1
keep
# ---- end of issue 19's block ------------------------------------------------------------------------------------
fi
if [ "$part" != 1 ]; then
echo '== bench --data: GPU decoding vs training images/s (bf16, batch 256), CPU pipelines per core'
rm -f "$out/bench-data.json"
timeout 75 $py -m timm_alexnet_split bench --data --data-images 400 --rounds 3 --json "$out/bench-data.json" 2>&1 \
    | tee "$out/bench-data.txt" || status=1
keep
echo '== bench --train-input: the input path through train itself (demo data as 256-px shards, alexnet_split_2,'
echo '   bf16 + channels_last, batch 256): synthetic on-device input vs --decode cpu vs --decode gpu, images/s per epoch'
rm -f "$out/bench-train-input.json"
timeout 200 $py -m timm_alexnet_split bench --train-input --train-images-per-class 1000 --train-epochs 4 \
    --json "$out/bench-train-input.json" 2>&1 | tee "$out/bench-train-input.txt" || status=1
keep
fi
exit $status
