"""The optimizer update alone, on a config's trainable variables: Keras' SGD
with the L2 term and a NaN guard as separate TF ops (what the training loop did
before tf_frcnn.training.optimizers.SGD) against tf_frcnn's SGD (the same
update, in place with TF's fused kernels), timed in interleaved rounds.

    python benchmarks/bench_optimizer.py --config configs/voc07_vgg16.yaml --runs 7

Prints one JSON line: the parameter count, each median in seconds and the ratio."""

import argparse
import json
import statistics
import time


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/voc07_vgg16.yaml")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from tf_frcnn.config import load_config
    from tf_frcnn.model import build_model
    from tf_frcnn.training.optimizers import SGD, decays

    config = load_config(args.config)
    config.model.weights = None
    model = build_model(config)
    model({"images": tf.zeros([1, 224, 224, 3]), "image_shape": tf.constant([[224, 224]])})
    shapes = [(tuple(v.shape), decays(v)) for v in model.trainable_variables]
    del model
    wd, rate, momentum = config.train.weight_decay, 1e-3, config.train.momentum

    def make_set():
        return [keras.Variable(tf.random.normal(shape, stddev=0.01)) for shape, _ in shapes]

    gradients = [tf.random.normal(shape, stddev=0.01) for shape, _ in shapes]
    reference_vars, ours_vars = make_set(), make_set()
    reference = keras.optimizers.SGD(rate, momentum=momentum)
    ours = SGD(rate, momentum=momentum, l2=wd)
    reference.build(reference_vars)
    ours.build(ours_vars)

    @tf.function
    def reference_update(gradients):
        gradients = [
            g + wd * v if decay else g
            for g, v, (_, decay) in zip(gradients, reference_vars, shapes)
        ]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        gradients = [tf.where(finite, g, tf.zeros_like(g)) for g in gradients]
        reference.apply_gradients(zip(gradients, reference_vars))

    @tf.function
    def ours_update(gradients):
        ours.apply_gradients(zip(gradients, ours_vars))

    updates = {"keras_sgd_l2_guard_s": reference_update, "tf_frcnn_sgd_s": ours_update}
    times = {name: [] for name in updates}
    for update in updates.values():
        update(gradients)
    for _ in range(args.runs):
        for name, update in updates.items():
            start = time.perf_counter()
            update(gradients)
            times[name].append(time.perf_counter() - start)
    result = {
        "config": args.config,
        "threads": args.threads,
        "parameters_m": sum(int(tf.reduce_prod(s)) for s, _ in shapes) / 1e6,
    }
    result.update({name: statistics.median(t) for name, t in times.items()})
    result["ratio_ours_over_keras"] = result["tf_frcnn_sgd_s"] / result["keras_sgd_l2_guard_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
