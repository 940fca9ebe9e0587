#!/usr/bin/env bash
# Ours and torchvision's Faster R-CNN with the paper's VGG16 architecture, interleaved round by
# round in one run (benchmarks/interleaved.py), at the same size and thread count: per side
# min / median / max / spread, the ratios ours / peer of the medians with their 95% bootstrap
# intervals, CPU flags, load average and each side's peak RSS; the last line is one JSON object.
# Usage: bash benchmarks/compare_torchvision.sh [H W] [ROUNDS] [THREADS]
#   (default 600 1000, 5 timed rounds after 1 warm-up round (WARMUP=N to change), 2 threads).
#   Needs the peer venv: bash ../shared/bench/setup_peer.sh /tmp/peer-venv
#   (PEER_PYTHON and PEER_SCRIPT override the peer's interpreter and script; OURS_INFERENCE=variables
#   times our inference reading variables instead of frozen, without the frozen graph's ~13 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
height=${1:-600}; width=${2:-1000}; rounds=${3:-5}; threads=${4:-2}
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python benchmarks/interleaved.py \
    --config configs/voc07_vgg16.yaml --size "$height" "$width" --rounds "$rounds" \
    --warmup "${WARMUP:-1}" --threads "$threads" --ours-inference "${OURS_INFERENCE:-frozen}" \
    --peer-python "${PEER_PYTHON:-/tmp/peer-venv/bin/python}" \
    --peer-script "${PEER_SCRIPT:-../shared/bench/torchvision_vgg16_frcnn.py}"
