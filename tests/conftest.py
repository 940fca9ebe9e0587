import contextlib
import importlib.util
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmark_module(monkeypatch):
    """``benchmark_module(name)`` loads ``benchmarks/<name>.py``: benchmarks/ is not a
    package and its scripts import their neighbours by name, so it goes on sys.path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(model dir, TFDS dir) of configs/smoke.yaml trained once per session with
    `tf-frcnn train`; tests that write into the model dir other than by `tf-frcnn eval` copy it
    first."""
    from tf_frcnn_cli import main

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


# Skips a CI run (CI=true) accepts, each with why; any other skip fails the run, so a missing
# package or file cannot turn a test into a silent pass. Keys are substrings of skip reasons.
SKIP_ALLOW_LIST = {
    "headless Chromium unavailable": "local runs without Chromium; under CI=true the browser "
    "fixture fails instead of skipping (.ci/run installs Chromium)"
}


def unlisted_skips(reports, allow_list=SKIP_ALLOW_LIST):
    """(nodeid, reason) of the skipped ``reports`` whose reason matches no allow-list key."""
    found = []
    for report in reports:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(key in reason for key in allow_list):
            found.append((report.nodeid, reason))
    return found


# `make test` runs the suite in two pytest-xdist workers (`-n 2 --dist loadgroup` in setup.cfg):
# most tests leave one of the two cores idle (TF's small ops, subprocess start-ups, Python), so
# two workers take about half the time. Tests that share a costly session fixture form one
# group, so that fixture is built once; every other test is grouped by its file, so a module
# fixture is built once too.
SHARED_SESSION_FIXTURES = ("smoke_runs", "trained_model", "smoke_run")


def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = [name for name in SHARED_SESSION_FIXTURES if name in item.fixturenames]
        group = shared[0] if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    unlisted = unlisted_skips(skipped)
    if unlisted:
        reporter.write_line("CI=true: skips not on tests/conftest.py SKIP_ALLOW_LIST:", red=True)
        for nodeid, reason in unlisted:
            reporter.write_line(f"  {nodeid}: {reason}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
