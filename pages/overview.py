"""Overview: the model, the SAE in use with its evaluation metrics and their formulas.

Everything here is read from JSON, so the page is usable at once while the model and SAE-Lens load in
the background (app.py starts that); the model line fills in when loading ends.
"""

import pandas as pd
import streamlit as st

from saelab.reports.figures import density_histogram
from saelab.reports.render import md_esc
from saelab.sae.catalog import read_folder_json
from saelab.ui.errors import show_error
from saelab.ui.loader import get_model, model_ready
from saelab.ui.model_choice import current_model_spec, model_picker
from saelab.ui.sae_choice import available_saes, current_sae_path, user_sae_path

st.title("SAE Lab")
st.caption("An offline workbench for sparse-autoencoder features of a real language model.")
st.subheader("Model")


@st.fragment(run_every=1.0)
def model_status() -> None:
    """The model line: a loading note until the background load ends (polled each second), then its shape."""
    state = model_ready()
    if state is False:
        st.markdown(f"**{md_esc(current_model_spec())}** · loading in the background (about 10 s on first start)…")
        return
    try:
        handle = get_model()
    except Exception as err:  # the app keeps running and says what to install
        show_error(err)
        return
    cfg = handle.cfg
    st.markdown(
        f"**{handle.name}** · {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} heads of "
        f"{cfg.d_head} · vocab {cfg.d_vocab} · source `{handle.source}` · ready"
    )


model_status()

st.subheader("SAE")
saes = available_saes()
options = [str(p) for p in saes]
model_picker()  # sidebar: the shipped default, models used before, or a path (this session's whole app)
with st.sidebar:
    st.markdown("**SAE in use**")
    if options:
        choice = st.selectbox("Shipped SAEs", options, format_func=lambda p: p.split("/")[-1])
        st.session_state["sae_path"] = choice
    custom = st.text_input("…or a path to an SAE-Lens folder", placeholder="/path/to/sae", max_chars=4096,
                           key="sae_custom_path")  # fmt: skip
    if custom.strip():
        try:
            st.session_state["sae_path"] = user_sae_path(custom)
        except Exception as err:
            show_error(err)

path = current_sae_path()
if path is None:
    st.info(
        "No SAE found in `cached_features/`. Train one with `saelab harvest` then `saelab train`, "
        "or enter the path of an SAE-Lens folder in the sidebar."
    )
    st.stop()
info = read_folder_json(path)
for message in info["errors"]:
    st.warning(message)
c, meta, ev = info["cfg"], info["meta"], info["eval"]
if c is None:
    st.error(f"{md_esc(path)} is not an SAE-Lens folder (no readable cfg.json). Choose another in the sidebar.")
    st.stop()
st.markdown(
    f"{md_esc(path)} · {c.get('d_in', '?')} → {c.get('d_sae', '?')} latents · "
    + (
        f"architecture **{meta.get('architecture', '?')}** · hook `{meta.get('hook', '?')}` · "
        f"trained on {int(meta.get('tokens_seen') or 0):,} tokens"
        if meta
        else "no SAE Lab metadata"
    )
)
st.caption("Whether the SAE fits the model is checked when a feature page opens it.")
if ev is None:
    st.info("No evaluation found beside this SAE. Run `saelab eval --sae PATH` to compute it.")
    st.stop()

rows = []
formulas = ev.get("formulas", {})
for key, formula in formulas.items():
    value = ev.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rows.append({"metric": key, "value": value, "formula": formula})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

edges, counts = ev.get("density_hist_edges"), ev.get("density_hist_counts")
if edges and counts:
    st.plotly_chart(density_histogram(edges, counts), width="stretch")
for note in ev.get("notes", []):
    st.caption(note)
