"""Export an SAE comparison: result.json (every number and formula), report.html (figures, offline), pairs CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saelab.compare.matching import MatchResult
from saelab.compare.run import CompareResult
from saelab.reports import HtmlReport, write_export
from saelab.reports.compare_figures import best_match_histograms, pareto_scatter


def pair_rows(result: CompareResult, k: int, limit: int | None = None) -> list[dict[str, Any]]:
    """The assigned pairs of match k (first SAE vs SAE k+1), best cosine first, with labels and densities."""
    m = result.matches[k]
    ia, ib = result.info[0], result.info[k + 1]
    order = sorted(range(len(m.pairs_a)), key=lambda n: -m.pairs_cos[n])
    rows = []
    for n in order[:limit]:
        a, b = m.pairs_a[n], m.pairs_b[n]
        row: dict[str, Any] = {f"{m.name_a} latent": a, f"{m.name_b} latent": b, "cosine": float(m.pairs_cos[n])}
        if m.correlation is not None:
            row["activation r"] = float(m.correlation[n])
        row[f"{m.name_a} label"] = ia.labels[a] if ia.labels and a < len(ia.labels) else ""
        row[f"{m.name_b} label"] = ib.labels[b] if ib.labels and b < len(ib.labels) else ""
        row[f"{m.name_a} density"] = ia.density[a] if ia.density and a < len(ia.density) else float("nan")
        row[f"{m.name_b} density"] = ib.density[b] if ib.density and b < len(ib.density) else float("nan")
        rows.append(row)
    return rows


def split_rows(m: MatchResult) -> list[dict[str, Any]]:
    narrow, wide = (m.name_a, m.name_b) if m.narrow == "a" else (m.name_b, m.name_a)
    return [
        {f"{narrow} latent": int(j), f"{wide} latents": ", ".join(map(str, v)), "n": len(v)}
        for j, v in m.splits.items()
    ]


def summary_rows(result: CompareResult) -> list[dict[str, Any]]:
    return [{"A": m.name_a, "B": m.name_b, "d_a": m.d_a, "d_b": m.d_b, **m.summary(), "assignment": m.method}
            for m in result.matches]  # fmt: skip


def build_report(result: CompareResult, pair_limit: int = 200) -> HtmlReport:
    rep = HtmlReport("SAE comparison", subtitle=f"{len(result.names)} SAEs · {result.pairing}")
    for note in result.notes + result.metrics.notes:
        rep.note(note)
    rep.heading("Core metrics (each SAE's eval.json)")
    rep.table(result.metrics.table_rows())
    fig = pareto_scatter(result.metrics)
    if fig is not None:
        rep.figure(fig)
    rep.heading("Feature matching by decoder cosine")
    rep.table(summary_rows(result))
    for k, m in enumerate(result.matches):
        rep.heading(f"{m.name_a} vs {m.name_b}", level=3)
        for note in m.notes:
            rep.note(note)
        rep.figure(best_match_histograms(m))
        if m.splits:
            rep.table(
                split_rows(m),
                caption=f"Feature splits (wider-SAE latents whose best match is one latent, cos ≥ {m.threshold:g})",
            )
        rep.table(pair_rows(result, k, pair_limit), caption="Assigned pairs, best cosine first")
    rep.heading("Formulas")
    formulas = result.matches[0].formulas if result.matches else {}
    rep.table([{"name": k, "formula": v} for k, v in formulas.items()])
    return rep


def export_result(result: CompareResult, folder: str | Path) -> dict[str, Path]:
    """Write report.html, result.json and one pairs CSV per match into `folder` (atomically)."""
    csv = {f"pairs-{k + 1}": pair_rows(result, k) for k in range(len(result.matches))}
    return write_export(folder, report=build_report(result), data=result.to_dict(), csv=csv)


def export_bytes(result: CompareResult) -> dict[str, bytes]:
    """report.html and result.json in memory, for download buttons: {"html", "json"}."""
    import json

    return {"html": build_report(result).to_html().encode(),
            "json": json.dumps(result.to_dict(), indent=1).encode()}  # fmt: skip
