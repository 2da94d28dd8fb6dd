"""Plotly figures of a probing run: pure functions of a `ProbeReport` (the page and the HTML report share them).

Every user-provided string that reaches a figure (class names, feature labels) passes `plotly_esc`, so a label
`<b>` is shown as text, not read as Plotly markup.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from saelab.probing.evaluate import sparse_choice
from saelab.probing.report import ProbeReport
from saelab.reports.render import plotly_esc

_LAYOUT = {"template": "plotly_white", "height": 340, "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def confusion(report: ProbeReport) -> go.Figure | None:
    """Confusion matrix on the test split: rows true class, columns predicted; cells counts."""
    cm = report.metrics.get("confusion")
    if cm is None:
        return None
    names = [plotly_esc(c) for c in report.data["classes_used"]]
    fig = go.Figure(
        go.Heatmap(
            z=cm, x=names, y=names, colorscale="Blues", text=cm, texttemplate="%{text}", showscale=False,
            hovertemplate="true %{y} → predicted %{x}: %{z}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(title="Confusion matrix (test)", xaxis_title="predicted", yaxis_title="true", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def _metric_key(report: ProbeReport) -> str:
    return "r2" if report.task == "regression" else "macro_f1"


def cv_folds(report: ProbeReport) -> go.Figure:
    """Score on each cross-validation fold, with the test score as a line."""
    cv = report.cv
    key = _metric_key(report)
    fig = go.Figure(go.Bar(x=[f"fold {i + 1}" for i in range(len(cv.scores))], y=cv.scores, name="CV fold"))
    fig.add_hline(y=report.metrics[key], line_dash="dash", annotation_text=f"test {report.metrics[key]:.3f}")
    fig.update_layout(title=f"{cv.folds}-fold stratified CV on the training split ({key})", yaxis_title=key, **_LAYOUT)
    return fig


def c_tuning(report: ProbeReport) -> go.Figure | None:
    """The cross-validated choice of C: mean CV score ± sd at each C, the chosen C marked."""
    t = report.tuning
    if t is None:
        return None
    fig = go.Figure(
        go.Scatter(x=t.grid, y=t.means, mode="lines+markers", error_y=dict(type="data", array=t.stds), name="CV")
    )
    fig.add_vline(x=t.best_C, line_dash="dash", annotation_text=f"C* = {t.best_C:g}")
    fig.update_layout(title=f"Choice of C: {t.folds}-fold CV on the training split", **_LAYOUT)
    fig.update_xaxes(type="log", title="C (inverse regularisation)")
    fig.update_yaxes(title=f"CV {t.metric} (mean ± sd)")
    return fig


def sparse_curve(report: ProbeReport) -> go.Figure | None:
    """Sparse probing: test macro-F1 against k (features kept by class-mean spread)."""
    if not report.sparse:
        return None
    ks = [r["k"] for r in report.sparse]
    fig = go.Figure(go.Scatter(x=ks, y=[r["macro_f1"] for r in report.sparse], mode="lines+markers", name="test"))
    best = sparse_choice(report.sparse)
    if best is not None:
        fig.add_scatter(x=ks, y=[r.get("cv_macro_f1") for r in report.sparse], mode="lines+markers",
                        line_dash="dot", name="CV (train)")  # fmt: skip
        fig.add_vline(x=best["k"], line_dash="dot", annotation_text=f"k* = {best['k']} (CV)")
    fig.add_hline(y=report.metrics["macro_f1"], line_dash="dash", annotation_text="all features")
    fig.update_layout(title="Sparse probing: test macro-F1 with the top-k features", **_LAYOUT)
    fig.update_xaxes(type="log", title="k", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_yaxes(title="macro-F1")
    return fig


def learning(report: ProbeReport) -> go.Figure | None:
    """Low-N learning curve: test score after training on N texts."""
    if not report.learning:
        return None
    key = _metric_key(report)
    pts = report.learning
    fig = go.Figure(go.Scatter(x=[p["n_train"] for p in pts], y=[p[key] for p in pts], mode="lines+markers"))
    fig.update_layout(title="Learning curve (test, stratified subsamples of the training split)", **_LAYOUT)
    sizes = [p["n_train"] for p in pts]
    fig.update_xaxes(type="log", title="training texts N", tickvals=sizes, ticktext=[str(n) for n in sizes])
    fig.update_yaxes(title=key)
    return fig


def layers(report: ProbeReport) -> go.Figure | None:
    """Layer sweep: test score of the same probe at every layer."""
    if not report.layers:
        return None
    key = _metric_key(report)
    pts = report.layers
    fig = go.Figure(go.Scatter(x=[p["layer"] for p in pts], y=[p[key] for p in pts], mode="lines+markers"))
    fig.update_layout(title="Probe score by layer (test)", xaxis_title="layer", yaxis_title=key, **_LAYOUT)
    return fig


def best_neuron(report: ProbeReport) -> go.Figure | None:
    """Neurons source: the best single neuron's separability at each layer (training rows)."""
    series = report.source_results.get("best_neuron_by_layer")
    if not series:
        return None
    fig = go.Figure(
        go.Scatter(
            x=[p["layer"] for p in series], y=[p["score"] for p in series], mode="lines+markers",
            text=[f"neuron {p['neuron']}" for p in series], hovertemplate="layer %{x}: %{text}, %{y:.3f}<extra></extra>",
        )
    )  # fmt: skip
    sep = plotly_esc(report.source_results.get("separability", "separability"))
    fig.update_layout(title="Best single MLP neuron by layer", xaxis_title="layer", yaxis_title=sep, **_LAYOUT)
    return fig


