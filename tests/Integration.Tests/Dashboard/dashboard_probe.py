#!/usr/bin/python3
"""Drives Debian's headless Chromium (through chromedriver, python3-selenium) at the agent's dashboard.

    dashboard_probe.py URL TOKEN_FILE OUT_DIR WAIT_FOR [TIMEOUT_S]

Logs in through the page's own form with the token, then waits until the rendered page satisfies WAIT_FOR:
  running   a migration row whose state is not final, with at least one pre-copy iteration drawn
  finished  every migration row finished (incoming: committed and its lazy fill over) and a timeline drawn
Then writes OUT_DIR/<WAIT_FOR>.html (the DOM after the page's script ran) and OUT_DIR/<WAIT_FOR>.png (a
screenshot), and prints one JSON line of what it saw: rows (id, state), phases drawn, iteration bars, the
lazy fill's state, the failure text. Exit 0 when the condition held in time, 1 otherwise (the files are written
either way).
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

FINAL = {"succeeded", "failed", "cancelled", "committed", "aborted", "lost"}


SEEN = """
const q = (s) => Array.from(document.querySelectorAll(s));
const lazy = document.querySelector("#lazy:not([hidden])");
const failure = document.querySelector("#failure:not([hidden])");
const downtime = document.getElementById("n-downtime");
return {
  rows: q("#migrations tbody tr").map((r) => ({ id: r.dataset.id, state: r.querySelector("td.state").textContent, finished: r.dataset.finished === "true" })),
  phases: q("#timeline rect.phase").map((p) => p.dataset.phase),
  iterationBars: q("#iterations rect.bar-sent").length,
  lazy: lazy ? lazy.dataset.state : null,
  failure: failure ? failure.textContent : null,
  title: document.getElementById("detail-title").textContent,
  downtime: downtime ? downtime.textContent : null,
};
"""


def seen(driver):
    # One script reads it all at once: the page redraws itself whenever the state changes.
    return driver.execute_script(SEEN)


def holds(what, s):
    if what == "running":
        return any(not r["finished"] and r["state"] not in FINAL for r in s["rows"]) and s["iterationBars"] > 0
    return len(s["rows"]) > 0 and all(r["finished"] for r in s["rows"]) and len(s["phases"]) > 0


def main():
    url, token_file, out, what = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 60
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    ok = False
    s = {}
    try:
        driver.get(url)
        deadline = time.time() + timeout
        while not driver.find_elements(By.CSS_SELECTOR, "#login:not([hidden]), #board:not([hidden])"):
            if time.time() > deadline:
                raise TimeoutError("the page showed neither its login nor its board")
            time.sleep(0.1)
        if driver.find_elements(By.CSS_SELECTOR, "#login:not([hidden])"):
            with open(token_file) as f:
                driver.find_element(By.ID, "token").send_keys(f.read().strip())
            driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        while time.time() < deadline:
            if driver.find_elements(By.CSS_SELECTOR, "#board:not([hidden])"):
                s = seen(driver)
                if holds(what, s):
                    ok = True
                    break
            time.sleep(0.2)
        time.sleep(0.3)  # the last render settles before the picture
        s = seen(driver) if driver.find_elements(By.CSS_SELECTOR, "#board:not([hidden])") else s
    finally:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, what + ".html"), "w") as f:
            f.write(driver.page_source)
        driver.save_screenshot(os.path.join(out, what + ".png"))
        driver.quit()
    s["ok"] = ok
    print(json.dumps(s))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
