"""Scoring a method's head scores against the activation-patching reference.

Reference circuit: the top `top_frac` of heads by |reference effect| (k = ceil(top_frac × n_heads_total), ≥ 1).
    ROC-AUC       of |method score| separating reference heads from the rest (ties count one half).
    P@k = R@k     precision and recall of the method's k highest |scores| (both sets have k heads, so the two
                  are equal); tied scores at the cut are taken in expectation over a random tie-break.
    natural P/R   for methods with a natural circuit (discrete-SAE: score > 0): its precision and recall.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

FORMULAS = {
    "reference": "reference circuit = the k = ceil(top_frac × n_heads) heads with the largest |activation-patching "
    "effect| (clean→corrupted) on all prompts of the run",
    "roc_auc": "ROC-AUC of |method score| for reference membership (ties count 1/2)",
    "precision_at_k": "P@k = R@k = E[#reference heads among the method's top-k by |score|] / k (ties at the cut "
    "broken at random, in expectation)",
    "natural": "discrete-SAE's own circuit = heads with score > 0; precision = |own ∩ ref| / |own|, "
    "recall = |own ∩ ref| / k",
}


def reference_mask(effect: np.ndarray, top_frac: float) -> np.ndarray:
    """Bool mask of the reference circuit: the top ceil(top_frac × n) heads by |effect|."""
    flat = np.abs(np.asarray(effect, dtype=float)).ravel()
    k = max(1, math.ceil(top_frac * flat.size))
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(effect))


def roc_auc(scores: np.ndarray, mask: np.ndarray) -> float:
    y = np.asarray(mask).ravel()
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.abs(np.asarray(scores, dtype=float)).ravel()))


def precision_at_k(scores: np.ndarray, mask: np.ndarray, k: int | None = None) -> float:
    """Expected fraction of the reference among the top-k |scores| (random tie-break at the cut)."""
    s = np.abs(np.asarray(scores, dtype=float)).ravel()
    y = np.asarray(mask).ravel()
    k = int(y.sum()) if k is None else int(k)
    if k <= 0:
        return float("nan")
    cut = np.sort(s)[::-1][k - 1]
    above, tied = s > cut, s == cut
    need = k - int(above.sum())
    expected_tp = float(y[above].sum()) + need * float(y[tied].sum()) / max(int(tied.sum()), 1)
    return expected_tp / k


def evaluate_scores(scores: np.ndarray, mask: np.ndarray, *, natural: bool = False) -> dict[str, float]:
    """ROC-AUC, P@k (= R@k) and, with `natural`, precision/recall of the heads with score > 0."""
    out = {"roc_auc": roc_auc(scores, mask), "precision_at_k": precision_at_k(scores, mask)}
    out["recall_at_k"] = out["precision_at_k"]
    if natural:
        own = np.asarray(scores).ravel() > 0
        y = np.asarray(mask).ravel()
        tp = float((own & y).sum())
        out["natural_size"] = float(own.sum())
        out["natural_precision"] = tp / float(own.sum()) if own.any() else float("nan")
        out["natural_recall"] = tp / float(y.sum()) if y.any() else float("nan")
    return out


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "n"}} over repeated runs (std with ddof=1; NaNs dropped)."""
    keys = list(dict.fromkeys(k for r in runs for k in r))
    out = {}
    for key in keys:
        vals = np.array([r[key] for r in runs if key in r and np.isfinite(r[key])], dtype=float)
        out[key] = {
            "mean": float(vals.mean()) if vals.size else float("nan"),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else float("nan"),
            "n": int(vals.size),
        }
    return out
