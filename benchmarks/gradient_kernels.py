"""TF's registered gradients of VGG16's layers against ``tf_frcnn.gradients``' forms of the
same products, each kernel alone, on the machine this runs on.

    PYTHONPATH=. .venv/bin/python benchmarks/gradient_kernels.py --size 300 500 [--rois 128]

For each 3x3 conv of VGG16 at the given input size (distinct shapes once) and for fc6 / fc7 on
``--rois`` rows: the input gradient (Conv2DBackpropInput against a forward conv of the flipped
kernel; MatMul ``dy @ kernel^T`` against ``(kernel @ dy^T)^T``) and the kernel gradient
(Conv2DBackpropFilter against nine matmuls). Random operands; each pair timed in ``--runs``
interleaved rounds after one warm-up, medians; GFLOP/s of the product (2 * MACs). The CPU's
flags and whether TF's oneDNN ops are on are printed first: which kernels TF runs depends on
both (TF turns oneDNN on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX). The last line
is one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tf_frcnn import gradients, hardware  # noqa: E402

# VGG16's conv blocks: (convs, channels in of the first, channels out), at stride 1, 2, 4, 8.
VGG16_BLOCKS = ((2, 3, 64), (2, 64, 128), (3, 128, 256), (3, 256, 512), (3, 512, 512))


def conv_shapes(height, width):
    """(h, w, c, k) of VGG16's 3x3 convs at an H x W input, distinct, with their counts."""
    shapes = {}
    for level, (convs, first, filters) in enumerate(VGG16_BLOCKS):
        h, w = height // 2**level, width // 2**level
        for i in range(convs):
            key = (h, w, first if i == 0 else filters, filters)
            shapes[key] = shapes.get(key, 0) + 1
    return shapes


def _conv_pairs(h, w, c, k):
    x, dz = tf.random.normal([1, h, w, c]), tf.random.normal([1, h, w, k])
    kernel = tf.random.normal([3, 3, c, k]) * 0.05
    strides = [1, 1, 1, 1]
    return {
        "input": (
            lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[1, h, w, c],
                filter=kernel,
                out_backprop=dz,
                strides=strides,
                padding="SAME",
            ),
            lambda: gradients.conv_input_gradient(dz, kernel),
        ),
        "kernel": (
            lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=[3, 3, c, k], out_backprop=dz, strides=strides, padding="SAME"
            ),
            lambda: gradients.conv_kernel_gradient(x, dz),
        ),
    }, 2 * h * w * c * k * 9


def _fc_pairs(rows, units_in, units_out):
    dy = tf.random.normal([rows, units_out])
    kernel = tf.random.normal([units_in, units_out]) * 0.01
    return {
        "input": (
            lambda: tf.matmul(dy, kernel, transpose_b=True),
            lambda: gradients.fc_input_gradient(dy, kernel),
        )
    }, 2 * rows * units_in * units_out


def _time(fn):
    start = time.perf_counter()
    out = fn()
    out.numpy()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[300, 500], metavar=("H", "W"))
    parser.add_argument("--rois", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: TF's default for this CPU)")
    print(f"cpu: {hardware.cpu_summary()}; TF_ENABLE_ONEDNN_OPTS={onednn}")
    forms = gradients.gradient_forms()
    taken = ", ".join(f"{form} {'ours' if own else 'TF'}" for form, own in forms.items())
    print(
        f"oneDNN kernels {'on' if hardware.onednn_enabled() else 'off'}, AVX-512 for oneDNN "
        f"{'yes' if hardware.onednn_avx512() else 'no'}; training takes: {taken} "
        f"(TF_FRCNN_GRADIENTS={gradients.GRADIENTS})"
    )
    cases = []
    for (h, w, c, k), count in conv_shapes(*args.size).items():
        pairs, flop = _conv_pairs(h, w, c, k)
        own = dict(zip(("input", "kernel"), gradients.conv_forms(c, forms)))
        cases += [
            (f"conv {h}x{w} {c}->{k} (x{count})", kind, pair, flop, count, own[kind])
            for kind, pair in pairs.items()
        ]
    for name, (units_in, units_out) in {"fc6": (25088, 4096), "fc7": (4096, 4096)}.items():
        pairs, flop = _fc_pairs(args.rois, units_in, units_out)
        cases += [
            (f"{name} {args.rois} rows", kind, pair, flop, 1, forms["fc_input"])
            for kind, pair in pairs.items()
        ]
    rows, totals = [], {"tf": 0.0, "ours": 0.0, "taken": 0.0}
    print("| layer | gradient | TF ms | GFLOP/s | ours ms | GFLOP/s | ours / TF | training takes |")
    print("|---|---|---|---|---|---|---|---|")
    for name, kind, (native, ours), flop, count, taken in cases:
        native, ours = tf.function(native), tf.function(ours)
        times = {"tf": [], "ours": []}
        for run in range(args.runs + 1):
            for side, fn in (("tf", native), ("ours", ours)):
                elapsed = _time(fn)
                if run:
                    times[side].append(elapsed)
        tf_s, ours_s = statistics.median(times["tf"]), statistics.median(times["ours"])
        totals["tf"] += count * tf_s
        totals["ours"] += count * ours_s
        totals["taken"] += count * (ours_s if taken else tf_s)
        rows.append(
            {"layer": name, "gradient": kind, "tf_s": tf_s, "ours_s": ours_s, "ours_taken": taken}
        )
        print(
            f"| {name} | {kind} | {tf_s * 1e3:.1f} | {flop / tf_s / 1e9:.0f} | "
            f"{ours_s * 1e3:.1f} | {flop / ours_s / 1e9:.0f} | {ours_s / tf_s:.2f} | "
            f"{'ours' if taken else 'TF'} |",
            flush=True,
        )
    print(
        f"all of them, each conv counted as often as VGG16 has it: TF {totals['tf']:.3f} s, "
        f"ours {totals['ours']:.3f} s ({totals['ours'] / totals['tf']:.2f}), the forms "
        f"training takes {totals['taken']:.3f} s ({totals['taken'] / totals['tf']:.2f})"
    )
    print(
        json.dumps(
            {
                "size": args.size,
                "rois": args.rois,
                "cpu": hardware.cpu_summary(),
                "onednn": onednn,
                "onednn_enabled": hardware.onednn_enabled(),
                "training_takes_ours": forms,
                "rows": rows,
                "totals_s": totals,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
