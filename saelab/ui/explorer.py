"""HTML for the Feature Explorer's latent panel, built from one latent's dashboard (the page stays thin).

Each function returns one HTML string: on a 2-core CPU every Streamlit element costs the browser
milliseconds, and a latent switch redraws all of them, so the page sends few, large elements. All text
is escaped in `saelab.reports.render`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from saelab.reports import render

if TYPE_CHECKING:
    from saelab.features.store import DashboardStore, LatentDashboard

PROXY_TIP = "An automatic proxy label: tokens and contexts that drive the latent, not a human reading."
QUALITY_NOTE = (
    "BA = balanced accuracy (TPR + TNR)/2 of the PROXY label's rule on the held-out TEST half. Token level: does "
    "the rule fire at the positions where the latent fires; sequence level: in the rows where it fires."
)


def header_html(store: DashboardStore, dash: LatentDashboard, latent: int, labels: dict[int, str]) -> str:
    """Heading, statistics, the label's provenance (and an LLM label when there is one), and where the
    dashboards come from."""
    meta = store.meta
    label_set = store.labels()  # a LabelSet (saelab.features.labels) or None
    label_entry = label_set[latent] if label_set is not None and latent < len(label_set) else None
    label = labels.get(latent) or None
    proxy = bool(label_set is not None and label_set.proxy)
    formulas = meta.get("formulas", {})
    stats = [
        ("Density", f"{float(dash.density):.3%}", formulas.get("density", "share of tokens with act > 0")),
        ("Max activation", f"{float(dash.max_act):.3g}", None),
        ("Mean activation (when firing)", f"{float(dash.mean_act):.3g}", formulas.get("mean_act")),
    ]
    details = ""
    token_ba = label_entry.token_balanced_accuracy if label_entry is not None else None
    if token_ba is not None:
        stats.append(
            (
                "Label score, token level",
                f"{float(token_ba):.2f}",
                f"Balanced accuracy over held-out positions (TPR {float(label_entry.token_tpr or 0):.2f}, "
                f"TNR {float(label_entry.token_tnr or 0):.2f}); see 'How the label was made and scored'.",
            )
        )
    if label_entry is not None and label_entry.detection_balanced_accuracy is not None:
        formula = label_set.formula or "balanced accuracy of the label's detection rule"
        stats.append(
            (
                "Label score, sequence level" if token_ba is not None else "Detection score",
                f"{float(label_entry.detection_balanced_accuracy):.2f}",
                "Balanced accuracy over held-out rows (does the rule fire in the rows where the latent fires).",
            )
        )
        token_line = (
            f" · token level: rule '{render.esc(label_entry.rule_family or '')}' chosen on the FIT half (BA "
            f"{float(label_entry.fit_balanced_accuracy or 0):.2f}), scored on {int(label_entry.token_n_pos):,} "
            f"firing and {int(label_entry.token_n_neg):,} non-firing TEST positions"
            if token_ba is not None
            else ""
        )
        details = render.details_html(
            "How the label was made and scored",
            f"Method: <code>{render.esc(label_set.method)}</code>{token_line} · sequence level: F1 "
            f"{float(label_entry.detection_f1 or 0):.2f}, {int(label_entry.n_pos):,} positive and "
            f"{int(label_entry.n_neg):,} negative held-out rows.<pre>{render.esc(formula)}</pre>",
        )
    elif token_ba is not None:
        details = render.details_html(
            "How the label was made and scored", f"<pre>{render.esc(label_set.formula)}</pre>"
        )
    else:
        why = (label_entry.note if label_entry is not None else "") or "no label score for this latent"
        stats.append(("Detection score", "—", f"Not scored: {why}."))
    llm_set = (label_set.llm if label_set is not None else None) or {}
    llm = (llm_set.get("latents") or {}).get(str(latent))
    if llm and llm.get("label"):
        acc = llm.get("detection_balanced_accuracy")
        details += render.details_html(
            f"LLM label ({llm_set.get('model', 'endpoint')}): {llm['label'][:80]}",
            f"{render.esc(llm['label'])}<br>Detection score (same rows and formula as the proxy label): "
            + (f"{float(acc):.2f}" if acc is not None else "—"),
        )
    return (
        render.heading_html(latent, label, proxy=proxy, tooltip=PROXY_TIP if proxy else None)
        + render.stats_html(stats)
        + details
        + '<p style="color:#6c757d;font-size:.85em;margin:2px 0">'
        + render.esc(
            f"Dashboards computed over {int(meta.get('n_tokens', 0)):,} tokens"
            + (f" of {meta['model'].get('name')}" if isinstance(meta.get("model"), dict) else "")
            + (f" at {meta['hook']}" if meta.get("hook") else "")
            + "."
        )
        + "</p>"
    )


def top_contexts_html(dash: LatentDashboard, decode: Callable[[int], str]) -> str:
    """The latent's top activating contexts, each after its activation at the centre token."""
    ctx_left, max_act = int(dash.ctx_left), float(dash.max_act)
    rows = []
    for tokens, acts in zip(dash.top_tokens, dash.top_acts):
        if (tokens >= 0).sum() == 0 or float(acts.max()) <= 0:
            continue
        value = float(acts[ctx_left])
        rows.append(
            f'<div style="display:flex;gap:8px"><code style="min-width:4em">{value:.3g}</code>'
            f"{render.context_html(tokens, acts, max_act, decode, centre=ctx_left)}</div>"
        )
    return "".join(rows) if rows else "<i>No activating contexts.</i>"


def intervals_html(dash: LatentDashboard, decode: Callable[[int], str]) -> str:
    """Sample contexts from each activation interval, highest first, with the share of firing tokens it holds."""
    ctx_left, max_act = int(dash.ctx_left), float(dash.max_act)
    blocks = []
    for i in reversed(range(len(dash.q_bounds))):
        lo, hi = (float(x) for x in dash.q_bounds[i])
        frac = float(dash.q_frac[i])
        if frac <= 0:
            continue
        shown = [
            render.context_html(t, a, max_act, decode, centre=ctx_left)
            for t, a in zip(dash.q_tokens[i], dash.q_acts[i])
            if (t >= 0).any()
        ]
        blocks.append(
            f"<p style='margin:8px 0 2px'><b>Interval {lo:.3g}–{hi:.3g}</b>, contains {frac:.1%} of the "
            f"firing tokens</p>" + ("".join(shown) or "<i>no samples</i>")
        )
    return "".join(blocks) or "<i>No samples.</i>"


def neighbours(dash: LatentDashboard) -> dict[int, float]:
    """Nearest latents by decoder cosine: latent → cosine, nearest first (padding entries dropped)."""
    return {int(o): float(c) for o, c in zip(dash.nbr_ids, dash.nbr_cos) if int(o) >= 0}


__all__ = ["header_html", "intervals_html", "neighbours", "top_contexts_html"]
