"""Heavy work, one job at a time per process: a FIFO queue with one worker thread, shared by every session.

Harvests, trainings, dashboard builds and sweeps each take a CPU for minutes; run side by side on a small
machine they only slow each other down, and two sessions asking for the same build would race on one folder.
So the app submits them here: `default_queue().submit(kind, key, title, fn)` queues `fn(ctx)` behind the jobs
already waiting and returns its `Job`, which every session can read (state, progress, result) and cancel. A
`key` names the request: submitting a key that is already queued or running returns that job (dedup).

Cancelling is cooperative: `ctx.progress(...)` and `ctx.check()` raise `JobCancelled` once cancel is asked, so
any backend function that reports progress stops at its next report. `ctx.publish(key, value)` shares live
data (say, a buffer of training curves) in `job.published` for pages to read while the job runs. A job holds
its result (or its exception, without the traceback: the frames would keep the job's tensors alive) and no
reference to a session.
No Streamlit here, no torch: `fn` brings what it needs.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from saelab.errors import SaelabError

log = logging.getLogger("saelab.jobs")

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE_STATES = ("queued", "running")
KEEP_JOBS = 50  # finished jobs kept for display; queued and running ones are always kept


class JobCancelled(SaelabError):
    """Raised inside a job by `ctx.check()` / `ctx.progress()` once someone asked to cancel it."""


@dataclass(frozen=True)
class JobProgress:
    """Work done out of `total` (0 when unknown) and what is being done."""

    done: float = 0
    total: float = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0


@dataclass(eq=False)
class Job:
    """One submitted request. Fields change only on the queue's worker (or through `cancel`); read them freely."""

    id: int
    kind: str
    key: Hashable  # the request, as submitted (identical requests of one kind share a job)
    title: str
    state: JobState = "queued"
    progress: JobProgress = field(default_factory=JobProgress)
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: BaseException | None = None
    error_message: str = ""  # one line for the user, "" unless failed
    cancel_requested: bool = False
    published: dict[str, Any] = field(default_factory=dict)  # live data the job shares (`ctx.publish`)
    _fn: Callable[[JobContext], Any] | None = field(default=None, repr=False)
    _queue: JobQueue | None = field(default=None, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def cancel(self) -> None:
        """Drop a queued job at once; ask a running one to stop at its next progress report."""
        if self._queue is not None:
            self._queue.cancel(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (done, failed or cancelled); False on timeout."""
        return self._ended.wait(timeout)


@dataclass
class JobContext:
    """What a running job's `fn` gets: progress reports and the cancel check."""

    job: Job

    def cancelled(self) -> bool:
        return self.job.cancel_requested

    def check(self) -> None:
        """Raise `JobCancelled` when cancel was asked."""
        if self.job.cancel_requested:
            raise JobCancelled(f"{self.job.title}: cancelled.")

    def progress(self, done: float, total: float, message: str = "") -> None:
        """Report `done` out of `total` (also the cancel point)."""
        self.check()
        self.job.progress = JobProgress(done, total, message)

    def publish(self, key: str, value: Any) -> None:
        """Share `value` under `key` in `job.published` while the job runs (e.g. a live, thread-safe curve buffer
        a page redraws); it stays there after the job ends, like the result."""
        self.job.published[key] = value

    def phase_progress(self, phase: str, done: float, total: float) -> None:
        """`progress` for backends that report `progress(phase, done, total)` (the phase becomes the message)."""
        self.progress(done, total, phase)


def error_line(err: BaseException, limit: int = 300) -> str:
    """One line for the user: a `SaelabError`'s message, or the type and first line of anything else."""
    text = str(err).strip() or type(err).__name__
    text = text if isinstance(err, SaelabError) else f"{type(err).__name__}: {text.splitlines()[0]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _without_tracebacks(err: BaseException) -> BaseException:
    """`err` with its traceback (and those of the exceptions it chains) dropped: they hold the job's frames."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = None
        e = e.__cause__ or e.__context__
    return err


class JobQueue:
    """Jobs run one at a time, in submission order, on one daemon worker thread (started on first submit)."""

    def __init__(self, keep: int = KEEP_JOBS) -> None:
        self.keep = keep
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._by_key: dict[Hashable, Job] = {}  # queued or running jobs not asked to cancel
        self._jobs: list[Job] = []  # every job kept, oldest first
        self._ids = itertools.count(1)
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, kind: str, key: Hashable, title: str, fn: Callable[[JobContext], Any]) -> Job:
        """Queue `fn(ctx)`, or return the queued/running job with the same `key` (fn is then not used)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this job queue is closed")
            existing = self._by_key.get((kind, key))
            if existing is not None:
                return existing
            job = Job(id=next(self._ids), kind=kind, key=key, title=title, _fn=fn, _queue=self)
            self._by_key[(kind, key)] = job
            self._pending.append(job)
            self._jobs.append(job)
            self._trim()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="saelab-jobs", daemon=True)
                self._worker.start()
            self._cond.notify_all()
            return job

    def cancel(self, job: Job) -> None:
        """Remove a queued job (state cancelled); flag a running one, which ends cancelled at its next check."""
        with self._cond:
            if not job.active or job.cancel_requested:
                return
            job.cancel_requested = True
            if self._by_key.get((job.kind, job.key)) is job:
                del self._by_key[(job.kind, job.key)]  # a new identical request queues afresh (a build resumes)
            if job.state == "queued":
                self._pending.remove(job)
                self._end(job, "cancelled")

    def jobs(self) -> list[Job]:
        """Every job kept, most recent first."""
        with self._cond:
            return self._jobs[::-1]

    def get(self, job_id: int) -> Job | None:
        with self._cond:
            return next((j for j in self._jobs if j.id == job_id), None)

    def find(self, kind: str, key: Hashable) -> Job | None:
        """The queued or running job for this request, else the last one that finished (None if none is kept)."""
        with self._cond:
            return self._by_key.get((kind, key)) or next(
                (j for j in reversed(self._jobs) if j.kind == kind and j.key == key), None
            )

    def ahead_of(self, job: Job) -> int:
        """How many jobs run before `job` starts (0 once it runs)."""
        with self._cond:
            if job.state != "queued":
                return 0
            return self._pending.index(job) + sum(j.state == "running" for j in self._jobs)

    def close(self) -> None:
        """Cancel what is queued, ask the running job to stop and let the worker end (tests; the app never closes)."""
        with self._cond:
            self._closed = True
            for job in [*self._pending, *(j for j in self._jobs if j.state == "running")]:
                self.cancel(job)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._pending.popleft()
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        fn, ctx = job._fn, JobContext(job)
        try:
            result = fn(ctx) if fn is not None else None
        except JobCancelled:
            outcome, result, error = "cancelled", None, None
        except BaseException as err:  # a failing job never takes the worker down
            user = isinstance(err, SaelabError)  # the user's to fix: no traceback in the server log
            log.log(logging.INFO if user else logging.ERROR, "job %r failed", job.title, exc_info=not user)
            outcome, result, error = "failed", None, _without_tracebacks(err)
        else:
            outcome, error = "done", None
        with self._cond:
            job.result, job.error = result, error
            job.error_message = error_line(error) if error is not None else ""
            if self._by_key.get((job.kind, job.key)) is job:
                del self._by_key[(job.kind, job.key)]
            self._end(job, outcome)

    def _end(self, job: Job, state: JobState) -> None:
        """Under the lock: mark `job` finished and drop what it no longer needs."""
        job.state, job.finished, job._fn = state, time.time(), None
        job._ended.set()
        self._trim()

    def _trim(self) -> None:
        finished = [j for j in self._jobs if not j.active]
        for old in finished[: max(0, len(finished) - self.keep)]:
            self._jobs.remove(old)


_DEFAULT = JobQueue()  # its worker thread starts on the first submit


def default_queue() -> JobQueue:
    """The process-wide queue every session of the app submits to."""
    return _DEFAULT


__all__ = [
    "ACTIVE_STATES",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobProgress",
    "JobQueue",
    "default_queue",
    "error_line",
]
