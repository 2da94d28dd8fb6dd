"""Feature map: every latent as a point (2-D layout of decoder directions); select one to open it."""

import pandas as pd
import streamlit as st

from saelab.ui.errors import show_error
from saelab.ui.feature_context import open_features
from saelab.ui.feature_map import FeatureMap, picked_latents

st.title("Feature map")
st.caption(
    "Each point is a latent, placed by the 2-D layout of its decoder direction stored with the dashboards: "
    "nearby points write similar directions into the residual stream. Click a point to open it, or pick several with the lasso tool."
)
ctx = open_features()
store, labels = ctx.store, ctx.labels
if ctx.labels_caption:
    st.caption(ctx.labels_caption + " Cluster names are the words most frequent among their members' labels.")
try:
    fmap = FeatureMap.of(store)
except Exception as err:
    show_error(err)
    st.stop()

n = fmap.n_latents
colour = st.radio("Colour by", fmap.colour_options, horizontal=True, key="map_colour")
event = st.plotly_chart(
    fmap.figure(labels, colour_by=colour),
    width="stretch",
    on_select="rerun",
    selection_mode=("points", "box", "lasso"),
    key="feature_map",
)
st.caption(f"{n:,} latents · {fmap.n_dead:,} never fired on the dashboard tokens (shown at the density floor).")
if store.meta.get("formulas", {}).get("projection"):
    keep = store.meta.get("map_neighbourhood_keep_at_10")
    kept = (
        f" It keeps {keep:.0%} of each latent's 10 nearest decoder neighbours among its 10 nearest points."
        if keep
        else ""
    )
    st.caption(f"Layout: {store.meta['formulas']['projection']}.{kept}")

picked = picked_latents(event)
if len(picked) == 1:
    st.switch_page("pages/explorer.py", query_params={"latent": str(picked[0])})
elif picked:
    st.subheader(f"{len(picked)} selected latents")
    st.dataframe(pd.DataFrame(fmap.selection_rows(picked, labels)), hide_index=True, width="stretch")
    one = st.selectbox("Open one of them", picked, format_func=lambda i: f"#{i} {labels.get(i, '')}".strip())
    if st.button("Open in the Feature Explorer", key="map_open_selected"):
        st.switch_page("pages/explorer.py", query_params={"latent": str(int(one))})

with st.form("map_open"):
    latent = st.number_input(f"Open latent (0–{n - 1})", min_value=0, max_value=max(n - 1, 0), step=1)
    if st.form_submit_button("Open in the Feature Explorer"):
        st.switch_page("pages/explorer.py", query_params={"latent": str(int(latent))})
