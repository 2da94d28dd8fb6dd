"""Shared, cached resources for the app: the model, SAEs, and the choice of SAE per session.

`st.cache_resource` objects are shared by every browser session (read-only by convention; hooked
work goes through `saelab.hooks`, which serialises on the model's lock).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from saelab.errors import SaelabError
from saelab.models import DEFAULT_MODEL, ModelHandle, load_model
from saelab.sae.files import LoadedSAE, list_saes, load_sae
from saelab.storage import EVAL_FILE, read_json

ROOT = Path(__file__).resolve().parents[2]
CACHED_FEATURES = Path(os.environ.get("SAELAB_FEATURES", ROOT / "cached_features"))


@st.cache_resource(show_spinner="Loading the language model…")
def get_model(spec: str = DEFAULT_MODEL) -> ModelHandle:
    return load_model(spec)


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=8)
def get_sae(path: str, model_spec: str = DEFAULT_MODEL) -> LoadedSAE:
    return load_sae(path, handle=get_model(model_spec))


def available_saes() -> list[Path]:
    """SAE folders shipped in cached_features/ (the embedded default first)."""
    if not CACHED_FEATURES.exists():
        return []
    found = list_saes(CACHED_FEATURES)
    return sorted(found, key=lambda p: (p.name != "default", p.name))


def current_sae_path() -> str | None:
    """The SAE this session is looking at: chosen in the sidebar, else the embedded default."""
    chosen = st.session_state.get("sae_path")
    if chosen:
        return chosen
    found = available_saes()
    return str(found[0]) if found else None


def read_eval(sae_path: str) -> dict | None:
    path = Path(sae_path) / EVAL_FILE
    if not path.exists():
        return None
    try:
        return read_json(path)
    except SaelabError as err:
        st.warning(str(err))
        return None


def show_error(err: Exception) -> None:
    """User errors as a red box with their message; anything else with its type, the app keeps running."""
    if isinstance(err, SaelabError):
        st.error(str(err))
    else:
        st.error(f"Unexpected {type(err).__name__}: {err}")
