"""The Train page's helpers: the form's choices, submitting a training job, and following it with live curves.

A training run is one job on the server's queue (`saelab.jobs`, kind "train", keyed by every setting): harvest,
train, evaluate, dashboards + labels (`saelab.features.train_job.run_training`). The job publishes a curve buffer
(`job.published["curves"]`); `follow_training` redraws it every second with an ETA while the job runs, and says
what came out when it ends. The session keeps the id of the last job it started in `st.session_state[SLOT]`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from saelab.defaults import features_root
from saelab.jobs import Job, default_queue
from saelab.ui.errors import show_error
from saelab.ui.jobs import POLL_S, status_line
from saelab.ui.loader import get_model
from saelab.ui.model_choice import current_model_spec

if TYPE_CHECKING:
    from saelab.features.sweep import SweepRequest
    from saelab.features.train_job import TrainRequest

TRAIN_JOB = "train"
SLOT = "train_job_id"
DEFAULT_TOKENS = 100_000


@dataclass(frozen=True)
class TrainChoices:
    """What the form offers for the session's model."""

    model: str
    hooks: list[str]
    default_hook: str
    architectures: list[str]
    d_model: int
    min_tokens: int
    max_tokens: int
    default_tokens: int


def train_choices() -> TrainChoices:
    """Hooks (residual stream and MLP outputs) and architectures for the session's model (loads it)."""
    from saelab.features import train_job as tj

    handle = get_model(current_model_spec())
    return TrainChoices(
        model=handle.name,
        hooks=tj.hook_choices(handle),
        default_hook=tj.default_hook(handle),
        architectures=tj.architectures(),
        d_model=handle.d_model,
        min_tokens=tj.MIN_TOKENS,
        max_tokens=tj.MAX_TOKENS,
        default_tokens=DEFAULT_TOKENS,
    )


def uses_k(architecture: str) -> bool:
    from saelab.features.train_job import uses_k as _uses_k

    return _uses_k(architecture)


def default_name(hook: str, architecture: str, d_sae: int) -> str:
    from saelab.hooks import hook_slug

    return f"app-{hook_slug(hook)}-{architecture}-{d_sae}"


def make_request(**settings) -> TrainRequest:
    """A checked `TrainRequest` (BadInputError naming the wrong setting)."""
    from saelab.features.train_job import TrainRequest

    return TrainRequest(**settings)


def output_status(request: TrainRequest) -> str:
    """The run's state: "running" or "done" (a job of these settings is running, or finished on this server),
    else "new" or "resume" (an unfinished run of these settings is on disk); BadInputError if the name is taken."""
    from saelab.features.train_job import check_output

    job = default_queue().find(TRAIN_JOB, request.key)
    if job is not None and (job.active or job.state == "done"):
        return "running" if job.active else "done"
    return check_output(features_root(), request)


def ray_pool(ray: tuple[str, int] | None):
    """A Ray pool (`RayShardRunner`) of `workers` actors at `address` for the current model, or None."""
    if ray is None:
        return None
    from saelab.distributed.ray_harvest import RayShardRunner
    from saelab.distributed.ray_pool import require_ray

    require_ray()  # a clear error now, not in the job, when Ray is not installed
    address, workers = ray
    return RayShardRunner(current_model_spec(), address=address.strip() or "local", workers=int(workers))


def start_training(request: TrainRequest, ray: tuple[str, int] | None = None) -> Job:
    """Queue the run (or join the identical one queued or running) and remember it in this session.
    `ray`: (address, workers) to compute the harvest and the dashboards on Ray actors (docs/cluster.md)."""
    from saelab.features.train_job import training_job

    handle = get_model(current_model_spec())
    root = features_root()
    job = default_queue().find(TRAIN_JOB, request.key)
    if job is None or not job.active:
        output_status(request)  # the name is free, or an unfinished run of these settings
        job = default_queue().submit(
            TRAIN_JOB, request.key, f"Train {request.name}", training_job(handle, request, root, ray_pool(ray))
        )
    st.session_state[SLOT] = job.id
    return job


def make_sweep(base: TrainRequest, grid: dict[str, list]) -> SweepRequest:
    """A checked `SweepRequest` over `grid` ({setting: [values]}; BadInputError naming what is wrong)."""
    from saelab.features.sweep import SweepRequest

    return SweepRequest(base, {axis: list(values) for axis, values in grid.items()})


def sweep_options(d_model: int, architecture: str) -> dict[str, list]:
    """The values the sweep form offers per setting: k or the sparsity coefficient, and widths."""
    sparsity = [8, 16, 32, 64, 128, 256] if uses_k(architecture) else [0.3, 1.0, 3.0, 10.0, 30.0]
    return {"k" if uses_k(architecture) else "coefficient": sparsity, "d_sae": [d_model * m for m in (2, 4, 8, 16, 32)]}


def sweep_states(sweep: SweepRequest) -> dict[str, str]:
    """Each run's state: "new", "resume" or "done"; BadInputError when a run's name is taken by something else."""
    from saelab.features.sweep import check_sweep

    return check_sweep(features_root(), sweep)


