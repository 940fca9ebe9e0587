"""Inference (and training-step) speed of a config's model, against the FLOP floor.

    .venv/bin/python benchmarks/bench_inference.py --config configs/voc07_vgg16.yaml \
        --size 600 1000 --runs 5 --train --threads 2

Weights are random (``model.weights`` is ignored): timing only. The input is one
image of exactly H x W (no resizing), like ../shared/bench/torchvision_vgg16_frcnn.py.
Prints progress lines, then one JSON line last with ``infer_s_median`` (the inference
graph frozen as ``tf_frcnn.export.frozen_inference`` freezes it; ``infer_variables_s_median``
is the same graph reading its weights from variables),
``train_step_s_median`` (with --train: the approximate-joint step with both losses,
two ground-truth boxes, the config's 2,000 training proposals and 128 ROIs), the
model's FLOPs counted from the graph (per op type), the floor and the ratio to it,
the time split and peak RSS (``peak_rss_mb``, VmHWM, the largest of this process's and its
children's; ``peak_rss_mb_by_phase``, each phase's own peak; ``peak_rss_mb_by_process``; see
docs/benchmarks.md, "Memory").

The floor: each Conv2D and MatMul of the inference graph (every layer of the
backbone, the RPN and the head, at the benchmark's input size) rebuilt alone with
constant weights and timed at its fastest of the runs, summed; the conv and matmul
rates printed are that floor's FLOPs over its time. It is what TF's own kernels need
for the model's arithmetic on this machine with nothing else around them.

The split times each part alone (backbone convs; RPN head + proposals; ROI pooling;
the region-wise fc layers; the sibling output layers + post-processing), traced on
the previous part's outputs, in interleaved rounds among themselves; the whole inference
is timed after them, frozen and reading variables interleaved, then its FLOPs and the floor
counted. The split and the whole inference each run in a child process (started with
'spawn', the model built there as here), so that no process holds more than one set of
frozen weights, nor what TF keeps of one after running it; the training step runs in this
process, on a model built after the children are done. ``split_sum_s`` next to
``infer_s_median`` shows what the parts leave out (the glue between them).
``non_backbone_fraction`` counts the backbone network as its convs plus, where the
backbone brings them (VGG16's fc6/fc7), its fc layers.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time

import bench_model
import kernel_floor


class MemoryPhases:
    """Peak RSS per phase of the run, read from the kernel, not guessed.

    ``phase(name)`` ends the current phase and starts the next: it reads VmHWM (the
    peak resident set since the last reset) as the ending phase's peak, then resets it
    (``/proc/self/clear_refs`` 5), so each phase's peak is its own. A thread also
    samples VmRSS every ``interval`` seconds into ``timeline`` (seconds, phase, MB), for
    the shape of the curve inside a phase. Where the reset is not allowed, the phases'
    peaks are the running maximum of the samples."""

    def __init__(self, interval=0.05):
        self.peaks, self.timeline, self.current = {}, [], None
        self.start, self._interval = time.perf_counter(), interval
        self._resettable = self._reset()
        self._sampled_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def status_mb(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    @staticmethod
    def _reset():
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            return True
        except OSError:
            return False

    def _sample(self):
        while not self._stop.wait(self._interval):
            rss = self.status_mb("VmRSS")
            self._sampled_peak = max(self._sampled_peak, rss)
            self.timeline.append((round(time.perf_counter() - self.start, 2), self.current, rss))

    def phase(self, name):
        if self.current is not None:
            peak = self.status_mb("VmHWM") if self._resettable else self._sampled_peak
            peak = max(peak, self._sampled_peak)
            self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), peak)
            print(
                f"memory: {self.current:12s} peak {peak:8.0f} MB, "
                f"now {self.status_mb('VmRSS'):8.0f} MB",
                file=sys.stderr,
                flush=True,
            )
        self.current = name
        if self._resettable:
            self._reset()
        self._sampled_peak = self.status_mb("VmRSS")

    def close(self):
        self.phase(None)
        self._stop.set()
        self._thread.join()
        return max(self.peaks.values(), default=0.0)


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=[600, 1000], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the inference function")
    parser.add_argument(
        "--inter-op", type=int, default=None, help="TF inter-op threads (default: --threads)"
    )
    parser.add_argument(
        "--svd-ranks",
        type=int,
        nargs="+",
        metavar="RANK",
        help="time the head with its fc layers truncated (tf_frcnn.svd), e.g. 1024 256",
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["inference", "split", "flops", "floor"],
        help="leave out a phase (to see what it costs in time or memory); inference: all of "
        "it (with --train: the training step alone)",
    )
    parser.add_argument(
        "--memory-timeline",
        metavar="PATH",
        help="write the RSS samples (every 50 ms: seconds, phase, MB) as JSON lines",
    )
    return parser.parse_args()


def _release():
    """Collect what was dropped and hand glibc's free pages back to the system: after a
    frozen VGG16 is deleted, 1.1 GB of freed memory otherwise stays in the process (the same
    with jemalloc; MALLOC_ARENA_MAX does not change it)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _shapes_only(graph):
    """``graph`` (a frozen function's) imported into a new graph with each weight's content
    dropped, its dtype and shape kept: the FLOP count and the floor read shapes only, and
    every copy of VGG16's weights is 0.5 GB. (Small constants stay: shapes depend on some.)"""
    import tensorflow as tf

    graph_def = graph.as_graph_def(add_shapes=True)
    for node in graph_def.node:
        if node.op == "Const" and len(node.attr["value"].tensor.tensor_content) > 1 << 16:
            node.attr["value"].tensor.ClearField("tensor_content")
    light = tf.Graph()
    with light.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return light


