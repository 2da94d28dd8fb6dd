"""Streamlit pieces for the steering-evaluation page: the runs as queued jobs (`saelab.jobs`), and the results
view (tables, figures, export) shared by a fresh run and a committed result file (read back into the same types)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import streamlit as st

from saelab.jobs import Job, default_queue
from saelab.reports.steering_eval_figures import detox_figure, method_table_figure, score_vs_factor_figure
from saelab.steering.detox import DetoxConfig, DetoxResult, run_detox
from saelab.steering.eval_result import EvalResult
from saelab.steering.evaluate import EvalConfig, run_eval

if TYPE_CHECKING:
    from saelab.models import ModelHandle
    from saelab.sae.files import LoadedSAE

Result = TypeVar("Result", EvalResult, DetoxResult)

ROOT = Path(__file__).resolve().parents[2]
SAVED_EVAL = ROOT / "bench" / "results" / "steer_eval.json"
SAVED_DETOX = ROOT / "bench" / "results" / "detox.json"


def _request(loaded: LoadedSAE | None, cfg: EvalConfig | DetoxConfig) -> tuple[str | None, str]:
    """What makes two runs identical: the SAE's folder and every setting."""
    path = str(Path(loaded.path).resolve()) if loaded is not None else None
    return path, json.dumps(cfg.to_dict(), sort_keys=True)


def submit_eval(handle: ModelHandle, loaded: LoadedSAE | None, cfg: EvalConfig) -> Job:
    """Queue `run_eval` (or return the identical run already queued or running); cancelable between batches."""
    return default_queue().submit(
        "steer_eval",
        _request(loaded, cfg),
        f"Steering evaluation ({len(cfg.concepts)} concept{'s' * (len(cfg.concepts) != 1)}, {cfg.n_rows()} rows)",
        lambda ctx: run_eval(handle, loaded, cfg, progress=ctx.progress),
    )


def submit_detox(handle: ModelHandle, loaded: LoadedSAE | None, cfg: DetoxConfig) -> Job:
    """Queue `run_detox` (or return the identical run already queued or running); cancelable between steps."""
    return default_queue().submit(
        "detox",
        _request(loaded, cfg),
        f"Detox tiers ({cfg.k_latents} latents, {cfg.n_prompts} prompts)",
        lambda ctx: run_detox(handle, loaded, cfg, progress=ctx.progress),
    )


def _fmt_p(p: Any) -> str:
    return "—" if p is None else f"{p:.3g}"


def show_eval(result: EvalResult, *, key: str) -> None:
    """Summary table with CIs, paired tests, figures, per-concept choices, notes and a JSON download."""
    tag = "PROXY judge ratings" if result.proxy else f"LLM judge: {result.judge.get('judge')}"
    cfg = result.config  # the EvalConfig as saved (an older file may lack a newer field)
    st.markdown(f"**{tag}** · {result.formulas.get('score', '')}")
    st.caption(
        f"{len(cfg.get('concepts', []))} concepts · factors {cfg.get('factors')} · {cfg.get('n_instructions')} "
        f"instructions (select ids {result.select_ids}, report ids {result.report_ids}) · "
        f"{cfg.get('max_new_tokens')} new tokens · seed {cfg.get('seed')} · {result.elapsed_s} s"
    )
    summary = pd.DataFrame(result.summary)
    if not summary.empty:
        summary = summary.rename(
            columns={"score": "score (report half)", "ci_low": "95% CI low", "ci_high": "95% CI high"}
        )
        st.dataframe(summary, hide_index=True, key=f"{key}_summary")
        st.caption(result.formulas.get("ci", ""))
    st.plotly_chart(method_table_figure(result), key=f"{key}_bars")
    st.plotly_chart(score_vs_factor_figure(result), key=f"{key}_curves")
    if result.paired:
        st.markdown("**Paired tests between methods** (same concept × report-instruction items)")
        paired = pd.DataFrame(result.paired)
        for col in ("cluster_t_p", "wilcoxon_p", "ttest_p"):
            if col in paired:
                paired[col] = paired[col].map(_fmt_p)
        st.dataframe(paired, hide_index=True, key=f"{key}_paired")
        st.caption(result.formulas.get("paired", ""))
    with st.expander("Per concept: chosen factor and scores"):
        st.dataframe(pd.DataFrame(result.per_concept), hide_index=True, key=f"{key}_per_concept")
        st.caption(result.formulas.get("selection", ""))
    cal = result.judge.get("calibration")
    if cal:
        before, after = cal["fpr_before"], cal["fpr_after"]
        st.caption(
            f"PROXY concept judge calibrated per concept on unsteered outputs of separate instructions (target "
            f"false-positive rate {cal['target_fpr']:g}): unsteered outputs rated as showing the concept "
            f"{after['rate']:.1%} [{after['ci'][0]:.1%}, {after['ci'][1]:.1%}] (fixed thresholds: {before['rate']:.1%})."
            f" {result.formulas.get('calibration', '')}"
        )
    with st.expander("Judge formulas and thresholds"):
        st.json(result.judge)
    with st.expander("Sample outputs (first instruction of each method at its chosen factor)"):
        rows = [
            {k: it[k] for k in ("concept", "method", "factor", "instruction_id", "score", "output")}
            for it in result.items
            if it["half"] == "report"
            and it["factor"] == result.chosen.get(it["concept"], {}).get(it["method"])
            and it["instruction_id"] == result.report_ids[0]
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"{key}_samples")
    for note in result.notes:
        st.info(note)
    st.download_button(
        "Export result JSON",
        json.dumps(result.to_dict(), indent=1),
        file_name="steer_eval.json",
        mime="application/json",
        key=f"{key}_download",
    )


def show_detox(result: DetoxResult, *, key: str) -> None:
    """The tiers table, the toxicity-vs-fluency plot, the chosen latents and a JSON download."""
    st.dataframe(pd.DataFrame(result.rows), hide_index=True, key=f"{key}_rows")
    st.plotly_chart(detox_figure(result), key=f"{key}_fig")
    clf = result.classifier
    st.caption(
        f"Toxicity: {clf.get('kind')}, trained on {clf.get('trained_on')}; held-out AUROC "
        f"{clf.get('heldout_auroc', float('nan')):.3f} (n={clf.get('heldout_n')}). "
        + " ".join(f"{k}: {v}." for k, v in result.formulas.items())
    )
    st.markdown("**Latents steered against** (ranked by AUROC, offensive vs clean)")
    st.dataframe(pd.DataFrame(result.latents), hide_index=True, key=f"{key}_latents")
    with st.expander("Example continuations"):
        st.dataframe(pd.DataFrame(result.examples), hide_index=True, key=f"{key}_examples")
    for note in result.notes:
        st.info(note)
    st.download_button(
        "Export detox JSON",
        json.dumps(result.to_dict(), indent=1),
        file_name="detox.json",
        mime="application/json",
        key=f"{key}_download",
    )


def load_saved(path: Path, kind: type[Result]) -> Result | None:
    """A committed result file read back as `kind` (`EvalResult` or `DetoxResult`), or None when it is absent or
    not such a result (a warning names the file and what is wrong)."""
    if not path.exists():
        return None
    try:
        return kind.load(path)
    except Exception as err:
        st.warning(str(err))
        return None
