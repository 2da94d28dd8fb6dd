"""Feature map: every latent as a point (2-D layout of decoder directions); select one to open it."""

import numpy as np
import pandas as pd
import streamlit as st

from saelab.reports import figures
from saelab.ui.state import open_features, show_error

st.title("Feature map")
st.caption(
    "Each point is a latent, placed by the 2-D layout of its decoder direction stored with the dashboards: "
    "nearby points write similar directions into the residual stream. Click a point to open it, or pick several with the lasso tool."
)
ctx = open_features()
store, labels = ctx.store, ctx.labels
try:
    summary = store.summary()
except Exception as err:
    show_error(err)
    st.stop()

xy = np.asarray(summary["map_xy"])
cluster = summary.get("map_cluster")
density = np.asarray(summary["density"])
n = len(xy)
colour = st.radio("Colour by", ["log density", "cluster"], horizontal=True, disabled=cluster is None)
fig = figures.feature_map(
    xy,
    density,
    None if cluster is None else np.asarray(cluster),
    labels,
    colour_by="cluster" if colour == "cluster" else "density",
)
event = st.plotly_chart(
    fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"), key="feature_map"
)
dead = int((density <= 0).sum())
st.caption(f"{n:,} latents · {dead:,} never fired on the dashboard tokens (shown at the density floor).")
if store.meta.get("formulas", {}).get("projection"):
    st.caption(f"Layout: {store.meta['formulas']['projection']}.")

points = event.selection.points if event else []
# Only the first trace holds latents (a second one only rings the highlighted point).
picked = sorted({int(p.get("customdata", p.get("point_index"))) for p in points if p.get("curve_number", 0) == 0})
if len(picked) == 1:
    st.switch_page("pages/explorer.py", query_params={"latent": str(picked[0])})
elif picked:
    st.subheader(f"{len(picked)} selected latents")
    df = pd.DataFrame(
        {
            "latent": picked,
            "label": [labels.get(i, "") for i in picked],
            "density": [float(density[i]) for i in picked],
        }
    )
    st.dataframe(df, hide_index=True, width="stretch")
    one = st.selectbox("Open one of them", picked, format_func=lambda i: f"#{i} {labels.get(i, '')}".strip())
    if st.button("Open in the Feature Explorer", key="map_open_selected"):
        st.switch_page("pages/explorer.py", query_params={"latent": str(int(one))})

with st.form("map_open"):
    latent = st.number_input(f"Open latent (0–{n - 1})", min_value=0, max_value=max(n - 1, 0), step=1)
    if st.form_submit_button("Open in the Feature Explorer"):
        st.switch_page("pages/explorer.py", query_params={"latent": str(int(latent))})
