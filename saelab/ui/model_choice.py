"""Which model a session runs: the shipped default, a model used before, or a GGUF file / Hugging Face folder.

The choice is per session (`st.session_state["model_spec"]`), so switching changes every page of this browser
tab and nobody else's; models load once per process on the loader thread (`saelab.ui.loader`) and are shared.
A typed path goes through `saelab.trust.user_path`. SAEs that do not fit the chosen model are refused where they
load, with a message naming the model and hook they were made for.
"""

from __future__ import annotations

import streamlit as st

from saelab import trust
from saelab.defaults import model_spec
from saelab.ui.errors import show_error

SESSION_KEY = "model_spec"


def current_model_spec() -> str:
    """This session's model: chosen in the sidebar, else `$SAELAB_MODEL`, else the default."""
    chosen = st.session_state.get(SESSION_KEY)
    return chosen if isinstance(chosen, str) and chosen else model_spec()


def _choices() -> list[str]:
    from saelab.models.recent import recent_models

    base = model_spec()
    return list(dict.fromkeys([base, current_model_spec(), *recent_models()]))


def model_picker() -> None:
    """The sidebar's model picker: a select box of known models and a path box for another one."""
    with st.sidebar.expander("Model", expanded=False):
        options = _choices()
        current = current_model_spec()
        picked = st.selectbox("Model", options, index=options.index(current), key="model_pick",
                              help="The shipped default and models loaded before on this machine.")  # fmt: skip
        typed = st.text_input("…or a .gguf file / Hugging Face folder", key="model_path", max_chars=4096,
                              placeholder="/path/to/model.gguf")  # fmt: skip
        spec = picked
        if typed.strip():
            try:
                from saelab.ui.sae_choice import sync_trust_mode

                sync_trust_mode()
                spec = str(trust.user_path(typed, "model path"))
            except Exception as err:
                show_error(err)
                spec = current
        if spec != current:
            st.session_state[SESSION_KEY] = spec
            st.rerun()
        if spec != model_spec():
            st.caption("SAEs made for another model are refused with a message naming their model and hook.")


__all__ = ["SESSION_KEY", "current_model_spec", "model_picker"]
