"""Statistics of the steering evaluation: AxBench's factor choice on one half of the instructions, the
report-half tables, concept-clustered bootstrap confidence intervals and paired tests between methods.

Every function works on plain item dicts (`EvalResult.items`), so a saved result can be re-summarised.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from saelab.steering.evaluate import EvalConfig


CI_FORMULA = (
    "95 % percentile bootstrap clustered by concept: concepts resampled with replacement, each with all its "
    "(report instruction) items, mean over the resampled items; {n_boot} resamples, seed {seed} "
    "(ci_items_*: items resampled independently, which ignores that items of one concept are alike)"
)
PAIRED_FORMULA = (
    "same (concept, report instruction) items; cluster_t_p: two-sided one-sample t-test over the per-concept mean "
    "differences (the clustered test); cluster_ci: concept-clustered bootstrap 95 % CI of the mean difference; "
    "wilcoxon_p / ttest_p over items (zero differences dropped for Wilcoxon); p-values uncorrected"
)


def cluster_bootstrap_ci(x: np.ndarray, clusters: list[str], n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95 % CI of the mean of `x`, resampling whole clusters (concepts) with replacement."""
    if len(x) == 0:
        return (math.nan, math.nan)
    names = list(dict.fromkeys(clusters))
    idx = {c: np.array([i for i, k in enumerate(clusters) if k == c]) for c in names}
    sums = np.array([x[idx[c]].sum() for c in names])
    counts = np.array([len(idx[c]) for c in names])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(names), size=(n_boot, len(names)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def clustered_test(diff: np.ndarray, clusters: list[str]) -> dict[str, Any]:
    """One-sample t-test over per-cluster mean differences (two-sided)."""
    from scipy.stats import ttest_1samp

    names = list(dict.fromkeys(clusters))
    means = np.array([diff[[i for i, k in enumerate(clusters) if k == c]].mean() for c in names])
    out: dict[str, Any] = {"n_concepts": len(names)}
    if len(means) < 2 or np.ptp(means) < 1e-12:
        out["cluster_t_p"] = None if len(means) < 2 else (1.0 if abs(means.mean()) < 1e-12 else 0.0)
        return out
    out["cluster_t_p"] = float(ttest_1samp(means, 0.0).pvalue)
    return out


def _bootstrap_ci(x: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    if len(x) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired comparison of scores on the same items: mean difference, Wilcoxon and t-test p-values."""
    from scipy.stats import ttest_rel, wilcoxon

    diff = a - b
    out: dict[str, Any] = {"n": int(len(diff)), "mean_diff": float(diff.mean()) if len(diff) else None}
    if len(diff) < 2 or np.allclose(diff, 0):
        out.update(wilcoxon_p=1.0 if len(diff) else None, ttest_p=1.0 if len(diff) else None)
        out["note"] = "all paired differences are zero" if len(diff) else "no paired items"
        return out
    out["wilcoxon_p"] = float(wilcoxon(a, b, zero_method="wilcox").pvalue)
    if np.ptp(diff) < 1e-12:  # every difference equal and non-zero: t is infinite
        out["ttest_p"] = 0.0
        out["note"] = "every paired difference is the same; the t-test p-value is 0 by definition"
        return out
    t = ttest_rel(a, b)
    out["ttest_p"] = float(t.pvalue) if math.isfinite(t.pvalue) else None
    return out


def summarise(items: list[dict], cfg: EvalConfig, select_ids: list[int], report_ids: list[int]) -> dict[str, Any]:
    """Factor choice on the select half, then the report-half tables (see the module docstring)."""
    methods = (["unsteered"] if cfg.include_unsteered else []) + list(cfg.methods)
    chosen: dict[str, dict[str, float | None]] = {c: {} for c in cfg.concepts}
    reported: dict[str, dict[tuple[str, int], dict]] = {m: {} for m in methods}
    per_concept = []
    for concept, method in itertools.product(cfg.concepts, methods):
        rows = [r for r in items if r["concept"] == concept and r["method"] == method]
        if not rows:
            continue
        factors = sorted({r["factor"] for r in rows}, key=lambda f: (f is None, f))
        best, best_score = factors[0], -1.0
        for f in factors:
            sel = [r["score"] for r in rows if r["factor"] == f and r["half"] == "select"]
            s = float(np.mean(sel)) if sel else -1.0
            if s > best_score + 1e-12:
                best, best_score = f, s
        chosen[concept][method] = best
        rep = [r for r in rows if r["factor"] == best and r["half"] == "report"]
        for r in rep:
            reported[method][(concept, r["instruction_id"])] = r
        per_concept.append(
            {
                "concept": concept,
                "method": method,
                "factor": best,
                "select_score": best_score,
                "report_score": float(np.mean([r["score"] for r in rep])) if rep else None,
            }
        )
    summary = []
    for k, method in enumerate(methods):
        rows = list(reported[method].values())
        if not rows:
            continue
        scores = np.array([r["score"] for r in rows])
        lo, hi = cluster_bootstrap_ci(scores, [r["concept"] for r in rows], cfg.n_boot, cfg.seed + k)
        ilo, ihi = _bootstrap_ci(scores, cfg.n_boot, cfg.seed + k)
        summary.append(
            {
                "method": method,
                "score": float(scores.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "ci_items_low": ilo,
                "ci_items_high": ihi,
                "n_concepts": len({r["concept"] for r in rows}),
                "concept_rating": float(np.mean([r["concept_rating"] for r in rows])),
                "relevance": float(np.mean([r["relevance"] for r in rows])),
                "fluency": float(np.mean([r["fluency"] for r in rows])),
                "n_items": len(rows),
            }
        )
    paired = []
    for a, b in itertools.combinations([s["method"] for s in summary], 2):
        keys = sorted(set(reported[a]) & set(reported[b]))
        x = np.array([reported[a][k]["score"] for k in keys])
        y = np.array([reported[b][k]["score"] for k in keys])
        concepts = [k[0] for k in keys]
        row = {"a": a, "b": b, **paired_tests(x, y)}
        if keys:
            row.update(clustered_test(x - y, concepts))
            row["cluster_ci"] = list(cluster_bootstrap_ci(x - y, concepts, cfg.n_boot, cfg.seed))
        paired.append(row)
    curves = []
    for method in methods:
        for half in ("select", "report"):
            rows = [r for r in items if r["method"] == method and r["half"] == half]
            for f in sorted({r["factor"] for r in rows}, key=lambda f: (f is None, f)):
                sub = [r for r in rows if r["factor"] == f]
                curves.append(
                    {
                        "method": method,
                        "factor": f,
                        "half": half,
                        "score": float(np.mean([r["score"] for r in sub])),
                        "concept_rating": float(np.mean([r["concept_rating"] for r in sub])),
                        "relevance": float(np.mean([r["relevance"] for r in sub])),
                        "fluency": float(np.mean([r["fluency"] for r in sub])),
                        "n": len(sub),
                    }
                )
    return {"chosen": chosen, "summary": summary, "per_concept": per_concept, "paired": paired, "curves": curves}


__all__ = ["CI_FORMULA", "PAIRED_FORMULA", "cluster_bootstrap_ci", "clustered_test", "paired_tests", "summarise"]
