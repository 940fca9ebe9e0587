"""The peer's worker for ``benchmarks/interleaved.py``: torchvision's Faster R-CNN with the
paper's VGG16 architecture, built by ``build`` of ../shared/bench/torchvision_vgg16_frcnn.py
(imported from its path, unchanged), answering ``infer`` and ``train`` requests with the time
of one call (protocol: ``benchmarks/worker_protocol.py``). Runs in the peer's venv:

    /tmp/peer-venv/bin/python benchmarks/peer_worker.py --size 300 500 --threads 2

Each call is what that script times: inference is ``model([img])`` in eval mode under
``torch.inference_mode()``; a training step is ``sum(model([img], targets).values())``,
``zero_grad``, ``backward`` and SGD's ``step`` (lr 1e-3, momentum 0.9) in train mode, on the
same random image and the same two boxes. The mode is switched before the timer starts (the
script switches once; here inference and training steps alternate).
"""

import argparse
import importlib.util
import os
import sys

import worker_protocol


def _args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=2, default=[600, 1000], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--peer-script",
        default=os.environ.get(
            "PEER_SCRIPT",
            os.path.join(
                os.path.dirname(os.path.abspath(__file__)),
                "..",
                "..",
                "shared",
                "bench",
                "torchvision_vgg16_frcnn.py",
            ),
        ),
        help="the peer's benchmark script, whose build() makes the model (default: $PEER_SCRIPT "
        "or ../shared/bench/torchvision_vgg16_frcnn.py)",
    )
    return parser.parse_args()


def _load(path):
    spec = importlib.util.spec_from_file_location("peer_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    args = _args()
    channel = worker_protocol.claim_stdout()
    import torch

    peer = _load(os.path.abspath(args.peer_script))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = args.size
    model = peer.build(size=(height, width))
    stages = {"model_built": worker_protocol.memory_mb()[1]}
    image = torch.rand(3, height, width)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9
    )
    targets = [
        {
            "boxes": torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0]]),
            "labels": torch.tensor([3, 7]),
        }
    ]

    def infer():
        model.eval()
        with torch.inference_mode():
            return worker_protocol.timed(lambda: model([image]))

    def step():
        loss = sum(model([image], targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def train():
        model.train()
        return worker_protocol.timed(step)

    ready = {
        "side": "peer",
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "peer_script": os.path.abspath(args.peer_script),
        "hwm_mb_after": stages,
        "python": sys.version.split()[0],
    }
    worker_protocol.serve(channel, {"infer": infer, "train": train}, ready)


if __name__ == "__main__":
    main()
