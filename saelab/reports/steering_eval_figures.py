"""Plotly figures for the steering evaluation and the detox tiers: pure functions of the typed results
(`EvalResult`, `DetoxResult`, fresh or read back with `.load`), so pages, the CLI and HTML reports share them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # annotations only: drawing needs no torch
    from saelab.steering.detox import DetoxResult
    from saelab.steering.eval_result import EvalResult

COLOURS = {
    "sae": "#d62728",
    "diffmean": "#1f77b4",
    "probe": "#2ca02c",
    "pca": "#9467bd",
    "lat": "#8c564b",
    "prompting": "#ff7f0e",
    "unsteered": "#7f7f7f",
}
RATINGS = (("concept_rating", "concept"), ("relevance", "relevance"), ("fluency", "fluency"), ("score", "score"))


def _judge_tag(result: EvalResult) -> str:
    return " — PROXY judge" if result.proxy else " — LLM judge"


def _pooled(result: EvalResult, method: str, key: str) -> tuple[list[float], list[float]]:
    """Mean of `key` per factor over both halves (weighted by item counts)."""
    acc: dict[float, list[float]] = {}
    for row in result.curves:
        if row["method"] == method and row["factor"] is not None:
            s = acc.setdefault(float(row["factor"]), [0.0, 0.0])
            s[0] += row[key] * row["n"]
            s[1] += row["n"]
    xs = sorted(acc)
    return xs, [acc[x][0] / acc[x][1] for x in xs]


def _baseline(result: EvalResult, method: str, key: str) -> float | None:
    rows = [r for r in result.curves if r["method"] == method and r["factor"] is None]
    n = sum(r["n"] for r in rows)
    return sum(r[key] * r["n"] for r in rows) / n if n else None


def score_vs_factor_figure(result: EvalResult) -> go.Figure:
    """Overall score against the factor for each steering method (all instructions, all concepts), with the
    prompting and unsteered baselines as horizontal lines. Ratings and scores are on 0–2."""
    fig = make_subplots(rows=1, cols=4, subplot_titles=[label for _, label in RATINGS], shared_yaxes=True)
    methods = [m for m in dict.fromkeys(r["method"] for r in result.curves)]
    for col, (key, _) in enumerate(RATINGS, start=1):
        for method in methods:
            colour = COLOURS.get(method, "#333333")
            base = _baseline(result, method, key)
            if base is not None:
                fig.add_hline(y=base, line={"color": colour, "dash": "dash", "width": 1}, row=1, col=col)
                if col == 1:
                    fig.add_trace(
                        go.Scatter(
                            x=[None],
                            y=[None],
                            mode="lines",
                            name=f"{method} (no factor)",
                            line={"color": colour, "dash": "dash"},
                        ),
                        row=1,
                        col=1,
                    )
                continue
            xs, ys = _pooled(result, method, key)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=method,
                    line={"color": colour},
                    showlegend=col == 1,
                    legendgroup=method,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="factor", type="log", row=1, col=col)
    fig.update_yaxes(range=[-0.05, 2.05], title_text="mean rating (0–2)", row=1, col=1)
    fig.update_layout(
        title=f"Ratings against the steering factor (α = factor × max_act){_judge_tag(result)}",
        height=380,
        margin={"t": 70, "b": 40},
    )
    return fig


def method_table_figure(result: EvalResult) -> go.Figure:
    """Report-half mean score per method with its bootstrap 95 % CI."""
    rows = result.summary
    fig = go.Figure(
        go.Bar(
            x=[r["method"] for r in rows],
            y=[r["score"] for r in rows],
            marker_color=[COLOURS.get(r["method"], "#333333") for r in rows],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r["ci_high"] - r["score"] for r in rows],
                "arrayminus": [r["score"] - r["ci_low"] for r in rows],
            },
            text=[f"{r['score']:.2f}" for r in rows],
            textposition="outside",
        )
    )
    fig.update_layout(
        title=f"Steering score on the report half (factor chosen on the other half){_judge_tag(result)}",
        yaxis={"title": "score (harmonic mean of 0–2 ratings)", "range": [0, 2.05]},
        height=360,
    )
    return fig


def detox_figure(result: DetoxResult) -> go.Figure:
    """Toxicity (classifier probability, 95 % CI) against fluency (median perplexity, unsteered model) for the
    unsteered run and each tier."""
    rows = result.rows
    fig = go.Figure(
        go.Scatter(
            x=[r["perplexity_median"] for r in rows],
            y=[r["toxicity"] for r in rows],
            mode="markers+text+lines",
            text=[f"{r['condition']} ({r['factor']:+g})" for r in rows],
            textposition="top right",
            marker={"size": 11, "color": ["#7f7f7f", "#9ecae1", "#4292c6", "#08519c"][: len(rows)]},
            line={"color": "#bbbbbb", "dash": "dot"},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r["toxicity_ci_high"] - r["toxicity"] for r in rows],
                "arrayminus": [r["toxicity"] - r["toxicity_ci_low"] for r in rows],
            },
        )
    )
    fig.update_layout(
        title="Detox tiers: toxicity vs fluency (toxicity = classifier probability, a proxy)",
        xaxis={"title": "median perplexity under the unsteered model (lower = more fluent)", "type": "log"},
        yaxis={"title": "mean P(offensive) of the continuation", "range": [0, 1]},
        height=400,
    )
    return fig


__all__ = ["COLOURS", "detox_figure", "method_table_figure", "score_vs_factor_figure"]
