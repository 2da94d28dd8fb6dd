"""SAE Lab's entry point: `streamlit run app.py` (or `make app`)."""

import streamlit as st

st.set_page_config(page_title="SAE Lab", page_icon="🔬", layout="wide")

# url_path is fixed so links such as `explorer?latent=12` keep working (saelab.ui.render.EXPLORER_URL).
pages = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/explorer.py", title="Feature Explorer", icon="🔎", url_path="explorer"),
    st.Page("pages/prompt_view.py", title="Prompt view", icon="📝", url_path="prompt_view"),
    st.Page("pages/feature_map.py", title="Feature map", icon="🗺️", url_path="feature_map"),
    st.Page("pages/steering.py", title="Steering", icon="🎛️", url_path="steering"),
]
st.navigation(pages).run()
