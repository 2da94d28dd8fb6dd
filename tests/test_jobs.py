"""The job queue (`saelab.jobs`): one job at a time, FIFO, dedup, cancel, failures; and the app submitting to it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from saelab.errors import BadInputError
from saelab.jobs import Job, JobCancelled, JobContext, JobQueue, JobState, default_queue
from tests.fixtures_ui import APP, build_feature_root, open_page, page_html, tiny_app

WAIT = 30  # seconds; every wait below ends on an event long before this


@pytest.fixture
def queue() -> Iterator[JobQueue]:
    q = JobQueue()
    yield q
    q.close()


def _gate(q: JobQueue, key: object = "gate") -> tuple[Job, threading.Event, threading.Event]:
    """A job that holds the worker until `release` is set; `started` is set once it runs."""
    started, release = threading.Event(), threading.Event()

    def hold(ctx) -> str:
        started.set()
        assert release.wait(WAIT)
        return "released"

    return q.submit("test", key, "gate", hold), started, release


def _states(jobs: list[Job]) -> list[JobState]:
    return [j.state for j in jobs]


def test_jobs__run_one_at_a_time(queue):
    first, started, release = _gate(queue)
    ran = threading.Event()
    second = queue.submit("test", "second", "second", lambda ctx: ran.set())
    assert started.wait(WAIT)
    assert first.state == "running" and second.state == "queued"
    assert queue.ahead_of(second) == 1
    assert not ran.wait(0.05), "the second job must wait for the first"
    release.set()
    assert second.wait(WAIT)
    assert _states([first, second]) == ["done", "done"] and first.result == "released"
    assert first.finished <= second.started


def test_jobs__run_in_submission_order(queue):
    gate, started, release = _gate(queue)
    order: list[int] = []
    jobs = [queue.submit("test", i, f"job {i}", lambda ctx, i=i: order.append(i)) for i in range(6)]
    assert [j.id for j in queue.jobs()] == [j.id for j in reversed([gate, *jobs])]  # most recent first
    release.set()
    assert jobs[-1].wait(WAIT)
    assert order == list(range(6))


def test_jobs__identical_requests_share_one_job(queue):
    gate, _, release = _gate(queue)
    calls: list[int] = []

    def fn(ctx) -> int:
        calls.append(1)
        return 42

    a = queue.submit("dashboards", ("/sae", 1024), "build", fn)
    b = queue.submit("dashboards", ("/sae", 1024), "build again", fn)
    other = queue.submit("dashboards", ("/sae", 2048), "other size", fn)
    assert a is b and a is not other
    assert queue.find("dashboards", ("/sae", 1024)) is a
    release.set()
    assert other.wait(WAIT)
    assert len(calls) == 2 and a.result == 42 and a.title == "build"
    again = queue.submit("dashboards", ("/sae", 1024), "build", fn)  # a finished job is not reused
    assert again is not a and again.wait(WAIT) and len(calls) == 3


def test_jobs__cancel_a_queued_job_drops_it_at_once(queue):
    gate, _, release = _gate(queue)
    calls: list[str] = []
    doomed = queue.submit("test", "doomed", "doomed", lambda ctx: calls.append("doomed"))
    after = queue.submit("test", "after", "after", lambda ctx: calls.append("after"))
    doomed.cancel()
    assert doomed.state == "cancelled" and doomed.wait(0) and doomed.finished is not None
    assert queue.ahead_of(after) == 1
    release.set()
    assert after.wait(WAIT)
    assert calls == ["after"] and gate.state == "done"


def test_jobs__cancel_a_running_job_stops_it_at_its_next_report(queue):
    running, proceed = threading.Event(), threading.Event()
    reports: list[int] = []

    def work(ctx) -> str:
        ctx.progress(0, 10, "warming up")
        running.set()
        assert proceed.wait(WAIT)
        for i in range(1, 11):
            ctx.progress(i, 10, "step")  # raises JobCancelled once cancel was asked
            reports.append(i)
        return "finished"

    job = queue.submit("test", "long", "long", work)
    assert running.wait(WAIT)
    assert job.progress.message == "warming up" and job.progress.fraction == 0.0
    job.cancel()
    assert job.state == "running" and job.cancel_requested  # cooperative: it stops at its next report
    resubmitted = queue.submit("test", "long", "long", lambda ctx: "resumed")  # a new request queues afresh
    assert resubmitted is not job
    proceed.set()
    assert job.wait(WAIT)
    assert job.state == "cancelled" and reports == [] and job.result is None and job.error is None
    assert resubmitted.wait(WAIT) and resubmitted.result == "resumed", "the worker keeps serving"


def test_jobs__context_check_and_phase_progress(queue):
    seen: dict[str, object] = {}

    def work(ctx) -> None:
        ctx.phase_progress("activations", 3, 4)
        seen["progress"] = ctx.job.progress
        seen["cancelled"] = ctx.cancelled()
        ctx.job.cancel()
        seen["now"] = ctx.cancelled()
        ctx.check()

    job = queue.submit("test", "phases", "phases", work)
    assert job.wait(WAIT)
    assert seen["progress"].message == "activations" and seen["progress"].fraction == 0.75
    assert seen["cancelled"] is False and seen["now"] is True and job.state == "cancelled"
    with pytest.raises(JobCancelled):
        JobContext(job).check()


def test_jobs__a_failing_job_keeps_its_message_and_the_worker_runs_on(queue):
    def boom(ctx) -> None:
        big = list(range(10))  # noqa: F841  (a local the traceback would keep alive)
        raise ValueError("boom\nsecond line")

    def user_error(ctx) -> None:
        raise BadInputError("Pick a concept.")

    bad = queue.submit("test", "bad", "bad", boom)
    user = queue.submit("test", "user", "user", user_error)
    good = queue.submit("test", "good", "good", lambda ctx: "fine")
    assert good.wait(WAIT)
    assert bad.state == "failed" and isinstance(bad.error, ValueError)
    assert bad.error_message == "ValueError: boom" and bad.error.__traceback__ is None
    assert user.state == "failed" and user.error_message == "Pick a concept."
    assert good.state == "done" and good.result == "fine" and good.error_message == ""


def test_jobs__submitting_from_many_threads(queue):
    gate, started, release = _gate(queue)
    assert started.wait(WAIT)
    calls: dict[int, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    got: list[Job] = []

    def fn(ctx, key: int) -> int:
        with lock:
            calls[key] = calls.get(key, 0) + 1
        return key

    def submitter(t: int) -> None:
        barrier.wait()
        for i in range(40):
            key = (t * 7 + i) % 10
            job = queue.submit("test", key, f"job {key}", lambda ctx, key=key: fn(ctx, key))
            with lock:
                got.append(job)
            queue.jobs()

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT)
    assert len(got) == 320 and len({id(j) for j in got}) == 10  # all queued while the gate ran: 10 jobs
    assert len({j.id for j in queue.jobs()}) == 11
    release.set()
    for job in got:
        assert job.wait(WAIT)
    assert calls == {k: 1 for k in range(10)} and all(j.result == j.key for j in got)


def test_jobs__history_keeps_the_last_finished_and_every_active_one():
    q = JobQueue(keep=3)
    try:
        done = [q.submit("test", i, f"job {i}", lambda ctx, i=i: i) for i in range(5)]
        assert done[-1].wait(WAIT)
        assert [j.key for j in q.jobs()] == [4, 3, 2]
        assert q.get(done[0].id) is None and q.get(done[4].id) is done[4]
    finally:
        q.close()


def test_jobs__default_queue_is_one_per_process():
    assert default_queue() is default_queue()


def test_jobs__cancelling_a_dashboard_build_stops_it_before_it_writes(queue, tmp_path, tiny_handle):
    """The real builder, through the app's job function: cancel at its first activations report."""
    from saelab.sae import load_sae
    from saelab.storage import DASHBOARD_DIR
    from saelab.ui.dashboards import build_dashboards_here
    from tests.fixtures_ui import build_tiny_sae

    loaded = load_sae(build_tiny_sae(tmp_path / "sae"), handle=tiny_handle)
    phases: list[str] = []

    def build(ctx):
        def progress(phase: str, done: int, total: int) -> None:
            phases.append(phase)
            if phase == "activations":
                ctx.job.cancel()
            ctx.phase_progress(phase, done, total)

        return build_dashboards_here(tiny_handle, loaded, progress, 2048)

    job = queue.submit("dashboards", (str(tmp_path), 2048), "build", build)
    assert job.wait(120)
    assert job.state == "cancelled", job.error_message
    assert phases[-1] == "activations"  # (the corpus may come from its cache, without reports)
    assert not (tmp_path / "sae" / DASHBOARD_DIR / "meta.json").exists()


