"""SAE Lab's entry point: `streamlit run app.py` (or `make app`)."""

import streamlit as st

st.set_page_config(page_title="SAE Lab", page_icon="🔬", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
]
st.navigation(pages).run()
