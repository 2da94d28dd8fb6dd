"""Held-out validation of hypotheses: one regression of the target on all hypothesis indicators.

HypotheSAEs step 5, fitted with statsmodels as HypotheSAEs does (`sm.OLS`, `sm.Logit`):
  * numeric target → OLS  y = b0 + Σ_j b_j h_j + e;  Var(b) = s² (XᵀX)⁻¹, s² = RSS / (n − p);
    t = b / se, two-sided p from Student's t with n − p degrees of freedom; R² = 1 − RSS / TSS.
  * binary target → Logit  P(y=1) = σ(b0 + Σ_j b_j h_j), maximum likelihood (Newton); Var(b) = (XᵀWX)⁻¹ with
    W = diag(p(1−p)) (the inverse Hessian); z = b / se, two-sided normal p (Wald); AUC of the fitted
    probabilities (Mann–Whitney, ties counted ½).
  * significant ⇔ p < 0.1 / m (Bonferroni over the m hypotheses tested).
  * prevalence = mean(h); separation = E[y | h=1] − E[y | h=0], 95 % CI by the normal approximation
    ± 1.96 √(s1²/n1 + s0²/n0).
Traps handled and said in `notes`: indicators constant on the held-out texts, and exact copies of an earlier
indicator, are left out of the regression (their p-value is undefined); linearly dependent indicators (e.g.
one is the union of two disjoint others) make XᵀX singular, and perfect separation
sends Logit coefficients to infinity — both get a tiny ridge (1e-6 · n on the Hessian diagonal, intercept
excluded) so the fit is defined, and the note says the p-values of those columns are unreliable. statsmodels
has no ridge with standard errors, so only those two cases are fitted by the numpy code below (the same
formulas; `tests/test_hypotheses.py` checks it against statsmodels where both apply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

RIDGE = 1e-6
ALPHA_FAMILY = 0.1  # family-wise level of the Bonferroni test (the paper's 0.1)

FORMULAS = {
    "ols": "OLS y = b0 + Σ b_j·h_j; se from s²(XᵀX)⁻¹, s² = RSS/(n−p); p two-sided Student t(n−p)",
    "logit": "Logit P(y=1) = σ(b0 + Σ b_j·h_j), maximum likelihood (statsmodels); se from the inverse Hessian "
    "(XᵀWX)⁻¹; "
    "p two-sided Wald z",
    "significant": "p < 0.1 / m (Bonferroni, m = hypotheses tested)",
    "r2": "R² = 1 − RSS/TSS of the OLS fit on the held-out texts",
    "auc": "AUC of the Logit's fitted probabilities on the held-out texts (Mann–Whitney, ties ½)",
    "prevalence": "mean of h over the held-out texts",
    "separation": "E[y|h=1] − E[y|h=0] on held-out texts; 95% CI ± 1.96·√(s1²/n1 + s0²/n0)",
}


@dataclass
class HypothesisStats:
    """One hypothesis's held-out numbers (NaN where undefined, e.g. it never or always holds)."""

    coefficient: float
    std_err: float
    p_value: float
    significant: bool
    prevalence: float
    separation: float
    separation_ci: tuple[float, float]
    n_true: int


@dataclass
class Validation:
    """The joint regression on held-out texts.

    Attributes:
        model: "ols" or "logit".
        stats: per hypothesis, in the order given.
        threshold: the Bonferroni p threshold 0.1 / m.
        n_significant: hypotheses with p < threshold.
        r2 / auc: fit quality (the one that applies; the other is None).
        n: held-out texts; intercept: b0.
        notes: dropped columns, ridge, non-convergence.
    """

    model: str
    stats: list[HypothesisStats]
    threshold: float
    n_significant: int
    r2: float | None
    auc: float | None
    n: int
    intercept: float
    notes: list[str] = field(default_factory=list)


def auc_score(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n1·n0)), ties counted as ½; NaN with one class."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def separation(y: np.ndarray, h: np.ndarray) -> tuple[float, tuple[float, float]]:
    """E[y|h] − E[y|¬h] and its normal-approximation 95% CI (NaN when either group is empty)."""
    h = np.asarray(h, dtype=bool)
    y1, y0 = y[h], y[~h]
    if len(y1) == 0 or len(y0) == 0:
        nan = float("nan")
        return nan, (nan, nan)
    diff = float(y1.mean() - y0.mean())
    var1 = y1.var(ddof=1) if len(y1) > 1 else 0.0
    var0 = y0.var(ddof=1) if len(y0) > 1 else 0.0
    half = 1.96 * math.sqrt(var1 / len(y1) + var0 / len(y0))
    return diff, (diff - half, diff + half)


def _ridge_needed(XtX: np.ndarray) -> bool:
    return np.linalg.cond(XtX) > 1e12


