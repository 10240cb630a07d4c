#!/usr/bin/env bash
# Every GPU check and timing in one call, for a machine with CUDA whose python3 already holds torch, torchvision,
# timm, onnx, onnxscript, onnxruntime, matplotlib, safetensors and pytest (no venv, nothing installed): the GPU
# tests, the placement tests (their CUDA case), then `bench` on the GPU (LRN ratios in fp32 and bf16 +
# channels_last, torchvision's alexnet, torch.compile, towers placed vs unplaced), then `bench --data` (nvjpeg
# decoding of 256-px shard batches vs the network's bf16 training images/s, and the CPU pipelines on this
# machine's cores). The onnxruntime rows are CPU figures, measured on the CPU machine.
#   bash scripts/gpu_check.sh [OUT_DIR]        (default runs/gpu-check; `make gpu-check` does the same)
# Ends with the data bench's ratios; full logs, bench.json and bench-data.json in OUT_DIR. Each step has its own
# time limit, 7.5 min at most in all (9 min with issue 19's LRN block: lrn-train-check.*, profile.json).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if ! $py -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_check: $py has no torch that sees a CUDA device here; run this on a GPU machine" >&2
    exit 2
fi
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch, timm, onnx, onnxruntime; print('torch', torch.__version__, '| timm', timm.__version__,
'| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__)" | tee "$out/versions.txt" || status=1
echo '== GPU tests (pytest -m gpu), then the placement tests (one case on cuda:0)'
timeout 120 $py -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/pytest-gpu.txt" | tail -15 || status=1
timeout 45 $py -m pytest -q -p no:cacheprovider tests/test_parallel.py 2>&1 | tee "$out/pytest-parallel.txt" \
    | tail -5 || status=1
echo '== bench on the GPU'
rm -f "$out/bench.json"  # bench never overwrites a result
timeout 200 $py -m timm_alexnet_split bench --skip-onnx --rounds 5 --json "$out/bench.json" 2>&1 \
    | tee "$out/bench.txt" || status=1
# ---- issue 19: Triton LRN kernels; one block, at most 90 s ----------------------------------------------------
echo '== LRN: one demo epoch with the Triton kernels vs the reference LRN (same seed), then one profiled training step'
timeout 60 $py scripts/lrn_train_check.py --device cuda --json "$out/lrn-train-check.json" 2>&1 \
    | tee "$out/lrn-train-check.txt" | tail -3 || status=1
timeout 30 $py -c "import json, sys, torch; from timm_alexnet_split.bench import profile_step
torch.backends.cudnn.benchmark = True
p = profile_step('ours', torch.device('cuda'), 256, True, True); json.dump(p, open(sys.argv[1], 'w'), indent=2)
print(f'one bf16 + channels_last training step, batch 256: {p[\"total_self_ms\"]:.2f} ms of CUDA kernels')
[print(f'  {k[\"self_ms\"]:8.3f} ms x{k[\"count\"]:<4} {k[\"name\"][:90]}') for k in p['kernels'][:10]]" \
    "$out/profile.json" 2>&1 | tee "$out/profile.txt" | tail -11 || status=1
# ---- end of issue 19's block ------------------------------------------------------------------------------------
echo '== bench --data: GPU decoding vs training images/s (bf16, batch 256), CPU pipelines per core'
rm -f "$out/bench-data.json"
timeout 75 $py -m timm_alexnet_split bench --data --data-images 400 --rounds 3 --json "$out/bench-data.json" 2>&1 \
    | tee "$out/bench-data.txt" || status=1
exit $status
