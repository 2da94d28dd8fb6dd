"""Hypotheses: what in a text predicts its target? HypotheSAEs offline, with a bag-of-words baseline."""

import pandas as pd
import streamlit as st

from saelab.hypotheses import HypothesisConfig
from saelab.hypotheses.results import PROXY_NOTE, signal_kept
from saelab.hypotheses.run import required_texts
from saelab.reports.hypotheses import examples_html, export_bytes
from saelab.reports.hypotheses_figures import effect_sizes
from saelab.reports.render import md_esc
from saelab.ui import hypotheses as hyp_ui
from saelab.ui.errors import show_error
from saelab.ui.loader import get_model

st.title("Hypotheses")
st.caption(
    "HypotheSAEs (Movva et al. 2025), offline: embed each text, train a Top-K SAE on the embeddings, pick the "
    "latents that predict the target (LASSO, α bisected to exactly n), describe each as a checkable rule, and test "
    "all rules together on held-out texts (OLS for numbers, Logit for two classes; significant if p < 0.1/n)."
)
st.info(PROXY_NOTE, icon="⚠️")

source = st.radio("Texts", ["Built-in set", "Upload a CSV"], horizontal=True, key="hyp_source")
seed = int(st.number_input("Seed (split, sampling, SAE)", 0, 2**31 - 1, 0, key="hyp_seed"))
textset = None
try:
    if source == "Built-in set":
        names = hyp_ui.builtin_names()
        default = names.index("26_headline_isfrontpage") if "26_headline_isfrontpage" in names else 0
        name = st.selectbox("Set (sae-probes)", names, index=default, key="hyp_set")
        textset = hyp_ui.builtin_set(name, seed)
    else:
        upload = st.file_uploader("CSV with a text column and a target column", type=["csv"], key="hyp_upload")
        if upload is not None:
            data = upload.getvalue()
            cols = hyp_ui.upload_columns(data)
            c1, c2, c3 = st.columns(3)
            text_col = c1.selectbox("Text column", cols, key="hyp_text_col")
            target_col = c2.selectbox("Target column", cols, index=min(1, len(cols) - 1), key="hyp_target_col")
            kind = c3.selectbox("Target kind", ["auto", "binary", "multiclass", "numeric"], key="hyp_kind")
            textset = hyp_ui.upload_set(data, text_col, target_col, kind, seed)
except Exception as err:
    show_error(err)

if textset is not None:
    classes = f" · classes {md_esc(', '.join(textset.classes[:10]))}" if textset.classes else ""
    st.caption(f"{len(textset):,} texts · target {textset.kind}{classes}")
    for note in textset.notes:
        st.caption(f"ℹ️ {md_esc(note, 1000)}")

with st.expander("Settings"):
    c1, c2, c3 = st.columns(3)
    max_texts = int(c1.number_input("Use at most this many texts (random, seeded)", 50, 100_000, 2000, step=500,
                                    key="hyp_max_texts"))  # fmt: skip
    n_hyp = int(c2.number_input("Hypotheses (n)", 1, 100, 20, key="hyp_n"))
    selection = c3.selectbox("Selection", ["lasso", "correlation"], key="hyp_selection")
    c1, c2, c3 = st.columns(3)
    embedding = c1.selectbox("Embedding", ["minilm", "lm"], key="hyp_embedding",
                             format_func=lambda e: {"minilm": "all-MiniLM-L6-v2", "lm": "default LM residual"}[e])  # fmt: skip
    layer = int(c2.number_input("LM layer (for the LM embedding)", 0, 64, 12, key="hyp_layer"))
    epochs = int(c3.number_input("SAE epochs", 1, 1000, 100, key="hyp_epochs"))
    positive = st.text_input("Positive class (only for more than two named classes)", key="hyp_positive")
    baseline = st.checkbox("Also run the bag-of-words baseline", True, key="hyp_baseline")
    st.markdown("**Optional LLM** (OpenAI-compatible endpoint; otherwise keyword rules, labelled PROXY)")
    c1, c2 = st.columns(2)
    llm_url = c1.text_input("Endpoint URL", placeholder="http://127.0.0.1:8080/v1", key="hyp_llm_url")
    llm_model = c2.text_input("Model name", key="hyp_llm_model")

