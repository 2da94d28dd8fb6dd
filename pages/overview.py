"""Overview: the loaded model, the SAE in use with its evaluation metrics and their formulas."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from saelab.ui.state import available_saes, current_sae_path, get_model, get_sae, read_eval, show_error

st.title("SAE Lab")
st.caption("An offline workbench for sparse-autoencoder features of a real language model.")

try:
    handle = get_model()
except Exception as err:  # the app keeps running and says what to install
    show_error(err)
    st.stop()

cfg = handle.cfg
st.subheader("Model")
st.markdown(
    f"**{handle.name}** · {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} heads of {cfg.d_head} · "
    f"vocab {cfg.d_vocab} · source `{handle.source}`"
)

st.subheader("SAE")
saes = available_saes()
options = [str(p) for p in saes]
with st.sidebar:
    st.markdown("**SAE in use**")
    if options:
        choice = st.selectbox("Shipped SAEs", options, format_func=lambda p: p.split("/")[-1])
        st.session_state["sae_path"] = choice
    custom = st.text_input("…or a path to an SAE-Lens folder", placeholder="/path/to/sae")
    if custom.strip():
        st.session_state["sae_path"] = custom.strip()

path = current_sae_path()
if path is None:
    st.info(
        "No SAE found in `cached_features/`. Train one with `saelab harvest` then `saelab train`, "
        "or enter the path of an SAE-Lens folder in the sidebar."
    )
    st.stop()
try:
    loaded = get_sae(path)
except Exception as err:
    show_error(err)
    st.stop()

meta = loaded.meta
c = loaded.sae.cfg
st.markdown(
    f"`{path}` · {c.d_in} → {c.d_sae} latents · "
    + (
        f"architecture **{meta.architecture}** · hook `{meta.hook}` · trained on {meta.tokens_seen:,} tokens"
        if meta
        else "no SAE Lab metadata"
    )
)
ev = read_eval(path)
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
    fig = go.Figure(go.Bar(x=[(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])], y=counts))
    fig.update_layout(
        title="Feature density: log10 firing frequency of live latents on held-out tokens",
        xaxis_title="log10 frequency",
        yaxis_title="latents",
        height=320,
    )
    st.plotly_chart(fig, width="stretch")
for note in ev.get("notes", []):
    st.caption(note)