# ---------------------------------------------------------------- the app


def _text(block) -> str:
    """The markdown, captions and progress-bar texts of a block of an AppTest tree."""
    parts = [m.value for m in block.markdown] + [c.value for c in block.caption]
    return " ".join(parts + [p.proto.text for p in block.get("progress")])


def test_app__dashboard_build_is_a_shared_job_listed_in_the_sidebar(tmp_path, tiny_handle, monkeypatch):
    """Two sessions ask for the same missing dashboards: one queued job, both follow it, both open them.

    (AppTest keeps only the page's own elements once a run names its page, so the sidebar panel, drawn by
    app.py on every page, is read on a fresh AppTest's first run: the Overview.)"""
    import saelab.ui.dashboards as ui_dashboards

    build_feature_root(tmp_path, tiny_handle.tokenizer, dashboards=False)
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    monkeypatch.setattr(ui_dashboards, "APP_DASHBOARD_TOKENS", 2048)  # 16 rows of 128: a second or two
    gate, started, release = _gate(default_queue(), key=str(tmp_path))  # holds the worker: the build stays queued
    try:
        first = open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="1")
        assert any("saelab dashboards --sae" in w.value for w in first.warning)
        next(b for b in first.button if b.label == "Build dashboards now").click().run()
        assert not first.exception, first.exception
        builds = [j for j in default_queue().jobs() if j.kind == "dashboards" and j.active]
        assert len(builds) == 1 and builds[0].state == "queued"
        build = builds[0]
        assert f"**{build.title}** · Queued, 1 job ahead" in _text(first.main)
        assert not any(b.label == "Build dashboards now" for b in first.button), "the page follows the job"

        second = open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="1")
        assert not any(b.label == "Build dashboards now" for b in second.button), "the same request is followed"
        assert build.title in _text(second.main)
        assert [j for j in default_queue().jobs() if j.kind == "dashboards" and j.active] == [build]

        overview = AppTest.from_file(APP, default_timeout=120).run()  # the default page: the Overview
        assert not overview.exception, overview.exception
        panel = _text(overview.sidebar)
        assert "Jobs" in panel and build.title in panel and gate.title in panel
        assert any(b.key == f"jobs_panel_cancel_{build.id}" for b in overview.sidebar.button)
    finally:
        release.set()
        for job in default_queue().jobs():  # never leave a build running into the interpreter's exit
            job.wait(120)
    assert build.state == "done", build.error_message
    for at in (first, second):
        at.run()
        assert not at.exception, at.exception
        assert "Latent 1" in page_html(at), "the Explorer opens the dashboards the job built"
    assert f"{build.title} · Done" in _text(AppTest.from_file(APP, default_timeout=120).run().sidebar)


