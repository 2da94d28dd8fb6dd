"""Prompt view: which latents fire on each token of a text, with links into the Feature Explorer."""

import pandas as pd
import streamlit as st

from saelab.reports import figures, render
from saelab.ui.errors import show_error
from saelab.ui.feature_context import open_features
from saelab.ui.model_choice import current_model_spec
from saelab.ui.prompt import MAX_PROMPT_CHARS, analyse, prompt_token_cap

EXAMPLE = (
    "The Eiffel Tower in Paris was finished in 1889. Its designer, Gustave Eiffel, "
    "also built the frame of the Statue of Liberty.\n\ndef area(r):\n    return 3.14159 * r ** 2"
)
HEATMAP_LATENTS = 20

st.title("Prompt view")
st.caption("Each token of your text with the SAE latent that fires most on it. Click a latent to open its dashboard.")
ctx = open_features(need_dashboards=False)
labels = ctx.labels
if ctx.store is None:
    st.caption("No dashboards for this SAE yet, so latents are shown without labels.")
elif ctx.labels_caption:
    st.caption(ctx.labels_caption)

with st.form("prompt_form"):
    text = st.text_area(
        f"Text (up to {prompt_token_cap(ctx.handle)} tokens are analysed)",
        value=EXAMPLE,
        height=140,
        max_chars=MAX_PROMPT_CHARS,
        key="prompt_text",
    )
    st.form_submit_button("Analyse", type="primary")

if not text.strip():
    st.warning("Type some text to analyse.")
    st.stop()
try:
    result = analyse(ctx.sae_path, text, current_model_spec())
except Exception as err:
    show_error(err)
    st.stop()

if result.truncated:
    st.warning(f"The text is too long for one view. {result.truncation_note}")

tokens = list(result.tokens)
st.html(render.prompt_html(tokens, result.strongest_latents(), labels, sinks=sorted(result.sink_positions)))
st.caption(
    "Dimmed tokens are attention sinks (the separator the text starts with, and any separator inside it): "
    "their residual norm is ~100× the rest, the SAE was trained without them, so they are not analysed."
)

top_latents = result.top(HEATMAP_LATENTS)
latent_ids = [lat for lat, _ in top_latents]
if not top_latents:
    st.info("No latent fires on this text.")
    st.stop()

st.subheader("Top latents of this text")
cols = st.columns(4)
for k, (latent, value) in enumerate(top_latents):
    name = labels.get(latent, "")
    cols[k % 4].page_link(
        "pages/explorer.py",
        label=f"#{latent} · max {value:.3g}" + (f" · {name[:40]}" if name else ""),
        query_params={"latent": str(latent)},
    )

chosen = st.selectbox(
    "Highlight the text by one latent",
    latent_ids,
    format_func=lambda lat: f"#{lat} {labels.get(lat, '')}".strip(),
)
values = result.latent_acts(chosen)
st.html(render.highlight_tokens(tokens, values, max(values, default=0.0)))
st.html(f"<div>{render.latent_link(chosen, labels.get(chosen) or None)} — open this latent's dashboard</div>")

st.plotly_chart(
    figures.prompt_heatmap(tokens, latent_ids, result.activation_matrix(latent_ids), labels),
    width="stretch",
)

st.subheader("Tokens and their top latents")
st.dataframe(pd.DataFrame(result.token_rows(labels)), hide_index=True, width="stretch")
