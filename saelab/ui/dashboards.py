"""An SAE's feature dashboards in the app: the cached store, its labels, and building it from a page (a job)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from saelab.jobs import Job, default_queue
from saelab.reports.render import md_esc
from saelab.storage import DASHBOARD_DIR
from saelab.ui.errors import show_error
from saelab.ui.jobs import follow_job
from saelab.ui.loader import get_model, get_sae

if TYPE_CHECKING:
    from saelab.features.store import DashboardStore
    from saelab.models import ModelHandle
    from saelab.sae.files import LoadedSAE

APP_DASHBOARD_TOKENS = 131_072  # 1,024 rows of 128: enough for top examples of all but the rarest latents
DASHBOARD_JOB = "dashboards"  # the job kind of an in-app build (saelab.jobs)


def _dashboard_stamp(sae_path: str) -> float:
    """Modification time of the dashboards' meta file, so a rebuilt folder is read afresh."""
    meta = Path(sae_path) / DASHBOARD_DIR / "meta.json"
    return meta.stat().st_mtime if meta.exists() else 0.0


@st.cache_resource(show_spinner="Opening the feature dashboards…", max_entries=4)
def _load_dashboards(sae_path: str, stamp: float) -> DashboardStore:
    from saelab.features.store import DashboardStore

    return DashboardStore(sae_path)


def get_dashboards(sae_path: str) -> DashboardStore:
    """The precomputed dashboards beside an SAE (BadInputError / CorruptFileError when missing or broken)."""
    return _load_dashboards(str(sae_path), _dashboard_stamp(str(sae_path)))


def dashboards_exist(sae_path: str) -> bool:
    from saelab.features.store import DashboardStore

    return bool(DashboardStore.exists(sae_path))


def label_map(store: DashboardStore) -> dict[int, str]:
    """latent → label text from the store's labels.json ({} when there are no labels)."""
    labels = store.labels()
    if labels is None:
        return {}
    return {i: lab.label for i, lab in enumerate(labels.latents)}


def offer_dashboard_build(sae_path: str, *, broken: bool = False) -> None:
    """Say that the dashboards are missing (or unreadable) and offer to build them here, as a queued job.

    The build runs on the server's job queue (`saelab.jobs`), so every session asking for this SAE's
    dashboards follows the same job; when it is done the dashboard cache is cleared and the page reruns.
    """
    what = (
        "This SAE's feature dashboards cannot be read (see above); rebuild them"
        if broken
        else "This SAE has no feature dashboards yet (top contexts, histograms, logits, neighbours, map). Build them"
    )
    st.warning(f"{what} from the command line with `saelab dashboards --sae` {md_esc(sae_path)}, or here.")
    n_tokens = APP_DASHBOARD_TOKENS
    st.caption(
        f"Building here analyses up to {n_tokens:,} held-out corpus tokens, fewer if this machine could not finish "
        "them in 8 minutes (measured first); one heavy job runs at a time on this server, and a cancelled or "
        "interrupted build resumes from its checkpoint."
    )
    job = default_queue().find(DASHBOARD_JOB, _job_key(sae_path, n_tokens))
    if job is not None and job.active:  # this session's request, or the same one from another session
        follow_job(job, key="dashboards_job", on_done=_dashboards_built)
        return
    if job is not None and job.state == "failed":
        st.error(f"The last build failed: {job.error_message}")
    elif job is not None and job.state == "cancelled":
        st.caption("The last build was cancelled; building again resumes from its checkpoint.")
    if not st.button("Build dashboards now", type="primary", key="build_dashboards"):
        return
    try:
        submit_dashboard_build(sae_path, n_tokens)
    except Exception as err:
        show_error(err)
        return
    st.rerun()  # the next run follows the job, and the sidebar lists it


def _job_key(sae_path: str, n_tokens: int) -> tuple[str, int]:
    return str(Path(sae_path).resolve()), int(n_tokens)


def _dashboards_built(job: Job) -> None:
    _load_dashboards.clear()


def submit_dashboard_build(sae_path: str, n_tokens: int = APP_DASHBOARD_TOKENS) -> Job:
    """Queue the build of `sae_path`'s dashboards (or return the identical build already queued or running).

    The model and the SAE are resolved here, in the page's run (with its spinners); the job only holds them
    and the path. Cancelling stops the build at its next progress report and keeps its checkpoint, so
    building again resumes.
    """
    handle, loaded = get_model(), get_sae(sae_path)
    return default_queue().submit(
        DASHBOARD_JOB,
        _job_key(sae_path, n_tokens),
        f"Dashboards of {Path(sae_path).name}",
        lambda ctx: build_dashboards_here(handle, loaded, ctx.phase_progress, n_tokens),
    )


def build_dashboards_here(
    handle: ModelHandle,
    loaded: LoadedSAE,
    progress: Callable[[str, int, int], None],
    n_tokens: int = APP_DASHBOARD_TOKENS,
) -> Path:
    """Build dashboards for `loaded` over held-out corpus rows, reporting `progress(phase, done, total)`.

    Held-out rows (documents hashed out of the training split) so no SAE trained here saw them. Runs on the
    job queue's worker: no Streamlit call in here.
    """
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.features.sizing import dashboard_tokens

    if n_tokens > 16_384:  # sized to the machine: at most n_tokens, as many as 8 minutes of forward passes allow
        n_tokens = min(n_tokens, dashboard_tokens(handle, loaded, seq_len=128).n_tokens)
    corpus = build_corpus(
        handle.tokenizer,
        CorpusConfig(seq_len=128, n_tokens=n_tokens, seed=0, split="heldout"),
        progress=lambda done, total: progress("corpus", done, total),
    )
    return build_dashboards(
        handle, loaded, corpus.tokens, DashboardConfig(), progress=progress, corpus_provenance=corpus.provenance()
    )


__all__ = [
    "APP_DASHBOARD_TOKENS",
    "build_dashboards_here",
    "dashboards_exist",
    "get_dashboards",
    "label_map",
    "offer_dashboard_build",
    "submit_dashboard_build",
]
