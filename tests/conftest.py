import contextlib
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(model dir, TFDS dir) of configs/smoke.yaml trained once per session with
    `tf-frcnn train`; tests that write into the model dir other than by `tf-frcnn eval` copy it
    first."""
    from tf_frcnn.cli import main

    tfds_dir = str(tmp_path_factory.mktemp("tfds"))
    model_dir = str(tmp_path_factory.mktemp("cli") / "smoke")
    assert (
        main(
            [
                "train",
                "--config",
                os.path.join(ROOT, "configs", "smoke.yaml"),
                "--model-dir",
                model_dir,
                "--data-dir",
                tfds_dir,
            ]
        )
        == 0
    )
    return model_dir, tfds_dir


@contextlib.contextmanager
def _op_determinism():
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()


@pytest.fixture(scope="session")
def op_determinism():
    """A context manager: TF op determinism on inside it (as ``train.deterministic`` sets it),
    restored after. Trainings whose outcome a test checks run inside it, seeded: CPU kernels
    such as crop_and_resize's gradient otherwise sum across threads in no fixed order, and the
    outcome of a short overfit would depend on luck."""
    return _op_determinism