if st.button("Generate and test hypotheses", type="primary", disabled=textset is None, key="hyp_run"):
    try:
        cfg = HypothesisConfig(
            n_hypotheses=n_hyp, selection=selection, embedding=embedding, lm_layer=layer, epochs=epochs, seed=seed,
            max_texts=max_texts, positive_class=positive.strip() or None, baseline=baseline,
        )  # fmt: skip
        st.caption(f"The SAE needs at least {required_texts(cfg)} texts.")
        endpoint = None
        if llm_url.strip():
            from saelab.features.llm import LLMEndpoint

            endpoint = LLMEndpoint(llm_url.strip(), llm_model.strip() or "default", timeout=10)
        handle = get_model() if embedding == "lm" else None
        st.session_state["hyp_result"] = hyp_ui.run_with_bar(cfg, textset, endpoint, handle)
    except Exception as err:
        show_error(err)

result = st.session_state.get("hyp_result")
if result is not None:
    for note in result.notes:
        if note != PROXY_NOTE:
            st.warning(md_esc(note, 1000))
    fit = "AUC" if result.binary else "R²"
    cols = st.columns(4)
    cols[0].metric("SAE: significant", f"{result.sae_method.n_significant}/{len(result.sae_method.hypotheses)}")
    cols[1].metric(f"SAE: held-out {fit}", result.sae_method.fit_label.split()[-1])
    if result.baseline is not None:
        cols[2].metric("Baseline: significant", f"{result.baseline.n_significant}/{len(result.baseline.hypotheses)}")
        cols[3].metric(f"Baseline: held-out {fit}", result.baseline.fit_label.split()[-1])
    d = result.data
    st.caption(
        f"Target: {d['target']} · {d['n_texts']:,} texts, split {d['split_sizes']} (seed {d['split_seed']}) · "
        f"{result.embedding} · SAE M={result.sae['m']}, K={result.sae['k']}, validation nMSE "
        f"{result.sae['val_nmse']:.3f} · interpretation: {result.interpretation} · threshold p < "
        f"{result.sae_method.threshold:.3g} (0.1/m) · {result.seconds['total']:.0f} s"
    )
    ref = result.latent_reference
    if ref:
        ref_fit = f"AUC {ref['auc']:.3f}" if ref.get("auc") is not None else f"R² {ref['r2']:.3f}"
        st.caption(
            f"Reference: the selected latents themselves (fires: a > 0) as hypotheses give {ref['n_significant']}/"
            f"{ref['n']} significant and held-out {ref_fit}; the hypotheses' mean fidelity F1 to their latents is "
            f"{ref['mean_fidelity_f1']:.2f}. A large gap means the descriptions lose what the latents carry."
        )
        st.caption(signal_kept(result.sae_method, ref))
    st.plotly_chart(effect_sizes(result.sae_method, result.baseline), width="stretch", key="hyp_effects")
    methods = [(result.sae_method, "SAE hypotheses")]
    if result.baseline is not None:
        methods.append((result.baseline, "Bag-of-words baseline"))
    columns = st.columns(len(methods))
    for (method, title), col in zip(methods, columns):
        with col:
            st.subheader(title)
            st.caption(method.summary())
            st.dataframe(pd.DataFrame(hyp_ui.hypothesis_rows(method)), hide_index=True, width="stretch")
            for note in method.notes:
                st.caption(f"ℹ️ {note}")
    st.subheader("Held-out examples, evidence highlighted")
    tabs = st.tabs([title for _, title in methods])
    for (method, _), tab in zip(methods, tabs):
        with tab:
            st.html(examples_html(method))
    with st.expander("Formulas"):
        for k, v in result.formulas.items():
            st.markdown(f"- **{k}**: `{v}`")
    files = export_bytes(result)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Report (HTML)", files["html"], "hypotheses.html", "text/html", key="hyp_dl_html")
    c2.download_button("Result (JSON)", files["json"], "hypotheses.json", "application/json", key="hyp_dl_json")
    c3.download_button("Table (CSV)", files["csv"], "hypotheses.csv", "text/csv", key="hyp_dl_csv")
