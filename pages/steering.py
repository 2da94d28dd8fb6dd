"""Steering: a placeholder that shows the latent chosen for steering; the playground is a later issue."""

import streamlit as st

from saelab.ui import render
from saelab.ui.state import open_features, query_latent, show_error

st.title("Steering")
st.info(
    "The steering playground is not built yet. This page only shows which latent you chose; "
    "adding its decoder direction to the model while it generates comes in a later version."
)
ctx = open_features(need_dashboards=False)
d_sae = int(ctx.loaded.sae.cfg.d_sae)
try:
    latent = query_latent(d_sae)
except Exception as err:
    show_error(err)
    st.stop()
if latent is None:
    st.caption("No latent chosen: open one in the Feature Explorer and follow “Steer with this latent”.")
    st.page_link("pages/explorer.py", label="Open the Feature Explorer", icon="🔎")
    st.stop()

label = ctx.labels.get(latent) or None
proxy = bool(ctx.store is not None and (ctx.store.labels() or {}).get("proxy"))
st.html(render.heading_html(latent, label, proxy=proxy, tooltip="An automatic proxy label."))
if ctx.store is not None:
    try:
        dash = ctx.store.latent(latent)
    except Exception as err:
        show_error(err)
    else:
        c1, c2 = st.columns(2)
        c1.metric("Density", f"{float(dash.density):.3%}")
        c2.metric("Max activation", f"{float(dash.max_act):.3g}")
st.page_link(
    "pages/explorer.py",
    label=f"Back to latent {latent} in the Feature Explorer",
    icon="🔎",
    query_params={"latent": str(latent)},
)