def start_sweep(sweep: SweepRequest, ray: tuple[str, int] | None = None) -> Job:
    """Queue the sweep (one job training its runs in turn, or side by side on Ray actors with `ray` =
    (address, workers)) or join the identical one; remember it in this session."""
    from saelab.features.sweep import sweep_job

    handle = get_model(current_model_spec())
    job = default_queue().find(TRAIN_JOB, sweep.key)
    if job is None or not job.active:
        sweep_states(sweep)
        runs = len(sweep.runs())
        job = default_queue().submit(
            TRAIN_JOB, sweep.key, f"Sweep {sweep.base.name} ({runs} runs)",
            sweep_job(handle, sweep, features_root(), ray_pool(ray)),
        )  # fmt: skip
    st.session_state[SLOT] = job.id
    return job


def _sweep_line(job: Job) -> None:
    status = job.published.get("sweep")
    if status is None:
        return
    n = len(status.runs)
    now = f"training run {status.current + 1} of {n}: `{status.runs[status.current]}`" if job.active else f"{n} runs"
    done = f" · finished: {', '.join(f'`{r}`' for r in status.finished)}" if status.finished else ""
    st.caption(f"Sweep: {now}{done}.")


def _sweep_outcome(job: Job) -> None:
    from saelab.compare.metrics import read_metrics
    from saelab.reports.compare_figures import pareto_scatter

    outs = [Path(p) for p in job.result]
    table = read_metrics(outs, [p.name for p in outs])
    st.success(f"Sweep done: {len(outs)} SAEs trained, evaluated, with dashboards and proxy labels. They are in "
               "the SAE picker; the Compare page matches their features.")  # fmt: skip
    st.dataframe(table.table_rows(), hide_index=True)
    fig = pareto_scatter(table)
    if fig is not None:
        st.plotly_chart(fig, width="stretch", key=f"sweep_pareto_{job.id}")


def session_training_job() -> Job | None:
    job_id = st.session_state.get(SLOT)
    return default_queue().get(job_id) if job_id is not None else None


def _eta(job: Job) -> str:
    curves = job.published.get("curves")
    p = job.progress
    if not p.message.endswith("train") or curves is None:
        return ""
    eta = curves.eta_s()
    if eta is None:
        return ""
    return f" · training ETA {eta:,.0f} s (elapsed / steps done × steps left)"


def _cancel(job_id: int) -> None:
    job = default_queue().get(job_id)
    if job is not None:
        job.cancel()


def _draw_curves(job: Job) -> None:
    from saelab.features.train_job import EV_FORMULA
    from saelab.reports.train_figures import training_curves

    curves = job.published.get("curves")
    snap = curves.snapshot() if curves is not None else {"step": []}
    if not snap["step"]:
        st.caption("Curves appear once training starts (after the harvest).")
        return
    st.plotly_chart(training_curves(snap), width="stretch", key=f"train_curves_{job.id}_{len(snap['step'])}")
    st.caption(f"{len(snap['step']):,} points (downsampled to at most 2,000). {EV_FORMULA}. Dead fraction: latents "
               "that have not fired for the run's dead-feature window (min(1,000, steps / 8) steps), over d_sae.")  # fmt: skip


def _live(job_id: int) -> None:
    job = default_queue().get(job_id)
    if job is None or not job.active:
        st.rerun()  # it ended: the whole page draws the outcome
    elapsed = f" · {time.time() - job.started:,.0f} s" if job.started else ""
    st.progress(job.progress.fraction, text=f"**{job.title}** · {status_line(job)}{elapsed}{_eta(job)}")
    _sweep_line(job)
    st.button("Cancel", key=f"train_cancel_{job.id}", on_click=_cancel, args=(job.id,),
              disabled=job.cancel_requested, help="Stops at the next step; starting the same run again resumes it.")  # fmt: skip
    _draw_curves(job)


def follow_training() -> None:
    """The session's training job: live progress and curves while it runs, then its outcome; an empty state
    when this session has started none."""
    job = session_training_job()
    if job is None:
        st.info("No training run yet in this session. Choose the settings above and press **Start training**.")
        return
    if job.active:
        st.fragment(_live, run_every=POLL_S)(job.id)
        return
    if job.state == "failed" and job.error is not None:
        show_error(job.error)  # type: ignore[arg-type]
    elif job.state == "cancelled":
        st.info(f"{job.title}: cancelled. Start the same settings again to resume it.")
    elif job.state == "done" and "sweep" in job.published:
        _sweep_line(job)
        _sweep_outcome(job)
        return
    elif job.state == "done":
        path = Path(job.result)
        took = f" in {job.finished - job.started:,.0f} s" if job.finished and job.started else ""
        st.success(f"Trained **{path.name}**{took}: evaluated, with dashboards and proxy labels. "
                   "It is now in the SAE picker.")  # fmt: skip
        if st.button("Open it in the Feature Explorer", type="primary", key="train_open"):
            st.session_state["sae_path"] = str(path)  # the session's SAE (saelab.ui.sae_choice)
            st.switch_page("pages/explorer.py")
    _draw_curves(job)


__all__ = [
    "TRAIN_JOB",
    "TrainChoices",
    "default_name",
    "follow_training",
    "make_request",
    "make_sweep",
    "output_status",
    "session_training_job",
    "start_sweep",
    "start_training",
    "sweep_options",
    "sweep_states",
    "train_choices",
    "uses_k",
]
