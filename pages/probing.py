"""Probing: can this model's SAE latents (or hidden states, neurons, heads, words) tell these classes apart, and which?"""

import pandas as pd
import streamlit as st

from saelab.probing.classify import C_GRID, CLASSIFIERS, FORMULAS
from saelab.probing.concept_detection import DETECTORS
from saelab.probing.feature_sources import FEATURE_SOURCES
from saelab.probing.run import ProbeConfig
from saelab.reports import probing_figures as figures
from saelab.reports.probing import summary_rows
from saelab.reports.render import md_esc
from saelab.ui import probing as ui
from saelab.ui.errors import show_error
from saelab.ui.feature_context import open_features
from saelab.ui.model_choice import current_model_spec

st.title("Probing")
st.caption(
    "Train a probe on features of labelled texts and test it on held-out texts (seeded split). Scores: macro-F1 = "
    "mean over classes of 2PR/(P+R); AUROC; 95 % bootstrap CIs; MOSAIC pooling, SAEBench sparse probing, AxBench "
    "detection and max-softmax baselines. Export a self-contained HTML report, JSON and the probe's weights."
)
ctx = open_features(need_dashboards=False)

# ---------------------------------------------------------------- 1. data
st.subheader("1. Data")
source = st.radio("Texts", ["Built-in task", "Upload a CSV"], horizontal=True, key="probe_data")
c1, c2 = st.columns(2)
seed = int(c1.number_input("Seed (sampling, split, CV, bootstrap, probe)", 0, 2**31 - 1, 0, key="probe_seed"))
max_rows = int(c2.number_input("Read at most this many rows (seeded sample)", 100, 100_000, 20_000, key="probe_rows"))
textset, dataset, upload_name, kind = None, None, None, "auto"
try:
    if source == "Built-in task":
        names = ui.builtin_names()
        dataset = st.selectbox("Task (sae-probes)", names, format_func=ui.task_label, key="probe_set")
        kind = st.selectbox("Target kind", ["auto", "binary", "multiclass", "numeric"], key="probe_kind_b")
        textset = ui.builtin_set(dataset, seed, max_rows, kind)
    else:
        upload = st.file_uploader("CSV with a text column and a label column", type=["csv"], key="probe_upload")
        if upload is not None:
            data = upload.getvalue()
            cols = ui.upload_columns(data)
            c1, c2, c3 = st.columns(3)
            text_col = c1.selectbox("Text column", cols, key="probe_text_col")
            target_col = c2.selectbox("Label column", cols, index=min(1, len(cols) - 1), key="probe_target_col")
            kind = c3.selectbox("Target kind", ["auto", "binary", "multiclass", "numeric"], key="probe_kind_u")
            upload_name = upload.name
            with st.expander("Paired contrast: the CSV holds pairs of texts (two text columns)"):
                c1, c2 = st.columns(2)
                col_a = c1.selectbox("First text of each pair", cols, key="probe_pair_a")
                col_b = c2.selectbox("Second text", cols, index=min(1, len(cols) - 1), key="probe_pair_b")
                if st.button("Rank latents by paired contrast", key="probe_pairs_run"):
                    try:
                        st.session_state["probe_pairs"] = ui.pair_ranking(ctx, data, col_a, col_b, seed)
                    except Exception as err:
                        show_error(err)
                pairs = st.session_state.get("probe_pairs")
                if pairs:
                    for note in pairs["notes"]:
                        st.caption(f"ℹ️ {note}")
                    st.caption(f"{pairs['n']:,} pairs · {pairs['formula']} · labels are proxy labels")
                    st.html(ui.top_latent_table(pairs["rows"]))
            textset = ui.upload_set(data, text_col, target_col, kind, seed, max_rows)
except Exception as err:
    show_error(err)

numeric_mode = "regress"
if textset is not None:
    classes = f" · classes {md_esc(', '.join(textset.classes[:10]))}" if textset.classes else ""
    st.caption(f"{len(textset):,} texts · target {textset.kind}{classes}")
    for note in textset.notes:
        st.caption(f"ℹ️ {md_esc(note, 1000)}")
    if textset.kind == "numeric":
        numeric_mode = st.radio(
            "Numeric target", ["regress", "median"], horizontal=True, key="probe_numeric",
            format_func=lambda m: {"regress": "ridge regression (R²)", "median": "two classes split at the training median"}[m],
        )  # fmt: skip

# ---------------------------------------------------------------- 2. features and probe
st.subheader("2. Features and probe")
c1, c2, c3, c4 = st.columns(4)
feat = c1.selectbox("Feature source", list(FEATURE_SOURCES), key="probe_source")
pooling = c2.selectbox("Pooling (SAE)", ["topn-sum", "max", "mean", "last"], key="probe_pooling")
topn = int(c3.number_input("top-n per token (MOSAIC)", 1, 200, 20, key="probe_topn"))
binarise = c4.checkbox("Binarise (count > 1)", False, key="probe_bin")
c1, c2, c3, c4 = st.columns(4)
layer = int(c1.number_input("Layer (hidden / neurons)", 0, int(ctx.handle.cfg.n_layers) - 1,
                            min(12, int(ctx.handle.cfg.n_layers) - 1), key="probe_layer"))  # fmt: skip
classifier = c2.selectbox("Classifier", [c for c in CLASSIFIERS if c not in ("ridge", "linear")], key="probe_clf")
tune = c3.checkbox("Choose C by cross-validation", True, key="probe_tune",
                   help=f"Tries C in {list(C_GRID)} with the CV folds below, on the training split only.")  # fmt: skip
