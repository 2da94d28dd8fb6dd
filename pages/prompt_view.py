"""Prompt view: which latents fire on each token of a text, with links into the Feature Explorer."""

import numpy as np
import pandas as pd
import streamlit as st

from saelab.reports import figures, render
from saelab.ui.state import MAX_PROMPT_CHARS, analyse, model_spec, open_features, prompt_token_cap, show_error

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
    result = analyse(ctx.sae_path, text, model_spec())
except Exception as err:
    show_error(err)
    st.stop()

if result.truncated:
    st.warning(f"The text is too long for one view. {result.truncation_note}")

tokens = list(result.tokens)
sinks = set(result.sink_positions)
per_token = [sorted(acts, key=lambda a: -a[1]) for acts in result.acts]
top1 = [(int(a[0][0]), float(a[0][1])) if a and a[0][1] > 0 else None for a in per_token]
st.html(render.prompt_html(tokens, top1, labels, sinks=sorted(sinks)))
st.caption(
    "Dimmed tokens are attention sinks (the separator the text starts with, and any separator inside it): "
    "their residual norm is ~100× the rest, the SAE was trained without them, so they are not analysed."
)

top_latents = [(int(t[0]), float(t[1])) for t in result.top_latents][:HEATMAP_LATENTS]
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
    [lat for lat, _ in top_latents],
    format_func=lambda lat: f"#{lat} {labels.get(lat, '')}".strip(),
)
values = result.latent_acts(chosen)
st.html(render.highlight_tokens(tokens, values, max(values, default=0.0)))
st.html(f"<div>{render.latent_link(chosen, labels.get(chosen) or None)} — open this latent's dashboard</div>")

matrix = np.array([result.latent_acts(lat) for lat, _ in top_latents])
st.plotly_chart(
    figures.prompt_heatmap(tokens, [lat for lat, _ in top_latents], matrix, labels),
    width="stretch",
)

st.subheader("Tokens and their top latents")
n_show = max((len(a) for a in per_token), default=0)
rows = []
for pos, (tok, acts) in enumerate(zip(tokens, per_token)):
    row = {"pos": pos, "token": tok.replace("\n", "↵") + (" (sink)" if pos in sinks else "")}
    for j in range(n_show):
        if j < len(acts):
            lat, val = acts[j]
            row[f"latent {j + 1}"] = f"#{int(lat)} ({float(val):.3g}) {labels.get(int(lat), '')}".strip()
        else:
            row[f"latent {j + 1}"] = ""
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
