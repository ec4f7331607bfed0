"""End to end: the real app in headless Chromium scores a small hh-rlhf slice, explores it and
opens one token's pairs on the Subtext page, and opens a finished study and hands its best cell
to the Chat page.

Waits end on what the page shows (the job card's status, the run the explorer opened), never
on a time sized for an idle machine: the limits below are caps for a page that shows nothing
new. The Streamlit server's log must hold no warning (a widget given a default and a Session
State value, a deprecated call, an exception in a page).
"""

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
# A cap, not the expected wait: the wait ends when the job's card says done, and fails as soon
# as it says failed or cancelled, or stays queued (another job holds the device).
SCORING_CAP_S = 900
QUEUED_CAP_S = 60
# Streamlit's log lines carry their level (see `server`); Python warnings their category.
LOG_WARNING = re.compile(r"^\d{4}-\d\d-\d\d [\d:.,]+ (WARNING|ERROR|CRITICAL) .*$"
                         r"|^.*:\d+: \w*Warning: .*$", re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Warnings raised inside a library, not by our code, each with where it comes from and whose
# change removes it: remove the entry then (any other warning fails the test).
# (peft's read of transformers' deprecated `is_gradient_checkpointing` on each adapter load is
# silenced where adapters are attached: lls.models.load.quiet_third_party_aliases.)
KNOWN_WARNINGS: tuple[str, ...] = ()


def server_warnings(log_text: str) -> list[str]:
    """The warning, error and Python-warning lines of a Streamlit server log, except the
    known library warnings above."""
    return [m.group(0) for m in LOG_WARNING.finditer(log_text)
            if not any(re.search(k, m.group(0)) for k in KNOWN_WARNINGS)]


def start_server(cache: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free localhost port with LLS_CACHE = `cache`, its log in
    `log_path`; returns the process and its URL once it answers (also used by
    scripts/screenshots.py)."""
    port = _free_port()
    log = open(log_path, "wb")
    env = dict(os.environ, LLS_CACHE=str(cache), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false",
         "--logger.messageFormat", "%(asctime)s %(levelname)s %(name)s: %(message)s"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_server(proc)
            raise RuntimeError("streamlit did not start:\n" +
                               log_path.read_text(errors="replace"))
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def server(session_cache, tmp_path):
    """`streamlit run app.py` on a free localhost port, with LLS_CACHE = the session cache.

    On teardown: the jobs the app started are cancelled, and the test fails if the server
    logged a warning."""
    from lls.jobs import store as jobs

    log_path = tmp_path / "streamlit.log"
    before = {j.id for j in jobs.list_jobs()}
    proc, url = start_server(session_cache, log_path)
    yield url
    stop_server(proc)
    for j in jobs.list_jobs():  # e.g. a scoring job still running when the test failed
        if j.id not in before and j.is_active:
            jobs.cancel(j.id)
            jobs.wait(j.id, timeout=60)
    warned = server_warnings(log_path.read_text(errors="replace"))
    if warned:
        pytest.fail("the Streamlit server logged warnings:\n" + "\n".join(warned),
                    pytrace=False)


def new_driver(profile: Path, window: str = "1400,1800"):
    """Headless Chromium through chromedriver (also used by scripts/screenshots.py)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--window-size={window}",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # requests, for tests
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    return d


@pytest.fixture
def driver(tmp_path):
    d = new_driver(tmp_path / "chromium-profile")
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


def _button_texts(d) -> list[str]:
    from selenium.webdriver.common.by import By

    return [b.text.strip() for b in d.find_elements(By.CSS_SELECTOR, "button")]


def _click_until(d, target, moved, what: str, tries: int = 5) -> None:
    """Click `target` (a CSS selector, or a function of the driver returning the element)
    until `moved(d)`: a rerun that replaces the element while it is clicked loses the click,
    so a click is repeated when the page has not moved."""
    from selenium.common.exceptions import (ElementClickInterceptedException,
                                            StaleElementReferenceException, TimeoutException)
    from selenium.webdriver.common.by import By

    find = target if callable(target) else (lambda d: d.find_element(By.CSS_SELECTOR, target))
    for attempt in range(tries):
        el = _wait(d, find, 60, f"the element to click for {what}")
        try:
            el.click()
            _wait(d, moved, 30, what)
            return
        except (ElementClickInterceptedException, StaleElementReferenceException,
                TimeoutException):
            if attempt == tries - 1 or moved(d):
                break
    _wait(d, moved, 30, what)


def _table_rows(d) -> int | None:
    m = re.search(r"table rows: (\d+) of (\d+)", _body(d))
    return int(m.group(1)) if m else None


def _body(d) -> str:
    from selenium.webdriver.common.by import By

    return d.find_element(By.TAG_NAME, "body").text


def _forget_cached_run(limit: int):
    """Delete the cached run of what the test scores (HH, `limit` pairs, the Setup page's
    defaults), so it is scored as a job whatever ran before in this cache."""
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, delete_run, find_run

    run = find_run(ScoreConfig(DataSpec(str(HH), limit=limit), animal("owl")))
    if run is not None:
        delete_run(run.key)


def _sidebar_pages(d) -> list[str]:
    from selenium.webdriver.common.by import By

    nav = d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
    return [a.text.strip().splitlines()[-1] for a in nav if a.text.strip()]


def _new_job(before: set[str], kind: str):
    """The job of `kind` the app submitted since `before` (ids) was taken."""
    from lls.jobs import store as jobs

    new = [j for j in jobs.list_jobs(kind) if j.id not in before]
    return new[0] if len(new) == 1 else None


def _await_job_card(d, job_id: str, done_text: str) -> bool:
    """Wait until the job's card says done and shows `done_text`; fail as soon as it says
    failed or cancelled, or stays queued (another job holds the device). Returns whether the
    live progress bar showed."""
    from selenium.webdriver.common.by import By

    from lls.jobs import store as jobs

    seen_progress, queued_since = False, None

    def done(d) -> bool:
        nonlocal seen_progress, queued_since
        body = _body(d)
        seen_progress |= bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stProgress"]'))
        m = re.search(rf"{re.escape(job_id)} · (\w+)", body)
        status = m.group(1) if m else None
        if status in ("failed", "cancelled"):
            raise AssertionError(f"the job {status}; its log:\n" + jobs.read_log(job_id)[-3000:])
        if status == "queued":
            queued_since = queued_since or time.monotonic()
            if time.monotonic() - queued_since > QUEUED_CAP_S:
                others = [f"{j.id} ({j.kind}, {j.status}): {j.title}" for j in jobs.list_jobs()
                          if j.is_active and j.id != job_id]
                raise AssertionError("the job stayed queued behind: " + "; ".join(others))
        else:
            queued_since = None
        return status == "done" and done_text in body

    _wait(d, done, SCORING_CAP_S, f"job {job_id} to finish")
    return seen_progress


def _failure_report(d, tmp_path) -> None:
    """What the page and the jobs showed when a browser test failed (printed with the
    failure), and a screenshot."""
    from lls.jobs import store as jobs

    shot = tmp_path / "e2e-failure.png"
    d.save_screenshot(str(shot))
    print(f"screenshot: {shot}\nurl: {d.current_url}\npage text (end):\n{_body(d)[-3000:]}")
    for j in jobs.list_jobs()[:8]:
        print(f"job {j.id} {j.status} {j.title!r} progress={j.progress} error={j.error!r}")


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian chromium + chromium-driver (.ci/run installs them)")
def test_score_then_explore_in_a_real_browser(server, driver, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from lls.jobs import store as jobs

    d = driver
    try:
        _forget_cached_run(12)
        d.get(server)  # the home page, as `streamlit run app.py` opens it
        _wait(d, lambda d: "Logit-Linear Selection" in _body(d) and _sidebar_pages(d), 90,
              "the home page")
        pages = _sidebar_pages(d)
        assert pages[:3] == ["Home", "Setup", "Explore"], pages
        _click_until(d, lambda d: next((
            a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
            if a.text.strip().endswith("Setup")), None),
            lambda d: "Preference data" in _body(d), "the Setup page")
        _set_text(d, "Local file", str(HH))
        _wait(d, lambda d: "Checked the whole source: 2312 rows" in _body(d), 60, "the preview")
        _set_text(d, "Limit", "12")
        before = {j.id for j in jobs.list_jobs("score")}
        # a repeated click finds the job already submitted (jobs are keyed by their run)
        _click_until(d, ".st-key-start button", lambda d: _new_job(before, "score"),
                     "the scoring job (not a cached run opened instead)")
        job = _new_job(before, "score")
        assert _await_job_card(d, job.id, "12/12 pairs done"), \
            "the live progress bar never showed"
        run_key = jobs.get(job.id).params["run_key"]
        # This job's own button: the runs list below has an "Open in explorer" button too, for
        # whichever run it shows (in a shared cache, another test's run). The panel reruns the
        # whole page as the job ends, which can swallow a click: click until the page moves.
        _click_until(d, f".st-key-open-{job.id} button",
                     lambda d: f"run={run_key}" in d.current_url, "the explorer on the new run")
        _wait(d, lambda d: "selected pairs" in _body(d) and _table_rows(d) is not None, 90,
              "the explorer")
        assert "/Explore" in d.current_url
        assert "scored pairs\n12\n" in _body(d)
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

        # The Subtext page: the selection's weight by token; click one and see its pairs.
        def first_unit(d):  # the first unit button (the help icon is a button too)
            return next((b for b in d.find_elements(By.CSS_SELECTOR,
                                                    ".st-key-pick-0-token-False button")
                         if b.text.strip()), None)

        d.get(f"{server}/Subtext?run={run_key}")
        _wait(d, lambda d: "selected pairs" in _body(d) and first_unit(d), 120,
              "the Subtext page's tokens")
        unit = first_unit(d).text.strip()
        _click_until(d, first_unit,
                     lambda d: re.search(r"\(token, raised in chosen\): in \d+ selected pairs",
                                         _body(d)), f"the pairs holding {unit!r}")
        assert f"“{unit}”" in _body(d)
        # its pair opens with the unit outlined among the coloured tokens
        assert d.find_elements(By.CSS_SELECTOR, 'span[style*="outline"]')
    except BaseException:
        _failure_report(d, tmp_path)
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
    res = tiny_study.result(tiny_study.cells()[0])
    lls_label, twin_label = S.chat_setup(tiny_study, res)["labels"][:2]
    try:
        d.get(f"{server}/Studies?study={tiny_study.name}")
        _wait(d, lambda d: "1 of 1 cells done" in _body(d), 90, "the study's queue line")
        # a best cell is named only when its corrected interval (or a confirmation) clears
        # 0; clearing 0 before the correction makes it a candidate; otherwise the page says so
        verdict = {"beats": "Best cell and checkpoint", "confirmed": "Best cell and checkpoint",
                   "candidate": "Candidate cell (not a verdict yet)",
                   "none": "No cell beat its random twin"}[best["state"]]
        _wait(d, lambda d: verdict in _body(d), 60, "the study's verdict")
        assert best["label"] in _body(d)
        assert not any(code in _body(d) for code in ("llr_diff", "margin_diff", "ci_low",
                                                     "lls_moved", "beats_twin"))
        assert f"N = {best['correction']['n']} candidates" in _body(d)
        if best["state"] == "none":
            assert not any(t.startswith("Confirm") for t in _button_texts(d))
        _click_until(d, lambda d: _button(d, f"Open this cell in Chat (step {res['step']}, "
                                             "random twin, base + system prompt)"),
                     lambda d: "/Chat" in d.current_url, "the Chat page")
        _wait(d, lambda d: f"From the study {tiny_study.name}" in _body(d), 90,
              "the Chat page with the study's adapters pinned")
        _wait(d, lambda d: lls_label in _body(d) and twin_label in _body(d), 120,
              "the LLS and random-twin columns named by cell and step")
        # the probe questions are offered as prompts: ask the first one in every column
        _wait(d, lambda d: "ask one of the study's read-out questions" in _body(d), 30,
              "the study's questions")
        _click_until(d, lambda d: _button(d, "Ask"),
                     lambda d: "Name your favourite animal" in _body(d), "the question asked")
        _wait(d, lambda d: _body(d).count("Name your favourite animal") >= 3, 180,
              "the question asked in the three columns")
    except BaseException:
        _failure_report(d, tmp_path)
        raise


def _requests(d) -> list[str]:
    """URLs the page requested since the last call (Chrome's performance log)."""
    import json

    out = []
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            out.append(msg["params"]["request"]["url"])
    return out


ROW_IMAGE = "![x](http://127.0.0.1:9/x.png)"
ROW_HTML = '<img src="http://127.0.0.1:9/y.png">'


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian chromium + chromium-driver (.ci/run installs them)")
def test_a_dataset_row_is_text_in_a_real_browser(server, driver, session_cache, tmp_path):
    """A row whose prompt holds a Markdown image and raw HTML, opened in the explorer: the
    page prints them as text, and no request goes to their host."""
    import json as _json

    import pyarrow as pa
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from lls.core.cache import ChunkStore
    from lls.scoring.synthetic import write_synthetic_run

    src = write_synthetic_run(4, seed=5, chunk_size=4)
    f = src.frame()
    f["w"] = [0.5, -0.1, -0.2, -0.3]  # only the first row is selected at γ 0.05
    f.loc[0, "prompt"] = _json.dumps([{"role": "user", "content": f"{ROW_IMAGE} {ROW_HTML}"}])
    store = ChunkStore(session_cache / "scores" / "markdown-row-0000")
    store.write_chunk(0, pa.Table.from_pandas(f, preserve_index=False))
    store.write_manifest({**src.manifest, "key": store.key})
    d = driver
    try:
        d.get(f"{server}/Explore?run={store.key}")
        _wait(d, lambda d: _table_rows(d) == 1, 90, "the one selected row")
        _idle(d)

        def open_row(d):
            canvas = d.find_element(By.CSS_SELECTOR, ".st-key-table-lls canvas")
            w, h = canvas.size["width"], canvas.size["height"]
            # the row-selection box of the first row (header and rows are ~35 px high)
            ActionChains(d).move_to_element_with_offset(canvas, -w // 2 + 18,
                                                        -h // 2 + 35 + 17).click().perform()
            return canvas

        _requests(d)  # forget what loading the page asked for
        _click_until(d, open_row, lambda d: "Prompt (1 turns" in _body(d), "the example to open")
        _wait(d, lambda d: "127.0.0.1:9/x.png" in _body(d), 30, "the prompt shown")
        _idle(d)
        body = _body(d)
        assert ROW_IMAGE in body and "<img" in body  # printed as the text it is
        imgs = [i.get_attribute("src") or "" for i in d.find_elements(By.TAG_NAME, "img")]
        assert not any("127.0.0.1:9" in s for s in imgs)
        time.sleep(2)  # an image request would be on its way by now
        assert not [u for u in _requests(d) if "127.0.0.1:9" in u]
    except BaseException:
        _failure_report(d, tmp_path)
        raise


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian chromium + chromium-driver (.ci/run installs them)")
def test_the_study_report_draws_its_charts_offline(tiny_study, driver, tmp_path):
    """`python -m lls study report` writes one HTML file that, opened with the network off,
    draws every chart (plotly inlined) and asks for nothing."""
    from selenium.webdriver.common.by import By

    from lls.cli import main

    out = tmp_path / "report.html"
    assert main(["study", "report", tiny_study.name, "--out", str(out)]) == 0
    text = out.read_text()
    n_figures = text.count("class='figure'")
    assert n_figures >= 2 and re.search(r"<script[^>]*\ssrc=", text) is None  # inlined
    d = driver
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        d.get(out.as_uri())
        _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"))
              >= n_figures, 60, "every chart drawn")
        assert "Verdict" in _body(d) and "Reproduce" in _body(d)
        assert f"python -m lls study create {tiny_study.name}" in _body(d)
        assert [u for u in _requests(d) if u.startswith(("http:", "https:", "ws:", "wss:"))] == []
    except BaseException:
        _failure_report(d, tmp_path)
        raise


def test_check_the_teacher_in_a_real_browser(server, driver, tmp_path):
    """Setup: open the strength check, ask 4 questions, and read the verdict: how often the
    teacher names the owl, beside the base model."""
    from selenium.webdriver.common.by import By

    d = driver
    try:
        d.get(server + "/Setup")
        _wait(d, lambda d: "What carries the trait" in _body(d), 90, "the Setup page")
        _click_until(d, lambda d: next((
            e for e in d.find_elements(By.CSS_SELECTOR, "summary")
            if "Check the teacher's strength" in e.text), None),
            lambda d: bool(_button_texts(d).count("Check the teacher")), "the strength check")
        _set_text(d, "Questions asked", "4")
        _set_text(d, "Sampled next words per question", "1")
        _click_until(d, lambda d: _button(d, "Check the teacher"),
                     lambda d: "Reading the teacher" in _body(d)
                     or "The teacher names the owl" in _body(d), "the check to start")
        _wait(d, lambda d: "The teacher names the owl" in _body(d), 300, "the verdict")
        body = _body(d)
        # the table is drawn on a canvas (its cells are not page text): its frame is there,
        # the caption under it says what was asked, and the verdict names the base's level
        assert d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
        assert "4 questions × 1 sampled answers each" in body
        assert re.search(r"The teacher names the owl \d+% of the time when asked .*; the base "
                         r"model \d+\.\d%", body)
    except BaseException:
        _failure_report(d, tmp_path)
        raise
