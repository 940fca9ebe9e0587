"""report.html in a real browser: headless Chromium, driven by Selenium, opens the report of a
smoke run from file://. Without the browser the test skips locally and fails in CI (CI=true),
saying what is missing."""

import json
import os
import shutil
import tempfile

import pytest

from tf_frcnn_cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")
# Root in a container, no display, no network: nothing may be fetched or started in the background.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,2000",
)


def _missing():
    """What is missing to drive a headless Chromium, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no chromium on PATH (apt-get install -y chromium chromium-driver; .ci/run does)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (apt-get install -y chromium-driver; .ci/run does)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test needs headless Chromium: {missing}")
        pytest.skip(f"headless Chromium unavailable: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def smoke_report(smoke_run, tmp_path_factory):
    """The smoke run evaluated by `tf-frcnn eval` in a copy of its model dir, with validation
    history as the training writes it (logs/{stage}.val.jsonl, a torn last line included)."""
    model_dir, tfds_dir = smoke_run
    copy = tmp_path_factory.mktemp("report") / "smoke"
    shutil.copytree(model_dir, copy)
    rows = {
        "rpn1": [{"step": 4, "recall@300": 0.41}, {"step": 8, "recall@300": 0.62}],
        "detector2": [
            {"step": 4, "mAP50": 0.05, "AP": 0.01, "AP50": 0.04},
            {"step": 8, "mAP50": 0.12, "AP": 0.03, "AP50": 0.11},
        ],
    }
    for stage, lines in rows.items():
        text = "".join(json.dumps(row) + "\n" for row in lines)
        (copy / "logs" / f"{stage}.val.jsonl").write_text(text + '{"step": 12, "AP')
    assert main(["eval", "--config", SMOKE, "--model-dir", str(copy), "--data-dir", tfds_dir]) == 0
    return copy


def test_report_opens_in_chromium(browser, smoke_report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    metrics = json.loads((smoke_report / "metrics.json").read_text())
    assert (smoke_report / "validation_curves.png").exists()
    browser.get((smoke_report / "report.html").as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(image => image.complete)"
        )
    )

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    images = browser.execute_script(
        "return Array.from(document.images).map(image => [image.alt, image.naturalWidth])"
    )
    assert len(images) >= 4 and all(width > 0 for _, width in images), images
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert all(name.startswith(("data:", "file:")) for name in resources), resources

    for key in ("AP", "AP50", "mAP_voc"):
        shown = browser.find_element(By.CSS_SELECTOR, f'[data-metric="{key}"]').text
        assert shown == f"{metrics[key]:.3f}", (key, shown, metrics[key])
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    for title in (
        "Error breakdown",
        "Confusion matrix",
        "Score thresholds (maximum F1)",
        "AP50 by object size",
        "Gallery",
        "Validation during training",
        "RPN recall (paper Fig. 4)",
        "Training loss per stage",
        "Likely label errors",
    ):
        assert title in headings, headings
    assert "label_errors" in metrics and metrics["run"]["weights"] in ("best", "final")
    header = browser.find_element(By.ID, "run").text
    assert f"split {metrics['split']}" in header and f"images {metrics['num_images']}" in header
    assert browser.find_element(By.ID, "headline").text.startswith(f"COCO AP {metrics['AP']:.3f}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#score-thresholds-maximum-f1 tbody tr")
    assert [row.find_element(By.TAG_NAME, "th").text for row in rows] == [
        entry["name"] for entry in metrics["thresholds"].values()
    ]
