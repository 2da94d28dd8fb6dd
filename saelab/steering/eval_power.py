"""Calibrating the proxy concept judge and sizing a steering evaluation by simulation (issue 17 item 2).

* `calibrate(items, fpr, thresholds)`: the proxy's concept margin has a different null level per concept (a
  cheerful unsteered answer sits close to "happiness" examples). Unsteered outputs of CALIBRATION instructions
  (never selected or reported on; `concepts.CALIBRATION_INSTRUCTIONS`) give each concept's null margins; its
  threshold for rating 1 becomes the smallest t with #{calibration margins ≥ t} ≤ ⌊fpr·n⌋ (never below the
  fixed one), rating 2 needs t + (concept_hi − concept_lo). Every item's concept rating and score are recomputed
  from its stored margin; the false-positive rate (unsteered outputs rated ≥ 1) is reported before and after,
  with Wilson 95 % intervals.
* `power_table(items, a, b, sizes)`: from a pilot's paired differences a − b per concept, the probability
  that a run with C concepts × I report instructions finds a > b with the clustered test (one-sided view of the
  two-sided t-test over per-concept mean differences, p < alpha): concepts and, within each, instructions are
  resampled with replacement from the pilot (`n_sim` simulated runs per size, seeded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from saelab.steering.ratings import harmonic_score

CALIBRATION = "calibration"  # the items' method and half for calibration outputs
CALIBRATION_ID0 = 1000  # their instruction ids: 1000 + index into CALIBRATION_INSTRUCTIONS
CALIBRATION_FORMULA = (
    "per concept c: lo_c = max(concept_lo, smallest t with #{calibration margins ≥ t} ≤ ⌊fpr·n⌋), "
    "hi_c = lo_c + (concept_hi − concept_lo); concept rating 2 if margin ≥ hi_c, 1 if ≥ lo_c; "
    "false-positive rate = share of unsteered outputs with concept rating ≥ 1 (Wilson 95 % interval)"
)


def _threshold(margins: np.ndarray, fpr: float) -> float:
    """Smallest t (just above an observed margin) such that at most ⌊fpr·n⌋ margins are ≥ t."""
    m = np.sort(margins)[::-1]
    k = int(math.floor(fpr * len(m)))
    return float(np.nextafter(m[k], np.inf)) if k < len(m) else -math.inf


def _rate(rows: list[dict]) -> dict[str, Any]:
    from statsmodels.stats.proportion import proportion_confint

    n, k = len(rows), sum(r["concept_rating"] >= 1 for r in rows)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson") if n else (math.nan, math.nan)
    return {"rate": k / n if n else math.nan, "k": k, "n": n, "ci": [float(lo), float(hi)]}


def calibrate(items: list[dict], fpr: float, thresholds: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    """Re-rate every item's concept with per-concept thresholds set on the calibration items (module docstring).
    Returns (new items, report); items without a stored concept margin keep their ratings."""
    base_lo, base_hi = float(thresholds.get("concept_lo", 0.03)), float(thresholds.get("concept_hi", 0.09))
    gap = base_hi - base_lo
    per: dict[str, dict[str, float]] = {}
    for concept in dict.fromkeys(r["concept"] for r in items):
        m = np.array([r["raw"]["concept_margin"] for r in items if r["concept"] == concept
                      and r["method"] == CALIBRATION and "concept_margin" in (r.get("raw") or {})])  # fmt: skip
        if len(m):
            lo = max(base_lo, _threshold(m, fpr))
            per[concept] = {"lo": lo, "hi": lo + gap, "n": int(len(m)), "calibration_max": float(m.max())}
    unsteered_before = [r for r in items if r["method"] == "unsteered"]
    before = _rate(unsteered_before)
    out = []
    for r in items:
        margin = (r.get("raw") or {}).get("concept_margin")
        t = per.get(r["concept"])
        if t is None or margin is None or not math.isfinite(margin):
            out.append(r)
            continue
        c = 2 if margin >= t["hi"] else 1 if margin >= t["lo"] else 0
        out.append({**r, "concept_rating": c, "score": harmonic_score(c, r["relevance"], r["fluency"]),
                    "concept_rating_fixed": r["concept_rating"]})  # fmt: skip
    after = [r for r in out if r["method"] == "unsteered"]
    report = {
        "target_fpr": fpr,
        "thresholds": per,
        "fpr_before": before,
        "fpr_after": _rate(after),
        "fpr_after_report_half": _rate([r for r in after if r["half"] == "report"]),
        "fpr_calibration_set": _rate([r for r in out if r["method"] == CALIBRATION]),
        "formula": CALIBRATION_FORMULA,
    }
    return out, report


def paired_by_concept(items: list[dict], a: str, b: str, half: str | None = None) -> dict[str, np.ndarray]:
    """{concept: score differences a − b on the same instructions} (baselines: no factor; both halves unless
    `half` is given)."""
    out: dict[str, np.ndarray] = {}
    for concept in dict.fromkeys(r["concept"] for r in items):
        rows = [r for r in items if r["concept"] == concept and (half is None or r["half"] == half)]
        sa = {r["instruction_id"]: r["score"] for r in rows if r["method"] == a}
        sb = {r["instruction_id"]: r["score"] for r in rows if r["method"] == b}
        keys = sorted(set(sa) & set(sb))
        if keys:
            out[concept] = np.array([sa[k] - sb[k] for k in keys], dtype=float)
    return out


def power_table(diffs: dict[str, np.ndarray], sizes: list[tuple[int, int]], *, alpha: float = 0.05,
                n_sim: int = 2000, seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Simulated power of the clustered test for each (concepts, report instructions) size (module docstring)."""
    from scipy.stats import ttest_1samp

    pools = [v for v in diffs.values() if len(v)]
    rng = np.random.default_rng(seed)
    rows = []
    for n_c, n_i in sizes:
        hits = 0
        for _ in range(n_sim):
            picks = rng.integers(0, len(pools), n_c)
            means = np.array([pools[p][rng.integers(0, len(pools[p]), n_i)].mean() for p in picks])
            if np.ptp(means) < 1e-12:
                hits += bool(means.mean() > 0)
                continue
            t = ttest_1samp(means, 0.0)
            hits += bool(t.pvalue < alpha and means.mean() > 0)
        rows.append({"concepts": n_c, "report_instructions": n_i, "items": n_c * n_i, "power": hits / n_sim})
    return rows


def pilot_effect(diffs: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean difference, item SD and the SD of per-concept means in the pilot (what the power depends on)."""
    allv = np.concatenate(list(diffs.values())) if diffs else np.zeros(0)
    means = np.array([v.mean() for v in diffs.values()]) if diffs else np.zeros(0)
    return {"mean_diff": float(allv.mean()) if len(allv) else math.nan,
            "sd_items": float(allv.std(ddof=1)) if len(allv) > 1 else math.nan,
            "sd_concept_means": float(means.std(ddof=1)) if len(means) > 1 else math.nan,
            "concepts": len(diffs), "items": int(len(allv))}  # fmt: skip


__all__ = ["CALIBRATION", "CALIBRATION_FORMULA", "calibrate", "paired_by_concept", "pilot_effect", "power_table"]
