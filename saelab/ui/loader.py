"""The model and the SAEs, loaded once per process on a background thread and shared by every session.

Like `st.cache_resource`, but loaded on a worker thread so a page that does not need the model (Overview)
renders while torch, TransformerLens and SAE-Lens import (~10 s on a 2-core CPU). A failed load is not
cached: the next request tries again. The objects are read-only by convention; hooked work goes through
`saelab.hooks`, which serialises on the model's lock. The model spec is read at call time (not import
time), because one Python process may run several apps under test:
    SAELAB_MODEL     model spec for `saelab.models.load_model` (default: the default model; "tiny" in tests);
                     a session may pick another in the sidebar (`saelab.ui.model_choice`)
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import streamlit as st

from saelab.ui.model_choice import current_model_spec as model_spec
from saelab.ui.sae_choice import available_saes

if TYPE_CHECKING:  # the heavy modules (torch, TransformerLens, SAE-Lens) load in the background
    from saelab.models import ModelHandle
    from saelab.sae.files import LoadedSAE

MAX_CACHED_SAES = 8

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
        from saelab.models.recent import remember_model

        handle = load_model(spec)
        remember_model(spec)
        return handle

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
    """The shared model (`$SAELAB_MODEL` unless a spec is given), loaded once per process."""
    return _wait(_model_future(spec or model_spec()), "Loading the language model…")


def get_sae(path: str, spec: str | None = None) -> LoadedSAE:
    """The SAE at `path`, checked against the app's model, loaded once per process."""
    return _wait(_sae_future(str(path), spec or model_spec()), "Loading the SAE…")


__all__ = ["get_model", "get_sae", "model_ready", "prefetch", "wait_for_imports"]
