"""Shared, cached resources for the app: the model, SAEs, dashboards, and the choice of SAE per session.

`st.cache_resource` objects are shared by every browser session (read-only by convention; hooked
work goes through `saelab.hooks`, which serialises on the model's lock). Environment variables are
read at call time (not import time), because one Python process may run several apps under test:
    SAELAB_FEATURES  folder holding the shipped SAEs (default: <repo>/cached_features)
    SAELAB_MODEL     model spec for `saelab.models.load_model` (default: the default model; "tiny" in tests)
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from saelab.defaults import features_root, model_spec
from saelab.errors import BadInputError, SaelabError
from saelab.sae.catalog import list_saes
from saelab.storage import DASHBOARD_DIR
from saelab.ui.progress import streamlit_bar

if TYPE_CHECKING:  # the heavy modules (torch, TransformerLens, SAE-Lens) load in the background
    from saelab.features.store import DashboardStore
    from saelab.models import ModelHandle
    from saelab.sae.files import LoadedSAE

ROOT = Path(__file__).resolve().parents[2]
MAX_PROMPT_TOKENS = 512  # the prompt pages analyse at most this many tokens (and say so)
MAX_PROMPT_CHARS = 20_000  # text areas refuse more characters than this
MAX_CACHED_SAES = 8


# ---------------------------------------------------------------- model and SAEs, loaded once per process
# Shared by every browser session, like `st.cache_resource`, but loaded on worker threads so a page
# that does not need the model (Overview) renders while torch, TransformerLens and SAE-Lens import
# (~10 s on a 2-core CPU). A failed load is not cached: the next request tries again.

# One worker: TransformerLens and SAE-Lens have circular imports, and importing them from two threads at
# once can hand one thread a half-initialised module (ImportError). Jobs run in order, and an SAE's job is
# always queued after its model's, so it never waits on a job behind it.
_LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saelab-load")
_FUTURES: dict[tuple, Future] = {}
_FUTURES_LOCK = threading.Lock()


def _submit(key: tuple, fn: Callable[[], Any]) -> Future:
    with _FUTURES_LOCK:
        fut = _FUTURES.get(key)
        if fut is None or (fut.done() and fut.exception() is not None):
            saes = [k for k in _FUTURES if k[0] == "sae"]
            if key[0] == "sae" and len(saes) >= MAX_CACHED_SAES:
                _FUTURES.pop(saes[0])  # forget the oldest SAE (its memory goes once no page holds it)
            fut = _FUTURES[key] = _LOADER.submit(_then_freeze, fn)
        return fut


def _then_freeze(fn: Callable[[], Any]) -> Any:
    """Run a loader job, then move everything it allocated out of the garbage collector's sight.

    The model, the SAE and the imported modules live as long as the process, but a full (generation 2)
    collection walks every one of their ~600k objects: ~270 ms of held GIL on this CPU, which landed
    in the middle of latent switches. `gc.freeze()` moves them to the permanent generation, so later
    collections only walk what pages allocate (bench/app.py measures the effect)."""
    out = fn()
    gc.collect()
    gc.freeze()
    return out


def _import_heavy() -> None:
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401

    import saelab.models.loading  # noqa: F401
    import saelab.sae.files  # noqa: F401  (SAE-Lens)


def wait_for_imports() -> None:
    """Block (with a spinner) until torch, TransformerLens and SAE-Lens are imported on the loader thread.

    app.py calls this before any page but the Overview, so a page's own imports never race the loader's
    (a module imported from two threads at once may be seen half-initialised)."""
    _wait(_submit(("imports",), _import_heavy), "Starting up: importing torch, TransformerLens and SAE-Lens…")


def _model_future(spec: str) -> Future:
    _submit(("imports",), _import_heavy)  # queued first: every later job finds the modules loaded

    def load() -> ModelHandle:
        from saelab.models import load_model

        return load_model(spec)

    return _submit(("model", spec), load)


def _sae_future(path: str, spec: str) -> Future:
    model = _model_future(spec)

    def load() -> LoadedSAE:
        from saelab.sae.files import load_sae

        return load_sae(path, handle=model.result())

    return _submit(("sae", path, spec), load)


def _wait(fut: Future, message: str) -> Any:
    if not fut.done():
        with st.spinner(message):
            return fut.result()
    return fut.result()


def model_ready(spec: str | None = None) -> bool | Exception:
    """True once the model is loaded, an exception if loading failed, False while it loads (or not asked)."""
    fut = _FUTURES.get(("model", spec or model_spec()))
    if fut is None or not fut.done():
        return False
    return fut.exception() or True


def prefetch() -> None:
    """Start loading the model and the default SAE in the background (idempotent, returns at once)."""
    spec = model_spec()
    found = available_saes()
    if found:
        _sae_future(str(found[0]), spec)
    else:
        _model_future(spec)


def get_model(spec: str | None = None) -> ModelHandle:
    """The shared model (`$SAELAB_MODEL` unless a spec is given), loaded once per process.

    Every page calls this first, so it is also where a page makes sure it runs under app.py's
    navigation (see `ensure_app_navigation`).
    """
    ensure_app_navigation()
    return _wait(_model_future(spec or model_spec()), "Loading the language model…")


def ensure_app_navigation() -> None:
    """Rerun through app.py when Streamlit ran a page file directly in its legacy `pages/` mode.

    Trap: a fresh server whose first request is a deep link (`/explorer?latent=3`) sees the `pages/`
    folder and runs pages/explorer.py on its own, skipping app.py (no page config, file-name titles,
    no `st.navigation`). Only a call of `st.navigation` clears that process-wide flag, so a page that
    finds it still set clears it and reruns; the rerun executes app.py, which routes to the same URL
    with the same query parameters. Once per session: a rerun drops button clicks, and AppTest sets
    the flag again before every run (its later runs then execute the page directly, as before).
    Streamlit has no public API for this flag.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False) and not st.session_state.get("_saelab_nav_fixed"):
        st.session_state["_saelab_nav_fixed"] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def get_sae(path: str, spec: str | None = None) -> LoadedSAE:
    """The SAE at `path`, checked against the app's model, loaded once per process."""
    return _wait(_sae_future(str(path), spec or model_spec()), "Loading the SAE…")


def available_saes() -> list[Path]:
    """SAE folders shipped in cached_features/ (the embedded default first)."""
    root = features_root()
    if not root.exists():
        return []
    found = list_saes(root)
    return sorted(found, key=lambda p: (p.name != "default", p.name))


def current_sae_path() -> str | None:
    """The SAE this session is looking at: chosen in the sidebar, else the embedded default."""
    chosen = st.session_state.get("sae_path")
    if chosen:
        return chosen
    found = available_saes()
    return str(found[0]) if found else None


def show_error(err: Exception) -> None:
    """User errors as a red box with their message; anything else with its type, the app keeps running."""
    if isinstance(err, SaelabError):
        st.error(str(err))
    else:
        st.error(f"Unexpected {type(err).__name__}: {err}")


# ---------------------------------------------------------------- feature dashboards and prompts


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


_DECODE_MEMOS: dict[int, dict[int, str]] = {}


def token_decoder(handle: ModelHandle) -> Callable[[int], str]:
    """id → text of one token, as the tokenizer decodes it alone (memoised per tokenizer, for every
    session: stepping through latents decodes the same few thousand tokens again and again)."""
    tokenizer = handle.tokenizer
    memo = _DECODE_MEMOS.setdefault(id(tokenizer), {})

    def decode(token_id: int) -> str:
        if token_id not in memo:
            memo[token_id] = tokenizer.decode([int(token_id)])
        return memo[token_id]

    return decode


def prompt_token_cap(handle: ModelHandle) -> int:
    """Most text tokens a prompt page analyses: MAX_PROMPT_TOKENS, less for a model with a shorter
    context (the separator in front takes one position)."""
    return max(1, min(MAX_PROMPT_TOKENS, int(handle.cfg.n_ctx) - 1))


@st.cache_data(show_spinner="Running the model on your text…", max_entries=32)
def analyse(sae_path: str, text: str, spec: str, top_n: int = 5) -> Any:
    """`saelab.features.prompt.analyse_text` on the app's model and SAE (capped at
    `prompt_token_cap`), cached per text."""
    from saelab.features.prompt import analyse_text

    handle = get_model(spec)
    return analyse_text(handle, get_sae(sae_path, spec), text, max_tokens=prompt_token_cap(handle), top_n=top_n)