C = float(c3.number_input("C (inverse regularisation)", 1e-4, 1e4, 1.0, format="%.4g", key="probe_C", disabled=tune))
k = int(c4.number_input("k (topk classifier)", 1, 10_000, 5, key="probe_k"))
st.caption(f"{classifier}: {FORMULAS[classifier]}")
with st.expander("Split, baselines and detection"):
    c1, c2, c3, c4 = st.columns(4)
    n_train = int(c1.number_input("Training texts (at most)", 24, 100_000, 1000, key="probe_ntrain"))
    n_test = int(c2.number_input("Test texts (at most)", 10, 100_000, 400, key="probe_ntest"))
    test_fraction = float(c3.slider("Test fraction", 0.1, 0.5, 0.2, key="probe_testfrac"))
    folds = int(c4.number_input("CV folds", 2, 10, 5, key="probe_folds"))
    c1, c2 = st.columns(2)
    ood = c1.selectbox("Out-of-distribution set (MSP AUROC)", ["(none)", *ui.builtin_names()], key="probe_ood")
    detect = c2.multiselect("AxBench detectors (binary targets)", list(DETECTORS), key="probe_detect")
    learning = st.checkbox("Low-N learning curve (N = 24, 48, …)", True, key="probe_lc")

if st.button("Run probe", type="primary", disabled=textset is None, key="probe_run"):
    try:
        cfg = ProbeConfig(
            dataset=dataset, csv_path=None if dataset else (upload_name or "upload.csv"), kind=kind, numeric_mode=numeric_mode,
            max_rows=max_rows, test_fraction=test_fraction, n_train=n_train, n_test=n_test, seed=seed, source=feat,
            pooling=pooling, topn=topn, binarise=1.0 if binarise else None, layer=layer, classifier=classifier, C=C,
            tune_C=tune, k=k, cv_folds=folds, learning_curve=learning, ood_dataset=None if ood == "(none)" else ood,
            detection=detect, model=current_model_spec(), sae_path=ctx.sae_path,
        )  # fmt: skip
        report = ui.run_with_bar(cfg, textset, ctx.handle, ctx.loaded, ctx.labels)
        st.session_state["probe_result"] = (report, None if dataset else textset)
    except Exception as err:
        show_error(err)

# ---------------------------------------------------------------- 3. results
stored = st.session_state.get("probe_result")
if stored is not None:
    report, used_set = stored
    st.subheader("3. Result")
    key, value = report.headline
    lo, hi = report.ci.get(key, [float("nan")] * 2)
    cols = st.columns(4)
    cols[0].metric(f"Test {key}", f"{value:.3f}", help=report.formulas.get(key))
    cols[1].metric("95 % CI", f"[{lo:.3f}, {hi:.3f}]")
    cols[2].metric(f"CV {report.cv.metric}", f"{report.cv.mean:.3f} ± {report.cv.std:.3f}")
    cols[3].metric("Features", f"{report.features['n_features']:,} ({report.features['source']})")
    for note in report.notes:
        st.warning(md_esc(note, 1000))
    st.dataframe(pd.DataFrame(summary_rows(report)), hide_index=True, width="stretch")
    split = report.data["split"]
    st.caption(
        f"Split seed {split['seed']}: train {split['n_train']:,} / test {split['n_test']:,} · classifier "
        f"{report.classifier} · {report.timings.get('total_s', 0):.1f} s"
    )
    figs = figures.all_figures(report)
    for i in range(0, len(figs), 2):
        cols = st.columns(2)
        for j, fig in enumerate(figs[i : i + 2]):
            cols[j].plotly_chart(fig, width="stretch", key=f"probe_fig_{i + j}")

    # ------------------------------------------------------------ 4. understanding
    st.subheader("4. What the probe reads")
    latent_rows = [r for r in report.top_features if "latent" in r]
    if latent_rows:
        st.caption("Labels are the dashboards' offline proxy labels (not an LLM judge). Click a latent to open it.")
        st.html(ui.top_latent_table(latent_rows))
        n_show = int(st.number_input("Examples to highlight (misclassified first)", 0, 50, 5, key="probe_nshow"))
        top3 = [r["latent"] for r in latent_rows[:3]]
        try:
            for row in report.predictions[:n_show]:
                st.html(
                    ui.highlighted_example(
                        str(ctx.sae_path), current_model_spec(), row, top3, report.config["max_tokens"]
                    )
                )
        except Exception as err:
            show_error(err)
    elif report.top_features:
        st.dataframe(pd.DataFrame(report.top_features), hide_index=True, width="stretch")
    st.markdown("**Test predictions** (misclassified first)")
    st.dataframe(pd.DataFrame(report.predictions), hide_index=True, width="stretch", height=300)

    # ------------------------------------------------------------ 5. export
    st.subheader("5. Export")
    try:
        files = ui.export_bytes(report, used_set)
        c1, c2, c3, c4 = st.columns(4)
        c1.download_button("Report (HTML)", files["html"], "probe_report.html", "text/html", key="probe_dl_html")
        c2.download_button("Result (JSON)", files["json"], "result.json", "application/json", key="probe_dl_json")
        if "weights" in files:
            c3.download_button("Weights (safetensors)", files["weights"], "weights.safetensors", key="probe_dl_w")
        c4.download_button(
            "Predictions (CSV)", files["csv:predictions"], "predictions.csv", "text/csv", key="probe_dl_csv"
        )
        if "csv:data" in files:
            st.download_button(
                "Data (CSV, needed to re-run)", files["csv:data"], "data.csv", "text/csv", key="probe_dl_data"
            )
        st.caption("Re-run from the command line: put the files in one folder, then `saelab probe --rerun FOLDER`.")
    except Exception as err:
        show_error(err)
