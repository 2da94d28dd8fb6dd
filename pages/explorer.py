"""Feature Explorer: one latent's dashboard (Neuronpedia-style), opened by index, label, token or URL.

The selected latent lives in the URL (`?latent=N`), so every way of opening one — the number box,
a search result, a neighbour, a link from another page — just sets that parameter.
"""

import pandas as pd
import streamlit as st

from saelab.features.search import search_labels, search_token
from saelab.ui import figures, render
from saelab.ui.state import (
    MAX_PROMPT_CHARS,
    analyse,
    model_spec,
    open_features,
    prompt_token_cap,
    query_latent,
    show_error,
    token_decoder,
)

st.title("Feature Explorer")
ctx = open_features()
store, labels = ctx.store, ctx.labels
d_sae = int(store.d_sae)
decode = token_decoder(ctx.handle)


def open_latent(latent: int) -> None:
    st.query_params["latent"] = str(int(latent))


try:
    latent = query_latent(d_sae)
except Exception as err:
    show_error(err)
    latent = None
    bad_query = True
else:
    bad_query = False

# Keep the number box in step with the URL (a neighbour click or a link changes the URL), and in
# range when another, smaller SAE was chosen since.
if st.session_state.get("_explorer_seen") != latent and latent is not None:
    st.session_state["explorer_index"] = latent
if not 0 <= int(st.session_state.get("explorer_index", 0)) < d_sae:
    st.session_state["explorer_index"] = 0
st.session_state["_explorer_seen"] = latent

pick, find = st.columns([1, 3])
with pick:
    st.number_input(
        f"Latent index (0–{d_sae - 1})",
        min_value=0,
        max_value=d_sae - 1,
        step=1,
        key="explorer_index",
        on_change=lambda: open_latent(st.session_state["explorer_index"]),
    )
    if latent is None and st.button("Open", key="explorer_open"):
        open_latent(st.session_state["explorer_index"])
        st.rerun()


def picked_from(table_key: str, df: pd.DataFrame) -> int | None:
    """The latent of a newly selected row of a results table (None if no new selection)."""
    rows = st.session_state.get(table_key, {}).get("selection", {}).get("rows", [])
    if not rows:
        return None
    mark = (table_key, tuple(df["latent"]), rows[0])
    if st.session_state.get("_explorer_handled") == mark:
        return None
    st.session_state["_explorer_handled"] = mark
    return int(df["latent"].iloc[rows[0]])


with find:
    by_label, by_token = st.tabs(["Search labels", "Search by token"])
    with by_label:
        if not labels:
            st.caption("This SAE has no labels yet (`saelab label --sae PATH`).")
        else:
            query = st.text_input("Words in the label", key="explorer_label_query", max_chars=200)
            if query.strip():
                try:
                    hits = search_labels(store.labels(), query, 20)
                except Exception as err:
                    show_error(err)
                    hits = []
                df = pd.DataFrame(hits, columns=["latent", "label", "score"])
                if df.empty:
                    st.caption("No label matches.")
                else:
                    st.dataframe(
                        df, hide_index=True, on_select="rerun", selection_mode="single-row", key="explorer_label_hits"
                    )
                    chosen = picked_from("explorer_label_hits", df)
                    if chosen is not None:
                        open_latent(chosen)
                        st.rerun()
    with by_token:
        token = st.text_input("A token, e.g. ' the' or 'ing'", key="explorer_token_query", max_chars=100)
        if token:
            try:
                hits = search_token(store, ctx.handle.tokenizer, token, 20)
            except Exception as err:
                show_error(err)
                hits = []
            df = pd.DataFrame(hits, columns=["latent", "count", "mean_act"])
            if df.empty:
                st.caption("No latent has this token among its top activations.")
            else:
                df.insert(1, "label", [labels.get(int(i), "") for i in df["latent"]])
                st.dataframe(
                    df, hide_index=True, on_select="rerun", selection_mode="single-row", key="explorer_token_hits"
                )
                chosen = picked_from("explorer_token_hits", df)
                if chosen is not None:
                    open_latent(chosen)
                    st.rerun()

if latent is None:
    if not bad_query:
        st.info("Choose a latent: type its index, search the labels or a token, or open one from another page.")
    st.stop()

try:
    dash = store.latent(latent)
except Exception as err:
    show_error(err)
    st.stop()

meta = store.meta
label_entry = None
raw_labels = store.labels()
if raw_labels and latent < len(raw_labels.get("latents", [])):
    label_entry = raw_labels["latents"][latent]

