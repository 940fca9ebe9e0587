"""Interleaved latency of TFLite files: rounds over all files, one call each per round, so that
load from other jobs hits every file alike; prints the median ms/image of each.

    python benchmarks/bench_tflite.py saved_models/demo/1/model.tflite \
        saved_models/demo/1/model_int8.tflite [--threads 2] [--rounds 20]

Each file gets one random uint8 image of its input size (and, for a canvas file, an
``image_shape`` of its full canvas), under the default XNNPACK delegate.
"""

import argparse
import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    runners = {}
    for path in args.files:
        runner = Interpreter(model_path=path, num_threads=args.threads).get_signature_runner(
            "serving_default"
        )
        details = runner.get_input_details()
        shape = details["images"]["shape"]
        feed = {"images": rng.integers(0, 256, shape, dtype=np.uint8)}
        if "image_shape" in details:
            feed["image_shape"] = np.array([shape[1:3]], np.int32)
        runner(**feed)
        runners[path] = (runner, feed)
    times = {path: [] for path in args.files}
    for _ in range(args.rounds):
        for path, (runner, feed) in runners.items():
            start = time.perf_counter()
            runner(**feed)
            times[path].append(time.perf_counter() - start)
    for path in args.files:
        print(f"{path}: {1000 * statistics.median(times[path]):.1f} ms/image")


if __name__ == "__main__":
    main()