def _flops_by_op(graph):
    """Float operations of a frozen graph, per op type (tfprof's count)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options)
    # tfprof's "op" view is a chain of op types, each node holding its own float_ops.
    counts, nodes = {}, list(profile.children)
    while nodes:
        node = nodes.pop()
        if node.float_ops:
            counts[node.name] = counts.get(node.name, 0) + int(node.float_ops)
        nodes.extend(node.children)
    return counts


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _kernel_floor(graph, runs):
    """The floor: every Conv2D and MatMul of the (static-shaped, frozen) inference
    graph timed alone at its fastest of ``runs``, summed.

    Each distinct op shape is rebuilt with random operands as one tf.function
    (``kernel_floor.kernel``) and timed best-of-N: what TF's own kernels need on this
    machine for the model's arithmetic, with nothing else.
    Returns (floor seconds, conv seconds, matmul seconds, conv GFLOP/s, matmul GFLOP/s)."""
    seconds = {"conv": 0.0, "matmul": 0.0}
    flops = {"conv": 0, "matmul": 0}
    for key, count in kernel_floor.collect(graph.get_operations()).items():
        kind = "matmul" if key[0] == "MatMul" else "conv"
        fn = kernel_floor.kernel(key)
        fn()  # the trace
        best = min(_timed(lambda fn=fn: fn().numpy()) for _ in range(max(runs, 3)))
        seconds[kind] += count * best
        flops[kind] += count * kernel_floor.flops(key)
    rate = {kind: flops[kind] / seconds[kind] / 1e9 if seconds[kind] else None for kind in flops}
    return (
        seconds["conv"] + seconds["matmul"],
        seconds["conv"],
        seconds["matmul"],
        rate["conv"],
        rate["matmul"],
    )


def _build(args):
    """The config's model (random weights) called once on one random H x W image."""
    config, model, images, image_shape = bench_model.build(
        args.config, args.size, args.threads, args.inter_op
    )
    if args.svd_ranks:
        from tf_frcnn.svd import truncate_head

        truncate_head(model, args.svd_ranks)
    return config, model, images, image_shape


def _frozen_part(args, fn, *inputs):
    """``fn`` on ``inputs`` frozen (see tf_frcnn.export.frozen), with its inputs; run without
    Grappler (``tf_frcnn.export.unoptimized``: the same speed, half the first call's memory)
    unless XLA-compiled. ``.graph`` is the frozen graph."""
    import tensorflow as tf

    from tf_frcnn.export import freeze, unoptimized

    frozen = freeze(tf.function(fn, jit_compile=args.jit or None).get_concrete_function(*inputs))
    if args.jit:
        return frozen, inputs
    call = unoptimized(frozen)
    call.graph = frozen.graph  # what the FLOP count and the floor read
    return call, inputs


def _split_parts(args, model, images, image_shape):
    """The parts of the inference graph, each frozen and traced alone on the previous part's
    real outputs, so the split is measured, not differenced."""
    from tf_frcnn.head import postprocess_detections

    head = model.detector_head
    feature_map = model.features(images)
    logits, deltas = model.rpn_head(feature_map)
    anchors = model.anchor_generator(feature_map)
    proposals, _, num_proposals = model.proposal_layer(logits, deltas, anchors, image_shape)
    pooled = model.roi_pooling(feature_map, proposals)
    hidden = head.region_features(pooled)

    def rpn_and_proposals(feature_map, shape):
        logits, deltas = model.rpn_head(feature_map)
        return model.proposal_layer(logits, deltas, model.anchor_generator(feature_map), shape)

    def outputs_and_post(hidden, proposals, num_proposals, shape):
        class_logits, box_deltas = head.logits_and_deltas(hidden)
        return postprocess_detections(
            class_logits, box_deltas, proposals, num_proposals, shape, **model.detection_args
        )

    return {
        "backbone": _frozen_part(args, lambda x: model.features(x), images),
        "rpn_and_proposals": _frozen_part(args, rpn_and_proposals, feature_map, image_shape),
        "roi_pooling": _frozen_part(
            args, lambda f, r: model.roi_pooling(f, r), feature_map, proposals
        ),
        "region_fc": _frozen_part(args, lambda p: head.region_features(p), pooled),
        "outputs_and_postprocessing": _frozen_part(
            args, outputs_and_post, hidden, proposals, num_proposals, image_shape
        ),
    }


