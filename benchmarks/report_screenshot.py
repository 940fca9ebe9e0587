"""A screenshot of a model dir's report.html in headless Chromium, for docs/

    .venv/bin/python benchmarks/report_screenshot.py runs/demo/report.html docs/report.png \
        --section error-breakdown --height 1500 --width 960

Opens the page from file:// (Debian's chromium and chromium-driver, driven by Selenium), scrolls
to the section, takes the 1280-pixel-wide window, then scales it to --width and stores it with a
256-colour palette to keep the PNG small. Prints the PNG's size.
"""

import argparse
import os
import shutil
import tempfile

from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("png")
    parser.add_argument("--section", default="error-breakdown", help="id of the first section")
    parser.add_argument("--height", type=int, default=1500, help="window height (pixels)")
    parser.add_argument("--width", type=int, default=960, help="width of the stored PNG")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--window-size=1280,{args.height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get("file://" + os.path.abspath(args.report))
        driver.execute_script(f"document.getElementById('{args.section}').scrollIntoView()")
        raw = os.path.join(profile, "window.png")
        driver.save_screenshot(raw)
        image = Image.open(raw).convert("RGB")
    finally:
        driver.quit()
    height = round(image.height * args.width / image.width)
    image = image.resize((args.width, height), Image.LANCZOS).quantize(
        256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    image.save(args.png, optimize=True)
    shutil.rmtree(profile, ignore_errors=True)
    print(f"{args.png}: {image.width}x{image.height}, {os.path.getsize(args.png) // 1024} KB")


if __name__ == "__main__":
    main()
