"""The training step against its own kernel floor, and what stands above the floor, itemised.

    PYTHONPATH=. .venv/bin/python benchmarks/train_floor.py --size 300 500 --runs 5

The step is the one ``benchmarks/ours_worker.py`` (and ``bench_inference.py --train``) times:
the config's model with random weights on one random H x W image with two ground-truth boxes,
``StageLoop.step`` of the ``joint`` stage with SGD (``benchmarks/bench_model.py``); its time
is the median of ``--runs`` steps after one untimed step (the trace).

The floor: the step's traced graph (the ``tf.function`` of ``StageLoop``, its gradients
included) is searched for every Conv2D and MatMul and their gradients (Conv2DBackpropInput,
Conv2DBackpropFilter, the transposed MatMuls), those that run (an op whose output nothing
reads, such as the gradient of the first conv's input image, is pruned by TF and left out);
each distinct shape is rebuilt alone with random operands (``benchmarks/kernel_floor.py``);
the floor is the sum of their median times (``bench_inference.py``'s inference floor is built
the same way, with the fastest run; that floor is printed here too).

Everything is timed in ``--runs`` rounds after one warm-up round: each round runs the step,
then each part below, then each op of the floor once, so a change of the shared machine's
load hits the step, its parts and its floor alike; the ratio of each round (step over that
round's floor) is printed beside the ratio of the medians, and the fastest step over the
floor of each op's fastest run (a sum of minima: under load it picks each op's quietest
moment, which one step cannot, so it is biased low there).

The remainder: the step's parts, each traced alone on the real values of the part before it:

- backbone: the feature network forward and backward (its weights' gradients, from a given
  gradient of the feature map);
- anchor_targets: the anchors, their labels and sampled mini-batch (no gradient);
- rpn: the RPN head forward, its loss and backward (to its weights and the feature map);
- proposals: the proposal layer (top-k, decode, clip, NMS; no gradient);
- roi_sampling: the ROI sampler (the detector's targets; no gradient);
- roi_pooling: ROI pooling forward and its gradient to the feature map;
- detector: the Fast R-CNN head forward, its loss and backward (to its weights and the
  pooled features);
- optimizer: the finite check of the gradients and ``apply_gradients`` (SGD with momentum
  and the L2 term, in place);
- rest: the step minus the parts' sum (summing the two gradients of the feature map, the
  tf.function call, the losses' reduction and their conversion to Python floats).

Each conv and matmul of the step is credited to the part whose layer holds it (by name
scope), so a part's floor is its share of the step's. The table shows per part its time,
share of the step, floor and the time above it; then the floor by kind of op. The last line
is one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time

import bench_model
import kernel_floor

PARTS = (
    "backbone",
    "anchor_targets",
    "rpn",
    "proposals",
    "roi_sampling",
    "roi_pooling",
    "detector",
    "optimizer",
)
GRADIENT_SCOPE = "gradient_tape/"


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/voc07_vgg16.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[300, 500], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--inter-op", type=int, default=None, help="TF inter-op threads (default: --threads)"
    )
    return parser.parse_args()


# -- the step's graph -------------------------------------------------------------------------


def live_ops(graph):
    """The ops of a ``FuncGraph`` that run: those its outputs and control outputs (the stateful
    ops, such as the optimizer's updates) depend on. TF prunes the others before running it."""
    seen, stack = set(), [t.op for t in graph.outputs] + list(graph.control_outputs)
    live = []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        live.append(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


def part_of(op_name, scopes):
    """The part whose layer holds the op called ``op_name``: ``scopes`` maps a part to the
    names of its layers; an op of a layer named ``L`` lies under ``L/`` or ``L_<n>/``, its
    gradient under ``gradient_tape/`` and that. None for an op of no part."""
    name = op_name.removeprefix(GRADIENT_SCOPE)
    top = name.split("/", 1)[0]
    for part, layers in scopes.items():
        for layer in layers:
            suffix = top.removeprefix(layer)
            numbered = suffix[:1] == "_" and suffix[1:].isdigit()
            if top.startswith(layer) and (not suffix or numbered):
                return part
    return None


def kind_of(op):
    """The floor's kind of an op: its type, with a dense layer's gradient MatMuls apart."""
    if op.type == "MatMul":
        return "MatMul (gradient)" if op.name.startswith(GRADIENT_SCOPE) else "MatMul"
    return op.type


def floor_ops(graph, scopes):
    """``{(key, part, kind): count}`` of the conv and matmul ops that run in ``graph`` (a
    traced step), each with its part (``part_of``) and kind (``kind_of``)."""
    counts = {}
    for op in live_ops(graph):
        key = kernel_floor.op_key(op)
        if key is not None:
            entry = (key, part_of(op.name, scopes), kind_of(op))
            counts[entry] = counts.get(entry, 0) + 1
    return counts


def model_scopes(model):
    """The layer names of each part with convs or matmuls, for ``part_of``."""
    return {
        "backbone": [model.features.name],
        "rpn": [model.rpn_head.name],
        "detector": [model.detector_head.name],
    }


# -- arithmetic of the tables (pure) ----------------------------------------------------------


def floor_sums(counts, seconds):
    """Sum ``count * seconds[key]`` of ``counts`` (``floor_ops``'s) per part and per kind, and
    their FLOPs per kind: ``(by_part, by_kind, flops_by_kind)``, dicts of floats."""
    by_part, by_kind, flops_by_kind = {}, {}, {}
    for (key, part, kind), count in counts.items():
        by_part[part] = by_part.get(part, 0.0) + count * seconds[key]
        by_kind[kind] = by_kind.get(kind, 0.0) + count * seconds[key]
        flops_by_kind[kind] = flops_by_kind.get(kind, 0) + count * kernel_floor.flops(key)
    return by_part, by_kind, flops_by_kind


def round_floors(counts, kernel_times):
    """The floor of each round: ``counts`` (``floor_ops``'s) summed with each op's time in
    that round (``kernel_times``: key -> [seconds of each round])."""
    rounds = len(next(iter(kernel_times.values())))
    return [
        sum(count * kernel_times[key][r] for (key, _, _), count in counts.items())
        for r in range(rounds)
    ]


def itemise(step, parts, part_floors):
    """Rows of the itemised step: one per part (``parts``: name -> seconds, in order), "rest"
    (the step minus the parts' sum) and "step". Each row: part, seconds, share of the step,
    floor (``part_floors``' seconds, None for a part without convs or matmuls; "step" has the
    sum, "rest" what no part holds), above (seconds minus floor)."""
    rows = []
    for name, seconds in parts.items():
        rows.append(_row(name, seconds, step, part_floors.get(name)))
    rows.append(_row("rest", step - sum(parts.values()), step, part_floors.get(None)))
    rows.append(_row("step", step, step, sum(part_floors.values())))
    return rows


def _row(name, seconds, step, floor):
    above = seconds - (floor or 0.0)
    return {"part": name, "s": seconds, "share": seconds / step, "floor_s": floor, "above_s": above}


def format_table(rows):
    """``itemise``'s rows as a Markdown table, times in ms."""
    lines = [
        "| part | ms | share of step | conv/matmul floor ms | above floor ms |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        floor = "" if row["floor_s"] is None else f"{1000 * row['floor_s']:.1f}"
        lines.append(
            f"| {row['part']} | {1000 * row['s']:.1f} | {100 * row['share']:.1f}% | {floor} | "
            f"{1000 * row['above_s']:.1f} |"
        )
    return "\n".join(lines)


def format_kinds(by_kind, flops_by_kind):
    """The floor by kind of op as a Markdown table: ms, GFLOP and GFLOP/s."""
    lines = ["| op | floor ms | GFLOP | GFLOP/s |", "|---|---|---|---|"]
    for kind in sorted(by_kind):
        seconds, flops = by_kind[kind], flops_by_kind[kind]
        rate = f"{flops / seconds / 1e9:.0f}" if seconds else ""
        lines.append(f"| {kind} | {1000 * seconds:.1f} | {flops / 1e9:.2f} | {rate} |")
    return "\n".join(lines)


# -- timing -----------------------------------------------------------------------------------


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _upstream(tensor):
    """A random gradient of ``tensor``'s shape, standing for what the parts after it send."""
    import tensorflow as tf

    return tf.random.normal(tf.shape(tensor), stddev=1e-3, seed=1)


def part_functions(model, loop, batch, objective):
    """``{part: (tf.function, inputs)}`` of ``PARTS``, each on the real values of the parts
    before it (computed here once), as the step runs them (training mode, the training
    proposal counts, the objective's seeds of step 0)."""
    import tensorflow as tf

    from tf_frcnn import sampling
    from tf_frcnn.roi import sample_rois
    from tf_frcnn.rpn import anchor_targets

    images, image_shape = model.unpack(batch)
    gt_boxes, gt_labels = batch["boxes"], batch["labels"]
    seed = None if objective.seed is None else tf.constant([objective.seed, 0], tf.int32)
    feature_map, logits, deltas, anchors = model.rpn_forward(images, training=True)
    proposals, _, num_proposals = model.proposal_layer(
        logits, deltas, anchors, image_shape, use_training_counts=True
    )
    sampled = sample_rois(
        proposals,
        num_proposals,
        gt_boxes,
        gt_labels,
        seed=sampling.derive(seed, 1),
        **objective.roi_sampler_args,
    )
    pooled = model.roi_pooling(feature_map, sampled["rois"])
    labels, targets = anchor_targets(
        anchors,
        gt_boxes,
        gt_labels,
        image_shape,
        seed=sampling.derive(seed, 0),
        **objective.anchor_target_args,
    )
    functions = _gradient_parts(model, objective)
    functions["anchor_targets"] = lambda f, boxes, classes, shape: anchor_targets(
        model.anchor_generator(f),
        boxes,
        classes,
        shape,
        seed=sampling.derive(seed, 0),
        **objective.anchor_target_args,
    )
    functions["proposals"] = lambda *rpn: model.proposal_layer(*rpn, use_training_counts=True)
    functions["roi_sampling"] = lambda *inputs: sample_rois(
        *inputs, seed=sampling.derive(seed, 1), **objective.roi_sampler_args
    )
    functions["optimizer"] = lambda gradients: _apply(loop, gradients)
    inputs = {
        "backbone": (images, _upstream(feature_map)),
        "anchor_targets": (feature_map, gt_boxes, gt_labels, image_shape),
        "rpn": (feature_map, labels, targets),
        "proposals": (logits, deltas, anchors, image_shape),
        "roi_sampling": (proposals, num_proposals, gt_boxes, gt_labels),
        "roi_pooling": (feature_map, sampled["rois"], _upstream(pooled)),
        "detector": (pooled, sampled["labels"], sampled["targets"]),
        "optimizer": ([_upstream(v) for v in loop.model.trainable_variables],),
    }
    return {part: (tf.function(functions[part]), inputs[part]) for part in PARTS}


def _gradient_parts(model, objective):
    """The parts with a backward pass: backbone, rpn, roi_pooling, detector."""
    import tensorflow as tf

    from tf_frcnn.head import fast_rcnn_loss
    from tf_frcnn.rpn import rpn_loss

    def backbone(images, upstream):
        with tf.GradientTape() as tape:
            feature_map = model.features(images, training=True)
        return tape.gradient(feature_map, model.features.trainable_variables, upstream)

    def rpn(feature_map, labels, targets):
        with tf.GradientTape() as tape:
            tape.watch(feature_map)
            logits, deltas = model.rpn_head(feature_map)
            # As the objective: the pyramid's box loss is normalised by the sampled anchors.
            locations = (
                None if model.pyramid else tf.shape(feature_map)[1] * tf.shape(feature_map)[2]
            )
            losses = rpn_loss(logits, deltas, labels, targets, locations, **objective.rpn_loss_args)
            loss = tf.add_n(list(losses.values()))
        return tape.gradient(loss, [feature_map, *model.rpn_head.trainable_variables])

    def roi_pooling(feature_map, rois, upstream):
        with tf.GradientTape() as tape:
            tape.watch(feature_map)
            pooled = model.roi_pooling(feature_map, rois)
        return pooled, tape.gradient(pooled, feature_map, upstream)

    def detector(pooled, labels, targets):
        with tf.GradientTape() as tape:
            tape.watch(pooled)
            class_logits, box_deltas = model.detector_head(pooled, training=True)
            loss = tf.add_n(
                list(fast_rcnn_loss(class_logits, box_deltas, labels, targets).values())
            )
        return tape.gradient(loss, [pooled, *model.detector_head.trainable_variables])

    return {"backbone": backbone, "rpn": rpn, "roi_pooling": roi_pooling, "detector": detector}


def _apply(loop, gradients):
    """``training.step.train_step``'s end: the finite check, the barrier, the update."""
    import tensorflow as tf

    total = tf.add_n([tf.reduce_sum(g) for g in gradients])
    with tf.control_dependencies([total]):
        gradients = [tf.identity(g) for g in gradients]
    loop.optimizer.apply_gradients(zip(gradients, loop.model.trainable_variables))
    return total


def time_rounds(calls, runs):
    """``{name: [seconds of each round]}`` of ``calls`` (name -> function of no arguments):
    ``runs`` rounds, each calling every function once in order, after one warm-up round (the
    traces). CPU eager calls return once the kernels have run."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            times[name].append(_timed(call))
    return times


# -- the run ----------------------------------------------------------------------------------


def _machine():
    from tf_frcnn.hardware import cpu_features, cpu_summary

    return {"cpu": cpu_summary(), "cpu_flags": cpu_features()["flags"], "load": _load()}


def _load():
    return [round(value, 2) for value in os.getloadavg()]


def _report(args, machine, counts, kernel_times, times):
    median = {key: statistics.median(values) for key, values in kernel_times.items()}
    fastest = {key: min(values) for key, values in kernel_times.items()}
    by_part, by_kind, flops_by_kind = floor_sums(counts, median)
    step = statistics.median(times["step"])
    parts = {part: statistics.median(times[part]) for part in PARTS}
    rows = itemise(step, parts, by_part)
    floor = sum(by_part.values())
    fastest_floor = sum(floor_sums(counts, fastest)[0].values())
    floors = round_floors(counts, kernel_times)
    ratios = [s / f for s, f in zip(times["step"], floors)]
    print(
        f"train_floor: {args.config}, {args.size[0]}x{args.size[1]}, {args.threads} threads, "
        f"{args.runs} rounds (medians)\ncpu: {machine['cpu']}; flags: "
        f"{' '.join(machine['cpu_flags'])}\nload average 1/5/15 min: start {machine['load']}, "
        f"end {_load()}\nstep {1000 * step:.1f} ms, floor {1000 * floor:.1f} ms "
        f"(fastest runs {1000 * fastest_floor:.1f} ms): ratio {step / floor:.3f}; ratio of "
        f"each round {' '.join(f'{r:.3f}' for r in ratios)}, median "
        f"{statistics.median(ratios):.3f}; fastest step {1000 * min(times['step']):.1f} ms over "
        f"the fastest floor: {min(times['step']) / fastest_floor:.3f}\n\n"
        f"{format_table(rows)}\n\n{format_kinds(by_kind, flops_by_kind)}\n"
    )
    return {
        "config": args.config,
        "size": list(args.size),
        "threads": args.threads,
        "runs": args.runs,
        **machine,
        "load_end": _load(),
        "step_s": step,
        "floor_s": floor,
        "floor_fastest_s": fastest_floor,
        "ratio_fastest": min(times["step"]) / fastest_floor,
        "ratio_to_floor": step / floor,
        "floor_of_each_round_s": floors,
        "ratio_of_each_round": ratios,
        "rows": rows,
        "floor_by_kind_s": by_kind,
        "flops_by_kind_g": {kind: value / 1e9 for kind, value in flops_by_kind.items()},
        "floor_ops": sum(counts.values()),
        "times_s": times,
    }


def main():
    args = _args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    machine = _machine()
    config, model, images, image_shape = bench_model.build(
        args.config, args.size, args.threads, args.inter_op
    )
    from tf_frcnn.training import Objective

    if model.pyramid:
        raise SystemExit("train_floor.py times single-map models; this config has model.fpn")
    batch = bench_model.training_batch(model, images, image_shape)
    loop = bench_model.training_loop(config, model)
    loop.step(batch)
    graph = loop._step.get_concrete_function(batch).graph  # the trace loop.step runs
    counts = floor_ops(graph, model_scopes(model))
    calls = {"step": lambda: loop.step(batch)}
    for part, (fn, inputs) in part_functions(
        model, loop, batch, Objective.from_config(config)
    ).items():
        calls[part] = lambda fn=fn, inputs=inputs: fn(*inputs)
    for key in sorted({key for key, _, _ in counts}):
        calls[key] = kernel_floor.kernel(key)
    times = time_rounds(calls, args.runs)
    kernel_times = {name: values for name, values in times.items() if isinstance(name, tuple)}
    times = {name: values for name, values in times.items() if not isinstance(name, tuple)}
    result = _report(args, machine, counts, kernel_times, times)
    print(json.dumps(result, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