def test_app__sidebar_cancel_button_drops_a_queued_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    gate, started, release = _gate(default_queue(), key=("cancel test", str(tmp_path)))
    try:
        waiting = default_queue().submit("test", str(tmp_path), "Waiting job", lambda ctx: "never")
        at = AppTest.from_file(APP, default_timeout=120).run()  # the Overview
        assert not at.exception, at.exception
        assert "Waiting job" in _text(at.sidebar)
        next(b for b in at.sidebar.button if b.key == f"jobs_panel_cancel_{waiting.id}").click().run()
        assert not at.exception, at.exception
        assert waiting.state == "cancelled"
        assert "Waiting job · Cancelled" in _text(AppTest.from_file(APP, default_timeout=120).run().sidebar)
    finally:
        release.set()
    assert gate.wait(WAIT)


def test_app__a_failed_run_shows_its_error_once(feature_root, monkeypatch):
    import saelab.ui.steering_eval as ui_steering_eval

    release = threading.Event()

    def fail(handle, loaded, cfg, progress=None):
        progress(0, 1)
        assert release.wait(WAIT)
        raise BadInputError("The judge endpoint did not answer.")

    monkeypatch.setattr(ui_steering_eval, "run_eval", fail)
    at = open_page(tiny_app(monkeypatch, feature_root), "pages/steering_eval.py")
    try:
        next(b for b in at.button if b.label == "Run evaluation").click().run()
        assert not at.exception and not at.error, at.exception
        job = next(j for j in default_queue().jobs() if j.kind == "steer_eval")
        assert [p.proto.text for p in at.get("progress")] == [f"**{job.title}** · Running: 0 / 1"]
    finally:
        release.set()
    assert job.wait(WAIT) and job.state == "failed"
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["The judge endpoint did not answer."]
    at.run()
    assert not at.error, "shown once, in the run that saw the job end"
