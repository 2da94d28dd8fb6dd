"""Plotly figures of an SAE comparison (`saelab.compare.run.CompareResult`): pure functions for the report."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from saelab.compare.joint_map import JointMap
from saelab.compare.matching import MatchResult
from saelab.compare.metrics import MetricsTable
from saelab.reports.render import plotly_esc


def best_match_histograms(match: MatchResult) -> go.Figure:
    """Histograms of the best-match cosine of every latent, A→B and B→A, with the split threshold marked."""
    fig = go.Figure()
    for vals, name in (
        (match.best_a, f"{match.name_a} → {match.name_b}"),
        (match.best_b, f"{match.name_b} → {match.name_a}"),
    ):
        fig.add_trace(go.Histogram(x=np.asarray(vals, float), name=plotly_esc(name), opacity=0.6,
                                   xbins={"start": -1, "end": 1.0001, "size": 0.02}))  # fmt: skip
    fig.add_vline(x=match.threshold, line_dash="dash", annotation_text=f"threshold {match.threshold:g}")
    fig.update_layout(barmode="overlay", height=340, margin={"t": 50, "b": 40},
                      title=plotly_esc(f"Best-match decoder cosine: {match.name_a} vs {match.name_b}"),
                      xaxis_title="max cosine over the other SAE's latents", yaxis_title="latents")  # fmt: skip
    return fig


def pareto_scatter(metrics: MetricsTable) -> go.Figure | None:
    """L0 vs CE-loss score (zero ablation) of the SAEs with an eval.json; None when fewer than one has both."""
    pts = [(r.name, r.metrics.get("l0"), r.metrics.get("ce_loss_score_zero")) for r in metrics.rows]
    pts = [(n, x, y) for n, x, y in pts if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return None
    fig = go.Figure(go.Scatter(
        x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers+text", text=[plotly_esc(p[0]) for p in pts],
        textposition="top center", marker={"size": 11},
        hovertemplate="%{text}<br>L0 %{x:.3g}<br>CE-loss score %{y:.4g}<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(height=360, margin={"t": 50, "b": 40}, title="Sparsity vs fidelity (up and left is better)",
                      xaxis_title="L0 (mean active latents per token)", yaxis_title="CE-loss score (zero ablation)")  # fmt: skip
    return fig


def joint_map_figure(jm: JointMap, labels: list[list[str] | None] | None = None) -> go.Figure:
    """The joint feature map: one colour per SAE; hover shows the SAE, the latent and its label when known."""
    fig = go.Figure()
    for s, name in enumerate(jm.names):
        sel = np.flatnonzero(jm.sae == s)
        lab = labels[s] if labels and s < len(labels) else None
        text = [plotly_esc(f"{name} #{int(i)}" + (f": {lab[int(i)]}" if lab and int(i) < len(lab) else ""))
                for i in jm.latent[sel]]  # fmt: skip
        fig.add_trace(go.Scattergl(
            x=jm.xy[sel, 0], y=jm.xy[sel, 1], mode="markers", name=plotly_esc(f"{name} ({len(sel):,})"),
            text=text, hovertemplate="%{text}<extra></extra>", marker={"size": 4, "opacity": 0.7},
        ))  # fmt: skip
    fig.update_layout(height=560, margin={"t": 50, "b": 20}, legend_title_text="SAE",
                      title=f"Decoder directions of {len(jm.names)} SAEs, one t-SNE (cosine); neighbour mixing "
                            f"{jm.mixing:.2f}")  # fmt: skip
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig
