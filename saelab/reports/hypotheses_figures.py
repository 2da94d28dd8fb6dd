"""Plotly figures of a hypothesis run (pure functions: result in, figure out; reused by page and report)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saelab.hypotheses.results import MethodResult
from saelab.reports.render import plotly_esc

_COLOURS = {True: "#d62728", False: "#7f7f7f"}
_TITLES = {"sae": "SAE hypotheses", "bow": "Bag-of-words baseline"}


def _short(label: str, n: int = 60) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _trace(method: MethodResult) -> go.Scatter:
    hyps = [h for h in method.hypotheses if math.isfinite(h.separation)]
    hyps.sort(key=lambda h: h.separation)
    return go.Scatter(
        x=[h.separation for h in hyps],
        y=[f"{h.rank}. {plotly_esc(_short(h.label))}" for h in hyps],
        mode="markers",
        marker={"color": [_COLOURS[h.significant] for h in hyps], "size": 9},
        error_x={
            "type": "data",
            "symmetric": False,
            "array": [h.ci_high - h.separation for h in hyps],
            "arrayminus": [h.separation - h.ci_low for h in hyps],
            "color": "#999",
        },
        customdata=[[h.p_value, h.prevalence, h.coefficient] for h in hyps],
        hovertemplate="%{y}<br>separation %{x:.3g}<br>p %{customdata[0]:.3g}<br>prevalence %{customdata[1]:.2f}"
        "<br>regression coef %{customdata[2]:.3g}<extra></extra>",
        showlegend=False,
    )


def effect_sizes(sae: MethodResult, baseline: MethodResult | None = None, *, target: str = "y") -> go.Figure:
    """Separation E[y|h=1] − E[y|h=0] with 95% CIs per hypothesis; red = significant (p < 0.1/m)."""
    methods = [m for m in (sae, baseline) if m is not None]
    rows = max(len(m.hypotheses) for m in methods)
    fig = make_subplots(
        rows=1,
        cols=len(methods),
        subplot_titles=[f"{_TITLES[m.method]} ({m.n_significant} significant)" for m in methods],
        horizontal_spacing=0.35 if len(methods) > 1 else 0.1,
    )
    for c, method in enumerate(methods, start=1):
        fig.add_trace(_trace(method), row=1, col=c)
        fig.add_vline(x=0, line={"color": "#ccc", "dash": "dot"}, row=1, col=c)
        fig.update_xaxes(title_text=f"E[{target}|h=1] − E[{target}|h=0]", row=1, col=c)
    fig.update_layout(
        height=max(320, 28 * rows + 120),
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        title={"text": "Held-out separation with 95% CI (red: significant after Bonferroni)", "font": {"size": 14}},
    )
    return fig
