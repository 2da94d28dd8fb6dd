"""Attribution graph: trace a prompt through transcoder features (circuit tracing, offline on a CPU)."""

import json

import pandas as pd
import streamlit as st

from saelab.graphs.attribution import MAX_PROMPT_TOKENS, GraphConfig
from saelab.graphs.prune import FORMULAS
from saelab.reports.graph_figures import graph_figure
from saelab.reports.graphs import graph_html
from saelab.ui import graphs as gui
from saelab.ui.errors import show_error
from saelab.ui.loader import get_model
from saelab.ui.model_choice import current_model_spec

st.title("Attribution graph")
st.caption(
    "Every MLP is replaced by its layer's skip-transcoder (plus an error node), attention patterns and norm scales "
    "are frozen, and the direct linear effect of every input token, active feature and error node on later "
    "features and on the top logits is computed with batched backward passes, then pruned by influence "
    "(Ameisen et al. 2025, circuit tracing)."
)

dirs = gui.transcoder_dirs()
if not dirs:
    st.info(
        "No transcoders found. `make transcoders` builds the default model's set (every layer, with dashboards; "
        "about 1 h 45 min on 2 cores, resumable) into `cached_features/transcoders`; `saelab transcoders --out "
        "<folder>` trains one for another model; or point `SAELAB_TRANSCODERS` at a folder of `layer_<L>/` "
        "SAE-Lens transcoder folders."
    )
    st.stop()
path = st.selectbox("Transcoders", dirs, key="graph_tc")
try:
    handle = get_model(current_model_spec())
    tcs = gui.get_transcoders(path)
    tcs.check(handle)
except Exception as err:
    show_error(err)
    st.stop()

prompt = st.text_input("Prompt (≤ 64 tokens)", "When Mary and John went to the store, John gave a drink to",
                       key="graph_prompt")  # fmt: skip
c1, c2, c3 = st.columns(3)
max_nodes = int(c1.number_input("Features given inputs (max)", 16, 4096, 256, step=16, key="graph_nodes"))
node_thr = float(c2.slider("Node threshold (cumulative influence)", 0.5, 1.0, 0.8, 0.01, key="graph_node_thr"))
edge_thr = float(c3.slider("Edge threshold", 0.5, 1.0, 0.98, 0.01, key="graph_edge_thr"))
n_tokens = len(handle.tokenizer.encode(prompt, add_special_tokens=False)) if prompt else 0
st.caption(f"{n_tokens} tokens" + (f" — at most {MAX_PROMPT_TOKENS}" if n_tokens > MAX_PROMPT_TOKENS else ""))
if st.button("Build graph", type="primary", key="graph_build", disabled=not 1 <= n_tokens <= MAX_PROMPT_TOKENS):
    try:
        cfg = GraphConfig(max_feature_nodes=max_nodes, node_threshold=node_thr, edge_threshold=edge_thr)
        st.session_state["graph_result"] = gui.build(handle, tcs, prompt, cfg)
        st.session_state.pop("graph_selected", None)
    except Exception as err:
        show_error(err)

graph = st.session_state.get("graph_result")
if graph is None:
    st.info("Type a prompt and build its graph: tokens at the bottom, the top logits on top, features in between.")
    st.stop()

s = graph.scores
m1, m2, m3, m4 = st.columns(4)
m1.metric("Replacement score", f"{s['replacement_score']:.3f}", help=FORMULAS["replacement_score"])
m2.metric("Completeness", f"{s['completeness_score']:.3f}", help=FORMULAS["completeness_score"])
m3.metric("Pruned replacement", f"{s['pruned_replacement_score']:.3f}")
m4.metric("Kept features / active", f"{graph.stats['kept_features']} / {graph.stats['active_features']}")
st.caption(f"Built in {graph.stats['seconds']} s · {graph.stats['kept_edges']} edges kept · {FORMULAS['influence']}")

features = sorted((n for n in graph.nodes if n["kind"] == "feature"), key=lambda n: -n["influence"])
selected = st.session_state.get("graph_selected")
event = st.plotly_chart(graph_figure(graph, selected), key="graph_fig", on_select="rerun", selection_mode="points")
picked = [p.get("customdata") for p in (event.selection.points if event and event.selection else [])]
ids = [n["id"] for n in features]
if picked and picked[0] in ids and picked[0] != selected:  # a click on a feature point opens it below
    st.session_state["graph_selected"] = st.session_state["graph_node"] = selected = picked[0]
if ids:
    choice = st.selectbox("Feature node", ids, index=ids.index(selected) if selected in ids else 0, key="graph_node",
                          format_func=lambda i: f"{i} · {graph.node(i).get('label') or ''}"[:90])  # fmt: skip
    node = graph.node(choice)
    left, right = st.columns([3, 2])
    with left:
        gui.feature_card(tcs, node, lambda t: handle.tokenizer.decode([int(t)]))
    with right:
        st.markdown("**Intervene on this feature**")
        mode = st.radio("Set it to", ["0 (ablate)", "× factor"], horizontal=True, key="graph_iv_mode")
        factor = (
            st.number_input("Factor", -10.0, 10.0, 2.0, 0.5, key="graph_iv_factor") if mode != "0 (ablate)" else 0.0
        )
        if st.button("Run the intervention", key="graph_iv_run"):
            try:
                value = 0.0 if mode == "0 (ablate)" else float(factor) * node["activation"]
                pred, meas = gui.intervene(handle, tcs, graph, node, value)
                logits = {n["token"]: n for n in graph.nodes if n["kind"] == "logit"}
                st.dataframe(pd.DataFrame([{"logit": logits[t]["label"], "graph predicts Δ": pred[t],
                                            "model measured Δ": meas[t]} for t in pred]), hide_index=True)  # fmt: skip
                st.caption("Δ of the demeaned logit. Predicted: linear propagation along the kept edges; measured: "
                           "the real model with the feature's decoder change added at its layer and position.")  # fmt: skip
            except Exception as err:
                show_error(err)

with st.expander("Supernodes (group features that do one job)"):
    members = st.multiselect("Features", ids, key="graph_super_members")
    name = st.text_input("Name", key="graph_super_name")
    groups = st.session_state.setdefault("graph_supernodes", [])
    if st.button("Add supernode", key="graph_super_add", disabled=not (members and name.strip())):
        groups.append([name.strip(), *members])
    for g in groups:
        st.markdown(f"- **{g[0]}**: {', '.join(g[1:])}")

with st.expander("Nodes"):
    st.dataframe(pd.DataFrame(graph.nodes), hide_index=True, key="graph_nodes_table")
export = graph.to_neuronpedia()
export["qParams"]["supernodes"] = st.session_state.get("graph_supernodes", [])
d1, d2 = st.columns(2)
d1.download_button("Graph JSON (Neuronpedia layout)", json.dumps(export), "graph.json", "application/json",
                   key="graph_dl_json")  # fmt: skip
d2.download_button("HTML report", graph_html(graph), "graph.html", "text/html", key="graph_dl_html")
