"""Plotly figures for steering results: pure functions of result data (reused by pages and HTML reports)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

SWEEP_SERIES = (
    ("concept", "concept rating", "#1f77b4"),
    ("relevance", "instruction relevance rating", "#2ca02c"),
    ("fluency", "fluency rating", "#d62728"),
    ("score", "overall score (harmonic mean, 0 if any is 0)", "#7f7f7f"),
)


def sweep_figure(
    factors: Sequence[float], ratings: dict[str, Sequence[float]], *, title: str, proxy: bool = True
) -> go.Figure:
    """Concept, relevance, fluency ratings (0–2) and the overall score against the steering factor.

    `ratings` maps "concept", "relevance", "fluency", "score" to one value per factor (means over prompts).
    """
    fig = go.Figure()
    for key, name, colour in SWEEP_SERIES:
        if key in ratings:
            fig.add_trace(
                go.Scatter(
                    x=list(factors),
                    y=list(ratings[key]),
                    mode="lines+markers",
                    name=name,
                    line={"color": colour, "dash": "dot" if key == "score" else "solid"},
                )
            )
    tag = " — PROXY judge ratings" if proxy else ""
    fig.update_layout(
        title=f"{title}{tag}",
        xaxis_title="factor (α = factor × max_act)",
        yaxis={"title": "rating (0–2)", "range": [-0.05, 2.05]},
        height=380,
        margin={"l": 40, "r": 10, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


__all__ = ["sweep_figure"]