def top_features(report: ProbeReport) -> go.Figure | None:
    """The probe's most relied-on features (|weight| or impurity importance), labels as hover text."""
    rows = report.top_features
    if not rows:
        return None
    rows = rows[::-1]
    y = [plotly_esc(f"#{r['latent']}" if "latent" in r else r["name"])[:40] for r in rows]
    hover = [plotly_esc(r.get("label") or r["name"])[:120] for r in rows]
    x = [r.get("weight", r["importance"]) for r in rows]
    fig = go.Figure(go.Bar(x=x, y=y, orientation="h", hovertext=hover, hoverinfo="text+x"))
    title = "Probe weight (standardised features)" if "weight" in rows[0] else "Feature importance"
    fig.update_layout(title=f"Top features: {title}", **{**_LAYOUT, "height": max(300, 22 * len(rows) + 80)})
    return fig


def msp_hist(report: ProbeReport) -> go.Figure | None:
    """Max softmax probability of correct and wrong test predictions."""
    if report.task == "regression":
        return None
    preds = report.predictions
    fig = go.Figure()
    for ok, name in ((True, "correct"), (False, "wrong")):
        fig.add_histogram(x=[p["p_max"] for p in preds if p["correct"] == ok], name=name, nbinsx=20, opacity=0.7)
    auc = (report.msp_error or {}).get("auroc")
    sub = f" · error-detection AUROC {auc:.3f}" if auc is not None and auc == auc else ""
    fig.update_layout(barmode="overlay", title=f"Max softmax probability{sub}", xaxis_title="max p", **_LAYOUT)
    return fig


def detection(report: ProbeReport) -> go.Figure | None:
    """AxBench detection: test AUROC per detector with 95 % bootstrap CIs."""
    det = report.detection
    if det is None or not det.auroc:
        return None
    names = list(det.auroc)
    vals = [det.auroc[m] for m in names]
    lo = [v - det.ci[m][0] for m, v in zip(names, vals, strict=True)]
    hi = [det.ci[m][1] - v for m, v in zip(names, vals, strict=True)]
    fig = go.Figure(go.Bar(x=names, y=vals, error_y={"type": "data", "array": hi, "arrayminus": lo}))
    fig.update_layout(title="Concept detection (max over tokens → AUROC, test)", yaxis_title="AUROC", **_LAYOUT)
    fig.update_yaxes(range=[0, 1.02])
    return fig


def comparison(rows: list[dict[str, Any]], key: str = "macro_f1") -> go.Figure:
    """Several runs side by side: rows of {name, key, ci: [lo, hi]}."""
    names = [plotly_esc(r["name"]) for r in rows]
    vals = [r[key] for r in rows]
    lo = [v - r["ci"][0] for r, v in zip(rows, vals, strict=True)]
    hi = [r["ci"][1] - v for r, v in zip(rows, vals, strict=True)]
    fig = go.Figure(go.Bar(x=names, y=vals, error_y={"type": "data", "array": hi, "arrayminus": lo}))
    fig.update_layout(title=f"Test {key} by feature source (95 % bootstrap CI)", **_LAYOUT)
    return fig


ALL = (confusion, cv_folds, c_tuning, sparse_curve, learning, layers, best_neuron, top_features, msp_hist, detection)


def all_figures(report: ProbeReport) -> list[go.Figure]:
    """Every figure that applies to this run, in reading order."""
    return [f for f in (build(report) for build in ALL) if f is not None]
