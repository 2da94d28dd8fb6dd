"""Hypotheses, the parts without models: LASSO bisection, held-out validation formulas, keyword rules, targets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from saelab.errors import BadInputError
from saelab.hypotheses import HypothesisConfig
from saelab.hypotheses.interpret import KeywordRule, highlight_spans, interpret_keywords, term_matrix
from saelab.hypotheses.run import required_texts, run_hypotheses
from saelab.hypotheses.select import select_features
from saelab.hypotheses.target import prepare
from saelab.hypotheses.validate import auc_score, validate
from saelab.reports.hypotheses import example_html
from saelab.textsets import TextSet, from_csv


@pytest.mark.parametrize("kind", ["numeric", "binary"])
@pytest.mark.parametrize("n", [3, 20])
def test_select__lasso_bisection_gives_exactly_n_nonzero(kind, n):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 64))
    y = X[:, :5] @ np.array([3.0, -2.5, 2.0, 1.5, 1.0]) + rng.normal(size=400)
    if kind == "binary":
        y = (y > 0).astype(float)
    sel = select_features(X, y, n=n, kind=kind)
    assert sel.n_nonzero == n and len(sel.indices) == n and not sel.notes
    assert np.all(sel.coefficients != 0)
    assert set(sel.indices[:3]) <= set(range(5)), "the strongest planted features come first"
    assert np.all(np.diff(np.abs(sel.coefficients)) <= 1e-12), "ordered by |coefficient|"


def test_select__constant_columns_are_never_chosen_and_shortfall_is_said():
    rng = np.random.default_rng(0)
    X = np.zeros((100, 6))
    X[:, :2] = rng.normal(size=(100, 2))
    y = X[:, 0] + 0.1 * rng.normal(size=100)
    sel = select_features(X, y, n=4, kind="numeric")
    assert set(sel.indices) <= {0, 1} and "Only 2 features vary" in sel.notes[0]


def test_select__constant_target_is_refused():
    with pytest.raises(BadInputError, match="constant"):
        select_features(np.random.default_rng(0).normal(size=(50, 4)), np.ones(50), n=2, kind="numeric")


def test_validate__ols_with_one_indicator_is_the_pooled_t_test():
    rng = np.random.default_rng(0)
    h = rng.random(300) < 0.3
    y = 0.4 * h + rng.normal(size=300)
    v = validate(h[:, None], y, binary=False)
    t = stats.ttest_ind(y[h], y[~h], equal_var=True)
    assert v.stats[0].coefficient == pytest.approx(y[h].mean() - y[~h].mean())
    assert v.stats[0].p_value == pytest.approx(t.pvalue, rel=1e-8)
    assert v.r2 == pytest.approx(np.corrcoef(h, y)[0, 1] ** 2)


def test_validate__logit_with_one_indicator_is_the_log_odds_ratio_with_woolf_se():
    rng = np.random.default_rng(0)
    h = rng.random(500) < 0.4
    y = (rng.random(500) < np.where(h, 0.6, 0.35)).astype(float)
    v = validate(h[:, None], y, binary=True)
    a, b = ((y == 1) & h).sum(), ((y == 0) & h).sum()
    c, d = ((y == 1) & ~h).sum(), ((y == 0) & ~h).sum()
    assert v.stats[0].coefficient == pytest.approx(np.log(a * d / (b * c)), rel=1e-6)
    assert v.stats[0].std_err == pytest.approx(np.sqrt(1 / a + 1 / b + 1 / c + 1 / d), rel=1e-6)
    assert v.auc == pytest.approx(auc_score(y, h.astype(float)))


def test_validate__statsmodels_fit_agrees_with_the_numpy_formulas():
    """The regressions run through statsmodels; the numpy fallback (used only with a ridge) agrees with it."""
    from saelab.hypotheses.validate import _logit, _logit_numpy, _ols, _ols_numpy

    rng = np.random.default_rng(3)
    H = rng.random((300, 4)) < 0.4
    X = np.column_stack([np.ones(300), H.astype(float)])
    y = H @ np.array([1.0, -0.5, 0.0, 0.3]) + rng.normal(size=300)
    (b1, sp1, r1), (b2, sp2, r2) = _ols(X, y, []), _ols_numpy(X, y, [])
    assert np.allclose(b1, b2, atol=1e-9) and np.allclose(sp1, sp2, atol=1e-9) and r1 == pytest.approx(r2)
    yb = (rng.random(300) < 1 / (1 + np.exp(-(H @ np.array([1.0, -1.0, 0.0, 0.5]) - 0.3)))).astype(float)
    (b1, sp1, m1), (b2, sp2, m2) = _logit(X, yb, []), _logit_numpy(X, yb, [])
    assert np.allclose(b1, b2, atol=1e-6) and np.allclose(sp1, sp2, atol=1e-6) and np.allclose(m1, m2, atol=1e-6)


def test_validate__bonferroni_threshold_decides_significance():
    rng = np.random.default_rng(3)
    n = 400
    h0 = rng.random(n) < 0.5
    y = 0.25 * h0 + rng.normal(size=n)
    alone = validate(h0[:, None], y, binary=False)
    noise = rng.random((n, 19)) < 0.5
    joint = validate(np.column_stack([h0, noise]), y, binary=False)
    assert alone.threshold == pytest.approx(0.1) and joint.threshold == pytest.approx(0.1 / 20)
    p = joint.stats[0].p_value
    assert 0.1 / 20 < p < 0.1, p  # the planted effect is "significant" only without the correction
    assert alone.stats[0].significant and not joint.stats[0].significant
    for s in joint.stats:
        assert s.significant == (s.p_value < joint.threshold)
    assert joint.n_significant == sum(s.significant for s in joint.stats)


def test_validate__separation_and_ci():
    y = np.array([1.0, 2, 3, 4, 10, 12])
    h = np.array([0, 0, 0, 0, 1, 1], dtype=bool)
    v = validate(np.column_stack([h, ~h | True]), y, binary=False)
    s = v.stats[0]
    assert s.separation == pytest.approx(11 - 2.5) and s.prevalence == pytest.approx(2 / 6)
    half = 1.96 * np.sqrt(np.var([10, 12], ddof=1) / 2 + np.var([1, 2, 3, 4], ddof=1) / 4)
    assert s.separation_ci == pytest.approx((8.5 - half, 8.5 + half))
    assert np.isnan(v.stats[1].p_value) and not v.stats[1].significant
    assert "left out of the regression" in v.notes[0]


def test_validate__perfect_separation_and_duplicates_get_a_ridge_and_a_note():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    h = rng.random((200, 3)) < 0.5
    H = np.column_stack([h, y.astype(bool), h[:, 0]])  # perfectly separating + duplicate columns
    v = validate(H, y, binary=True)
    assert any("perfect separation" in n for n in v.notes)
    assert all(np.isfinite(s.coefficient) and np.isfinite(s.p_value) for s in v.stats[:4])
    assert any("same held-out texts as hypothesis 1" in n for n in v.notes) and np.isnan(v.stats[4].p_value)
    r = rng.random(200)
    a, b = r < 0.3, (r >= 0.3) & (r < 0.6)
    v = validate(np.column_stack([a, b, a | b]), rng.normal(size=200), binary=False)
    assert any("singular" in n for n in v.notes) and all(np.isfinite(s.p_value) for s in v.stats)


FOODS = ["sushi", "tacos", "burgers", "salad", "noodles", "curry", "steak", "soup"]


def _planted_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    adjs = ["fine", "decent", "ok", "warm", "fresh", "cheap", "quick", "plain"]
    texts, has = [], []
    for i in range(n):
        pizza = rng.random() < 0.3
        food = "pizza" if pizza else FOODS[rng.integers(len(FOODS))]
        texts.append(
            f"Review {i}: the {food} was {adjs[rng.integers(len(adjs))]} and the {FOODS[rng.integers(8)]} too."
        )
        has.append(pizza)
    return texts, np.array(has)


def test_interpret__planted_keyword_latent_is_described_by_its_word():
    texts, pizza = _planted_texts(600)
    acts = pizza * (1 + np.random.default_rng(1).random(600))  # a latent that fires on pizza texts
    X, vocab = term_matrix(texts[:400])
    it = interpret_keywords(X, vocab, acts[:400], texts[400:], acts[400:])
    assert "pizza" in it.terms and it.fidelity_f1 > 0.9 and it.proxy
    assert it.label.startswith("mentions any of:") and len(it.candidates) >= 2


def test_interpret__rules_match_words_not_substrings_and_evidence_is_escaped():
    rule = KeywordRule(["pizza"])
    assert rule.annotate(["Pizza night!", "pizzazz", "no food"]).tolist() == [True, False, False]
    assert highlight_spans("I <3 Pizza", ["pizza"])[-1] == ("Pizza", True)
    html = example_html("<script>x</script> pizza", ["pizza"])
    assert "<script>" not in html and "&lt;script&gt;" in html and "<mark>pizza</mark>" in html


def _textset(texts, target, kind="numeric", classes=None) -> TextSet:
    return TextSet(list(texts), np.asarray(target), kind, classes)


def test_target__constant_target_is_refused():
    with pytest.raises(BadInputError, match="constant"):
        prepare(_textset(["a", "b", "c"], [1.0, 1.0, 1.0]), HypothesisConfig())


def test_target__free_text_target_column_is_refused_with_advice():
    rows = "\n".join(f"text {i},comment number {i}" for i in range(80))
    with pytest.raises(BadInputError, match="free text"):
        from_csv("text,label\n" + rows + "\n", text_col="text", target_col="label")


def test_target__classes_map_to_binary_numeric_or_need_a_positive_class():
    stars = prepare(_textset(["a", "b", "c"], [0, 1, 2], "multiclass", ["1", "3", "5"]), HypothesisConfig())
    assert not stars.binary and stars.y.tolist() == [1.0, 3.0, 5.0] and "numbers" in stars.notes[-1]
    named = _textset(["a", "b", "c"], [0, 1, 2], "multiclass", ["news", "sport", "art"])
    with pytest.raises(BadInputError, match="positive class"):
        prepare(named, HypothesisConfig())
    one = prepare(named, HypothesisConfig(positive_class="sport"))
    assert one.binary and one.y.tolist() == [0.0, 1.0, 0.0]


def test_target__empty_and_duplicate_texts_are_dropped_and_counted():
    p = prepare(_textset(["a", " ", "a", "b", ""], [1.0, 2, 3, 4, 5]), HypothesisConfig())
    assert p.texts == ["a", "b"] and p.y.tolist() == [1.0, 4.0]
    assert any("2 empty" in n for n in p.notes) and any("1 duplicate" in n for n in p.notes)


def test_run__too_few_texts_says_how_many_the_sae_needs():
    texts, pizza = _planted_texts(100)
    need = required_texts(HypothesisConfig())
    assert need == 214  # 128 training texts (2 per latent of 64) at a 60 % training share
    with pytest.raises(BadInputError, match=f"at least {need}"):
        run_hypotheses(HypothesisConfig(), _textset(texts, pizza.astype(float)))


def test_config__round_trips_and_refuses_bad_values():
    cfg = HypothesisConfig(n_hypotheses=7, selection="correlation", m=32, k=4, fractions=[3, 1, 1])
    assert HypothesisConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"n_hypotheses": 0}, {"selection": "magic"}, {"fractions": [1, 1]}, {"m": 8, "k": 9}):
        with pytest.raises(BadInputError):
            HypothesisConfig(**bad)
