"""Fixtures of the reliability tests: the fault-injection harness, the smoke config's
synthetic data generated once, and the smoke training run twice in subprocesses (once
uninterrupted, once SIGKILLed three times and resumed), shared by the tests that need a
trained model directory."""

import importlib.util
import os
import shutil
import tempfile
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# Hypothesis caches what it reads from the code under test in .hypothesis/; keep it out of
# the working tree (the examples are derandomized, nothing else is stored).
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tf_frcnn-hypothesis")
)

# Kill points of the test, (checkpointed steps over the schedule, delay in seconds); the
# smoke config has 4 stages of 8 steps with a checkpoint every 4:
#  - 4:  rpn1 has checkpointed step 4 and is running step 5;
#  - 12: detector2 has checkpointed step 4 (the resumed process re-traces stage 2 and its
#        stage-1 proposer);
#  - 24: rpn3 has checkpointed its last step but is not yet marked finished: the resume
#        trains no step of rpn3, saves its weights and goes on to detector4.
TEST_KILL_POINTS = ((4, 0.0), (12, 0.0), (24, 0.0))


def load_harness():
    spec = importlib.util.spec_from_file_location(
        "fault_injection", os.path.join(HERE, "fault_injection.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def harness():
    """``tests/reliability/fault_injection.py`` (not importable by name under
    ``--import-mode=importlib``)."""
    return load_harness()


@pytest.fixture(scope="session")
def smoke_data_dir(harness, tmp_path_factory):
    """A TFDS data dir holding the smoke config's synthetic splits, generated once."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    harness.generate_data(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def smoke_runs(harness, smoke_data_dir, tmp_path_factory):
    """(reference dir, killed dir, kill history): the smoke training run uninterrupted and,
    at the same time, killed at ``TEST_KILL_POINTS`` and resumed; both deterministic."""
    base = tmp_path_factory.mktemp("runs")
    reference, killed = str(base / "reference"), str(base / "killed")
    status = {}
    # The two runs overlap: the reference's compute fills the killed run's start-ups.
    thread = threading.Thread(
        target=lambda: status.update(
            code=harness.run_uninterrupted(reference, smoke_data_dir, timeout_s=400)
        )
    )
    thread.start()
    history = harness.run_with_kills(killed, smoke_data_dir, TEST_KILL_POINTS, timeout_s=400)
    thread.join()
    assert status.get("code") == 0, open(harness.log_path(reference)).read()[-3000:]
    return reference, killed, history


@pytest.fixture()
def trained_dir(smoke_runs, tmp_path):
    """A private copy of the finished reference model directory."""
    return shutil.copytree(smoke_runs[0], tmp_path / "trained")
