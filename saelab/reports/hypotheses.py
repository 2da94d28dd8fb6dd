"""Export a hypothesis run: a self-contained HTML report, the full result as JSON, the tables as CSV.

The HTML reuses `figures.effect_sizes` and escapes every text (hypotheses and example texts come from user
data); evidence words are highlighted with <mark> around escaped pieces only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saelab.hypotheses.interpret import evidence_words, highlight_spans
from saelab.hypotheses.results import MethodResult, signal_kept
from saelab.reports import HtmlReport, csv_text, write_export
from saelab.reports.hypotheses_figures import effect_sizes
from saelab.reports.render import esc

if TYPE_CHECKING:  # annotations only: the pipeline's imports are not needed to draw its result
    from saelab.hypotheses.run import HypothesisResult

MAX_EXAMPLE_CHARS = 400


def example_html(text: str, evidence: list[str], *, max_chars: int = MAX_EXAMPLE_CHARS) -> str:
    """One example text, escaped, its evidence words in <mark>, cut to `max_chars` characters."""
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    parts = highlight_spans(text, evidence_words(evidence))
    return "".join(f"<mark>{esc(p)}</mark>" if hit else esc(p) for p, hit in parts)


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def method_table_html(method: MethodResult, *, n_examples: int = 2) -> str:
    """The hypotheses table with highlighted examples (trusted markup built from escaped pieces)."""
    head = (
        "<tr><th>#</th><th>hypothesis</th><th>coef</th><th>p</th><th>significant</th><th>prevalence</th>"
        "<th>separation [95% CI]</th><th>examples (held-out, evidence marked)</th></tr>"
    )
    rows = []
    for h in method.hypotheses:
        tag = " <small>(PROXY)</small>" if h.proxy else ""
        examples = "<br>".join(
            f"<small>y={_fmt(e['target'])}:</small> {example_html(e['text'], e['evidence'])}"
            for e in h.examples[:n_examples]
        )
        rows.append(
            f"<tr><td>{h.rank}</td><td>{esc(h.label)}{tag}<br><small>{esc(h.feature_name)}</small></td>"
            f"<td>{_fmt(h.coefficient)}</td><td>{_fmt(h.p_value)}</td><td>{'yes' if h.significant else 'no'}</td>"
            f"<td>{_fmt(h.prevalence, '.2f')}</td>"
            f"<td>{_fmt(h.separation)} [{_fmt(h.ci_low)}, {_fmt(h.ci_high)}]</td><td>{examples}</td></tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def examples_html(method: MethodResult, *, n_examples: int = 3) -> str:
    """Each hypothesis with its held-out examples, evidence marked (trusted markup built from escaped pieces)."""
    blocks = []
    for h in method.hypotheses:
        tag = " <small>(PROXY)</small>" if h.proxy else ""
        sig = ' <b style="color:#d62728">significant</b>' if h.significant else ""
        items = "".join(
            f"<li><small>y={_fmt(e['target'])}</small> {example_html(e['text'], e['evidence'])}</li>"
            for e in h.examples[:n_examples]
        )
        blocks.append(
            f'<div style="margin:0 0 .8em 0"><b>{h.rank}. {esc(h.label)}</b>{tag}{sig} '
            f"<small>({esc(h.feature_name)}; p={_fmt(h.p_value)}, prevalence {_fmt(h.prevalence, '.2f')})</small>"
            f'<ul style="margin:.2em 0">{items or "<li><i>holds for no held-out text</i></li>"}</ul></div>'
        )
    return "".join(blocks)


def build_report(result: HypothesisResult) -> HtmlReport:
    """The whole run as an HtmlReport (write it with `.write(path)` or `write_export`)."""
    data = result.data
    report = HtmlReport(
        "Hypotheses: what predicts the target",
        subtitle=f"{data['provenance'].get('source', 'uploaded data')} · target {data['target']} · "
        f"{data['n_texts']:,} texts · split {data['split_sizes']} (seed {data['split_seed']})",
    )
    for note in result.notes:
        report.note(note)
    report.heading("Summary")
    report.text(f"SAE ({result.interpretation}): {result.sae_method.summary()}")
    if result.baseline is not None:
        report.text(f"Bag-of-words baseline: {result.baseline.summary()}")
    ref = result.latent_reference
    if ref:
        fit = f"AUC {ref['auc']:.3f}" if ref.get("auc") is not None else f"R² {ref['r2']:.3f}"
        report.text(
            f"Reference — the selected latents themselves (fires: a > 0) as hypotheses: {ref['n_significant']}/"
            f"{ref['n']} significant, held-out {fit}; mean fidelity F1 of the hypotheses {ref['mean_fidelity_f1']:.2f}."
        )
        report.text(signal_kept(result.sae_method, ref))
    report.text(
        f"Embeddings: {result.embedding}. SAE: Top-K, M={result.sae['m']}, K={result.sae['k']}, "
        f"validation normalised MSE {result.sae['val_nmse']:.3f}, dead fraction {result.sae['dead_fraction']:.2f}."
    )
    report.figure(effect_sizes(result.sae_method, result.baseline))
    for method, title in ((result.sae_method, "SAE hypotheses"), (result.baseline, "Bag-of-words baseline")):
        if method is None:
            continue
        report.heading(title)
        for note in method.notes:
            report.note(note)
        report.html(method_table_html(method))
    report.heading("Formulas")
    report.table([{"score": k, "formula": v} for k, v in result.formulas.items()])
    return report


def csv_rows(result: HypothesisResult) -> list[dict[str, Any]]:
    rows = [{"method": "sae", **h.row()} for h in result.sae_method.hypotheses]
    if result.baseline is not None:
        rows += [{"method": "bow", **h.row()} for h in result.baseline.hypotheses]
    return rows


def export_bytes(result: HypothesisResult) -> dict[str, str]:
    """{"html", "json", "csv"} as strings (for download buttons)."""
    return {
        "html": build_report(result).to_html(),
        "json": json.dumps(result.to_dict(), indent=2, allow_nan=False),
        "csv": csv_text(csv_rows(result)),
    }


def export_result(result: HypothesisResult, folder: str | Path) -> dict[str, Path]:
    """Write report.html, result.json and hypotheses.csv into `folder` (atomically)."""
    return write_export(
        folder, report=build_report(result), data=result.to_dict(), csv={"hypotheses": csv_rows(result)}
    )
