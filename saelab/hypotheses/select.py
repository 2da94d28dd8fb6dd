"""Choose which SAE latents (or words) predict the target: LASSO with α bisected to exactly n non-zero.

HypotheSAEs step 3. Features are standardised on the training split first, so the penalty treats every
latent alike. Numeric targets use `sklearn.linear_model.Lasso` (α bisected on a log scale); binary targets
use L1-penalised logistic regression (liblinear, C = 1/α bisected likewise). The bisection stops when
exactly n coefficients are non-zero. Ties can make "exactly n" unreachable (two latents enter at the same
α); then the smallest α-path point with more than n is used and the n largest |coefficients| are kept,
and the note says so. "correlation" ranks features by |Pearson r| with the target instead.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from saelab.errors import BadInputError

log = logging.getLogger(__name__)

MAX_BISECTIONS = 60


@dataclass
class Selection:
    """Selected feature columns, best first.

    Attributes:
        indices: column indices into the feature matrix, ordered by |coefficient| (or |r|), largest first.
        coefficients: the LASSO / L1-logistic coefficient on standardised features (or Pearson r).
        method: "lasso", "l1-logistic" or "correlation".
        alpha: the penalty where exactly n were non-zero (None for correlation).
        n_nonzero: non-zero coefficients at that α (== n unless the note says otherwise).
        notes: anything the user should know (fewer usable features than n, ties).
    """

    indices: np.ndarray
    coefficients: np.ndarray
    method: str
    alpha: float | None
    n_nonzero: int
    notes: list[str] = field(default_factory=list)


def _standardise(X):
    """Columns scaled to unit variance and a mask of the columns that vary (constant columns become 0).

    Dense input is also centred. Sparse input (bag-of-words) is only scaled, to stay sparse: the models
    fit an intercept, so centring would not change which features enter.
    """
    if sparse.issparse(X):
        X = sparse.csc_matrix(X, dtype=np.float64)
        mu = np.asarray(X.mean(0)).ravel()
        sd = np.sqrt(np.clip(np.asarray(X.multiply(X).mean(0)).ravel() - mu**2, 0, None))
        usable = sd > 1e-12
        scale = np.where(usable, 1 / np.where(usable, sd, 1), 0.0)
        return (X @ sparse.diags(scale)).tocsc(), usable
    X = np.asarray(X, dtype=np.float64)
    mu, sd = X.mean(0), X.std(0)
    usable = sd > 1e-12
    Z = np.zeros_like(X)
    Z[:, usable] = (X[:, usable] - mu[usable]) / sd[usable]
    return Z, usable


def _lasso_fit(Z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    from sklearn.linear_model import Lasso

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at tiny α are expected and harmless here
        return Lasso(alpha=alpha, max_iter=5000, tol=1e-4).fit(Z, y - y.mean()).coef_.copy()


def _logistic_fit(Z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=1.0 / alpha, l1_ratio=1.0, solver="liblinear", max_iter=2000, tol=1e-5)
        return model.fit(Z, y).coef_.ravel().copy()


def _alpha_range(Z: np.ndarray, y: np.ndarray, binary: bool) -> tuple[float, float]:
    """An α where nothing is selected (lasso's α_max; for logistic a generous bound) and a tiny one."""
    yc = y - y.mean()
    grad = np.abs(np.asarray(Z.T @ yc).ravel()).max() / len(y)
    hi = grad * (1.05 if not binary else len(y) * 1.05)  # liblinear's loss is a sum, not a mean
    return max(hi, 1e-12), max(hi, 1e-12) * 1e-6


def bisect_alpha(
    Z: np.ndarray, y: np.ndarray, n: int, fit: Callable[[np.ndarray, np.ndarray, float], np.ndarray], binary: bool
) -> tuple[float, np.ndarray, list[str]]:
    """α (and coefficients) where `fit` has exactly n non-zero coefficients, by bisection on log α."""
    hi, lo = _alpha_range(Z, y, binary)  # few non-zero at hi, many at lo
    coef_hi = fit(Z, y, hi)
    while np.count_nonzero(coef_hi) > n:  # our bound was not generous enough
        hi *= 10
        coef_hi = fit(Z, y, hi)
    best_over: tuple[float, np.ndarray] | None = None
    for _ in range(MAX_BISECTIONS):
        mid = math.sqrt(hi * lo)
        coef = fit(Z, y, mid)
        k = int(np.count_nonzero(coef))
        if k == n:
            return mid, coef, []
        if k > n:
            lo = mid
            best_over = (mid, coef)
        else:
            hi = mid
        if hi / lo < 1 + 1e-9:
            break
    if best_over is None:
        best_over = (lo, fit(Z, y, lo))
    alpha, coef = best_over
    k = int(np.count_nonzero(coef))
    keep = np.argsort(-np.abs(coef))[:n]
    trimmed = np.zeros_like(coef)
    trimmed[keep] = coef[keep]
    note = (
        f"No penalty gave exactly {n} non-zero coefficients (ties); at α={alpha:.3g} {k} were non-zero and the "
        f"{n} largest in magnitude were kept."
    )
    return alpha, trimmed, [note]


def _select_lasso(X: np.ndarray, y: np.ndarray, n: int, kind: str) -> Selection:
    Z, usable = _standardise(X)
    binary = kind == "binary"
    notes: list[str] = []
    n_eff = min(n, int(usable.sum()))
    if n_eff < n:
        notes.append(f"Only {int(usable.sum())} features vary on the training split; selecting {n_eff}, not {n}.")
    if n_eff == 0:
        raise BadInputError("No feature varies on the training texts, so none can predict the target.")
    fit = _logistic_fit if binary else _lasso_fit
    alpha, coef, more = bisect_alpha(Z[:, usable], y.astype(np.float64), n_eff, fit, binary)
    notes += more
    full = np.zeros(X.shape[1])
    full[np.flatnonzero(usable)] = coef
    order = np.argsort(-np.abs(full))[:n_eff]
    order = order[full[order] != 0]
    method = "l1-logistic" if binary else "lasso"
    return Selection(order, full[order], method, float(alpha), int(np.count_nonzero(full)), notes)


def _select_correlation(X: np.ndarray, y: np.ndarray, n: int, kind: str) -> Selection:
    Z, usable = _standardise(X)
    yz = (y - y.mean()) / (y.std() or 1.0)
    r = np.asarray(Z.T @ yz).ravel() / len(y)  # Pearson r (centring y suffices for sparse, uncentred Z)
    r[~usable] = 0.0
    order = np.argsort(-np.abs(r))[: min(n, int(usable.sum()))]
    notes = [] if len(order) == n else [f"Only {len(order)} features vary on the training split."]
    return Selection(order, r[order], "correlation", None, len(order), notes)


SELECTORS: dict[str, Callable[[np.ndarray, np.ndarray, int, str], Selection]] = {
    "lasso": _select_lasso,
    "correlation": _select_correlation,
}


def select_features(X: np.ndarray, y: np.ndarray, *, n: int = 20, method: str = "lasso", kind: str) -> Selection:
    """The n columns of X [texts, features] that best predict y ("lasso" or "correlation").

    `kind` is "binary" (y in {0, 1}; L1-logistic) or "numeric" (Lasso).
    """
    if method not in SELECTORS:
        raise BadInputError(f"Unknown selection method {method!r}; choose one of {', '.join(SELECTORS)}.")
    if not isinstance(n, int) or n < 1:
        raise BadInputError(f"The number of hypotheses must be a positive whole number, got {n!r}.")
    X = X if sparse.issparse(X) else np.asarray(X)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise BadInputError(f"Features {X.shape} and target {y.shape} do not line up.")
    if np.ptp(y) == 0:
        raise BadInputError("The target is constant on the training texts: there is nothing to predict.")
    return SELECTORS[method](X, y, n, kind)
