#!/usr/bin/env bash
# Ours and torchvision's Faster R-CNN with the paper's VGG16 architecture, in one run, at the
# same size and thread count; prints both JSON lines and the ratios ours / peer.
# Usage: bash benchmarks/compare_torchvision.sh [H W] [RUNS] [THREADS]
#   (default 600 1000, 3 runs, 2 threads). Needs the peer venv:
#   bash ../shared/bench/setup_peer.sh /tmp/peer-venv
set -euo pipefail
cd "$(dirname "$0")/.."
height=${1:-600}; width=${2:-1000}; runs=${3:-3}; threads=${4:-2}
peer_python=${PEER_PYTHON:-/tmp/peer-venv/bin/python}
peer_script=${PEER_SCRIPT:-../shared/bench/torchvision_vgg16_frcnn.py}
ours=$(.venv/bin/python benchmarks/bench_inference.py --config configs/voc07_vgg16.yaml \
        --size "$height" "$width" --runs "$runs" --threads "$threads" --train 2>/dev/null | tail -n 1)
peer=$("$peer_python" "$peer_script" --size "$height" "$width" --runs "$runs" \
        --threads "$threads" --train | tail -n 1)
echo "ours: $ours"
echo "peer: $peer"
.venv/bin/python - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "size": ours["size"], "threads": ours["threads"],
    "infer_ratio_ours_over_peer": ours["infer_s_median"] / peer["infer_s_median"],
    "train_ratio_ours_over_peer": ours["train_step_s_median"] / peer["train_step_s_median"],
    "ours_ratio_to_floor": ours["ratio_to_floor"],
    "ours_non_backbone_fraction": ours["non_backbone_fraction"],
}))
PY
