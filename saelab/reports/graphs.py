"""The attribution graph's offline HTML report (issue 19): one file, plotly.js inlined, no network to open it."""

from __future__ import annotations

import html

from saelab.reports.graph_figures import graph_figure


def _num(v) -> str:
    return "" if v is None else f"{v:.3g}"


def graph_html(graph) -> str:
    """One self-contained HTML report of an `AttributionGraph`: scores and formulas, the figure, the node table."""
    fig = graph_figure(graph)
    rows = "".join(
        f"<tr><td>{html.escape(n['id'])}</td><td>{n['kind']}</td><td>{n['layer']}</td><td>{n['pos']}</td>"
        f"<td>{_num(n.get('activation'))}</td><td>{n['influence']:.4f}</td>"
        f"<td>{html.escape(str(n.get('label') or ''))}</td></tr>"
        for n in sorted(graph.nodes, key=lambda n: -n["influence"])
    )
    s = graph.scores
    formulas = html.escape(" · ".join(f"{k}: {v}" for k, v in graph.formulas.items()))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Attribution graph</title></head><body>"
        f"<h1>Attribution graph</h1><p>Prompt: <code>{html.escape(graph.prompt)}</code> · model "
        f"{html.escape(graph.model)} · transcoders {html.escape(graph.transcoders or '(in memory)')}</p>"
        f"<p>Replacement score {s['replacement_score']:.3f} (pruned {s['pruned_replacement_score']:.3f}) · "
        f"completeness {s['completeness_score']:.3f} (pruned {s['pruned_completeness_score']:.3f})</p>"
        f"<p><small>{formulas}</small></p>"
        + fig.to_html(full_html=False, include_plotlyjs=True)
        + "<table border='1' cellspacing='0'><tr><th>node</th><th>kind</th><th>layer</th><th>pos</th>"
        "<th>activation</th><th>influence</th><th>label</th></tr>" + rows + "</table></body></html>"
    )


__all__ = ["graph_html"]
