"""Training under tf.distribute: MirroredStrategy on two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1. Each runs
in its own process, since devices and the cluster are fixed when TF starts."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import numpy as np

from tf_frcnn.data import synthetic_builder

HERE = os.path.dirname(os.path.abspath(__file__))
SMOKE = os.path.join(HERE, "..", "..", "configs", "smoke.yaml")


def _prepare_data(tfds_dir):
    synthetic_builder(tfds_dir, image_size=64, num_train=16, num_validation=8, num_test=8)


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    return env


def _finished(model_dir):
    with open(os.path.join(model_dir, "state.json")) as handle:
        return json.load(handle)["finished_stages"]


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tfds_dir):
    _prepare_data(tfds_dir)
    model_dir = tmp_path / "mirrored"
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tf_frcnn import load_config
        from tf_frcnn.training import Trainer
        config = load_config({SMOKE!r})
        config.data.data_dir = {tfds_dir!r}
        trainer = Trainer(config, {str(model_dir)!r}, strategy="mirrored", progress=False)
        assert trainer.strategy.num_replicas_in_sync == 2, trainer.strategy.num_replicas_in_sync
        trainer.run()
        print("replicas", trainer.strategy.num_replicas_in_sync)
        import numpy as np
        gaps = []
        for weight in trainer.model.weights:
            copies = getattr(getattr(weight, "value", weight), "values", ())
            if len(copies) == 2:
                gaps.append(float(np.abs(copies[0].numpy() - copies[1].numpy()).max()))
        print("mirrored", len(gaps), "of", len(trainer.model.weights), "gap", max(gaps))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
    assert _finished(model_dir) == ["rpn1", "detector2", "rpn3", "detector4"]
    # Every weight is mirrored on both replicas, and the replicas hold the same values after
    # training (the all-reduced gradient applied on each): not just "training finished".
    line = next(row for row in result.stdout.splitlines() if row.startswith("mirrored"))
    _, mirrored, _, total, _, gap = line.split()
    assert int(mirrored) == int(total) > 0 and float(gap) == 0.0, line


def test_mirrored_replicas_match_one_device_on_the_same_batches(tmp_path, tfds_dir):
    """The same 4 global batches of 2 images, from the same initial weights, in stage rpn1:
    on one device (batch 2) and mirrored on two logical CPUs (one image a replica, each
    replica's loss divided by 2, the gradients summed across replicas). The two are the same
    computation: the RPN loss is a mean of per-image terms, and at 64 px an image has 144
    anchors, fewer than the 256 the sampler takes, so every candidate is sampled whichever
    random draws each replica gets. They differ by float rounding only (summation orders):
    7e-9 measured, against a bar of 1e-5. Each replica's loss left undivided by the replicas
    (gradients summed, not averaged) ends 0.026 apart, the weights' whole change over the 4
    steps (0.026): a wrong all-reduce lands far above the bar."""
    _prepare_data(tfds_dir)
    script = textwrap.dedent(f"""
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from tf_frcnn import load_config
        from tf_frcnn.data import inputs
        from tf_frcnn.model import build_model
        from tf_frcnn.training import Objective, StageLoop, make_optimizer
        from tf_frcnn.training.schedule import stage_config
        config = load_config({SMOKE!r})
        config.data.data_dir = {tfds_dir!r}
        keys = ("images", "image_shape", "boxes", "labels")
        batches = list(inputs.batches(config, "train", training=True, batch_size=2).take(4))
        stacked = {{k: tf.concat([b[k] for b in batches], 0) for k in keys}}
        initial = None

        def train(strategy):
            global initial
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = build_model(config)
                model({{k: stacked[k][:2] for k in ("images", "image_shape")}})
                optimizer = make_optimizer(config.train, stage_config(config, "rpn1"))
            if initial is None:
                initial = model.get_weights()
            model.set_weights(initial)
            loop = StageLoop.for_stage(
                model, "rpn1", Objective.from_config(config), optimizer, strategy)
            dataset = tf.data.Dataset.from_tensor_slices(stacked).batch(2)
            for batch in strategy.experimental_distribute_dataset(dataset):
                loop.step(batch)
            return model

        one = train(tf.distribute.get_strategy())
        mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        replica_gap, device_gap, moved, copies = 0.0, 0.0, 0.0, 0
        for a, b, start in zip(one.weights, mirrored.weights, initial):
            values = getattr(getattr(b, "value", b), "values", ())
            copies += len(values) == 2
            for value in values:
                gap = np.abs(value.numpy() - values[0].numpy()).max()
                replica_gap = max(replica_gap, float(gap))
            device_gap = max(device_gap, float(np.abs(a.numpy() - b.numpy()).max()))
            moved = max(moved, float(np.abs(a.numpy() - start).max()))
        print("compare", copies, len(one.weights), replica_gap, device_gap, moved)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(row for row in result.stdout.splitlines() if row.startswith("compare"))
    _, copies, total, replica_gap, device_gap, moved = line.split()
    assert int(copies) == int(total) > 10, line
    assert float(replica_gap) == 0.0, line
    assert float(device_gap) < 1e-5, line
    assert float(moved) > 1e-3, line


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multiworker_smoke_through_the_cli(tmp_path, tfds_dir):
    _prepare_data(tfds_dir)
    model_dir = tmp_path / "multiworker"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tf_frcnn_cli",
                    "train",
                    "--config",
                    SMOKE,
                    "--model-dir",
                    str(model_dir),
                    "--strategy",
                    "multiworker",
                    "--data-dir",
                    tfds_dir,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert _finished(model_dir) == ["rpn1", "detector2", "rpn3", "detector4"]
    assert os.path.exists(model_dir / "final.weights.h5")
    # The second worker wrote only under workers/, never the chief's files.
    assert os.path.isdir(model_dir / "workers" / "worker-1")
    # Both workers end with the same weights (synchronous all-reduce), bit for bit.
    chief = _h5_arrays(model_dir / "final.weights.h5")
    other = _h5_arrays(model_dir / "workers" / "worker-1" / "final.weights.h5")
    assert chief.keys() == other.keys() and len(chief) > 10
    for key in chief:
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)


def _h5_arrays(path):
    """{dataset path: array} of every dataset of an .h5 file."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays
