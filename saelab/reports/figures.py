"""Plotly figures for the feature pages, built by pure functions from backend results.

No Streamlit here: each function takes a backend dataclass (or its arrays) and returns a
`go.Figure`, so figures can be tested and exported without a running app. Token strings come in
through a `decode` callable (token id → text) because only the caller holds the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import plotly.graph_objects as go

from saelab.reports.render import plotly_esc as esc

ACT_COLOUR = "#ff7f0e"


def _shown(text: str) -> str:
    """Token text for a chart: whitespace visible, escaped for Plotly (`render.plotly_esc`)."""
    return esc(text.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥") or "∅")


def activation_histogram(hist_counts: Sequence[int], max_act: float) -> go.Figure:
    """Bar chart of a latent's non-zero activations: equal bins over (0, max_act]."""
    counts = np.asarray(hist_counts, dtype=float)
    n = len(counts)
    width = float(max_act) / n if n and max_act > 0 else 1.0
    centres = (np.arange(n) + 0.5) * width
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=width * 0.95,
            marker_color=ACT_COLOUR,
            hovertemplate="activation %{x:.3g} ± " + f"{width / 2:.3g}" + "<br>%{y:,} tokens<extra></extra>",
        )
    )
    # Fixed margins, no in-figure title: Plotly's automatic margins and title layout were a large part
    # of the browser's work on each latent switch (the page puts the title in its own HTML).
    fig.update_layout(
        xaxis=dict(title="activation", automargin=False),
        yaxis=dict(title="tokens", automargin=False),
        height=250,
        margin=dict(l=56, r=10, t=10, b=44),
        bargap=0.02,
    )
    return fig


def density_histogram(edges: Sequence[float], counts: Sequence[int]) -> go.Figure:
    """Bar chart of the SAE evaluation's feature density: latents per bin of log10 firing frequency.

    `edges` are the bins' `len(counts) + 1` boundaries; each bar stands at its bin's centre.
    """
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts))
    fig.update_layout(
        title="Feature density: log10 firing frequency of live latents on held-out tokens",
        xaxis_title="log10 frequency",
        yaxis_title="latents",
        height=320,
    )
    return fig


def prompt_heatmap(
    tokens: Sequence[str],
    latents: Sequence[int],
    matrix: np.ndarray,
    labels: dict[int, str] | None = None,
) -> go.Figure:
    """Heatmap of activations: one row per latent (`latents`), one column per token position.

    `matrix` is [len(latents), len(tokens)].
    """
    labels = labels or {}
    rows = [f"#{int(latent)} {esc(labels.get(int(latent), ''))}".strip() for latent in latents]
    # Positions make the x labels unique (Plotly merges equal category names).
    cols = [f"{i}:{_shown(t)}" for i, t in enumerate(tokens)]
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(matrix, dtype=float),
            x=cols,
            y=rows,
            colorscale="Oranges",
            zmin=0,
            hovertemplate="token %{x}<br>latent %{y}<br>activation %{z:.3g}<extra></extra>",
            colorbar=dict(title="act"),
        )
    )
    fig.update_layout(
        title="Top latents of the text × tokens",
        height=max(260, 60 + 22 * len(rows)),
        margin=dict(l=10, r=10, t=40, b=10),
        yaxis=dict(autorange="reversed", type="category"),
        xaxis=dict(type="category", tickangle=-60),
    )
    return fig


def feature_map(
    map_xy: np.ndarray,
    density: np.ndarray,
    cluster: np.ndarray | None,
    labels: dict[int, str] | None = None,
    *,
    colour_by: Literal["density", "cluster", "values"] = "density",
    highlight: int | None = None,
    values: np.ndarray | None = None,
    values_title: str = "",
    names: dict[int, str] | None = None,
) -> go.Figure:
    """WebGL scatter of every latent's 2-D map position; hover shows index, label and density.

    Colour is log10 density (dead latents at the floor), the cluster id, or any per-latent `values` (NaN drawn
    grey, e.g. latents without a scored label). `names` (cluster → name) are written at each cluster's median
    position and in the hover. Each point's
    `customdata` is its latent index, which the page reads back from a selection. No `dragmode`
    is set on purpose: Streamlit then pans by default and a click selects one point, whereas a
    lasso/select dragmode turns clicks into plain events that select nothing.
    """
    xy = np.asarray(map_xy, dtype=float)
    dens = np.asarray(density, dtype=float)
    n = len(xy)
    labels = labels or {}
    idx = np.arange(n)
    # Dead latents (density 0) sit at half the smallest observed density, not at an arbitrary 1e-9.
    floor = float(dens[dens > 0].min()) / 2 if (dens > 0).any() else 1e-6
    log_d = np.log10(np.clip(dens, floor, None))
    text = [f"#{i} {esc(labels.get(i, ''))}".strip() + f"<br>log10 density {log_d[i]:.2f}" for i in range(n)]
    names = names or {}
    if cluster is not None:
        text = [f"{t}<br>cluster {int(c)} {esc(names.get(int(c), ''))}" for t, c in zip(text, np.asarray(cluster))]
    if colour_by == "values" and values is not None:
        v = np.asarray(values, dtype=float)
        text = [f"{t}<br>{esc(values_title)} {v[i]:.3g}" for i, t in enumerate(text)]
    if colour_by == "cluster" and cluster is not None:
        marker = dict(
            size=5,
            color=np.asarray(cluster, dtype=int),
            colorscale="Turbo",
            showscale=True,
            colorbar=dict(title="cluster"),
        )
    elif colour_by == "values" and values is not None:
        v = np.asarray(values, dtype=float)
        finite = np.isfinite(v)
        fill = float(np.nanmin(v)) if finite.any() else 0.0
        marker = dict(size=5, color=np.where(finite, v, fill), colorscale="Viridis", showscale=True,
                      colorbar=dict(title=esc(values_title)), line=dict(width=0))  # fmt: skip
        marker["opacity"] = 1.0
    else:
        marker = dict(size=5, color=log_d, colorscale="Viridis", showscale=True, colorbar=dict(title="log10 density"))
    fig = go.Figure(
        go.Scattergl(
            x=xy[:, 0] if n else [],
            y=xy[:, 1] if n else [],
            mode="markers",
            marker=marker,
            customdata=idx,
            text=text,
            hovertemplate="%{text}<extra></extra>",
        )
    )
    if cluster is not None and names and n:
        c = np.asarray(cluster)
        for k, name in names.items():
            members = c == k
            if name and members.any():
                mx, my = np.median(xy[members], axis=0)
                fig.add_annotation(x=mx, y=my, text=esc(name), showarrow=False, font=dict(size=11),
                                   bgcolor="rgba(255,255,255,0.6)")  # fmt: skip
    if highlight is not None and 0 <= highlight < n:
        fig.add_trace(
            go.Scattergl(
                x=[xy[highlight, 0]],
                y=[xy[highlight, 1]],
                mode="markers",
                marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="red", width=2)),
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.update_layout(
        height=620,
        margin=dict(l=10, r=10, t=30, b=10),
        showlegend=False,
        xaxis=dict(showticklabels=False, zeroline=False),
        yaxis=dict(showticklabels=False, zeroline=False),
    )
    return fig
