#!/usr/bin/env bash
# The GPU check: VGG16 Faster R-CNN at 600x1000, ms/image (inference reading its variables, as a
# SavedModel runs: freezing 4 VGG16 variants would take minutes and >10 GB of host memory) and the
# approximate-joint training step, float32 / float16 (Keras mixed_float16, loss scaling), XLA
# off / on. Goal: <= 20 ms/image (ten times the paper's K40, 198 ms). Random weights: timing
# only. Not yet run on a GPU: meant to finish in a few minutes on one, most of it tracing and
# XLA compiling (the --tiny check takes 2.5 minutes on 2 shared CPU cores).
#
# On a fresh machine, from the repository root (no install of this package needed):
#   pip install 'tensorflow[and-cuda]==2.21.0' 'keras>=3.15,<4' 'tensorflow-datasets>=4.9' \
#       pyyaml pillow pycocotools matplotlib opencv-python-headless
#   bash benchmarks/gpu_check.sh          # needs a GPU visible to TensorFlow
#   bash benchmarks/gpu_check.sh --tiny   # 64x96, 2 rounds, any machine: checks the script only
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=(600 1000)
RUNS=10
if [[ "${1:-}" == "--tiny" ]]; then
  SIZE=(64 96)
  RUNS=2
elif [[ $# -gt 0 ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--tiny]" >&2
  exit 2
fi
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2

COUNT='import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))'
if ! GPUS=$("$PY" -c "$COUNT" 2>/dev/null); then
  echo "gpu_check.sh: '$PY' cannot import tensorflow; install it (see the top of this script)" >&2
  exit 1
fi
if [[ "$GPUS" == 0 ]]; then
  if [[ "${1:-}" != "--tiny" ]]; then
    if command -v nvidia-smi > /dev/null; then
      DRIVER="nvidia-smi -L: $(nvidia-smi -L 2>&1 | head -1)"
    else
      DRIVER="no nvidia-smi: no NVIDIA driver"
    fi
    echo "gpu_check.sh: TensorFlow sees no GPU ($DRIVER)." >&2
    echo "  Install 'tensorflow[and-cuda]' (see the top of this script), or run with --tiny" >&2
    echo "  to check the script on the CPU." >&2
    exit 1
  fi
  echo "gpu_check.sh: no GPU; --tiny runs on the CPU (a check of the script, not a figure)" >&2
fi

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
"$PY" benchmarks/bench_precision.py --config configs/voc07_vgg16.yaml --size "${SIZE[@]}" \
  --runs "$RUNS" --train --threads 0 --variables --variants fp32 fp16 fp32_xla fp16_xla > "$OUT"

"$PY" - "$OUT" <<'PYTHON'
import json
import sys

with open(sys.argv[1]) as handle:
    result = json.loads(handle.read().strip().splitlines()[-1])
height, width = result["size"]
print(f"\nVGG16 Faster R-CNN at {height}x{width}, batch 1, median of {result['runs']} runs")
print(f"GPU: {', '.join(result['gpus']) or 'none (CPU)'}; TF {result['tf']}, "
      f"Keras {result['keras']}")
print(f"{'variant':10s} {'ms/image':>10s} {'vs fp32':>8s} {'train step ms':>14s} {'vs fp32':>8s}")
for name, seconds in result["infer_s_median"].items():
    step = result["train_s_median"][name]
    print(f"{name:10s} {1000 * seconds:10.1f} {result['infer_ratio_to_fp32'][name]:7.2f}x "
          f"{1000 * step:14.1f} {result['train_ratio_to_fp32'][name]:7.2f}x")
best = min(result["infer_s_median"].values()) * 1000
print(f"best: {best:.1f} ms/image (goal <= 20 ms/image: {'met' if best <= 20 else 'not met'})")
PYTHON
