"""Probe metrics: macro-F1, accuracy, AUROC, confusion matrix, R², bootstrap CIs, low-N learning curve and the
maximum-softmax-probability (MSP) baseline for catching the probe's own errors and out-of-distribution texts.

Formulas (also in `FORMULAS`, shown in reports):
    macro-F1   mean over classes c of F1_c = 2·P_c·R_c / (P_c + R_c)
    accuracy   mean(ŷ = y)
    AUROC      binary: area under the ROC of p(class 1); multi-class: mean one-vs-rest AUROC over classes
    R²         1 − Σ(y − ŷ)² / Σ(y − ȳ)²
    bootstrap  resample the test set with replacement B times (seeded), recompute the metric, take the
               2.5th and 97.5th percentiles (percentile interval, 95 %)
    MSP        s(x) = max_c p(c | x); error detection: AUROC / AUPR of s separating correct (positive) from wrong
               predictions (Hendrycks & Gimpel 2017); OOD: AUROC of s separating in-distribution test texts
               (positive) from another data set's texts
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMULAS: dict[str, str] = {
    "macro_f1": "mean over classes c of 2·P_c·R_c / (P_c + R_c)",
    "accuracy": "mean(ŷ = y)",
    "auroc": "binary: ROC AUC of p(class 1); multi-class: mean one-vs-rest ROC AUC",
    "r2": "1 − Σ(y − ŷ)² / Σ(y − ȳ)²",
    "bootstrap": "95 % percentile interval over B test-set resamples with replacement (seeded)",
    "msp_error": "s = max_c p(c|x); AUROC/AUPR of s for correct (positive) vs misclassified test texts",
    "msp_ood": "s = max_c p(c|x); AUROC of s for in-distribution test texts (positive) vs another set's texts",
    "learning_curve": "test macro-F1 after fitting on N stratified training texts, N = 24, 48, 96, … (seeded)",
}


def auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Binary: AUROC of proba[:, 1]; multi-class: macro one-vs-rest. NaN when a class is missing from y_true."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = proba.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y_true, proba[:, 1]))
    scores = [roc_auc_score(y_true == c, proba[:, c]) for c in range(n_classes) if c in present]
    return float(np.mean(scores))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """macro-F1, accuracy, AUROC and the confusion matrix (rows = true class, columns = predicted).

    `proba` columns are class ids 0 … n_classes − 1; the prediction is the argmax."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    pred = np.argmax(proba, axis=1)
    labels = np.arange(proba.shape[1])
    return {
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=labels, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "auroc": auroc(y_true, proba),
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """R², mean absolute error and Pearson r."""
    from sklearn.metrics import mean_absolute_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    r = float(np.corrcoef(y_true, pred)[0, 1]) if np.std(pred) > 0 and np.std(y_true) > 0 else float("nan")
    return {
        "r2": float(r2_score(y_true, pred)),
        "mae": float(mean_absolute_error(y_true, pred)),
        "pearson_r": r,
        "n": int(len(y_true)),
    }


def bootstrap_ci(
    metric: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of `metric(idx)` over `n_boot` resamples `idx` of range(n) with replacement.

    Resamples where the metric is NaN (e.g. AUROC with one class drawn) are skipped."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(n_boot)):
        v = metric(rng.integers(0, n, n))
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def macro_f1_fast(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 from a bincount confusion matrix (same value as sklearn's, zero_division=0; for the bootstrap)."""
    cm = np.bincount(y_true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def _auroc_fast(y_true: np.ndarray, proba: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_classes = proba.shape[1]
    cols = [1] if n_classes == 2 else range(n_classes)
    out = []
    for c in cols:
        pos = y_true == c
        n_pos = int(pos.sum())
        if n_pos == 0 or n_pos == len(pos):
            if n_classes == 2:
                return float("nan")
            continue
        r = rankdata(proba[:, c])
        out.append((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(pos) - n_pos)))
    return float(np.mean(out)) if out else float("nan")


def classification_cis(
    y_true: np.ndarray, proba: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Bootstrap 95 % CIs for macro-F1, accuracy and AUROC on the test set (same resamples for each metric)."""
    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = np.argmax(proba, axis=1)
    n_classes = proba.shape[1]
    n = len(y_true)
    return {
        "macro_f1": bootstrap_ci(lambda i: macro_f1_fast(y_true[i], pred[i], n_classes), n, n_boot=n_boot, seed=seed),
        "accuracy": bootstrap_ci(lambda i: float(np.mean(y_true[i] == pred[i])), n, n_boot=n_boot, seed=seed),
        "auroc": bootstrap_ci(lambda i: _auroc_fast(y_true[i], proba[i]), n, n_boot=n_boot, seed=seed),
    }


def regression_cis(
    y_true: np.ndarray, pred: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    from sklearn.metrics import r2_score

    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return {"r2": bootstrap_ci(lambda i: float(r2_score(y_true[i], pred[i])), len(y_true), n_boot=n_boot, seed=seed)}


def _binary_scores(positive: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return {
            "auroc": float("nan"),
            "aupr": float("nan"),
            "n_pos": int(positive.sum()),
            "n_neg": int((~positive).sum()),
        }
    return {
        "auroc": float(roc_auc_score(positive, score)),
        "aupr": float(average_precision_score(positive, score)),
        "n_pos": int(positive.sum()),
        "n_neg": int((~positive).sum()),
    }


def msp_error_detection(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """How well max softmax probability separates the probe's correct predictions (positive) from its errors.

    NaN AUROC when the probe makes no error (or only errors) on the test set."""
    proba = np.asarray(proba, dtype=np.float64)
    correct = np.argmax(proba, axis=1) == np.asarray(y_true)
    return _binary_scores(correct, proba.max(axis=1))


def msp_ood_detection(proba_in: np.ndarray, proba_out: np.ndarray) -> dict[str, float]:
    """AUROC of max softmax probability for in-distribution texts (positive) against out-of-distribution texts."""
    s_in = np.asarray(proba_in, dtype=np.float64).max(axis=1)
    s_out = np.asarray(proba_out, dtype=np.float64).max(axis=1)
    return _binary_scores(np.r_[np.ones(len(s_in), bool), np.zeros(len(s_out), bool)], np.r_[s_in, s_out])


@dataclass
class CurvePoint:
    n_train: int
    score: float


def learning_sizes(n_available: int, start: int = 24) -> list[int]:
    """N = start, 2·start, 4·start, … below n_available, then n_available itself."""
    sizes, n = [], start
    while n < n_available:
        sizes.append(n)
        n *= 2
    sizes.append(n_available)
    return sizes


def stratified_subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` indices into y, drawn per class in proportion (at least 2 of every class), seeded; sorted."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if n >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    want = np.maximum(2, np.floor(counts / counts.sum() * n).astype(int))
    want = np.minimum(want, counts)
    while want.sum() < n:  # hand out the remainder to the classes with most left
        want[np.argmax(counts - want)] += 1
    picked = [
        rng.choice(np.flatnonzero(y == c), size=int(w), replace=False) for c, w in zip(classes, want, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def learning_curve(
    fit_score: Callable[[np.ndarray], float], y_train: np.ndarray, *, start: int = 24, seed: int = 0
) -> list[CurvePoint]:
    """`fit_score(train_idx)` (fit on those training rows, score on the test set) at N = 24, 48, 96, …

    For classes the subsample is stratified; numbers use a seeded random subsample."""
    y_train = np.asarray(y_train)
    numeric = y_train.dtype.kind == "f"
    out = []
    for n in learning_sizes(len(y_train), start):
        if numeric:
            idx = np.sort(np.random.default_rng(seed).permutation(len(y_train))[:n])
        else:
            idx = stratified_subsample(y_train, n, seed)
        out.append(CurvePoint(int(len(idx)), float(fit_score(idx))))
    return out
