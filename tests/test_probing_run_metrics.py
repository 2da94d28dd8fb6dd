"""Probe classifiers and metrics on toy data: agreement with sklearn, CIs, stratified folds, MSP, detection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from saelab.errors import BadInputError
from saelab.probing import classify, concept_detection, metrics


def _toy(n=200, f=30, n_classes=2, seed=0, signal=2.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.normal(size=(n, f))
    X[:, 0] += signal * (y == 1)
    if n_classes > 2:
        X[:, 1] += signal * (y == 2)
    return X.astype(np.float32), y


def test_metrics__match_sklearn_on_binary_and_multiclass():
    rng = np.random.default_rng(1)
    for n_classes in (2, 3):
        y = rng.integers(0, n_classes, 150)
        proba = rng.dirichlet(np.ones(n_classes), 150)
        m = metrics.classification_metrics(y, proba)
        pred = proba.argmax(1)
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
        assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
        want = roc_auc_score(y, proba[:, 1]) if n_classes == 2 else roc_auc_score(y, proba, multi_class="ovr")
        assert m["auroc"] == pytest.approx(want)
        assert m["confusion"] == confusion_matrix(y, pred).tolist()


def test_bootstrap__fast_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    for n_classes in (2, 4):
        y = rng.integers(0, n_classes, 90)
        proba = rng.dirichlet(np.ones(n_classes), 90)
        pred = proba.argmax(1)
        assert metrics.macro_f1_fast(y, pred, n_classes) == pytest.approx(
            f1_score(y, pred, average="macro", labels=range(n_classes), zero_division=0)
        )
        assert metrics._auroc_fast(y, proba) == pytest.approx(metrics.auroc(y, proba))


def test_bootstrap__ci_contains_point_estimate_and_is_seeded():
    X, y = _toy(300)
    probe = classify.fit_probe("logistic-l2", X[:200], y[:200])
    proba = probe.predict_proba(X[200:])
    m = metrics.classification_metrics(y[200:], proba)
    ci = metrics.classification_cis(y[200:], proba, n_boot=300, seed=3)
    for key in ("macro_f1", "accuracy", "auroc"):
        lo, hi = ci[key]
        assert lo <= m[key] <= hi and lo < hi
    assert ci == metrics.classification_cis(y[200:], proba, n_boot=300, seed=3)


def test_cv__folds_are_stratified_and_disjoint():
    y = np.r_[np.zeros(90, int), np.ones(30, int), np.full(30, 2)]
    pairs = classify.fold_indices(y, 5, seed=0)
    seen = np.concatenate([va for _, va in pairs])
    assert sorted(seen) == list(range(len(y)))  # every row validated exactly once
    for tr, va in pairs:
        assert not set(tr) & set(va)
        assert np.bincount(y[va]).tolist() == [18, 6, 6]  # class proportions kept in every fold
    X, y2 = _toy(150, n_classes=3, signal=4.0)
    res = classify.cross_validate("logistic-l2", X, y2, folds=5, seed=0)
    assert len(res.scores) == 5 and res.mean > 0.6
    assert all(sum(c.values()) == s for c, s in zip(res.fold_class_counts, res.fold_sizes, strict=True))


def test_cv__too_few_of_a_class_is_a_clear_error():
    y = np.r_[np.zeros(20, int), np.ones(3, int)]
    with pytest.raises(BadInputError, match="rarest class"):
        classify.fold_indices(y, 5, seed=0)


@pytest.mark.parametrize("name", ["logistic-l2", "logistic-l1", "topk", "random-forest"])
def test_classifiers__learn_the_signal_and_refit_identically(name):
    X, y = _toy(240, n_classes=3, signal=4.0)
    a = classify.fit_probe(name, X[:160], y[:160], k=2, seed=0)
    b = classify.fit_probe(name, X[:160], y[:160], k=2, seed=0)
    assert np.array_equal(a.predict_proba(X[160:]), b.predict_proba(X[160:]))
    acc = float(np.mean(a.predict(X[160:]) == y[160:]))
    assert acc > 0.7, acc
    top2 = set(np.argsort(-a.importance)[:2].tolist())
    assert top2 == {0, 1}  # the two signal columns are what the probe relies on


def test_topk__keeps_exactly_k_features_by_class_mean_spread():
    X, y = _toy(200, f=40)
    probe = classify.fit_probe("topk", X, y, k=1)
    assert probe.selected.tolist() == [0]
    assert np.count_nonzero(probe.coef) == 1
    with pytest.raises(BadInputError, match="k = 41"):
        classify.fit_probe("topk", X, y, k=41)


def test_regression__ridge_reports_r2_like_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = X[:, 0] * 2 + rng.normal(scale=0.1, size=120)
    probe = classify.fit_probe("ridge", X[:80], y[:80])
    pred = probe.predict(X[80:])
    assert metrics.regression_metrics(y[80:], pred)["r2"] == pytest.approx(r2_score(y[80:], pred))
    assert metrics.regression_metrics(y[80:], pred)["r2"] > 0.9


def test_fit__one_class_and_nan_features_are_refused():
    X, y = _toy(50)
    with pytest.raises(BadInputError, match="one class"):
        classify.fit_probe("logistic-l2", X, np.zeros(50, int))
    X[0, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        classify.fit_probe("logistic-l2", X, y)


def test_msp__error_and_ood_auroc():
    # confident where right, unsure where wrong → error-detection AUROC 1
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.95, 0.05], [0.1, 0.9], [0.4, 0.6], [0.55, 0.45]])
    err = metrics.msp_error_detection(y, proba)
    assert err["auroc"] == 1.0 and err["n_neg"] == 2
    ood = metrics.msp_ood_detection(proba[:2], proba[2:])
    assert ood["auroc"] == 1.0
    assert np.isnan(metrics.msp_error_detection(y[:2], proba[:2])["auroc"])  # no errors: undefined, not 1


def test_learning_curve__starts_at_24_and_subsamples_are_stratified():
    assert metrics.learning_sizes(200) == [24, 48, 96, 192, 200]
    y = np.r_[np.zeros(150, int), np.ones(50, int)]
    idx = metrics.stratified_subsample(y, 24, seed=0)
    assert len(idx) == 24 and np.bincount(y[idx]).tolist() == [18, 6]
    X, y2 = _toy(200)
    pts = metrics.learning_curve(
        lambda i: float(classify.fit_probe("logistic-l2", X[i], y2[i]).predict(X).mean()), y2, seed=0
    )
    assert [p.n_train for p in pts] == [24, 48, 96, 192, 200]


def test_rank_auroc__matches_sklearn_per_column():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(80, 4))
    s[:, 2] = np.round(s[:, 2])  # ties
    y = rng.integers(0, 2, 80)
    want = [roc_auc_score(y, s[:, j]) for j in range(4)]
    assert concept_detection.rank_auroc(s, y) == pytest.approx(want)


def test_detection__directions_find_a_planted_concept():
    rng = np.random.default_rng(0)
    d, concept = 16, np.eye(16)[3] * 4

    def texts(n, seed):
        r = np.random.default_rng(seed)
        y = np.arange(n) % 2
        hidden = []
        for lab in y:
            h = r.normal(size=(int(r.integers(3, 8)), d))
            if lab:
                h[int(r.integers(0, len(h)))] += concept  # the concept on one token: max over tokens finds it
            hidden.append(h.astype(np.float32))
        words = ["concept here" if lab else "nothing here" for lab in y]
        lat = np.stack([np.r_[h.max(0)[:4], rng.normal(size=4)] for h in hidden])
        return concept_detection.TokenData(words, y, hidden, lat)

    res = concept_detection.run_detection(list(concept_detection.DETECTORS), texts(60, 1), texts(60, 2), n_boot=100)
    assert not res.errors, res.errors
    for m in ("diffmean", "probe", "bow", "sae-a"):
        assert res.auroc[m] > 0.8, (m, res.auroc)
        lo, hi = res.ci[m]
        assert lo <= res.auroc[m] <= hi
    assert res.info["sae-a"]["latent"] == 3


def test_tune_C__picks_the_best_cv_score_on_the_same_folds_ties_to_smaller_C():
    X, y = _toy(n=90, f=400, signal=1.5)  # one weak signal among 400 noise columns: the C matters
    grid = [0.001, 0.1, 10.0]
    t = classify.tune_C("logistic-l2", X, y, grid=grid, folds=3, seed=0)
    direct = [classify.cross_validate("logistic-l2", X, y, folds=3, seed=0, C=c).mean for c in grid]
    assert t.means == pytest.approx(direct) and t.best_C == grid[int(np.argmax(direct))]
    assert len(set(np.round(t.means, 6))) == 3  # the grid really gives different scores here
    easy, ye = _toy(n=60, f=3, signal=50.0)  # separable at every C: every score ties at 1.0
    tie = classify.tune_C("logistic-l2", easy, ye, grid=[10.0, 0.01, 1.0], folds=3)
    assert tie.means == [1.0, 1.0, 1.0] and tie.grid == [0.01, 1.0, 10.0] and tie.best_C == 0.01 and tie.at_edge
    with pytest.raises(BadInputError, match="no C"):
        classify.tune_C("random-forest", X, y)
