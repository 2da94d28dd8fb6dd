"""Figures of an attribution graph (issue 19): nodes on a layers × positions grid, edges by weight."""

from __future__ import annotations

import plotly.graph_objects as go

COLOURS = {"token": "#7f8c8d", "feature": "#2980b9", "error": "#c0392b", "logit": "#27ae60"}
MAX_DRAWN_EDGES = 400


def _y(node: dict, n_layers: int) -> float:
    return {"token": -1, "logit": n_layers}.get(node["kind"], node["layer"])


def _x(node: dict, offsets: dict[tuple[int, int], int], counts: dict[tuple[int, int], int]) -> float:
    """Nodes sharing a (layer, position) cell are spread across it."""
    key = (node["layer"], node["pos"])
    i, n = offsets.get(node["id"], 0), counts.get(key, 1)
    return node["pos"] + (i - (n - 1) / 2) * (0.8 / max(n, 1))


def layout(graph) -> dict[str, tuple[float, float]]:
    cells: dict[tuple[int, int], list[dict]] = {}
    for n in graph.nodes:
        cells.setdefault((n["layer"], n["pos"]), []).append(n)
    pos = {}
    for key, members in cells.items():
        members.sort(key=lambda n: -n["influence"])
        for i, n in enumerate(members):
            pos[n["id"]] = (_x(n, {n["id"]: i}, {key: len(members)}), _y(n, graph.n_layers))
    return pos


def graph_figure(graph, selected: str | None = None) -> go.Figure:
    """Nodes: x = token position, y = layer (tokens below, logits on top), size ∝ √influence, colour = kind;
    edges: the strongest `MAX_DRAWN_EDGES` by |weight|, blue positive / red negative."""
    xy = layout(graph)
    fig = go.Figure()
    edges = sorted(graph.edges, key=lambda e: -abs(e["weight"]))[:MAX_DRAWN_EDGES]
    for sign, colour in ((1, "rgba(41,128,185,0.35)"), (-1, "rgba(192,57,43,0.35)")):
        xs, ys = [], []
        for e in edges:
            if (e["weight"] > 0) == (sign > 0) and e["source"] in xy and e["target"] in xy:
                (x0, y0), (x1, y1) = xy[e["source"]], xy[e["target"]]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": 1}, hoverinfo="skip",
                                 name="positive edges" if sign > 0 else "negative edges"))  # fmt: skip
    for kind, colour in COLOURS.items():
        nodes = [n for n in graph.nodes if n["kind"] == kind]
        if not nodes:
            continue
        peak = max(n["influence"] for n in graph.nodes) or 1.0
        fig.add_trace(
            go.Scatter(
                x=[xy[n["id"]][0] for n in nodes],
                y=[xy[n["id"]][1] for n in nodes],
                mode="markers",
                name=kind,
                customdata=[n["id"] for n in nodes],
                marker={
                    "color": colour,
                    "size": [6 + 24 * (max(n["influence"], 0) / peak) ** 0.5 for n in nodes],
                    "line": {"width": [3 if n["id"] == selected else 0 for n in nodes], "color": "black"},
                },  # fmt: skip
                text=[
                    f"{n['id']}<br>{kind} · layer {n['layer']} · pos {n['pos']}<br>influence {n['influence']:.4f}"
                    + (f"<br>{n.get('label') or ''}" if n.get("label") else "")
                    for n in nodes
                ],  # fmt: skip
                hoverinfo="text",
            )
        )
    fig.update_layout(
        height=620,
        margin={"l": 40, "r": 10, "t": 30, "b": 80},
        xaxis={
            "tickmode": "array",
            "tickvals": list(range(len(graph.token_strs))),
            "ticktext": [t.replace("\n", "⏎") for t in graph.token_strs],
            "title": "token position",
        },  # fmt: skip
        yaxis={"title": "layer (tokens at −1, logits on top)"},
        legend={"orientation": "h", "y": 1.05},
        clickmode="event+select",
    )
    return fig


__all__ = ["graph_figure", "layout"]