def _full(args, model, images, image_shape):
    """The whole inference twice: as users run it (tf_frcnn.export.frozen_inference, the
    weights constant, which oneDNN reorders once instead of on every call) and reading the
    weights from variables."""
    import tensorflow as tf

    height, width = args.size
    spec = [tf.TensorSpec([1, height, width, 3], tf.float32), tf.TensorSpec([1, 2], tf.int32)]

    def full(x, shape):
        out = model({"images": x, "image_shape": shape})
        return out["detection_boxes"], out["num_detections"]

    return {
        "full_frozen": _frozen_part(args, full, images, image_shape),
        "full": (
            tf.function(full, input_signature=spec, jit_compile=args.jit or None),
            (images, image_shape),
        ),
    }


def _time_parts(parts, runs, memory, tag=""):
    """Median seconds of each part, timed in interleaved rounds (drift on a shared machine
    hits every part alike) after one warm-up call each; and each part's times."""
    import tensorflow as tf

    def runner(fn, inputs):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(*inputs))

    memory.phase("warm_up" + tag)
    for fn, inputs in parts.values():
        runner(fn, inputs)()
    memory.phase("inference" + tag)
    times = {name: [] for name in parts}
    for _ in range(runs):
        for name, (fn, inputs) in parts.items():
            times[name].append(_timed(runner(fn, inputs)))
    timings = {name: statistics.median(values) for name, values in times.items()}
    for name, value in timings.items():
        print(f"{name:21s} {value:.3f} s", file=sys.stderr, flush=True)
    return timings, times


def _split(args, model, images, image_shape, memory):
    """The split: each part's median seconds, its parts timed in interleaved rounds."""
    memory.phase("trace_split")
    split, _ = _time_parts(
        _split_parts(args, model, images, image_shape), args.runs, memory, "_split"
    )
    return split


def _flops(args, model, images, graph):
    """(FLOPs per op type of the shapes-only ``graph``, the backbone's FLOPs)."""
    if "flops" in args.skip:
        return {}, float("nan")
    by_op = _flops_by_op(graph)
    backbone = _frozen_part(args, lambda x: model.features(x), images)[0]
    backbone_flops = sum(_flops_by_op(_shapes_only(backbone.graph)).values())
    return by_op, backbone_flops


def _whole(args, model, images, image_shape, memory):
    """The whole inference (frozen and reading variables, interleaved), its FLOPs and the
    floor: the inference fields of the result but the split's."""
    memory.phase("trace")
    parts = _full(args, model, images, image_shape)
    # The shapes-only copy before the first calls, while the frozen graph is the only copy
    # of the weights TF holds (made after the timed calls, it added 1 GB to the peak).
    graph = _shapes_only(parts["full_frozen"][0].graph)
    timings, times = _time_parts(parts, args.runs, memory)
    infer_median = timings["full_frozen"]
    memory.phase("flops")
    del parts
    _release()
    by_op, backbone_flops = _flops(args, model, images, graph)
    memory.phase("floor")
    floor = conv_floor = matmul_floor = conv_rate = matmul_rate = float("nan")
    if "floor" not in args.skip:
        floor, conv_floor, matmul_floor, conv_rate, matmul_rate = _kernel_floor(graph, args.runs)
    return {
        "infer_s_median": infer_median,
        "infer_s": times["full_frozen"],
        "infer_variables_s_median": timings["full"],
        "flops_g": sum(by_op.values()) / 1e9,
        "backbone_flops_g": backbone_flops / 1e9,
        "conv_flops_g": sum(v for k, v in by_op.items() if "Conv2D" in k) / 1e9,
        "matmul_flops_g": sum(v for k, v in by_op.items() if "MatMul" in k) / 1e9,
        "conv_rate_gflops": conv_rate,
        "matmul_rate_gflops": matmul_rate,
        "floor_s": floor,
        "floor_conv_s": conv_floor,
        "floor_matmul_s": matmul_floor,
        "ratio_to_floor": infer_median / floor,
        "flops_by_op_g": {name: value / 1e9 for name, value in by_op.items()},
    }


