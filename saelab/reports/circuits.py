"""Export a `CircuitResult`: result.json (every number and formula), report.html (figures, offline), CSVs."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

from saelab.circuits.methods import METHODS
from saelab.circuits.run import REFERENCE, CircuitResult
from saelab.reports import HtmlReport, csv_text, write_export
from saelab.reports.circuits_figures import agreement_scatter, circuit_graph, heatmaps, prompt_metrics


def _fmt(stat: dict[str, float] | None) -> str:
    if not stat or not math.isfinite(stat.get("mean", float("nan"))):
        return "–"
    std = stat.get("std", float("nan"))
    return f"{stat['mean']:.3f} ± {std:.3f}" if math.isfinite(std) else f"{stat['mean']:.3f}"


def summary_rows(result: CircuitResult) -> list[dict[str, Any]]:
    """One row per method: full-run ROC-AUC, P@k, wall time, and the repeated-subset mean ± std."""
    summary = result.repeat_summary()
    ref_s = result.seconds.get(REFERENCE, float("nan"))
    rows = []
    for m, ev in result.evaluation.items():
        rep = summary.get(m, {})
        rows.append({
            "method": METHODS[m].label if m in METHODS else m,
            "ROC-AUC (all prompts)": ev.get("roc_auc", float("nan")),
            "P@k = R@k (all prompts)": ev.get("precision_at_k", float("nan")),
            "seconds (all prompts)": result.seconds.get(m, float("nan")),
            "time vs reference": ref_s / result.seconds[m] if result.seconds.get(m) else float("nan"),
            "ROC-AUC (subsets)": _fmt(rep.get("roc_auc")),
            "P@k (subsets)": _fmt(rep.get("precision_at_k")),
            "seconds (subsets)": _fmt(rep.get("seconds")),
        })  # fmt: skip
    return rows


def head_rows(result: CircuitResult) -> list[dict[str, Any]]:
    rows = []
    for i, label in enumerate(result.labels):
        row: dict[str, Any] = {"head": label, "layer": i // result.n_heads, "index": i % result.n_heads,
                               "in_reference": bool(result.reference_mask.ravel()[i])}  # fmt: skip
        row.update({m: float(s.ravel()[i]) for m, s in result.scores.items()})
        rows.append(row)
    return rows


def build_report(result: CircuitResult) -> HtmlReport:
    cfg = result.config
    rep = HtmlReport(f"Circuit discovery: {result.task.name}",
                     subtitle=f"model {result.model} · {len(result.task.pairs)} prompt pairs · seed {cfg.seed}")  # fmt: skip
    rep.text(result.task.description)
    rep.text(f"Model accuracy on the clean prompts: {result.check.accuracy:.0%} "
             f"(corrupted: {result.check.corrupted_accuracy:.0%}).")  # fmt: skip
    for note in result.notes:
        rep.note(note)
    rep.heading("Methods against the reference")
    rep.table(summary_rows(result))
    sae = result.extra.get("discrete-sae")
    if sae:
        rep.text(f"Code SAE (SAE-Lens standard, d_sae {result.config.d_sae}, λ {result.config.l1}, "
                 f"{result.config.epochs} epochs): explained variance {sae['sae_explained_variance']:.3f}, "
                 f"mean L0 {sae['sae_l0']:.1f}, {sae['n_codes_used']} distinct codes used.")  # fmt: skip
    rep.figure(heatmaps(result))
    for m in result.scores:
        if m != REFERENCE:
            rep.figure(agreement_scatter(result, m))
    graph_method = "discrete-sae" if "discrete-sae" in result.scores else REFERENCE
    rep.figure(circuit_graph(result, graph_method))
    rep.heading("Prompts")
    rep.figure(prompt_metrics(result))
    rep.table(result.check.rows())
    rep.heading("Formulas")
    rep.table([{"name": k, "formula": v} for k, v in result.formulas().items()])
    return rep


def export_result(result: CircuitResult, folder: str | Path) -> dict[str, Path]:
    """Write report.html, result.json, heads.csv and prompts.csv into `folder` (atomically)."""
    return write_export(folder, report=build_report(result), data=result.to_dict(),
                        csv={"heads": head_rows(result), "prompts": result.check.rows()})  # fmt: skip


def export_bytes(result: CircuitResult) -> dict[str, bytes]:
    """The same files in memory, for download buttons: {"json", "html", "zip"}."""
    import json

    data = json.dumps(result.to_dict(), indent=1).encode()
    html = build_report(result).to_html().encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("result.json", data)
        z.writestr("report.html", html)
        z.writestr("heads.csv", csv_text(head_rows(result)))
        z.writestr("prompts.csv", csv_text(result.check.rows()))
    return {"json": data, "html": html, "zip": buf.getvalue()}
