"""Typed results of a hypothesis run: one row per hypothesis, one block per method (SAE, baseline).

Everything here is plain data (JSON via `HypothesisResult.to_dict`, back via `from_dict`), documented field by
field, so the page, the CLI, the figures and the exports read the same object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from saelab.hypotheses.validate import HypothesisStats, Validation
from saelab.typed_json import from_checked_dict

PROXY_NOTE = (
    "PROXY: offline, each hypothesis is a keyword rule ('mentions any of: …') found by contrasting the latent's "
    "top-decile texts with texts where it is zero, and texts are annotated by matching those words. HypotheSAEs "
    "uses an LLM to write and to check natural-language hypotheses; configure an endpoint for that."
)


@dataclass
class Hypothesis:
    """One hypothesis and its held-out statistics.

    Attributes:
        rank: 1 = largest |selection coefficient|.
        label: the hypothesis ("mentions any of: …", an LLM sentence, or a word for the baseline).
        source: "keywords" (offline PROXY rule), "llm", or "bag-of-words".
        proxy: True when the label and the annotations come from keyword matching instead of an LLM.
        feature: SAE latent index (SAE method) or vocabulary index (baseline); feature_name says which.
        selection_coef: LASSO / L1-logistic coefficient (standardised feature) or Pearson r.
        terms: the rule's words/phrases ([] for an LLM hypothesis).
        fidelity_f1: F1 of the hypothesis's annotations vs the binarised latent on the validation split
            (None for the baseline, whose hypothesis is the feature itself).
        coefficient, std_err, p_value: from the joint held-out regression (NaN if it was left out).
        significant: p < 0.1 / m.
        prevalence, separation, ci_low, ci_high, n_true: see `saelab.hypotheses.validate.FORMULAS`.
        examples: held-out texts where it holds: {"text", "evidence" (matched terms), "target"}.
    """

    rank: int
    label: str
    source: str
    proxy: bool
    feature: int
    feature_name: str
    selection_coef: float
    terms: list[str]
    fidelity_f1: float | None
    coefficient: float
    std_err: float
    p_value: float
    significant: bool
    prevalence: float
    separation: float
    ci_low: float
    ci_high: float
    n_true: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> Hypothesis:
        """From `asdict()` as saved in a run's JSON (null statistics read back as NaN)."""
        return from_checked_dict(cls, data)

    def row(self) -> dict[str, Any]:
        """A flat row for tables and CSV (no examples)."""
        d = {k: v for k, v in asdict(self).items() if k != "examples"}
        d["terms"] = "; ".join(self.terms)
        return d


@dataclass
class MethodResult:
    """One method's hypotheses validated on the held-out split.

    Attributes:
        method: "sae" (HypotheSAEs) or "bow" (bag-of-words LASSO baseline).
        hypotheses: ranked by |selection coefficient|.
        regression: "ols" or "logit"; r2 / auc: its fit on the held-out texts; threshold = 0.1 / m.
        n_significant: hypotheses with p < threshold. n_test: held-out texts used.
        selection: how features were chosen ({"method", "alpha", "n_nonzero"}).
        redundancy: mean |φ| (pairwise correlation of hypothesis indicators on held-out texts); lower = less
            redundant. n_distinct: hypotheses whose held-out annotations differ from every earlier one.
        notes: what the user should know (dropped hypotheses, ridge, ties, fallbacks).
    """

    method: str
    hypotheses: list[Hypothesis]
    regression: str
    r2: float | None
    auc: float | None
    threshold: float
    n_significant: int
    n_test: int
    selection: dict[str, Any]
    redundancy: float
    n_distinct: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> MethodResult:
        """From `asdict()` as saved in a run's JSON, each hypothesis a `Hypothesis` again."""
        return from_checked_dict(cls, data)

    @property
    def fit_label(self) -> str:
        return f"AUC {self.auc:.3f}" if self.auc is not None else f"R² {self.r2:.3f}"

    def summary(self) -> str:
        return (
            f"{self.n_significant}/{len(self.hypotheses)} significant (p < {self.threshold:.3g}), held-out "
            f"{self.fit_label} on {self.n_test} texts, redundancy mean|φ| {self.redundancy:.3f}"
        )


def redundancy(H: np.ndarray) -> tuple[float, int]:
    """Mean |φ| over pairs of indicator columns that vary, and the number of distinct columns."""
    H = np.asarray(H, dtype=bool)
    distinct = len({col.tobytes() for col in H.T})
    cols = H[:, (H.mean(0) > 0) & (H.mean(0) < 1)].astype(np.float64)
    if cols.shape[1] < 2:
        return 0.0, distinct
    C = np.corrcoef(cols.T)
    iu = np.triu_indices_from(C, k=1)
    return float(np.nanmean(np.abs(C[iu]))), distinct


def build_method(
    method: str, rows: list[dict[str, Any]], H: np.ndarray, val: Validation, selection: dict[str, Any], notes: list[str]
) -> MethodResult:
    """Merge per-hypothesis descriptions (`rows`) with their validation statistics."""
    hyps = []
    for row, st in zip(rows, val.stats, strict=True):
        hyps.append(Hypothesis(**row, **_stats_fields(st)))
    red, distinct = redundancy(H)
    return MethodResult(
        method=method,
        hypotheses=hyps,
        regression=val.model,
        r2=val.r2,
        auc=val.auc,
        threshold=val.threshold,
        n_significant=val.n_significant,
        n_test=val.n,
        selection=selection,
        redundancy=red,
        n_distinct=distinct,
        notes=notes + val.notes,
    )


def _stats_fields(st: HypothesisStats) -> dict[str, Any]:
    return {
        "coefficient": st.coefficient,
        "std_err": st.std_err,
        "p_value": st.p_value,
        "significant": st.significant,
        "prevalence": st.prevalence,
        "separation": st.separation,
        "ci_low": st.separation_ci[0],
        "ci_high": st.separation_ci[1],
        "n_true": st.n_true,
    }


def signal_kept(method, reference: dict[str, Any]) -> str:
    """One line: how much of the selected latents' held-out signal their descriptions keep."""
    if not reference:
        return ""
    if reference.get("auc") is not None and method.auc is not None:
        fit = f"AUC {method.auc:.3f} vs {reference['auc']:.3f}"
    else:
        r2_d, r2_l = method.r2, reference.get("r2")
        share = f" ({r2_d / r2_l:.0%} of it)" if r2_d is not None and r2_l else ""
        fit = f"R² {r2_d:.3f} vs {r2_l:.3f}{share}" if r2_d is not None and r2_l is not None else "fit –"
    return (
        f"Signal kept by the descriptions: {method.n_significant} significant vs {reference['n_significant']} for the "
        f"latents themselves (fires: a > 0), held-out {fit}."
    )
