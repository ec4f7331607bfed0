"""The session's own checks (conftest): a process or job a test leaves behind is found."""

from __future__ import annotations

import subprocess
import sys

from conftest import _clean_up, _left_behind, active_jobs


def test_a_process_left_behind_is_found_even_when_reparented(session_cache, tmp_path):
    # the sleeper's parent exits at once: the sleeper is reparented, yet still ours
    pidfile = tmp_path / "pid"
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], start_new_session=True); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    subprocess.run([sys.executable, "-c", code], check=True)
    pid = int(pidfile.read_text())
    procs, running = _left_behind(session_cache, grace=0)
    assert pid in [p for p, _ in procs] and running == []
    _clean_up(procs, running)
    procs, _ = _left_behind(session_cache, grace=5)
    assert pid not in [p for p, _ in procs]


def test_an_active_job_left_behind_is_found_and_cancelled(session_cache):
    from lls.jobs import store as jobs

    job = jobs.submit([sys.executable, "-c", "import time; time.sleep(60)"], kind="score",
                      title="left behind")
    assert job.id in [j.id for j in active_jobs(session_cache)]
    procs, running = _left_behind(session_cache, grace=0)
    _clean_up(procs, running)
    assert jobs.wait(job.id, timeout=60).status in ("cancelled", "failed")
    assert _left_behind(session_cache, grace=20) == ([], [])


def test_server_log_warnings_are_found(monkeypatch):
    """The browser tests' log check: Streamlit's own warnings (their level is in the line),
    Python warnings and errors are found; known library warnings and info lines are not."""
    import test_e2e_browser
    from test_e2e_browser import server_warnings

    monkeypatch.setattr(test_e2e_browser, "KNOWN_WARNINGS",
                        (r"FutureWarning: `is_gradient_checkpointing` is deprecated",))

    log = "\n".join([
        "2026-11-30 17:16:32.439 INFO streamlit.web.server: Uvicorn server started",
        '2026-11-30 17:17:24.496 WARNING streamlit.elements.lib.policies: The widget with key '
        '"chat_model" was created with a default value but also had its value set via the '
        "Session State API.",
        "Stack (most recent call last):",
        "/x/pages/9_Page.py:12: DeprecationWarning: use st.width instead",
        "/lib/transformers/modeling_utils.py:3312: FutureWarning: `is_gradient_checkpointing` "
        "is deprecated and will be removed in v6.",
        "2026-11-30 17:18:00.000 ERROR streamlit.runtime: Uncaught app exception",
    ])
    found = server_warnings(log)
    assert [line.split(" ", 3)[2] if line[0].isdigit() else "python" for line in found] == \
        ["WARNING", "python", "ERROR"]
    assert "chat_model" in found[0] and "DeprecationWarning" in found[1]
    monkeypatch.setattr(test_e2e_browser, "KNOWN_WARNINGS", ())
    assert len(server_warnings(log)) == 4  # nothing known: the FutureWarning counts too
