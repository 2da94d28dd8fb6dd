"""Compare SAEs: core metrics side by side, and decoder matching of each SAE against the first."""

import pandas as pd
import streamlit as st

from saelab.compare.matching import DEFAULT_THRESHOLD
from saelab.reports.compare import export_bytes, pair_rows, split_rows
from saelab.reports.compare_figures import best_match_histograms, joint_map_figure, pareto_scatter
from saelab.ui.compare import open_in_explorer, run_compare, run_joint_map
from saelab.ui.errors import show_error
from saelab.ui.sae_choice import available_saes, user_sae_path

EMPTY = "Compare needs two SAEs: train another with `saelab train` or type a folder."

st.title("Compare SAEs")
st.caption(
    "SAEBench core metrics of each SAE (from its `eval.json`), and feature matching by decoder cosine: every "
    "SAE after the first is matched against the first (best match each way, one-to-one assignment, feature splits)."
)

shipped = [str(p) for p in available_saes()]
typed_raw = st.text_area("Other SAE folders (one per line)", placeholder="/path/to/sae", max_chars=20000,
                         key="compare_typed")  # fmt: skip
typed = []
for line in typed_raw.splitlines():
    if line.strip():
        try:
            typed.append(user_sae_path(line))
        except Exception as err:
            show_error(err)
options = list(dict.fromkeys(shipped + typed))
if len(options) < 2:
    st.info(EMPTY)
    st.stop()

chosen = st.multiselect("SAEs to compare (the first is the reference)", options, default=options[:2],
                        format_func=lambda p: p.rstrip("/").split("/")[-1] or p, key="compare_saes")  # fmt: skip
threshold = st.slider("Match threshold (cosine)", 0.5, 0.95, DEFAULT_THRESHOLD, 0.05, key="compare_threshold")
if len(chosen) < 2:
    st.info("Pick at least two SAEs to compare.")
    st.stop()

try:
    result = run_compare(chosen, threshold)
except Exception as err:
    show_error(err)
    st.stop()

for note in result.notes + result.metrics.notes:
    st.warning(note)

st.subheader("Core metrics")
st.dataframe(pd.DataFrame(result.metrics.table_rows()), hide_index=True, width="stretch")
fig = pareto_scatter(result.metrics)
if fig is None:
    st.caption("No L0 vs CE-loss-score scatter: no SAE has an `eval.json` (run `saelab eval`).")
else:
    st.plotly_chart(fig, width="stretch", key="compare_pareto")

st.subheader("Feature matching by decoder cosine")
k = 0
if len(result.matches) > 1:
    k = st.selectbox("Pair", range(len(result.matches)), key="compare_pair",
                     format_func=lambda i: f"{result.matches[i].name_a} vs {result.matches[i].name_b}")  # fmt: skip
m = result.matches[k]
summary = m.summary()
c = st.columns(4)
c[0].metric(f"Mean best cos {m.name_a}→{m.name_b}", f"{summary['mean best cos A→B']:.3f}")
c[1].metric(f"Mean best cos {m.name_b}→{m.name_a}", f"{summary['mean best cos B→A']:.3f}")
c[2].metric(f"{m.name_a} with best ≥ {m.threshold:g}", f"{summary[f'A with best ≥ {m.threshold:g}']:.1%}")
c[3].metric(f"{m.name_b} with best ≥ {m.threshold:g}", f"{summary[f'B with best ≥ {m.threshold:g}']:.1%}")
st.caption(
    f"{summary['assigned pairs']:,} one-to-one pairs, mean cosine {summary['mean assigned cos']:.3f}; assignment: "
    f"{m.method} ({'exact optimum' if m.exact else 'greedy, not exact'}). {len(m.splits)} feature splits."
)
for note in m.notes:
    st.warning(note)
st.plotly_chart(best_match_histograms(m), width="stretch", key="compare_hist")

st.markdown(f"**Feature splits** (wider-SAE latents whose best match is one latent, cos ≥ {m.threshold:g})")
if m.splits:
    st.dataframe(pd.DataFrame(split_rows(m)), hide_index=True, width="stretch")
else:
    st.caption("No feature splits at this threshold.")

st.markdown("**Matched pairs** (best cosine first)")
MAX_PAIRS = 2000
pairs = pair_rows(result, k, MAX_PAIRS)
if summary["assigned pairs"] > MAX_PAIRS:
    st.caption(f"The {MAX_PAIRS:,} best of {summary['assigned pairs']:,} pairs; the JSON download holds them all.")
st.dataframe(pd.DataFrame(pairs), hide_index=True, width="stretch")

if pairs:
    col_a, col_b = f"{m.name_a} latent", f"{m.name_b} latent"

    def _pair_text(i: int) -> str:
        row = pairs[i]
        return f"{m.name_a} #{row[col_a]} ↔ {m.name_b} #{row[col_b]} (cos {row['cosine']:.3f})"

    pick = st.selectbox("Open a pair's latent in the Feature Explorer", range(len(pairs)), format_func=_pair_text,
                        key="compare_open_pair")  # fmt: skip
    b1, b2 = st.columns(2)
    if b1.button(f"Open {m.name_a} #{pairs[pick][col_a]}", key="compare_open_a"):
        open_in_explorer(result.paths[0], pairs[pick][col_a])
    if b2.button(f"Open {m.name_b} #{pairs[pick][col_b]}", key="compare_open_b"):
        open_in_explorer(result.paths[k + 1], pairs[pick][col_b])
    st.caption("Opening a latent makes its SAE this session's SAE (the Explorer and the other pages then read it).")

st.subheader("Joint feature map")
st.caption(
    "Every compared SAE's decoder directions in one t-SNE (cosine), coloured by SAE: where two SAEs learned the "
    "same directions the colours interleave. Neighbour mixing = the share of each latent's 10 nearest map "
    "neighbours from another SAE, ÷ that share under random SAE labels (1: fully mixed, 0: separate regions)."
)
if st.toggle("Draw the joint map (t-SNE, about 20–60 s; then cached)", key="compare_joint_map"):
    try:
        jm = run_joint_map(result)
    except Exception as err:
        show_error(err)
    else:
        st.plotly_chart(joint_map_figure(jm, [i.labels for i in result.info]), width="stretch", key="compare_jmap")
        for note in jm.notes:
            st.caption(note)

st.subheader("Download")
files = export_bytes(result)
d1, d2 = st.columns(2)
d1.download_button("Report (HTML)", files["html"], "compare.html", "text/html", key="compare_dl_html")
d2.download_button("Result (JSON)", files["json"], "compare.json", "application/json", key="compare_dl_json")
