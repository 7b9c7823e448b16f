"""Makes docs/webview.png: the demo plant's live web view with the tank temperature's trend open,
in Debian's chromium (headless, 1400 x 1000) through chromedriver and Python selenium, as the
browser test drives it (webview_driver.py).

Runs `twinloom demo` (a binary built with the `demo` feature; by default target/debug/twinloom),
reads the page's address from its first line, waits until the page lists the plant with live
values, clicks the tank temperature, waits for its chart, lets the demo run for a minute, saves
the screenshot and stops the demo with SIGINT.

Usage (from the repository root): .venv/bin/python tests/peers/webview_screenshot.py
    [--twinloom target/debug/twinloom] [--out docs/webview.png]
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from selenium.webdriver.common.by import By

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webview_driver import browser, wait  # noqa: E402

TANK = "demo-plant/utilities/tank1/temperature"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--twinloom", default="target/debug/twinloom")
    parser.add_argument("--out", default="docs/webview.png")
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="twinloom-screenshot-")
    demo = subprocess.Popen([args.twinloom, "demo"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, TMPDIR=state))
    driver = None
    try:
        first = demo.stdout.readline()
        found = re.search(r"open (http://\S+/)", first)
        if not found:
            raise SystemExit(f"the demo's first line names no page: {first!r}")
        url = found.group(1)
        # The demo keeps printing its status line: read it away so that it never blocks.
        subprocess.Popen(["cat"], stdin=demo.stdout, stdout=subprocess.DEVNULL)
        driver = browser()
        driver.get(url)
        started = time.monotonic()
        wait(driver, 120, "#summary", r"^\d+ assets", started)
        wait(driver, 120, f'.row[data-path="{TANK}"] .quality', "^good$", started)
        wait(driver, 30, '#plugins tr[data-plugin="tank1-pid"] .rate', r"^\d", started)
        driver.find_element(By.CSS_SELECTOR, f'.row[data-path="{TANK}"] .name').click()
        wait(driver, 30, "#trend-note", "^(history|no history)", started)
        # A minute of the demo in the chart, live values appended, the audit table full.
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
        driver.save_screenshot(args.out)
        print(f"saved {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)


if __name__ == "__main__":
    main()
