"""Background job cards: progress text and the live panel of a kind of job."""

from __future__ import annotations

import streamlit as st

from lls import jobs
from lls.jobs.console import fmt_seconds


def progress_text(job) -> tuple[float, str]:
    """(fraction for st.progress, 'done/total pairs · rate · time left') of a job."""
    p = job.progress or {}
    done, total = p.get("done"), p.get("total")
    if job.status == "queued":
        return 0.0, "queued: waiting for the device (another exclusive job is running)"
    if done is None and not job.is_active:
        return 0.0, f"{job.status} after {fmt_seconds(job.elapsed)}"
    phase = " · ".join(str(x) for x in (p.get("phase"), p.get("message")) if x)
    if done is None:
        return 0.0, f"{phase or 'starting (loading the model and data)'} · " \
                    f"{fmt_seconds(job.elapsed)} elapsed"
    frac = p.get("fraction")
    frac = 0.0 if frac is None else max(0.0, min(1.0, float(frac)))
    if job.status == "done":
        frac = 1.0
    rate = p.get("rate")
    unit = p.get("unit") or "pairs"
    parts = [f"{done}/{total if total is not None else '?'} {unit} done"]
    parts += [phase] if phase else []
    if not job.is_active and done and job.elapsed:
        parts.append(f"{done / job.elapsed:.2f} {unit}/s on average (incl. model loading)")
    else:
        parts.append(f"{rate:.2f} {unit}/s" if rate else "rate: measuring")
    if job.is_active:
        parts.append(f"{fmt_seconds(p.get('eta'))} left" if p.get("eta") is not None
                     else "time left: estimating")
    else:
        parts.append(f"took {fmt_seconds(job.elapsed)}")
    return frac, " · ".join(parts)


def job_card(j, open_key: str | None = None) -> None:
    """One job: title, status, progress; Cancel while active; the error and log tail when it
    failed. `open_key`: session key a finished job's "Open in explorer" writes its run to."""
    with st.container(border=True):
        frac, text = progress_text(j)
        c1, c2 = st.columns([5, 1])
        c1.markdown(f"**{j.title}** · `{j.id}` · **{j.status}**")
        if j.is_active:
            c1.progress(frac, text=text)
            if c2.button("Cancel", key=f"cancel-{j.id}"):
                jobs.cancel(j.id)
                st.rerun()
        elif j.status == "done":
            c1.caption(text)
            if open_key and c2.button("Open in explorer", key=f"open-{j.id}"):
                # switch_page from a fragment rerun does not navigate: go via a full rerun;
                # a control job opens its target run (the explorer then offers the
                # contrastive ranking)
                st.session_state[open_key] = (j.params.get("control_of")
                                              or j.params.get("run_key") or j.key)
                st.rerun(scope="app")
        else:
            c1.caption(text)
            if j.error_line:
                c1.error(j.error_line)
            if j.error_tail:
                with c1.expander("log tail"):
                    st.code(j.error_tail)


def score_jobs_panel(open_key: str = "goto_run", limit: int = 6) -> None:
    """Live cards of the latest scoring jobs: polls every second only while one is active,
    and reruns the whole page when one finishes (runs list, stop polling)."""
    any_active = any(j.is_active for j in jobs.list_jobs("score"))

    @st.fragment(run_every=1.0 if any_active else None)
    def panel() -> None:
        js = jobs.list_jobs("score")[:limit]
        if not js:
            st.caption("No scoring jobs yet.")
        active_now = {j.id for j in js if j.is_active}
        for j in js:
            job_card(j, open_key)
        seen = st.session_state.get("_active_score_jobs", set())
        st.session_state["_active_score_jobs"] = active_now
        if seen - active_now:
            st.rerun()  # a job just finished: refresh the whole page

    panel()


def memory_gate(check) -> bool:
    """Show a job's expected memory next to the machine's free memory (`lls.jobs.resources`
    check); a job that cannot fit is refused here, with what to lower. Returns check.ok."""
    if check.ok:
        st.caption(f"Memory: {check.message}")
    else:
        st.error(check.message)
    return check.ok