# ---------------------------------------------------------------- header
label = labels.get(latent) or None
proxy = bool(raw_labels and raw_labels.get("proxy"))
tip = "An automatic proxy label: tokens and contexts that drive the latent, not a human reading." if proxy else None
st.html(render.heading_html(latent, label, proxy=proxy, tooltip=tip))
formulas = meta.get("formulas", {})
c1, c2, c3, c4 = st.columns(4)
c1.metric("Density", f"{float(dash.density):.3%}", help=formulas.get("density", "share of tokens with act > 0"))
c2.metric("Max activation", f"{float(dash.max_act):.3g}")
c3.metric("Mean activation (when firing)", f"{float(dash.mean_act):.3g}", help=formulas.get("mean_act"))
if label_entry and label_entry.get("detection_balanced_accuracy") is not None:
    formula = (raw_labels or {}).get("formula") or "balanced accuracy of the label's detection rule"
    c4.metric(
        "Detection score",
        f"{float(label_entry['detection_balanced_accuracy']):.2f}",
        help=f"Balanced accuracy on held-out rows: {formula}",
    )
    with st.expander("How the label was made and scored"):
        st.markdown(
            f"Method: `{raw_labels.get('method', '?')}` · F1 {float(label_entry.get('detection_f1') or 0):.2f} · "
            f"{int(label_entry.get('n_pos') or 0):,} positive and {int(label_entry.get('n_neg') or 0):,} negative "
            "held-out examples."
        )
        st.code(formula, language=None)
else:
    why = (label_entry or {}).get("note") or "no label score for this latent"
    c4.metric("Detection score", "—", help=f"Not scored: {why}.")
st.page_link("pages/steering.py", label=f"Steer with latent {latent}", icon="🎛️", query_params={"latent": str(latent)})

st.caption(
    f"Dashboards computed over {int(meta.get('n_tokens', 0)):,} tokens"
    + (f" of {meta['model'].get('name')}" if isinstance(meta.get("model"), dict) else "")
    + (f" at `{meta['hook']}`" if meta.get("hook") else "")
    + "."
)
ctx_left = int(dash.ctx_left)
max_act = float(dash.max_act)
if max_act <= 0:
    st.warning("This latent never fired on the dashboard tokens (dead latent): there are no examples to show.")

# ---------------------------------------------------------------- examples
left, right = st.columns([3, 2])
with left:
    st.subheader("Top activating contexts")
    rows = []
    for tokens, acts in zip(dash.top_tokens, dash.top_acts):
        if (tokens >= 0).sum() == 0 or float(acts.max()) <= 0:
            continue
        value = float(acts[ctx_left])
        rows.append(
            f'<div style="display:flex;gap:8px"><code style="min-width:4em">{value:.3g}</code>'
            f"{render.context_html(tokens, acts, max_act, decode, centre=ctx_left)}</div>"
        )
    st.html("".join(rows) if rows else "<i>No activating contexts.</i>")

    with st.expander("Samples across the activation range", expanded=False):
        if formulas.get("intervals"):
            st.caption(formulas["intervals"])
        for i in reversed(range(len(dash.q_bounds))):
            lo, hi = (float(x) for x in dash.q_bounds[i])
            frac = float(dash.q_frac[i])
            if frac <= 0:
                continue
            st.markdown(f"**Interval {lo:.3g}–{hi:.3g}**, contains {frac:.1%} of the firing tokens")
            shown = [
                render.context_html(t, a, max_act, decode, centre=ctx_left)
                for t, a in zip(dash.q_tokens[i], dash.q_acts[i])
                if (t >= 0).any()
            ]
            st.html("".join(shown) or "<i>no samples</i>")

with right:
    st.plotly_chart(figures.activation_histogram(dash.hist_counts, max_act), width="stretch")

pos, neg, near = st.columns(3)
with pos:
    st.plotly_chart(figures.logit_bars(dash.logit_pos_ids, dash.logit_pos_vals, decode, positive=True), width="stretch")
with neg:
    st.plotly_chart(
        figures.logit_bars(dash.logit_neg_ids, dash.logit_neg_vals, decode, positive=False), width="stretch"
    )
with near:
    st.markdown("**Nearest latents** (decoder cosine)", help=formulas.get("neighbours"))
    for j, (other, cos) in enumerate(zip(dash.nbr_ids, dash.nbr_cos)):
        other = int(other)
        if other < 0:
            continue
        name = labels.get(other, "")
        st.button(
            f"#{other} · cos {float(cos):.2f}" + (f" · {name[:48]}" if name else ""),
            key=f"nbr_{j}",
            on_click=open_latent,
            args=(other,),
            width="stretch",
        )

if formulas:
    with st.expander("Definitions: how every number on this page is computed"):
        st.html(render.definitions_html(formulas))

# ---------------------------------------------------------------- your own text
st.subheader("Test your own text")
with st.form("explorer_text"):
    text = st.text_area(
        f"Text (analysed up to {prompt_token_cap(ctx.handle)} tokens)",
        max_chars=MAX_PROMPT_CHARS,
        placeholder="Paste a sentence to see where this latent fires.",
    )
    submitted = st.form_submit_button("Show activations")
if submitted:
    if not text.strip():
        st.warning("Type some text first.")
    else:
        try:
            result = analyse(ctx.sae_path, text, model_spec())
        except Exception as err:
            show_error(err)
        else:
            values = result.latent_acts(latent)
            peak = max(values, default=0.0)
            st.caption(
                f"Max in your text: {peak:.3g} (dashboard max {max_act:.3g}); shading is relative to "
                f"{max(peak, max_act):.3g}." + (f" {result.truncation_note}" if result.truncated else "")
            )
            st.html(render.highlight_tokens(result.tokens, values, max(peak, max_act)))
