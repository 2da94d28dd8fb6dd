"""Streamlit helpers for the Probing page: the task menu, cached data loading, the run with a progress bar,
export bytes, and the HTML of the top-latent table and per-example token highlights (escaped in `render`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from saelab.reports.render import esc, highlight_tokens, latent_link
from saelab.textsets import TextSet
from saelab.ui.loader import get_model, get_sae
from saelab.ui.progress import streamlit_bar
from saelab.ui.textsets import builtin_set, dataset_names, upload_columns, upload_set  # noqa: F401  (the page reads sets here)

if TYPE_CHECKING:
    from saelab.probing.report import ProbeReport

# The menu's named tasks (issue 5 §1); every other sae-probes set is listed after them.
TASKS: dict[str, str] = {
    "92_glue_sst2": "Sentiment (SST-2)",
    "96_spam_is": "Spam",
    "95_toxic_is": "Toxicity",
    "106_hate_hate": "Hate speech",
    "97_news_class": "News topic (4 classes)",
    "102_twt_emotion": "Emotion (4 classes)",
    "65_high-school": "Compound word: 'high school'",
    "158_code_C": "Code language: C",
    "159_code_Python": "Code language: Python",
    "100_news_fake": "Fake news",
    "94_ai_gen": "AI-generated text",
    "87_glue_cola": "Grammatical acceptability (CoLA)",
    "4_hist_fig_age": "Historical figure's age (numeric)",
}


def builtin_names() -> list[str]:
    names = dataset_names()
    return [n for n in TASKS if n in names] + [n for n in names if n not in TASKS]


def task_label(name: str) -> str:
    return f"{TASKS[name]} · {name}" if name in TASKS else name


def run_with_bar(cfg: Any, textset: TextSet, handle: Any, loaded_sae: Any, labels: dict[int, str]) -> ProbeReport:
    """`run_probe` with a progress bar naming the phase."""
    from saelab.probing.run import run_probe

    with streamlit_bar("Extracting features…") as progress:
        return run_probe(
            cfg, handle=handle, loaded_sae=loaded_sae, textset=textset, latent_labels=labels, progress=progress
        )


@st.cache_data(show_spinner=False, max_entries=256)
def latent_tokens(
    sae_path: str, spec: str, text: str, latents: tuple[int, ...], max_tokens: int
) -> tuple[list[str], Any]:
    """Tokens of `text` and their activations [n_tokens, len(latents)] (tokenised as the probe's features were).

    Cached: the page highlights up to 50 examples, and every widget rerun would otherwise repeat their forwards.
    """
    from saelab.probing.feature_sources import latent_token_activations

    handle, loaded = get_model(spec), get_sae(sae_path, spec)
    return latent_token_activations(handle, loaded, text, list(latents), max_tokens=max_tokens)


def pair_ranking(ctx: Any, data: bytes, col_a: str, col_b: str, seed: int) -> dict[str, Any]:
    """Paired-contrast latent ranking of two text columns of an uploaded CSV, for the page's table."""
    from saelab.probing.pairs import FORMULA, rank_pairs, read_pairs

    a, b, notes = read_pairs(data, col_a, col_b, seed=seed)
    rows = rank_pairs(ctx.handle, ctx.loaded, a, b, labels=ctx.labels)
    table = [{**r, "weight": r["mean_abs_delta"], "importance": r["score"], "favours": ""} for r in rows]
    return {"rows": table, "notes": notes, "n": len(a), "formula": FORMULA}


def export_bytes(report: ProbeReport, textset: TextSet | None) -> dict[str, bytes]:
    """The export's files as bytes for download buttons (written to a temporary folder first)."""
    from saelab.reports.probing import export

    with tempfile.TemporaryDirectory() as tmp:
        paths = export(report, tmp, textset=textset)
        return {kind: Path(p).read_bytes() for kind, p in paths.items()}


def top_latent_table(rows: list[dict[str, Any]]) -> str:
    """HTML table of the probe's top latents: link into the Feature Explorer, proxy label, weight."""
    head = "<tr><th>#</th><th>latent</th><th>label (proxy)</th><th>weight / mean |Δ|</th><th>favours</th></tr>"
    body = []
    for r in rows:
        link = latent_link(r["latent"]) if "latent" in r else esc(r["name"])
        weight = r.get("weight", r["importance"])
        body.append(
            f"<tr><td>{r['rank']}</td><td>{link}</td><td>{esc(r.get('label', ''))}</td>"
            f"<td>{weight:+.3f}</td><td>{esc(r.get('favours', ''))}</td></tr>"
        )
    return f'<table style="border-collapse:collapse;font-size:0.9em">{head}{"".join(body)}</table>'


def example_html(row: dict[str, Any], tokens: list[str], per_latent: list[tuple[int, list[float], float]]) -> str:
    """One test text: its verdict, then one highlighted line per top latent (shade ∝ activation / latent max)."""
    verdict = "✅" if row.get("correct") else "❌"
    out = [
        f'<div style="margin:.6rem 0 .2rem 0"><b>{verdict} true {esc(row["true"])} · predicted {esc(row["pred"])}'
        f"</b> (max p {row.get('p_max', float('nan')):.2f}, text #{row['index']})</div>"
    ]
    for latent, values, max_value in per_latent:
        out.append(f'<div style="font-size:.8em;color:#59636e">{latent_link(latent)}</div>')
        out.append(highlight_tokens(tokens, values, max_value))
    return "".join(out)


def highlighted_example(sae_path: str, spec: str, row: dict[str, Any], latents: list[int], max_tokens: int) -> str:
    """`example_html` for one prediction row: its text's activations of `latents` (cached forward), each shaded
    against that latent's largest value in the text."""
    tokens, acts = latent_tokens(sae_path, spec, row["text"], tuple(latents), max_tokens)
    per = [(lat, acts[:, j].tolist(), max(float(acts[:, j].max(initial=0)), 1e-6)) for j, lat in enumerate(latents)]
    return example_html(row, tokens, per)
