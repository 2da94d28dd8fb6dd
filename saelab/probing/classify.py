"""Probe classifiers (a registry) and stratified k-fold cross-validation.

Every probe is fitted on standardised features (z = (x − mean_train) / std_train, std 0 → 1) with a fixed seed,
so fitting twice on the same data gives the same weights. Registry `CLASSIFIERS`:

    logistic-l2   L2-regularised logistic regression, class_weight="balanced" (weights n / (n_classes · n_c)),
                  lbfgs, C = cfg C (MOSAIC's "class-weighted cross-entropy" linear probe)
    logistic-l1   L1-regularised logistic regression, balanced, liblinear (one-vs-rest for > 2 classes)
    topk          SAEBench sparse probing: keep the k features with the largest class-mean spread on the
                  training set, max over classes of |mean_c − mean_rest| (binary: |mean_1 − mean_0|), on raw
                  features, then logistic-l2 on those k only
    random-forest 300 trees, balanced class weights, sqrt(f) features per split; importance = mean impurity decrease
    ridge         numeric targets: ridge regression (alpha = 1 / C) on standardised features; R²
    linear        numeric targets: ordinary least squares on standardised features; R²

A fitted probe exposes `predict_proba` (classes) or `predict` (numbers), per-feature `importance` [f] and,
for linear probes, `coef` [n_out, f] and `intercept` [n_out] in the *standardised* space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.errors import BadInputError
from saelab.typed_json import from_checked_dict

NUMERIC = ("ridge", "linear")
TUNABLE = ("logistic-l2", "logistic-l1", "topk", "ridge")  # the classifiers that have a C
C_GRID = (1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)


@dataclass
class FittedProbe:
    """A probe fitted on a training matrix; `selected` are the feature columns it reads (all when None)."""

    name: str
    model: Any  # the sklearn estimator (fitted on the selected, standardised columns)
    mean: np.ndarray  # [f] training mean (all columns)
    scale: np.ndarray  # [f] training std (all columns; 0 replaced by 1)
    selected: np.ndarray | None = None  # [k] column indices, or None for all
    classes: np.ndarray | None = None  # class ids in probability-column order (None for numeric)
    info: dict[str, Any] = field(default_factory=dict)

    def _z(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return z if self.selected is None else z[:, self.selected]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[n, n_classes] class probabilities (columns in class-id order)."""
        return self.model.predict_proba(self._z(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class ids (argmax probability) or numbers for regression probes."""
        if self.classes is None:
            return self.model.predict(self._z(X))
        return self.classes[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @property
    def coef(self) -> np.ndarray | None:
        """[n_out, f] linear weights in standardised space (zeros for unselected columns); None for forests."""
        raw = getattr(self.model, "coef_", None)
        if raw is None:
            return None
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        full = np.zeros((raw.shape[0], self.n_features))
        cols = np.arange(self.n_features) if self.selected is None else self.selected
        full[:, cols] = raw
        return full

    @property
    def intercept(self) -> np.ndarray | None:
        raw = getattr(self.model, "intercept_", None)
        return None if raw is None else np.atleast_1d(np.asarray(raw, dtype=np.float64))

    @property
    def importance(self) -> np.ndarray:
        """[f] how much the probe relies on each feature: max over outputs of |weight| (linear), or impurity
        decrease (forest); 0 for unselected columns."""
        coef = self.coef
        if coef is not None:
            return np.abs(coef).max(axis=0)
        full = np.zeros(self.n_features)
        cols = np.arange(self.n_features) if self.selected is None else self.selected
        full[cols] = np.asarray(self.model.feature_importances_, dtype=np.float64)
        return full


def class_spread(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[f] max over classes c of |mean(X | y = c) − mean(X | y ≠ c)| (binary: |mean_1 − mean_0|)."""
    X = np.asarray(X, dtype=np.float64)
    classes = np.unique(y)
    spread = np.zeros(X.shape[1])
    for c in classes[1:] if len(classes) == 2 else classes:
        inside = y == c
        spread = np.maximum(spread, np.abs(X[inside].mean(axis=0) - X[~inside].mean(axis=0)))
    return spread


def _logistic(penalty: str, C: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    if penalty == "l1":
        return _L1Logistic(C, seed)
    return LogisticRegression(C=C, solver="lbfgs", class_weight="balanced", max_iter=2000, random_state=seed)


class _L1Logistic:
    """L1 logistic regression with liblinear (deterministic given the seed), one-vs-rest for > 2 classes.

    sklearn ≥ 1.8 spells L1 as `l1_ratio=1` and refuses liblinear on > 2 classes, so the one-vs-rest is
    explicit here; `coef_`/`intercept_` are stacked [n_classes or 1, f] like LogisticRegression's."""

    def __init__(self, C: float, seed: int) -> None:
        self.C, self.seed = C, seed

    def _one(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            l1_ratio=1.0, C=self.C, solver="liblinear", class_weight="balanced", max_iter=2000, random_state=self.seed
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> _L1Logistic:
        self.classes_ = np.unique(y)
        if len(self.classes_) == 2:
            self.models_ = [self._one().fit(X, y)]
        else:
            self.models_ = [self._one().fit(X, (y == c).astype(int)) for c in self.classes_]
        self.coef_ = np.vstack([m.coef_ for m in self.models_])
        self.intercept_ = np.concatenate([m.intercept_ for m in self.models_])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if len(self.models_) == 1:
            return self.models_[0].predict_proba(X)
        p = np.column_stack([m.predict_proba(X)[:, 1] for m in self.models_])
        return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)  # one-vs-rest scores normalised to sum to 1


def _make_l2(C: float, k: int, seed: int) -> Any:
    return _logistic("l2", C, seed)


def _make_l1(C: float, k: int, seed: int) -> Any:
    return _logistic("l1", C, seed)


def _make_forest(C: float, k: int, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=300, max_features="sqrt", class_weight="balanced", n_jobs=1, random_state=seed
    )


def _make_ridge(C: float, k: int, seed: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0 / C)


def _make_linear(C: float, k: int, seed: int) -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


# name → factory(C, k, seed) returning an unfitted sklearn estimator
CLASSIFIERS: dict[str, Callable[[float, int, int], Any]] = {
    "logistic-l2": _make_l2,
    "logistic-l1": _make_l1,
    "topk": _make_l2,
    "random-forest": _make_forest,
    "ridge": _make_ridge,
    "linear": _make_linear,
}

FORMULAS: dict[str, str] = {
    "logistic-l2": "p(y|x) = softmax(W z + b), z = standardised x; min Σ_i w_{y_i} CE_i + ‖W‖²/(2C); "
    "class weight w_c = n / (n_classes · n_c)",
    "logistic-l1": "as logistic-l2 with penalty ‖W‖₁/C (liblinear, one-vs-rest for more than 2 classes)",
    "topk": "keep the k features with the largest max_c |mean(x|y=c) − mean(x|y≠c)| on the training set, "
    "then logistic-l2 on those k",
    "random-forest": "300 trees, sqrt(f) features per split, balanced class weights; importance = mean "
    "impurity decrease",
    "ridge": "ŷ = w·z + b, min ‖y − ŷ‖² + (1/C)‖w‖²; R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²",
    "linear": "ŷ = w·z + b by ordinary least squares; R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²",
}


def fit_probe(name: str, X: np.ndarray, y: np.ndarray, *, C: float = 1.0, k: int = 5, seed: int = 0) -> FittedProbe:
    """Fit classifier `name` on X [n, f], y [n] (class ids, or floats for ridge/linear)."""
    if name not in CLASSIFIERS:
        raise BadInputError(f"Unknown classifier {name!r}; choose one of {sorted(CLASSIFIERS)}.")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise BadInputError(f"Features {X.shape} and targets {y.shape} do not match.")
    if X.shape[1] == 0:
        raise BadInputError("There are no features to probe; choose another feature source.")
    if not np.isfinite(X).all():
        raise BadInputError("The features contain NaN or infinite values.")
    numeric = name in NUMERIC
    classes = None
    if not numeric:
        classes = np.unique(y)
        if len(classes) < 2:
            raise BadInputError("The training split holds only one class; use more texts or another seed.")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-12] = 1.0
    selected = None
    if name == "topk":
        if not 1 <= int(k) <= X.shape[1]:
            raise BadInputError(f"k = {k} must be between 1 and the number of features ({X.shape[1]}).")
        # stable sort on −spread: ties resolve to the lower column index, the same on every run
        selected = np.sort(np.argsort(-class_spread(X, y), kind="stable")[: int(k)])
    model = CLASSIFIERS[name](float(C), int(k), int(seed))
    probe = FittedProbe(name, model, mean, scale, selected, classes, {"C": float(C), "k": int(k), "seed": int(seed)})
    model.fit(probe._z(X), y)
    return probe


@dataclass
class CVResult:
    """Stratified k-fold cross-validation on the training split (test split untouched)."""

    folds: int
    seed: int
    metric: str  # "macro_f1" (classes) or "r2" (numbers)
    scores: list[float]  # one per fold
    fold_sizes: list[int]
    fold_class_counts: list[dict[str, int]]  # validation-fold class counts (evidence of stratification)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores, ddof=1)) if len(self.scores) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "seed": self.seed,
            "metric": self.metric,
            "scores": self.scores,
            "mean": self.mean,
            "std": self.std,
            "fold_sizes": self.fold_sizes,
            "fold_class_counts": self.fold_class_counts,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CVResult:
        """From `to_dict()`; its mean and std are recomputed from the scores."""
        return from_checked_dict(cls, data)


def fold_indices(y: np.ndarray, folds: int, seed: int, *, numeric: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs: StratifiedKFold(shuffle, seed) for classes, KFold for numbers."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y)
    if folds < 2:
        raise BadInputError("Cross-validation needs at least 2 folds.")
    if numeric:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        smallest = int(np.unique(y, return_counts=True)[1].min())
        if smallest < folds:
            raise BadInputError(
                f"The rarest class has {smallest} training text(s), fewer than {folds} folds; "
                "use fewer folds or more texts."
            )
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def cross_validate(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    k: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> CVResult:
    """Macro-F1 (classes) or R² (numbers) of `name` on each held-out fold."""
    from sklearn.metrics import f1_score, r2_score

    numeric = name in NUMERIC
    scores, sizes, counts = [], [], []
    pairs = fold_indices(y, folds, seed, numeric=numeric)
    for i, (tr, va) in enumerate(pairs):
        probe = fit_probe(name, X[tr], y[tr], C=C, k=k, seed=seed)
        pred = probe.predict(X[va])
        if numeric:
            scores.append(float(r2_score(y[va], pred)))
            counts.append({})
        else:
            scores.append(float(f1_score(y[va], pred, average="macro")))
            vals, cnt = np.unique(y[va], return_counts=True)
            counts.append({str(v): int(c) for v, c in zip(vals, cnt, strict=True)})
        sizes.append(len(va))
        if progress:
            progress(i + 1, len(pairs))
    return CVResult(folds, seed, "r2" if numeric else "macro_f1", scores, sizes, counts)


@dataclass
class CTuning:
    """The choice of C by cross-validation on the training split (the test split is never seen)."""

    grid: list[float]
    means: list[float]  # mean CV score per C
    stds: list[float]
    best_C: float
    metric: str
    folds: int
    seed: int
    rule: str = (
        "C* = argmax_C mean over k stratified folds of the validation score (macro-F1 or R²), ties to the smaller "
        "C; the CV score at C* is optimistic (it chose C*), the test split is not used"
    )

    @property
    def at_edge(self) -> bool:
        """C* is the smallest or largest C tried (with more than one tried): the optimum may lie outside."""
        return len(self.grid) > 1 and self.best_C in (self.grid[0], self.grid[-1])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Any) -> CTuning:
        return from_checked_dict(cls, data)


def tune_C(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    grid: Sequence[float] = C_GRID,
    folds: int = 5,
    seed: int = 0,
    k: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> CTuning:
    """Cross-validate `name` at every C of `grid` (same folds for each) and pick the best mean score."""
    if name not in TUNABLE:
        raise BadInputError(f"{name} has no C to tune; tunable: {', '.join(TUNABLE)}.")
    grid = sorted({float(c) for c in grid})
    if not grid or min(grid) <= 0:
        raise BadInputError("The C grid needs at least one positive value.")
    means, stds = [], []
    for i, C in enumerate(grid):
        res = cross_validate(name, X, y, folds=folds, seed=seed, C=C, k=k)
        means.append(res.mean)
        stds.append(res.std)
        if progress:
            progress(i + 1, len(grid))
    best = max(range(len(grid)), key=lambda i: (round(means[i], 9), -grid[i]))
    return CTuning(grid, means, stds, grid[best], res.metric, folds, seed)
