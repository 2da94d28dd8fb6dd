"""Steering evaluation: AxBench's protocol on the offline concept suite (PROXY judges), and SAE detox tiers."""

import streamlit as st

from saelab.steering.concepts import CONCEPTS, DEFAULT_CONCEPTS, INSTRUCTIONS
from saelab.steering.detox import DetoxConfig, DetoxResult
from saelab.steering.evaluate import AXBENCH_FACTORS, BASELINES, STEER_METHODS, EvalConfig, EvalResult
from saelab.ui.errors import show_error
from saelab.ui.jobs import session_job
from saelab.ui.loader import get_model, get_sae
from saelab.ui.sae_choice import current_sae_path
from saelab.ui.steering_eval import (
    SAVED_DETOX,
    SAVED_EVAL,
    load_saved,
    show_detox,
    show_eval,
    submit_detox,
    submit_eval,
)

st.title("Steering evaluation")
st.caption(
    "AxBench's steering protocol: each method steers with α = factor × max_act; the factor is chosen on half of "
    "the instructions and the score is reported on the other half. Ratings (concept, instruction relevance, "
    "fluency ∈ {0,1,2}) come from offline **PROXY judges** — sentence-embedding similarity and perplexity under "
    "the unsteered model — unless you configure an LLM judge endpoint. Score = harmonic mean of the three, 0 if "
    "any is 0."
)
handle = get_model()
sae_path = current_sae_path()
loaded = None
if sae_path:
    try:
        loaded = get_sae(sae_path)
    except Exception as err:
        show_error(err)

run_tab, detox_tab, saved_tab = st.tabs(["Run an evaluation", "Detox tiers", "Committed results"])

with run_tab:
    with st.form("steer_eval_form"):
        concepts = st.multiselect(
            "Concepts", list(CONCEPTS), default=list(DEFAULT_CONCEPTS[:2]), help="real labelled sae-probes data"
        )
        methods = st.multiselect(
            "Methods", list(STEER_METHODS) + [BASELINES[0]], default=["sae", "diffmean", "prompting"]
        )
        factors = st.multiselect("Factors (AxBench: all 14)", list(AXBENCH_FACTORS), default=[0.4, 1.0, 2.0, 4.0])
        c1, c2, c3, c4 = st.columns(4)
        n_instr = c1.number_input("Instructions", 2, len(INSTRUCTIONS), 4, help="split 50/50 by id")
        max_tokens = c2.number_input("New tokens (AxBench 128)", 1, 256, 32)
        n_train = c3.number_input("Training texts per class (AxBench 72)", 2, 500, 32)
        n_judge = c4.number_input("Held-out judge examples", 2, 500, 20)
        with st.expander("Optional LLM judge (OpenAI-compatible endpoint)"):
            url = st.text_input("Base URL", placeholder="http://127.0.0.1:8080/v1")
            model_name = st.text_input("Model name")
        go = st.form_submit_button("Run evaluation", type="primary")
    if go:
        try:
            cfg = EvalConfig(
                concepts=concepts,
                methods=methods,
                factors=factors,
                n_instructions=int(n_instr),
                max_new_tokens=int(max_tokens),
                n_train=int(n_train),
                n_judge=int(n_judge),
                endpoint_url=url.strip() or None,
                endpoint_model=model_name.strip() or None,
            )
            st.session_state["steer_eval_job"] = submit_eval(handle, loaded, cfg).id
            st.rerun()  # the next run follows the job (progress here and in the sidebar)
        except Exception as err:  # the app keeps running; the message says what to change
            show_error(err)
    result = session_job("steer_eval_job", key="steer_eval_progress")  # progress while queued or running
    if result is not None:
        st.session_state["steer_eval_result"] = result
    if st.session_state.get("steer_eval_result") is not None:
        show_eval(st.session_state["steer_eval_result"], key="fresh")

with detox_tab:
    st.caption(
        "Toxicity latents of the SAE are ranked by AUROC (offensive vs clean tweets, 107_hate_offensive); the model "
        "continues offensive tweets while we subtract tier × max_act × w for each latent. Toxicity is scored by a "
        "TF-IDF + logistic-regression classifier trained on a separate split (a proxy), fluency by perplexity "
        "under the unsteered model."
    )
    with st.form("detox_form"):
        c1, c2, c3 = st.columns(3)
        tiers = [
            c.number_input(f"{n} tier", 0.01, 100.0, v)
            for c, n, v in zip((c1, c2, c3), ("Mild", "Medium", "Strong"), (0.5, 1.0, 2.0))
        ]
        c4, c5, c6 = st.columns(3)
        k = c4.number_input("Latents", 1, 64, 5)
        n_prompts = c5.number_input("Prompts", 2, 64, 16)
        d_tokens = c6.number_input("New tokens", 1, 256, 24)
        n_rank = st.number_input("Ranking texts per class", 10, 1000, 200)
        go_detox = st.form_submit_button("Run detox tiers", type="primary")
    if go_detox:
        try:
            dcfg = DetoxConfig(
                tiers=[float(t) for t in tiers],
                k_latents=int(k),
                n_rank=int(n_rank),
                n_prompts=int(n_prompts),
                max_new_tokens=int(d_tokens),
            )
            st.session_state["detox_job"] = submit_detox(handle, loaded, dcfg).id
            st.rerun()
        except Exception as err:
            show_error(err)
    detox = session_job("detox_job", key="detox_progress")
    if detox is not None:
        st.session_state["detox_result"] = detox
    if st.session_state.get("detox_result") is not None:
        show_detox(st.session_state["detox_result"], key="detox_fresh")

with saved_tab:
    st.caption(
        "Results committed with SAE Lab (bench/results/), measured on the default model; see docs/steering_eval.md."
    )
    saved = load_saved(SAVED_EVAL, EvalResult)
    if saved is not None:
        show_eval(saved, key="saved")
    else:
        st.info("No committed steering-evaluation result yet (run `saelab steer-eval`).")
    saved_detox = load_saved(SAVED_DETOX, DetoxResult)
    if saved_detox is not None:
        show_detox(saved_detox, key="saved_detox")
