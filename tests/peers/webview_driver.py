"""A real browser for the web view's tests: Debian's chromium, headless, through chromedriver and
Python selenium (pinned in requirements.txt), driven by commands on stdin.

Prints `READY` once the browser runs. Commands, one per line, their fields separated by tabs
(selectors and patterns hold spaces), each answered with one line,
`OK <result>` (line feeds in it as spaces) or `ERROR <why>` (after an error the page's screenshot is saved as
`<shots>/<n>-error.png` and its path ends the line):

- `OPEN <url>` → `OK`: loads the page.
- `WAIT <seconds> <css selector> <regex>` (tab-separated) → `OK <ms> <text>`: waits until an element matching
  the selector has text matching the regex (Python `re.search`), polling every 10 ms; answers
  how long it waited (milliseconds, from the command's arrival) and the text.
- `TYPE <css selector> <text>` (tab-separated) → `OK`: replaces the field's text (`<text>` may be empty).
- `CLICK <css selector>` → `OK` (an element the page replaced meanwhile is looked up again).
- `SCRIPT <javascript>` → `OK <JSON of the result>`: runs an async script; its last argument is
  the callback (`arguments[arguments.length - 1](value)`).
- `SHOT <name>` → `OK <path>`: saves a screenshot as `<shots>/<name>.png`.

Exits (and quits the browser) when stdin closes.

Usage: python webview_driver.py SHOTS_DIR
"""

import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("TWINLOOM_CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    service = Service(os.environ.get("TWINLOOM_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(10)
    return driver


def wait(driver, limit, selector, pattern, started):
    regex = re.compile(pattern)
    last = None
    while True:
        try:
            for element in driver.find_elements(By.CSS_SELECTOR, selector):
                last = element.text
                if regex.search(last):
                    return f"{(time.monotonic() - started) * 1000:.0f} {last}"
        except Exception as error:  # the element was replaced while read: look again
            last = f"({error.__class__.__name__})"
        if time.monotonic() - started > limit:
            raise TimeoutError(f"no {selector} with text /{pattern}/ within {limit} s; last text {last!r}")
        time.sleep(0.01)


def click(driver, selector):
    """Clicks the element; looks it up again when the page replaced it meanwhile (the status
    tables are redrawn every 2 s)."""
    for attempt in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            if attempt == 4:
                raise


def main():
    shots = sys.argv[1]
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    errors = 0
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            started = time.monotonic()
            command, _, rest = line.rstrip("\n").partition("\t")
            try:
                if command == "OPEN":
                    driver.get(rest)
                    answer = ""
                elif command == "WAIT":
                    limit, selector, pattern = rest.split("\t", 2)
                    answer = wait(driver, float(limit), selector, pattern, started)
                elif command == "TYPE":
                    selector, _, text = rest.partition("\t")
                    field = driver.find_element(By.CSS_SELECTOR, selector)
                    field.clear()
                    if text:
                        field.send_keys(text)
                    answer = ""
                elif command == "CLICK":
                    click(driver, rest)
                    answer = ""
                elif command == "SCRIPT":
                    answer = json.dumps(driver.execute_async_script(rest))
                elif command == "SHOT":
                    path = os.path.join(shots, rest + ".png")
                    driver.save_screenshot(path)
                    answer = path
                else:
                    raise ValueError(f"unknown command {command!r}")
                # One line per answer: an element's text may span lines.
                print(f"OK {answer}".rstrip().replace("\n", " "), flush=True)
            except Exception as error:
                errors += 1
                path = os.path.join(shots, f"{errors}-error.png")
                try:
                    driver.save_screenshot(path)
                except Exception:
                    path = "(no screenshot)"
                why = str(error).replace("\n", " ")[:2000]
                print(f"ERROR {why} {path}", flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
