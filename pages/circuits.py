"""Circuits: which attention heads carry a task? Discrete-SAE codes against activation and attribution patching."""

import pandas as pd
import streamlit as st

from saelab.circuits.evaluate import FORMULAS
from saelab.circuits.methods import METHODS
from saelab.circuits.run import REFERENCE, CircuitConfig
from saelab.circuits.tasks import BUILTIN_TASKS, CSV_COLUMNS, METRICS
from saelab.reports.circuits import export_bytes, summary_rows
from saelab.reports.circuits_figures import agreement_scatter, circuit_graph, heatmaps, prompt_metrics
from saelab.reports.render import md_esc
from saelab.ui import circuits as circ_ui
from saelab.ui.errors import show_error
from saelab.ui.loader import get_model

st.title("Circuits")
st.caption(
    "Which attention heads does the model use for a task? Discrete SAE codes (O'Neill & Bui 2024: one ReLU+L1 SAE "
    "on every head's mean-pooled output, code = argmax latent, score = codes seen on positives and never on "
    "negatives) and attribution patching, both scored against activation patching of every head (the reference)."
)

source = st.radio("Prompts", ["Built-in task", "Upload a CSV"], horizontal=True, key="circ_source")
c1, c2, c3 = st.columns(3)
n_prompts = int(c2.number_input("Prompt pairs", 2, 200, 24, key="circ_n"))
seed = int(c3.number_input("Seed (prompts, subsets, SAE)", 0, 2**31 - 1, 0, key="circ_seed"))
task = None
try:
    if source == "Built-in task":
        name = c1.selectbox("Task", list(BUILTIN_TASKS), key="circ_task")
        task = circ_ui.builtin(name, n_prompts, seed)
    else:
        metric = c1.selectbox("Metric", list(METRICS), key="circ_metric")
        st.caption(
            f"CSV columns: {', '.join(CSV_COLUMNS)}. Answers must be one token each (mind the leading space); "
            "several answers join with '|'. Clean and corrupted prompts of a pair must have the same token count."
        )
        upload = st.file_uploader("CSV of prompt pairs", type=["csv"], key="circ_upload")
        if upload is not None:
            task = circ_ui.uploaded(upload.getvalue(), upload.name.rsplit(".", 1)[0], metric)
            if len(task.pairs) > n_prompts:
                task = task.subset(range(n_prompts))
except Exception as err:
    show_error(err)

check = None
if task is not None:
    st.caption(f"**{md_esc(task.name)}**: {md_esc(task.description)} Metric: {METRICS[task.metric].formula}; "
               f"{METRICS[task.metric].solved}.")  # fmt: skip
    try:
        handle = get_model()
        check = circ_ui.check(handle, handle.name, task)
    except Exception as err:
        show_error(err)
if check is not None:
    c1, c2 = st.columns(2)
    c1.metric("Model accuracy on clean prompts", f"{check.accuracy:.0%}")
    c2.metric("…on corrupted prompts", f"{check.corrupted_accuracy:.0%}")
    if check.accuracy < 0.9:
        st.warning(f"The model solves only {check.accuracy:.0%} of the clean prompts: the circuit of a task it fails "
                   "is not meaningful. Change the prompts, or run anyway knowing this.")  # fmt: skip
    with st.expander("Prompts and their metrics"):
        st.dataframe(pd.DataFrame(check.rows()), hide_index=True, width="stretch")

others = [m for m in METHODS if m != REFERENCE]
methods = st.multiselect("Methods (activation patching always runs as the reference)", others,
                         default=["discrete-sae", "attribution-patching"], key="circ_methods",
                         format_func=lambda m: METHODS[m].label)  # fmt: skip
with st.expander("Settings"):
    c1, c2, c3 = st.columns(3)
    top_frac = c1.number_input("Reference circuit: top fraction of heads", 0.01, 0.5, 0.05, step=0.01, key="circ_top")
    repeats = int(c2.number_input("Random prompt subsets (mean ± std)", 0, 20, 3, key="circ_repeats"))
    subset = int(c3.number_input("Prompts per subset", 2, 200, 10, key="circ_subset"))
    c1, c2, c3 = st.columns(3)
    d_sae = int(c1.number_input("SAE latents", 8, 2000, 200, key="circ_dsae"))
    l1 = c2.number_input("L1 coefficient λ", 0.0, 10.0, 0.02, step=0.01, format="%.3f", key="circ_l1")
    epochs = int(c3.number_input("SAE epochs (full batch)", 1, 5000, 500, key="circ_epochs"))

st.caption(
    "Cost: activation patching runs one forward per head (270 on the default model), batched by layer; on a CPU "
    "that is minutes for 10–20 prompt pairs. Discrete-SAE and attribution patching need two passes per batch, plus "
    "the small SAE's training (repeated for every subset)."
)
if st.button("Find the circuit", type="primary", disabled=check is None, key="circ_run"):
    try:
        cfg = CircuitConfig(task=task.name, methods=methods, n_prompts=len(task.pairs), seed=seed, top_frac=top_frac,
                            n_repeats=repeats, subset_size=subset, d_sae=d_sae, l1=l1, epochs=epochs)  # fmt: skip
        st.session_state["circ_result"] = circ_ui.run_with_bar(get_model(), cfg, task)
    except Exception as err:
        show_error(err)

result = st.session_state.get("circ_result")
if result is not None:
    st.subheader(f"Result: {result.task.name} on {result.model}")
    for note in result.notes:
        st.info(note)
    st.dataframe(pd.DataFrame(summary_rows(result)), hide_index=True, width="stretch")
    st.caption(
        f"Reference circuit: {int(result.reference_mask.sum())} heads ({FORMULAS['reference']}). "
        f"{FORMULAS['roc_auc']}. {FORMULAS['precision_at_k']}. Times are wall-clock seconds on this machine."
    )
    sae = result.extra.get("discrete-sae")
    if sae:
        st.caption(f"Code SAE: explained variance {sae['sae_explained_variance']:.3f}, mean L0 {sae['sae_l0']:.1f} of "
                   f"{result.config.d_sae} latents, {sae['n_codes_used']} distinct codes used.")  # fmt: skip
    st.plotly_chart(heatmaps(result), width="stretch", key="circ_heat")
    compare = [m for m in result.scores if m != REFERENCE]
    if compare:
        pick = st.selectbox("Agreement with the reference", compare, format_func=lambda m: METHODS[m].label,
                            key="circ_scatter_method")  # fmt: skip
        st.plotly_chart(agreement_scatter(result, pick), width="stretch", key="circ_scatter")
    graph_method = "discrete-sae" if "discrete-sae" in result.scores else REFERENCE
    st.plotly_chart(circuit_graph(result, graph_method), width="stretch", key="circ_graph")
    st.plotly_chart(prompt_metrics(result), width="stretch", key="circ_prompts")
    with st.expander("Formulas"):
        for k, v in result.formulas().items():
            st.markdown(f"- **{k}**: {v}")
    files = export_bytes(result)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Report (HTML)", files["html"], "circuits.html", "text/html", key="circ_dl_html")
    c2.download_button("Result (JSON)", files["json"], "circuits.json", "application/json", key="circ_dl_json")
    c3.download_button("All files (zip)", files["zip"], "circuits.zip", "application/zip", key="circ_dl_zip")
