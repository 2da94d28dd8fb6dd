"""Heavy jobs in the app (`saelab.jobs`): the sidebar panel every page shows, and a page following its job.

Every session sees every job: the panel lists what is queued or running on this server (any session's),
with progress and a Cancel button, and the last few that ended. A page that submitted a job (or found an
identical one running) draws its progress with `follow_job`, a fragment that polls the job and reruns the
app once it ends, so the page can draw the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from saelab.jobs import Job, default_queue
from saelab.ui.errors import show_error

POLL_S = 1.0  # how often a page or the panel redraws a job that is queued or running
RECENT = 3  # finished jobs listed in the sidebar


def status_line(job: Job) -> str:
    """What the job is doing, in a few words."""
    if job.state == "queued":
        ahead = default_queue().ahead_of(job)
        return f"Queued, {ahead} job{'s' * (ahead != 1)} ahead" if ahead else "Queued, starting…"
    if job.state == "running":
        if job.cancel_requested:
            return "Cancelling…"
        p = job.progress
        what = p.message or "Running"
        return f"{what}: {int(p.done):,} / {int(p.total):,}" if p.total else f"{what}…"
    took = f" in {job.finished - job.started:.0f} s" if job.finished and job.started else ""
    if job.state == "failed":
        return f"Failed{took}: {job.error_message}"
    return f"Done{took}" if job.state == "done" else "Cancelled"


def _cancel(job_id: int) -> None:
    job = default_queue().get(job_id)
    if job is not None:
        job.cancel()


def _draw_active(job: Job, key: str) -> None:
    st.progress(job.progress.fraction, text=f"**{job.title}** · {status_line(job)}")
    st.button(
        "Cancel",
        key=f"{key}_cancel_{job.id}",
        on_click=_cancel,
        args=(job.id,),
        disabled=job.cancel_requested,
        help="A running job stops at its next progress report.",
    )


def _panel() -> None:
    jobs = default_queue().jobs()  # most recent first
    active = [j for j in reversed(jobs) if j.active]  # the running one, then the queue in order
    ended = [j for j in jobs if not j.active][:RECENT]
    st.markdown("**Jobs**")
    for job in active:
        _draw_active(job, "jobs_panel")
    if not active:
        st.caption("No job running.")
    for job in ended:
        icon = {"done": "✓", "failed": "✗"}.get(job.state, "–")
        st.caption(f"{icon} {job.title} · {status_line(job)}")


def jobs_panel() -> None:
    """The sidebar's job list (nothing until a job was submitted), redrawn every POLL_S s while a job runs."""
    jobs = default_queue().jobs()
    if not jobs:
        return
    polling = POLL_S if any(j.active for j in jobs) else None
    with st.sidebar:
        st.fragment(_panel, run_every=polling)()


def _follow(job_id: int, key: str, on_done: Callable[[Job], None] | None) -> None:
    job = default_queue().get(job_id)
    if job is None or not job.active:  # it ended since the last redraw: the whole page draws the outcome
        if job is not None and job.state == "done" and on_done is not None:
            on_done(job)
        st.rerun()
    _draw_active(job, key)


def follow_job(job: Job, *, key: str, on_done: Callable[[Job], None] | None = None) -> None:
    """Draw a queued or running job's progress here, redrawn every POLL_S s; when it ends, call `on_done(job)`
    (if it succeeded) and rerun the app."""
    st.fragment(_follow, run_every=POLL_S)(job.id, key, on_done)


def session_job(slot: str, *, key: str) -> Any | None:
    """Follow the job whose id this session keeps in `st.session_state[slot]`; return its result once done.

    While it is queued or running, its progress is drawn here; when it has failed its error is shown, when it
    was cancelled a note says so; either way the slot is then emptied (None is returned).
    """
    job_id = st.session_state.get(slot)
    job = default_queue().get(job_id) if job_id is not None else None
    if job is None:
        st.session_state.pop(slot, None)
        return None
    if job.active:
        follow_job(job, key=key)
        return None
    st.session_state.pop(slot, None)
    if job.state == "failed" and job.error is not None:
        show_error(job.error)  # type: ignore[arg-type]
    elif job.state == "cancelled":
        st.info(f"{job.title}: cancelled.")
    return job.result if job.state == "done" else None


__all__ = ["follow_job", "jobs_panel", "session_job", "status_line"]