def _ols(X: np.ndarray, y: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    n, p = X.shape
    XtX = X.T @ X
    if not _ridge_needed(XtX) and n > p:
        import statsmodels.api as sm

        fit = sm.OLS(y, X).fit()
        r2 = float(fit.rsquared) if float(((y - y.mean()) ** 2).sum()) > 0 else float("nan")
        return np.asarray(fit.params), np.column_stack([fit.bse, fit.pvalues]), r2
    return _ols_numpy(X, y, notes)


def _ols_numpy(X: np.ndarray, y: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """OLS by the normal equations, with the ridge when XᵀX is singular (see the module docstring)."""
    n, p = X.shape
    XtX = X.T @ X
    if _ridge_needed(XtX):
        notes.append(
            "Some hypotheses are linearly dependent on the held-out texts, so XᵀX is singular; a ridge of "
            f"{RIDGE:g}·n was added to its diagonal and those hypotheses' p-values are unreliable."
        )
        XtX = XtX + RIDGE * n * np.diag([0.0] + [1.0] * (p - 1))
    inv = np.linalg.pinv(XtX)
    beta = inv @ X.T @ y
    resid = y - X @ beta
    dof = max(n - p, 1)
    s2 = float(resid @ resid) / dof
    se = np.sqrt(np.clip(np.diag(inv) * s2, 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        pvals = 2 * stats.t.sf(np.abs(beta / se), dof)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / tss if tss > 0 else float("nan")
    return beta, np.column_stack([se, pvals]), r2


def _logit(X: np.ndarray, y: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """statsmodels' Logit; on perfect separation, non-convergence or a singular Hessian, the ridge fit below."""
    import warnings

    import statsmodels.api as sm

    if not _ridge_needed(X.T @ X):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # perfect separation and non-convergence only warn
                fit = sm.Logit(y, X).fit(method="newton", maxiter=100, disp=0)
            beta = np.asarray(fit.params)
            if fit.mle_retvals.get("converged", False) and np.max(np.abs(beta[1:]), initial=0.0) <= 15:
                return beta, np.column_stack([fit.bse, fit.pvalues]), np.asarray(fit.predict(X))
        except Exception:  # statsmodels raises or warns on separation; fall through to the ridge fit
            pass
    return _logit_numpy(X, y, notes)


def _logit_numpy(X: np.ndarray, y: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton–Raphson Logit with a tiny ridge on separation (see the module docstring)."""
    n, p = X.shape
    penalty = np.zeros(p)
    beta = np.zeros(p)
    for attempt in range(2):
        beta = np.zeros(p)
        ok = False
        for _ in range(100):
            eta = np.clip(X @ beta, -35, 35)
            mu = 1 / (1 + np.exp(-eta))
            w = mu * (1 - mu)
            H = (X * w[:, None]).T @ X + np.diag(penalty)
            g = X.T @ (y - mu) - penalty * beta
            step = np.linalg.lstsq(H, g, rcond=None)[0]
            beta = beta + step
            if np.max(np.abs(step)) < 1e-8:
                ok = True
                break
        separated = np.max(np.abs(beta[1:]), initial=0.0) > 15 or not ok or _ridge_needed(H)
        if not separated or attempt == 1:
            break
        notes.append(
            "The Logit did not converge (perfect separation: some hypothesis is always or never true for one class, "
            f"or hypotheses are identical on the held-out texts); a ridge of {RIDGE:g}·n was added to the Hessian "
            "diagonal, so the affected coefficients are shrunk and their p-values are unreliable."
        )
        penalty = RIDGE * n * np.r_[0.0, np.ones(p - 1)]
    eta = np.clip(X @ beta, -35, 35)
    mu = 1 / (1 + np.exp(-eta))
    H = (X * (mu * (1 - mu))[:, None]).T @ X + np.diag(penalty)
    cov = np.linalg.pinv(H)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        pvals = 2 * stats.norm.sf(np.abs(beta / se))
    return beta, np.column_stack([se, pvals]), mu


def validate(H: np.ndarray, y: np.ndarray, *, binary: bool) -> Validation:
    """Regress y [n] on the indicator matrix H [n, m] (bool) of held-out texts; see the module docstring."""
    H = np.asarray(H, dtype=bool)
    y = np.asarray(y, dtype=np.float64)
    n, m = H.shape
    notes: list[str] = []
    prevalence = H.mean(0) if n else np.zeros(m)
    varying = (prevalence > 0) & (prevalence < 1)
    if not varying.all():
        dropped = int((~varying).sum())
        notes.append(
            f"{dropped} hypothesis(es) hold for all or none of the {n} held-out texts and were left out of the "
            "regression (no p-value)."
        )
    seen: dict[bytes, int] = {}
    for j in np.flatnonzero(varying):
        first = seen.setdefault(H[:, j].tobytes(), j)
        if first != j:
            varying[j] = False
            notes.append(
                f"Hypothesis {j + 1} holds for exactly the same held-out texts as hypothesis {first + 1}; only the "
                "first is in the regression."
            )
    X = np.column_stack([np.ones(n), H[:, varying].astype(np.float64)])
    r2 = auc = None
    if binary:
        beta, se_p, fitted = _logit(X, y, notes)
        auc = auc_score(y, fitted)
    else:
        beta, se_p, r2 = _ols(X, y, notes)
    threshold = ALPHA_FAMILY / max(m, 1)
    out: list[HypothesisStats] = []
    cols = iter(range(1, X.shape[1]))
    for j in range(m):
        sep, ci = separation(y, H[:, j])
        if varying[j]:
            c = next(cols)
            coef, se, p = float(beta[c]), float(se_p[c, 0]), float(se_p[c, 1])
        else:
            coef = se = p = float("nan")
        sig = bool(math.isfinite(p) and p < threshold)
        out.append(HypothesisStats(coef, se, p, sig, float(prevalence[j]), sep, ci, int(H[:, j].sum())))
    return Validation(
        model="logit" if binary else "ols",
        stats=out,
        threshold=threshold,
        n_significant=sum(s.significant for s in out),
        r2=r2,
        auc=auc,
        n=n,
        intercept=float(beta[0]),
        notes=notes,
    )
