"""Kill a ``tf-frcnn train`` subprocess with SIGKILL at chosen points and resume it.

Shared by ``test_fault_injection.py`` (3 kills) and ``benchmarks/reliability_kill.py``
(10 kills). Not a test module: pytest does not collect it; both load it by path.

A kill point is ``(level, delay_s)``: wait until ``state.json`` shows at least ``level``
checkpointed steps over the whole schedule (finished stages count in full), then sleep
``delay_s`` and SIGKILL. A level the run had already reached when the process started
makes the kill land ``delay_s`` into its start-up (import, model build, tracing).
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")
STAGES = ("rpn1", "detector2", "rpn3", "detector4")
POLL_S = 0.02


def stage_steps(config_path=SMOKE):
    """{stage: steps} of a config's alternating schedule."""
    from tf_frcnn import load_config

    config = load_config(config_path)
    return {stage: config.train.stages[stage].steps for stage in STAGES}


def read_state(model_dir):
    """state.json as a dict, or None before the first one is written."""
    try:
        with open(os.path.join(model_dir, "state.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def progress(state, steps):
    """Checkpointed steps over the whole schedule according to ``state``."""
    if state is None:
        return 0
    done = sum(steps[stage] for stage in state["finished_stages"])
    current = state["step"] if state["current_stage"] else 0
    return done + current


def position(state):
    """Where ``state`` says the run is, e.g. "rpn1@4" or "detector2@0" (the stage and its
    last checkpointed step; a finished stage is at its last step); "start" before any."""
    if state is None:
        return "start"
    if state["current_stage"]:
        return f"{state['current_stage']}@{state['step']}"
    if state["finished_stages"]:
        return f"{state['finished_stages'][-1]}@end"
    return "start"


def train_command(model_dir, data_dir, config_path=SMOKE, resume=False):
    command = [
        sys.executable,
        "-m",
        "tf_frcnn_cli",
        "train",
        "--config",
        config_path,
        "--model-dir",
        model_dir,
        "--data-dir",
        data_dir,
    ]
    return command + (["--resume"] if resume else [])


def _env(deterministic):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    # The CPU kernel of crop_and_resize's image gradient (ROI pooling -> backbone) adds
    # from several threads in no fixed order: two uninterrupted runs differ by ~1e-8 from
    # stage 2 on. TF's op determinism switch (read from this variable at start-up) makes it
    # serial, and the runs bit-identical.
    env.pop("TF_DETERMINISTIC_OPS", None)
    if deterministic:
        env["TF_DETERMINISTIC_OPS"] = "1"
    return env


def start_training(
    model_dir, data_dir, log_file, config_path=SMOKE, resume=False, deterministic=True
):
    log = open(log_file, "ab")
    process = subprocess.Popen(
        train_command(model_dir, data_dir, config_path, resume),
        cwd=ROOT,
        env=_env(deterministic),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log = log
    return process


def finish(process, timeout_s):
    """Wait for ``process``; past ``timeout_s`` kill it and raise ``TimeoutExpired``."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        process.log.close()


def log_path(model_dir):
    """The training log of ``model_dir``, kept beside it (all its processes append)."""
    return os.path.join(
        os.path.dirname(os.path.abspath(model_dir)), os.path.basename(model_dir) + ".log"
    )


def run_uninterrupted(model_dir, data_dir, config_path=SMOKE, timeout_s=600, deterministic=True):
    """Train to the end in one process; returns its exit status."""
    process = start_training(
        model_dir, data_dir, log_path(model_dir), config_path, deterministic=deterministic
    )
    return finish(process, timeout_s)


def run_with_kills(
    model_dir, data_dir, kill_points, config_path=SMOKE, timeout_s=600, deterministic=True
):
    """Train, SIGKILLing the run at each of ``kill_points`` and resuming after each.

    Returns a list of dicts, one per process: ``level`` and ``delay_s`` of its kill point
    (None for the last, unkilled process), ``start`` and ``end``, the checkpointed
    progress when it started and ended, ``at``, the ``position`` when it ended,
    ``killed`` (False when it finished before the kill), ``returncode`` and ``seconds``.
    """
    steps = stage_steps(config_path)
    deadline = time.monotonic() + timeout_s
    history = []
    for index, point in enumerate(list(kill_points) + [None]):
        started = time.monotonic()
        start = progress(read_state(model_dir), steps)
        process = start_training(
            model_dir,
            data_dir,
            log_path(model_dir),
            config_path,
            resume=index > 0,
            deterministic=deterministic,
        )
        killed = False
        if point is not None:
            level, delay_s = point
            while process.poll() is None and time.monotonic() < deadline:
                if progress(read_state(model_dir), steps) >= level:
                    time.sleep(delay_s)
                    if process.poll() is None:
                        process.send_signal(signal.SIGKILL)
                        killed = True
                    break
                time.sleep(POLL_S)
        returncode = finish(process, max(1.0, deadline - time.monotonic()))
        state = read_state(model_dir)
        history.append(
            {
                "level": None if point is None else point[0],
                "delay_s": None if point is None else point[1],
                "start": start,
                "end": progress(state, steps),
                "at": position(state),
                "killed": killed,
                "returncode": returncode,
                "seconds": time.monotonic() - started,
            }
        )
    return history


def read_weights(path):
    """{dataset path: array} of every tensor in a Keras ``.weights.h5`` file."""
    tensors = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                tensors.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return tensors


def compare_weights(path_a, path_b):
    """(identical, max |a - b| over all tensors, number of tensors)."""
    a, b = read_weights(path_a), read_weights(path_b)
    if a.keys() != b.keys():
        return False, float("inf"), len(a)
    worst = max(
        (
            float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
            if a[k].size
            else 0.0
        )
        for k in a
    )
    identical = all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)
    return identical, worst, len(a)


def loss_history(model_dir):
    """{stage: [(step, loss)]} from the run's ``losses.jsonl`` files (a step repeated
    after a kill counts once, its later value)."""
    from tf_frcnn.rundir import read_history

    log_dir = os.path.join(model_dir, "logs")
    return {stage: read_history(log_dir, stage) for stage in STAGES}


def generate_data(data_dir, config_path=SMOKE):
    """Generate the smoke config's synthetic dataset once, before any subprocess runs."""
    from tf_frcnn import load_config
    from tf_frcnn.data import inputs

    config = load_config(config_path)
    config.data.data_dir = data_dir
    for split in (config.data.train_split, config.data.eval_split):
        inputs.source(config, split)
