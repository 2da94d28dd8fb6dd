"""Streamlit pieces for the steering-evaluation page: the results view (tables, figures, export) shared by a
fresh run and a loaded result file, and a progress callback that drives an `st.progress` bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from saelab.reports.steering_eval_figures import detox_figure, method_table_figure, score_vs_factor_figure

ROOT = Path(__file__).resolve().parents[2]
SAVED_EVAL = ROOT / "bench" / "results" / "steer_eval.json"
SAVED_DETOX = ROOT / "bench" / "results" / "detox.json"


def _fmt_p(p: Any) -> str:
    return "—" if p is None else f"{p:.3g}"


def show_eval(result: dict[str, Any], *, key: str) -> None:
    """Summary table with CIs, paired tests, figures, per-concept choices, notes and a JSON download."""
    judge = result.get("judge") or {}
    proxy = judge.get("proxy", True)
    tag = "PROXY judge ratings" if proxy else f"LLM judge: {judge.get('judge')}"
    cfg = result.get("config", {})
    st.markdown(f"**{tag}** · {result.get('formulas', {}).get('score', '')}")
    st.caption(
        f"{len(cfg.get('concepts', []))} concepts · factors {cfg.get('factors')} · {cfg.get('n_instructions')} "
        f"instructions (select ids {result.get('select_ids')}, report ids {result.get('report_ids')}) · "
        f"{cfg.get('max_new_tokens')} new tokens · seed {cfg.get('seed')} · {result.get('elapsed_s')} s"
    )
    summary = pd.DataFrame(result["summary"])
    if not summary.empty:
        summary = summary.rename(
            columns={"score": "score (report half)", "ci_low": "95% CI low", "ci_high": "95% CI high"}
        )
        st.dataframe(summary, hide_index=True, key=f"{key}_summary")
        st.caption(result.get("formulas", {}).get("ci", ""))
    st.plotly_chart(method_table_figure(result), key=f"{key}_bars")
    st.plotly_chart(score_vs_factor_figure(result), key=f"{key}_curves")
    if result.get("paired"):
        st.markdown("**Paired tests between methods** (same concept × report-instruction items)")
        paired = pd.DataFrame(result["paired"])
        for col in ("wilcoxon_p", "ttest_p"):
            if col in paired:
                paired[col] = paired[col].map(_fmt_p)
        st.dataframe(paired, hide_index=True, key=f"{key}_paired")
        st.caption(result.get("formulas", {}).get("paired", ""))
    with st.expander("Per concept: chosen factor and scores"):
        st.dataframe(pd.DataFrame(result["per_concept"]), hide_index=True, key=f"{key}_per_concept")
        st.caption(result.get("formulas", {}).get("selection", ""))
    with st.expander("Judge formulas and thresholds"):
        st.json(judge)
    with st.expander("Sample outputs (first instruction of each method at its chosen factor)"):
        chosen = result.get("chosen", {})
        rows = [
            {k: it[k] for k in ("concept", "method", "factor", "instruction_id", "score", "output")}
            for it in result["items"]
            if it["half"] == "report"
            and it["factor"] == chosen.get(it["concept"], {}).get(it["method"])
            and it["instruction_id"] == result["report_ids"][0]
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"{key}_samples")
    for note in result.get("notes", []):
        st.info(note)
    st.download_button(
        "Export result JSON",
        json.dumps(result, indent=1),
        file_name="steer_eval.json",
        mime="application/json",
        key=f"{key}_download",
    )


def show_detox(result: dict[str, Any], *, key: str) -> None:
    """The tiers table, the toxicity-vs-fluency plot, the chosen latents and a JSON download."""
    st.dataframe(pd.DataFrame(result["rows"]), hide_index=True, key=f"{key}_rows")
    st.plotly_chart(detox_figure(result), key=f"{key}_fig")
    clf = result.get("classifier", {})
    st.caption(
        f"Toxicity: {clf.get('kind')}, trained on {clf.get('trained_on')}; held-out AUROC "
        f"{clf.get('heldout_auroc', float('nan')):.3f} (n={clf.get('heldout_n')}). "
        + " ".join(f"{k}: {v}." for k, v in result.get("formulas", {}).items())
    )
    st.markdown("**Latents steered against** (ranked by AUROC, offensive vs clean)")
    st.dataframe(pd.DataFrame(result["latents"]), hide_index=True, key=f"{key}_latents")
    with st.expander("Example continuations"):
        st.dataframe(pd.DataFrame(result.get("examples", [])), hide_index=True, key=f"{key}_examples")
    for note in result.get("notes", []):
        st.info(note)
    st.download_button(
        "Export detox JSON",
        json.dumps(result, indent=1),
        file_name="detox.json",
        mime="application/json",
        key=f"{key}_download",
    )


def load_saved(path: Path) -> dict[str, Any] | None:
    """A committed result file, or None when absent or unreadable (a warning says which)."""
    from saelab.errors import SaelabError
    from saelab.storage import read_json

    if not path.exists():
        return None
    try:
        data = read_json(path)
    except SaelabError as err:
        st.warning(str(err))
        return None
    return data if isinstance(data, dict) else None
