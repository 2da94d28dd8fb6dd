"""Feature Explorer: one latent's dashboard (Neuronpedia-style), opened by index, label, token or URL.

The selected latent lives in the URL (`?latent=N`), so every way of opening one — the number box,
a search result, a neighbour, a link from another page — just sets that parameter.

The latent's panel is a fragment (`st.fragment`): typing another index or clicking a neighbour reruns
only the panel, not the search boxes above it, which keeps a switch within the 300 ms budget.
"""

import pandas as pd
import streamlit as st

from saelab.features.search import labels_by_quality, search_labels, search_token
from saelab.reports import figures, render
from saelab.ui import explorer as panel
from saelab.ui.errors import show_error
from saelab.ui.feature_context import open_features
from saelab.ui.latents import query_latent
from saelab.ui.model_choice import current_model_spec
from saelab.ui.prompt import MAX_PROMPT_CHARS, analyse, prompt_token_cap, token_decoder

st.title("Feature Explorer")
ctx = open_features()
store, labels = ctx.store, ctx.labels
d_sae = int(store.d_sae)
decode = token_decoder(ctx.handle)


def open_latent(latent: int) -> None:
    st.query_params["latent"] = str(int(latent))


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


with st.expander("Find a latent by its label or by a token", expanded=st.query_params.get("latent") is None):
    by_label, by_token, by_quality = st.tabs(["Search labels", "Search by token", "Browse by label quality"])
    with by_label:
        if not labels:
            st.caption("This SAE has no labels yet (`saelab dashboards --sae PATH` writes them).")
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
    with by_quality:
        label_set = store.labels() if labels else None
        if label_set is None:
            st.caption("This SAE has no labels yet (`saelab dashboards --sae PATH` writes them).")
        else:
            q1, q2, q3 = st.columns(3)
            has_token = any(lab.token_balanced_accuracy is not None for lab in label_set.latents)
            level = q1.radio("Score level", ["token", "sequence"] if has_token else ["sequence"], horizontal=True,
                             key="explorer_quality_level")  # fmt: skip
            min_score = q2.slider("Balanced accuracy at least", 0.0, 1.0, 0.0, 0.05, key="explorer_quality_min")
            order = q3.radio("Order", ["best first", "worst first"], horizontal=True, key="explorer_quality_order")
            rows, n_match = labels_by_quality(label_set, level=level, min_score=min_score,
                                              best_first=order == "best first")  # fmt: skip
            st.caption(f"{n_match:,} scored latents match (showing {len(rows):,}). {panel.QUALITY_NOTE}")
            if rows:
                df = pd.DataFrame(rows, columns=["latent", "label", "token BA", "sequence BA", "rule"])
                st.dataframe(df, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="explorer_quality_hits")  # fmt: skip
                chosen = picked_from("explorer_quality_hits", df)
                if chosen is not None:
                    open_latent(chosen)
                    st.rerun()


@st.fragment
def latent_panel() -> None:
    """The number box and everything about the chosen latent (reruns alone on a switch)."""
    try:
        latent = query_latent(d_sae)
    except Exception as err:
        show_error(err)
        latent, bad_query = None, True
    else:
        bad_query = False
    # Keep the number box in step with the URL (a neighbour click or a link changes the URL), and in
    # range when another, smaller SAE was chosen since.
    if st.session_state.get("_explorer_seen") != latent and latent is not None:
        st.session_state["explorer_index"] = latent
    if not 0 <= int(st.session_state.get("explorer_index", 0)) < d_sae:
        st.session_state["explorer_index"] = 0
    st.session_state["_explorer_seen"] = latent
    box, _ = st.columns([1, 3])
    box.number_input(
        f"Latent index (0–{d_sae - 1})",
        min_value=0,
        max_value=d_sae - 1,
        step=1,
        key="explorer_index",
        on_change=lambda: open_latent(st.session_state["explorer_index"]),
    )
    if latent is None:
        if box.button("Open", key="explorer_open"):
            open_latent(st.session_state["explorer_index"])
            st.rerun(scope="fragment")
        if not bad_query:
            st.info("Choose a latent: type its index, search the labels or a token, or open one from another page.")
        return
    show_latent(latent)


def show_latent(latent: int) -> None:
    try:
        dash = store.latent(latent)
    except Exception as err:
        show_error(err)
        return

    # Heading, figures and the label's provenance are one HTML element: on a 2-core CPU every Streamlit
    # element costs the browser milliseconds, and a latent switch redraws all of them.
    st.html(panel.header_html(store, dash, latent, labels))
    st.page_link(
        "pages/steering.py", label=f"Steer with latent {latent}", icon="🎛️", query_params={"latent": str(latent)}
    )

    formulas = store.meta.get("formulas", {})
    max_act = float(dash.max_act)
    if max_act <= 0:
        st.warning("This latent never fired on the dashboard tokens (dead latent): there are no examples to show.")

    # ---------------------------------------------------------------- examples
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Top activating contexts")
        st.html(panel.top_contexts_html(dash, decode))

        # A toggle, not an expander: an expander's content is sent and drawn even while closed, and these
        # samples are most of the page's tokens.
        if st.toggle("Samples across the activation range", key="explorer_intervals"):
            if formulas.get("intervals"):
                st.caption(formulas["intervals"])
            st.html(panel.intervals_html(dash, decode))  # one element for all intervals: far cheaper to draw

    with right:
        st.html(
            "<b>Activation histogram</b> <span style='color:#6c757d;font-size:.85em'>(tokens where the latent fires)</span>"
        )
        st.plotly_chart(
            figures.activation_histogram(dash.hist_counts, max_act),
            width="stretch",
            config={"displayModeBar": False},
            theme=None,
        )

    pos, neg, near = st.columns(3)
    pos.html(render.logit_list_html(dash.logit_pos_ids, dash.logit_pos_vals, decode, positive=True))
    neg.html(render.logit_list_html(dash.logit_neg_ids, dash.logit_neg_vals, decode, positive=False))
    with near:
        # One pills widget rather than a button per neighbour: fewer elements to redraw on each switch.
        nbrs = panel.neighbours(dash)
        key = f"nbr_{latent}"
        st.pills(
            "Nearest latents (decoder cosine)",
            list(nbrs),
            format_func=lambda o: f"#{o} · cos {nbrs[o]:.2f}" + (f" · {labels[o][:40]}" if labels.get(o) else ""),
            key=key,
            on_change=lambda: st.session_state.get(key) is not None and open_latent(st.session_state[key]),
            help=formulas.get("neighbours"),
        )

    if formulas:
        st.html(
            render.details_html(
                "Definitions: how every number on this page is computed", render.definitions_html(formulas)
            )
        )

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
                result = analyse(ctx.sae_path, text, current_model_spec())
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


latent_panel()
