"""The CI skip rule of tests/conftest.py: under CI=true a skip whose reason is not on
SKIP_ALLOW_LIST fails the run; skip reasons are printed (-rs)."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, reason, ci):
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "conftest.py").write_text(
        open(os.path.join(ROOT, "tests", "conftest.py"), encoding="utf-8").read()
    )
    (tests / "test_one.py").write_text(
        textwrap.dedent(
            f"""
            import pytest

            def test_passes():
                pass

            def test_skips():
                pytest.skip({reason!r})
            """
        )
    )
    env = {**os.environ, "CI": "true" if ci else "false"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unlisted_skip_fails_under_ci_and_names_the_test(tmp_path):
    result = _run(tmp_path, "the LiteRT package is missing", ci=True)
    assert result.returncode == 1, result.stdout
    assert "not on tests/conftest.py SKIP_ALLOW_LIST" in result.stdout
    unlisted = result.stdout.split("SKIP_ALLOW_LIST:")[1]
    assert "test_one.py::test_skips" in unlisted and "the LiteRT package is missing" in unlisted


def test_allow_listed_skip_passes_under_ci(tmp_path):
    result = _run(tmp_path, "headless Chromium unavailable: chromium", ci=True)
    assert result.returncode == 0, result.stdout
    assert "SKIPPED" in result.stdout and "headless Chromium unavailable" in result.stdout


def test_unlisted_skip_passes_locally_with_its_reason_printed(tmp_path):
    result = _run(tmp_path, "the LiteRT package is missing", ci=False)
    assert result.returncode == 0, result.stdout
    assert "SKIPPED" in result.stdout and "the LiteRT package is missing" in result.stdout
