"""What one large float32 matrix product reaches on this CPU, in TF and in torch: the ceiling
under any float32 detector here, ours or the peer's.

    PYTHONPATH=. .venv/bin/python benchmarks/matmul_peak.py                  # TF
    /tmp/peer-venv/bin/python benchmarks/matmul_peak.py --framework torch    # torch

Squares of ``--sizes`` (default 2048 and 4096), ``--threads`` intra-op threads (default 2),
``--runs`` timed products after one warm-up; prints the best and the median GFLOP/s of each
size (2 * n^3 per product), the CPU's flags, and one JSON line. Divide a model's float
operations by the best figure to get the least time any float32 kernel can take for them; VGG16's
inference at 300x500 is 164 GFLOP (``bench_inference.py`` counts them).
"""

import argparse
import json
import os
import statistics
import time

import interleaved  # its CPU reader: plain Python, as this script must be

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def gflops(n, seconds):
    """GFLOP/s of one n x n by n x n product that took ``seconds``."""
    return 2 * n**3 / seconds / 1e9


# Each framework is imported where it is used: the script runs in either venv, which holds one.
def _tf_product(n):
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    product = tf.function(lambda: tf.matmul(a, b))
    return lambda: product().numpy()


def _torch_product(n):
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)

    def product():
        with torch.no_grad():
            return torch.mm(a, b)

    return product


def set_threads(framework, threads):
    """``threads`` intra-op threads (one inter-op thread for TF); before any TF op runs."""
    if framework == "tf":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    else:
        import torch

        torch.set_num_threads(threads)


def measure(framework, sizes, runs):
    """{size: (best GFLOP/s, median GFLOP/s)}."""
    build = {"tf": _tf_product, "torch": _torch_product}[framework]
    results = {}
    for n in sizes:
        product = build(n)
        product()  # warm-up: tracing, allocation, kernel selection
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        results[n] = (gflops(n, min(times)), gflops(n, statistics.median(times)))
    return results


def lines(results):
    """One line per size of ``measure``'s results."""
    return [
        f"{n}x{n} float32 product: best {best:.0f} GFLOP/s, median {median:.0f} GFLOP/s"
        for n, (best, median) in results.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("tf", "torch"), default="tf")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads(args.framework, args.threads)
    flags = interleaved.cpu_info()["flags"]
    print(f"{args.framework}, {args.threads} threads; cpu flags: {' '.join(flags) or 'unknown'}")
    results = measure(args.framework, args.sizes, args.runs)
    print("\n".join(lines(results)))
    print(
        json.dumps(
            {
                "framework": args.framework,
                "threads": args.threads,
                "flags": flags,
                "gflops": {str(n): {"best": b, "median": m} for n, (b, m) in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
