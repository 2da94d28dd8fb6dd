"""SAE Lab's entry point: `streamlit run app.py` (or `make app`)."""

from pathlib import Path

import streamlit as st

from saelab.ui.jobs import jobs_panel
from saelab.ui.loader import prefetch, wait_for_imports

st.set_page_config(page_title="SAE Lab", page_icon="🔬", layout="wide")

# url_path is fixed so links such as `explorer?latent=12` keep working (saelab.reports.render.EXPLORER_URL).
overview = st.Page("pages/overview.py", title="Overview", icon="🏠", default=True)
pages = [
    overview,
    st.Page("pages/explorer.py", title="Feature Explorer", icon="🔎", url_path="explorer"),
    st.Page("pages/prompt_view.py", title="Prompt view", icon="📝", url_path="prompt_view"),
    st.Page("pages/feature_map.py", title="Feature map", icon="🗺️", url_path="feature_map"),
    st.Page("pages/train.py", title="Train an SAE", icon="🏋️", url_path="train"),
    st.Page("pages/compare.py", title="Compare SAEs", icon="⚖️", url_path="compare"),
    st.Page("pages/steering.py", title="Steering", icon="🎛️", url_path="steering"),
]
# Analysis pages, in the order of the data flow; each is listed once its file exists.
_ROOT = Path(__file__).resolve().parent
for path, title, icon, slug in [
    ("pages/steering_eval.py", "Steering evaluation", "📊", "steering_eval"),
    ("pages/probing.py", "Probing", "🧪", "probing"),
    ("pages/circuits.py", "Circuits", "🕸️", "circuits"),
    ("pages/graphs.py", "Attribution graph", "🧬", "graphs"),
    ("pages/hypotheses.py", "Hypotheses", "💡", "hypotheses"),
]:
    if (_ROOT / path).exists():
        pages.append(st.Page(path, title=title, icon=icon, url_path=slug))
page = st.navigation(pages)
jobs_panel()  # heavy jobs of every session (queued, running, last finished), on every page
if page.title != overview.title:
    wait_for_imports()  # the Overview reads JSON only; every other page imports torch & co. after the loader
try:
    page.run()
finally:
    prefetch()  # after the page is drawn: load the model and SAE in the background (once per process)
