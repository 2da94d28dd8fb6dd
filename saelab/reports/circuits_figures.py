"""Plotly figures of a `CircuitResult` (pure functions: the page and the HTML report both use them)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saelab.circuits.methods import METHODS
from saelab.circuits.run import REFERENCE, CircuitResult
from saelab.reports.render import plotly_esc


def _label(name: str) -> str:
    return METHODS[name].label if name in METHODS else name


def heatmaps(result: CircuitResult, methods: list[str] | None = None) -> go.Figure:
    """Layer × head heatmaps side by side, one per method; ✕ marks the reference circuit's heads."""
    methods = [m for m in (methods or list(result.scores)) if m in result.scores]
    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=[_label(m) for m in methods],
                        horizontal_spacing=0.08)  # fmt: skip
    ref_l, ref_h = np.nonzero(result.reference_mask)
    for i, m in enumerate(methods, start=1):
        s = np.asarray(result.scores[m], dtype=float)
        signed = bool((s < 0).any())
        lim = float(np.abs(s).max()) or 1.0
        fig.add_trace(go.Heatmap(
            z=s, x=list(range(result.n_heads)), y=list(range(result.n_layers)),
            colorscale="RdBu_r" if signed else "Viridis", zmin=-lim if signed else 0, zmax=lim, showscale=False,
            hovertemplate="layer %{y}, head %{x}<br>score %{z:.4g}<extra>" + _label(m) + "</extra>",
        ), row=1, col=i)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=ref_h, y=ref_l, mode="markers", marker={"symbol": "x", "color": "black", "size": 7},
            name="reference circuit", showlegend=i == 1, hoverinfo="skip",
        ), row=1, col=i)  # fmt: skip
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=i)
        fig.update_yaxes(title_text="layer" if i == 1 else None, autorange="reversed", row=1, col=i)
    fig.update_layout(height=max(320, 22 * result.n_layers + 120), margin={"t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.08})  # fmt: skip
    return fig


def agreement_scatter(result: CircuitResult, method: str, against: str = REFERENCE) -> go.Figure:
    """Each head: reference effect (x) against the method's score (y); reference-circuit heads highlighted."""
    x = np.asarray(result.scores[against], dtype=float).ravel()
    y = np.asarray(result.scores[method], dtype=float).ravel()
    mask = result.reference_mask.ravel()
    labels = np.array(result.labels)
    fig = go.Figure()
    for inside, name, color in ((False, "other heads", "#9aa5b1"), (True, "reference circuit", "#d62728")):
        sel = mask == inside
        fig.add_trace(go.Scatter(x=x[sel], y=y[sel], mode="markers", name=name, text=labels[sel],
                                 marker={"color": color, "size": 7 if inside else 5},
                                 hovertemplate="%{text}<br>x %{x:.4g}<br>y %{y:.4g}<extra></extra>"))  # fmt: skip
    rho = _spearman(x, y)
    fig.update_layout(
        title=f"{_label(method)} vs {_label(against)} (Spearman ρ = {rho:.2f})",
        xaxis_title=_label(against), yaxis_title=_label(method), height=420, margin={"t": 50},
    )  # fmt: skip
    return fig


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def circuit_graph(
    result: CircuitResult, method: str = "discrete-sae", top_n: int = 15, max_edges: int = 40
) -> go.Figure:
    """The method's top heads (x = layer, y = head) and the strongest edges among them.

    Edges are the discrete-SAE code co-occurrence weights when the result has them; otherwise none are drawn.
    """
    s = np.abs(np.asarray(result.scores[method], dtype=float)).ravel()
    top = [int(i) for i in np.argsort(-s, kind="stable")[:top_n] if s[i] > 0]
    layer = np.array([i // result.n_heads for i in top])
    head = np.array([i % result.n_heads for i in top])
    labels = [result.labels[i] for i in top]
    fig = go.Figure()
    if result.edges is not None and len(top) > 1:
        sub = result.edges[np.ix_(top, top)]
        pairs = [(sub[a, b], a, b) for a in range(len(top)) for b in range(len(top)) if sub[a, b] > 0]
        pairs.sort(reverse=True)
        wmax = pairs[0][0] if pairs else 1.0
        for w, a, b in pairs[:max_edges]:
            fig.add_trace(go.Scatter(
                x=[layer[a], layer[b]], y=[head[a], head[b]], mode="lines", showlegend=False,
                line={"width": 0.5 + 4 * w / wmax, "color": "rgba(31,119,180,0.45)"},
                hovertext=f"{labels[a]} → {labels[b]}: {w:.2f}", hoverinfo="text",
            ))  # fmt: skip
    in_ref = result.reference_mask.ravel()[top] if top else np.array([], dtype=bool)
    fig.add_trace(go.Scatter(
        x=layer, y=head, mode="markers+text", text=labels, textposition="top center", showlegend=False,
        marker={"size": 10 + 20 * s[top] / (s[top].max() if top else 1), "color": np.where(in_ref, "#d62728", "#1f77b4"),
                "line": {"width": 1, "color": "white"}},
        hovertemplate="%{text}<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(
        title=f"Top {len(top)} heads by {_label(method)} (red: in the reference circuit); edges: code co-occurrence",
        xaxis={"title": "layer", "range": [-1, result.n_layers]}, yaxis={"title": "head", "range": [-1, result.n_heads]},
        height=420, margin={"t": 50},
    )  # fmt: skip
    return fig


def prompt_metrics(result: CircuitResult) -> go.Figure:
    """Clean against corrupted metric per prompt pair (the prompts are user text: escaped for Plotly's hover HTML)."""
    rows = result.check.rows()
    fig = go.Figure(go.Scatter(
        x=[r["corrupted_metric"] for r in rows], y=[r["clean_metric"] for r in rows], mode="markers",
        text=[plotly_esc(r["clean"]) for r in rows], hovertemplate="%{text}<br>clean %{y:.3g}, corrupted %{x:.3g}<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(xaxis_title="corrupted metric", yaxis_title="clean metric", height=340, margin={"t": 30})
    return fig
