"""Plotly figure of a training run's live curves (`saelab.features.train_job.CurveBuffer.snapshot()`)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saelab.features.train_job import CURVE_TITLES, CURVES

COLS = 3


def training_curves(curves: dict[str, list[float]], *, height: int = 520) -> go.Figure:
    """One small panel per metric (loss, MSE, L0, dead fraction, explained variance, learning rate) against the
    training step; non-finite values (a metric the architecture does not log) are left out of a panel."""
    rows = -(-len(CURVES) // COLS)
    fig = make_subplots(rows=rows, cols=COLS, subplot_titles=[CURVE_TITLES[k] for k in CURVES],
                        horizontal_spacing=0.07, vertical_spacing=0.16)  # fmt: skip
    steps = curves.get("step", [])
    for i, key in enumerate(CURVES):
        pts = [(s, v) for s, v in zip(steps, curves.get(key, []), strict=False) if math.isfinite(v)]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=CURVE_TITLES[key], showlegend=False,
                hovertemplate=f"step %{{x:,.0f}}<br>{CURVE_TITLES[key]} %{{y:.4g}}<extra></extra>",
            ),
            row=i // COLS + 1, col=i % COLS + 1,
        )  # fmt: skip
    for c in range(1, COLS + 1):
        fig.update_xaxes(title_text="step", row=rows, col=c)
    if "loss" in CURVES:
        fig.update_yaxes(type="log", row=1, col=CURVES.index("loss") % COLS + 1)
    fig.update_layout(height=height, margin={"t": 40, "b": 40, "l": 50, "r": 20})
    return fig


__all__ = ["training_curves"]