def _with_split(whole, split, backbone):
    """The whole inference's fields with the split's: ``backbone`` is the config's backbone
    name (VGG16's fc6/fc7 count as the backbone network)."""
    backbone_network = float("nan")
    if split:
        backbone_network = split["backbone"] + (split["region_fc"] if backbone == "vgg16" else 0.0)
    return whole | {
        "split_s": split,
        "split_sum_s": sum(split.values()),
        # The backbone network's own layers: its convs and, where it has them (VGG16's
        # fc6/fc7), its fc layers over the ROIs. The rest is the detector's overhead.
        "backbone_network_s": backbone_network,
        "non_backbone_fraction": 1.0 - backbone_network / (sum(split.values()) or float("nan")),
    }


def _child(args, part):
    """``part`` of the inference ("split" or "whole") in this (child) process: the model
    built here, as the parent would build it. Returns the part's fields, this process's
    peaks by phase (its build phase named ``build_<part>``), its peak, and its RSS samples
    on the parent's clock (perf_counter is the system's monotonic clock)."""
    memory = MemoryPhases()
    memory.phase("build_" + part)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config, model, images, image_shape = _build(args)
    run = _split if part == "split" else _whole
    fields = run(args, model, images, image_shape, memory)
    peak = max(memory.close(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "part": part,
        "fields": fields,
        "backbone": config.model.backbone,
        "peaks": memory.peaks,
        "peak": peak,
        "start": memory.start,
        "timeline": memory.timeline,
    }


def _in_child(args, part):
    """``_child(args, part)`` in a fresh process (the 'spawn' start method: nothing of
    this one's TF is inherited), so that no frozen copy of the weights, nor what TF keeps
    after running one, stays in this process or in the next part's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, args, part).result()


def _inference(args):
    """The inference fields of the result (times, FLOPs, the floor, the split), and the
    children's reports: the split's five frozen parts, then the whole inference, each in
    its own child process (a frozen VGG16 holds its weights several times over once TF has
    run it, and part of that stays after it is deleted: docs/benchmarks.md, "Memory")."""
    children = {}
    if "split" not in args.skip:
        children["split"] = _in_child(args, "split")
    children["whole"] = _in_child(args, "whole")
    split = children["split"]["fields"] if "split" in children else {}
    fields = _with_split(children["whole"]["fields"], split, children["whole"]["backbone"])
    return fields, list(children.values())


def _combined_memory(own_peaks, own_peak, children):
    """``(peak_rss_mb, peak_rss_mb_by_phase, peak_rss_mb_by_process)``: the process's peak
    is the largest of its own and its children's (each child's phases are its own)."""
    by_phase = dict(own_peaks)
    for child in children:
        by_phase |= child["peaks"]
    by_process = {"parent": round(own_peak)} | {
        child["part"]: round(child["peak"]) for child in children
    }
    peak = max([own_peak] + [child["peak"] for child in children])
    return peak, {name: round(mb) for name, mb in by_phase.items()}, by_process


def _train_step(args, config, model, images, image_shape, memory):
    """Seconds per approximate-joint training step (SGD), after one untimed step (its
    trace)."""
    batch = bench_model.training_batch(model, images, image_shape)
    memory.phase("train_build")
    loop = bench_model.training_loop(config, model)
    loop.step(batch)
    memory.phase("train_step")
    times = [_timed(lambda: loop.step(batch)) for _ in range(args.runs)]
    return {"train_step_s_median": statistics.median(times), "train_step_s": times}


def _timeline(memory, children):
    """Every process's RSS samples on this one's clock, in time order."""
    samples = list(memory.timeline)
    for child in children:
        offset = child["start"] - memory.start
        samples += [(round(t + offset, 2), phase, mb) for t, phase, mb in child["timeline"]]
    return sorted(samples, key=lambda sample: sample[0])


def main():
    args = _args()
    memory = MemoryPhases()
    memory.phase("start")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    result = {
        "ours": "tf_frcnn",
        "config": args.config,
        "size": list(args.size),
        "threads": args.threads,
        "tf": tf.__version__,
        "svd_ranks": args.svd_ranks,
        "skip": args.skip,
    }
    children = []
    if "inference" not in args.skip:
        fields, children = _inference(args)
        result |= fields
    if args.train:
        memory.phase("build")
        config, model, images, image_shape = _build(args)
        result |= _train_step(args, config, model, images, image_shape, memory)
    # VmHWM: each phase's own peak (reset at the phase's start), this process's and its
    # children's; peak_rss_mb is the largest of the processes' peaks.
    own_peak = max(memory.close(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    peak, by_phase, by_process = _combined_memory(memory.peaks, own_peak, children)
    result["peak_rss_mb"] = peak
    result["peak_rss_mb_by_phase"] = by_phase
    result["peak_rss_mb_by_process"] = by_process
    if args.memory_timeline:
        with open(args.memory_timeline, "w") as out:
            for sample in _timeline(memory, children):
                out.write(json.dumps(sample) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
