"""End to end: the real app in headless Chromium scores a small hh-rlhf slice and explores it,
and opens a finished study and hands its best cell to the Chat page."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import HH, ROOT
from test_study import tiny_run  # noqa: F401 - the tiny study's scoring run (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCORING_TIMEOUT = 420  # model load + 12 pairs; generous for a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(session_cache, tmp_path):
    """`streamlit run app.py` on a free localhost port, with LLS_CACHE = the session cache."""
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "wb")
    env = dict(os.environ, LLS_CACHE=str(session_cache), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.close()
            raise RuntimeError("streamlit did not start:\n" +
                               (tmp_path / "streamlit.log").read_text(errors="replace"))
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _wait(d, cond, timeout: float, what: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A rerun can replace an element between finding it and reading it: look again.
    return WebDriverWait(d, timeout, poll_frequency=0.5,
                         ignored_exceptions=[StaleElementReferenceException]
                         ).until(cond, message=f"waiting for {what}")


def _input(d, label_start: str):
    from selenium.webdriver.common.by import By

    return _wait(d, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "input")
                                    if (e.get_attribute("aria-label") or "").startswith(label_start)),
                                   None), 60, f"input {label_start!r}")


def _set_text(d, label_start: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    el = _input(d, label_start)
    el.click()
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    el.send_keys(value, Keys.ENTER)
    _wait(d, lambda d: _input(d, label_start).get_attribute("value") == value, 30,
          f"{label_start!r} = {value!r}")
    _idle(d)


def _idle(d, timeout: float = 60) -> None:
    """Wait until the app is not rerunning (no running indicator) for a moment."""
    from selenium.webdriver.common.by import By

    time.sleep(0.5)
    _wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'),
          timeout, "the script to finish")


def _button(d, text: str):
    from selenium.webdriver.common.by import By

    return _wait(d, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button")
                                    if b.text.strip() == text and b.is_enabled()), None),
                 60, f"button {text!r}")


def _table_rows(d) -> int | None:
    m = re.search(r"table rows: (\d+) of (\d+)", _body(d))
    return int(m.group(1)) if m else None


def _body(d) -> str:
    from selenium.webdriver.common.by import By

    return d.find_element(By.TAG_NAME, "body").text


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian chromium + chromium-driver (.ci/run installs them)")
def test_score_then_explore_in_a_real_browser(server, driver, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = driver
    try:
        d.get(f"{server}/Setup")
        _wait(d, lambda d: "Preference data" in _body(d), 90, "the Setup page")
        _set_text(d, "Local file", str(HH))
        _wait(d, lambda d: "Checked the whole source: 2312 rows" in _body(d), 60, "the preview")
        _set_text(d, "Limit", "12")
        _button(d, "Start scoring").click()
        seen_progress = False

        def finished(d):
            nonlocal seen_progress
            body = _body(d)
            seen_progress |= bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stProgress"]'))
            if "failed" in body and "exited with code" in body:
                raise AssertionError("scoring job failed:\n" + body[-2000:])
            return "12/12 pairs done" in body
        _wait(d, finished, SCORING_TIMEOUT, "scoring to finish")
        assert seen_progress, "the live progress bar never showed"
        # The panel reruns the page when the job ends: wait for the refreshed runs list.
        _wait(d, lambda d: "Reopen a finished run" in _body(d) and "12 pairs" in _body(d), 90,
              "the finished run in the runs list")
        _idle(d)
        _button(d, "Open in explorer").click()  # the job's button (the panel comes first)

        _wait(d, lambda d: "selected pairs" in _body(d) and _table_rows(d) is not None, 90,
              "the explorer")
        assert "/Explore" in d.current_url and "run=" in d.current_url
        assert "scored pairs\n12\n" in _body(d)  # the run just scored is the one opened
        first = _table_rows(d)
        assert first == 1  # gamma 0.05 of 12 pairs: ceil(0.6)
        # The slider is a react-aria range input: focus it and press End (gamma -> 1.0).
        rng = d.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
        d.execute_script("arguments[0].focus()", rng)
        ActionChains(d).send_keys(Keys.END).perform()
        _wait(d, lambda d: rng.get_attribute("aria-valuetext") == "1.000", 30, "gamma at 1.0")
        _wait(d, lambda d: _table_rows(d) not in (None, first), 60, "the table to grow")
        positive = _table_rows(d)
        # also drop positive-only: all 12 pairs
        box = next(e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stCheckbox"]')
                   if "positive w only" in e.text)
        box.find_element(By.CSS_SELECTOR, "label").click()
        _wait(d, lambda d: _table_rows(d) == 12, 60, "all 12 rows")
        assert 1 < positive <= 12
    except BaseException:
        shot = tmp_path / "e2e-failure.png"
        d.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        raise


@pytest.fixture
def tiny_study(tiny_run):
    """A finished one-cell study on the tiny model (an LLS adapter and its random twin)."""
    from lls.studies import study as S
    from lls.studies.runner import run_study
    from test_study import RECIPE, SAMPLED

    name = "tiny-browser"
    S.create_study(S.StudyConfig(name=name, run=tiny_run.key, grid={"gamma": [0.25]},
                                 recipe=RECIPE, sampled=SAMPLED))
    run_study(name)
    return S.open_study(name)


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian chromium + chromium-driver (.ci/run installs them)")
def test_studies_page_opens_a_study_then_chat_in_a_real_browser(tiny_study, server, driver,
                                                                 tmp_path):
    from lls.studies import study as S

    d = driver
    best = S.best_cell(tiny_study)
    lls_label, twin_label = S.chat_setup(tiny_study, best)["labels"][:2]
    try:
        d.get(f"{server}/Studies?study={tiny_study.name}")
        _wait(d, lambda d: "1 of 1 cells done" in _body(d), 90, "the study's queue line")
        _wait(d, lambda d: "Best cell and checkpoint" in _body(d) and "Best of" in _body(d),
              60, "the best cell and its caveat")
        assert best["label"] in _body(d)
        _idle(d)
        _button(d, "Open in Chat (checkpoint, random twin, base + system prompt)").click()
        _wait(d, lambda d: "/Chat" in d.current_url and "From the study:" in _body(d), 90,
              "the Chat page with the study's adapters pinned")
        body = _body(d)
        assert lls_label in body and twin_label in body
        # the probe questions are offered as prompts: ask the first one in every column
        _wait(d, lambda d: "ask one of the study's read-out questions" in _body(d), 30,
              "the study's questions")
        _idle(d)
        _button(d, "Ask").click()
        _wait(d, lambda d: _body(d).count("Name your favourite animal") >= 3, 180,
              "the question asked in the three columns")
    except BaseException:
        shot = tmp_path / "e2e-failure.png"
        d.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        raise