def parse_latent(raw: object, d_sae: int) -> int:
    """A latent index from user input or a URL, or BadInputError saying the valid range."""
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadInputError(f"Latent {str(raw)[:40]!r} is not a number; use an index from 0 to {d_sae - 1}.") from None
    if not 0 <= value < d_sae:
        raise BadInputError(f"There is no latent {value}: this SAE has latents 0 to {d_sae - 1}.")
    return value


def query_latent(d_sae: int) -> int | None:
    """The latent named by `?latent=N` in the URL, None when absent; BadInputError when invalid."""
    raw = st.query_params.get("latent")
    if raw is None or str(raw).strip() == "":
        return None
    return parse_latent(raw, d_sae)


@dataclass
class FeatureContext:
    """What a feature page works with: the SAE's folder, the model, the SAE and its dashboards."""

    sae_path: str
    handle: ModelHandle
    loaded: LoadedSAE
    store: DashboardStore | None
    labels: dict[int, str]


def open_features(*, need_dashboards: bool = True) -> FeatureContext:
    """Resolve model, SAE and dashboards for a page, or show why not and stop the page.

    Empty states (no SAE, no dashboards) are messages, never exceptions: the app keeps running.
    """
    path = current_sae_path()
    if path is None:
        st.info(
            "No SAE found. Train one with `saelab harvest` then `saelab train`, or enter the path of an "
            "SAE-Lens folder on the Overview page's sidebar."
        )
        st.stop()
    try:
        handle = get_model()
        loaded = get_sae(path)
    except Exception as err:  # shown in the page; the app keeps running
        show_error(err)
        st.stop()
    st.sidebar.caption(f"SAE: `{path}` · hook `{loaded.hook}` · {int(loaded.sae.cfg.d_sae):,} latents")
    store, labels = None, {}
    try:
        if dashboards_exist(path):
            store = get_dashboards(path)
            labels = label_map(store)
    except Exception as err:
        show_error(err)
        if need_dashboards:
            offer_dashboard_build(path, broken=True)
            st.stop()
    if store is None and need_dashboards:
        offer_dashboard_build(path)
        st.stop()
    return FeatureContext(sae_path=str(path), handle=handle, loaded=loaded, store=store, labels=labels)


def offer_dashboard_build(sae_path: str, *, broken: bool = False) -> None:
    """Say that the dashboards are missing (or unreadable) and offer to build them here, with a progress bar."""
    what = (
        "This SAE's feature dashboards cannot be read (see above); rebuild them"
        if broken
        else "This SAE has no feature dashboards yet (top contexts, histograms, logits, neighbours, map). Build them"
    )
    st.warning(f"{what} from the command line with `saelab dashboards --sae {sae_path}`, or here.")
    st.caption(
        f"Building here analyses {APP_DASHBOARD_TOKENS:,} held-out corpus tokens (a few minutes on a CPU); "
        "the command line can use more."
    )
    if not st.button("Build dashboards now", type="primary", key="build_dashboards"):
        return
    try:
        with streamlit_bar("Preparing the corpus…", keep=True) as progress:
            build_dashboards_here(sae_path, progress)
    except Exception as err:
        show_error(err)
        return
    _load_dashboards.clear()
    st.rerun()


APP_DASHBOARD_TOKENS = 131_072  # 1,024 rows of 128: enough for top examples of all but the rarest latents


def build_dashboards_here(
    sae_path: str, progress: Callable[[str, int, int], None], n_tokens: int = APP_DASHBOARD_TOKENS
) -> Path:
    """Build dashboards for the SAE at `sae_path` over held-out corpus rows, reporting `progress(phase, done, total)`.

    Held-out rows (documents hashed out of the training split) so no SAE trained here saw them.
    """
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.dashboards import DashboardConfig, build_dashboards

    handle, loaded = get_model(), get_sae(sae_path)
    corpus = build_corpus(
        handle.tokenizer,
        CorpusConfig(seq_len=128, n_tokens=n_tokens, seed=0, split="heldout"),
        progress=lambda done, total: progress("corpus", done, total),
    )
    return build_dashboards(
        handle, loaded, corpus.tokens, DashboardConfig(), progress=progress, corpus_provenance=corpus.provenance()
    )
