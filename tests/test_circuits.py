"""Circuit discovery on the tiny random model (fast) and one end-to-end run on the real default model (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saelab.circuits.attribution import attribution_patching
from saelab.circuits.discrete_sae import code_edges, head_code_scores
from saelab.circuits.evaluate import precision_at_k, reference_mask, roc_auc
from saelab.circuits.methods import METHODS, MethodSettings, run_method
from saelab.circuits.patching import activation_patching, baseline_metrics, patched_metric
from saelab.circuits.run import CircuitConfig, check_task, run_circuits
from saelab.circuits.tasks import CircuitTask, PromptPair, builtin_task, pairs_from_csv, tokenize_task
from saelab.errors import BadInputError
from saelab.hooks import active_hook_count


@pytest.fixture(scope="module")
def ioi_batches(tiny_handle):
    task = builtin_task("ioi", n=6, seed=0)
    return task, tokenize_task(task, tiny_handle.tokenizer, tiny_handle.cfg.d_vocab)


def _all_heads(handle):
    return [(layer, h) for layer in range(handle.n_layers) for h in range(handle.cfg.n_heads)]


def test_patching__clean_equal_to_corrupted_gives_zero_effect(tiny_handle):
    p = "When Mary and John went to the store, John gave a drink to"
    task = CircuitTask("same", "clean == corrupted", "logit_diff", [PromptPair(p, p, [" Mary"], [" John"])] * 2)
    (batch,) = tokenize_task(task, tiny_handle.tokenizer, tiny_handle.cfg.d_vocab)
    base = baseline_metrics(tiny_handle, [batch], "logit_diff")
    for head in [(0, 0), (1, 3)]:
        np.testing.assert_allclose(patched_metric(tiny_handle, batch, "logit_diff", [head]), base.corrupted, atol=1e-5)
    with pytest.raises(BadInputError, match="same mean metric"):
        activation_patching(tiny_handle, [batch], "logit_diff")


def test_patching__all_heads_from_clean_restore_clean_metric(tiny_handle, ioi_batches):
    _, batches = ioi_batches
    base = baseline_metrics(tiny_handle, batches, "logit_diff")
    for b in batches:
        restored = patched_metric(tiny_handle, b, "logit_diff", _all_heads(tiny_handle))
        np.testing.assert_allclose(restored, base.clean[b.idx], atol=1e-4)
        assert not np.allclose(base.clean[b.idx], base.corrupted[b.idx])  # the invariant is not vacuous
        np.testing.assert_allclose(patched_metric(tiny_handle, b, "logit_diff", []), base.corrupted[b.idx], atol=1e-4)


def test_patching__batched_by_layer_equals_one_forward_per_head(tiny_handle, ioi_batches):
    _, batches = ioi_batches
    effect, base = activation_patching(tiny_handle, batches, "logit_diff")
    gap = base.gap
    for layer, head in [(0, 1), (1, 2)]:
        m = np.concatenate([patched_metric(tiny_handle, b, "logit_diff", [(layer, head)]) for b in batches])
        assert effect[layer, head] == pytest.approx((m.mean() - np.nanmean(base.corrupted)) / gap, abs=1e-4)


def test_patching__mean_ablation_of_nothing_useful_is_finite(tiny_handle, ioi_batches):
    _, batches = ioi_batches
    effect, _ = activation_patching(tiny_handle, batches, "logit_diff", mode="mean_ablation")
    assert effect.shape == (tiny_handle.n_layers, tiny_handle.cfg.n_heads) and np.isfinite(effect).all()
    with pytest.raises(BadInputError, match="patching mode"):
        activation_patching(tiny_handle, batches, "logit_diff", mode="zero")


def test_attribution__agrees_in_sign_with_activation_patching(tiny_handle, ioi_batches):
    _, batches = ioi_batches
    exact, _ = activation_patching(tiny_handle, batches, "logit_diff")
    approx, _ = attribution_patching(tiny_handle, batches, "logit_diff")
    big = np.abs(exact) >= np.median(np.abs(exact))
    assert np.mean(np.sign(exact[big]) == np.sign(approx[big])) >= 0.75
    assert np.corrcoef(exact.ravel(), approx.ravel())[0, 1] > 0.5


def test_discrete_sae__scores_count_codes_seen_only_on_positives():
    # 3 positive and 2 negative prompts, 2 layers × 2 heads; −1 = no code
    pos = np.array([[[1, 2], [5, -1]], [[1, 3], [6, -1]], [[4, 2], [5, -1]]])
    neg = np.array([[[1, 9], [5, 7]], [[1, 9], [5, 7]]])
    scores = head_code_scores(pos, neg)
    # L0H0: {1,4} − {1} = {4}; L0H1: {2,3} − {9}; L1H0: {5,6} − {5}; L1H1: {} (−1 is not a code)
    np.testing.assert_array_equal(scores, [[1, 2], [1, 0]])
    edges = code_edges(pos, neg)
    # positive-only codes per prompt: p0 {L0H1}, p1 {L0H1, L1H0}, p2 {L0H0, L0H1}
    assert edges[1, 2] == pytest.approx(1 / 3)  # L0H1 → L1H0 together on p1
    assert edges[0, 2] == 0 and edges[0, 1] == 0  # same layer: no edge
    assert edges[2, 1] == 0  # only earlier → later


def test_discrete_sae__runs_and_leaves_no_hooks(tiny_handle, ioi_batches):
    _, batches = ioi_batches
    for name in METHODS:
        out = run_method(name, tiny_handle, batches, "logit_diff", MethodSettings(epochs=30))
        assert out.scores.shape == (tiny_handle.n_layers, tiny_handle.cfg.n_heads)
        assert np.isfinite(out.scores).all() and out.seconds > 0
        assert active_hook_count(tiny_handle) == 0, name
    out = run_method("discrete-sae", tiny_handle, batches, "logit_diff", MethodSettings(epochs=30))
    assert (out.scores >= 0).all() and out.edges.shape == (8, 8)
    assert out.scores.max() <= len(batches[0].idx)  # at most one new code per positive prompt


def test_evaluate__auc_and_precision_with_ties():
    effect = np.array([[5.0, -4.0, 0.1], [0.2, 0.0, 3.0]])
    mask = reference_mask(effect, 0.5)  # top 3 by |effect|
    np.testing.assert_array_equal(mask, [[True, True, False], [False, False, True]])
    assert roc_auc(effect, mask) == 1.0 and precision_at_k(effect, mask) == 1.0
    ties = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert roc_auc(ties, mask) == 0.5 and precision_at_k(ties, mask) == pytest.approx(0.5)
    assert precision_at_k(-effect, mask) == 1.0  # |score|: a strongly negative effect is still in the circuit


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("", "empty"),
        ("clean,corrupted,correct\na,b,c\n", "lacks column"),
        ("clean,corrupted,correct,wrong\n", "no rows"),
        ("clean,corrupted,correct,wrong\nx,y,,z\nx,y,a,b\n", "Line 2: column 'correct' is empty"),
        ("clean,corrupted,correct,wrong\nx,y,a,a\nx,y,a,b\n", "both correct and wrong"),
        ("clean,corrupted,correct,wrong\nx,y,a,b\n", "one prompt pair"),
    ],
)
def test_csv__bad_uploads_are_refused_clearly(csv, message):
    with pytest.raises(BadInputError, match=message):
        pairs_from_csv(csv.encode())


def _csv(*rows) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([("clean", "corrupted", "correct", "wrong"), *rows])
    return buf.getvalue().encode()


def test_csv__token_checks_name_the_pair(tiny_handle):
    tok, v = tiny_handle.tokenizer, tiny_handle.cfg.d_vocab
    ok = ("When Mary met John, John thanked", "When Mary met John, Tom thanked", " Mary", " John")
    assert len(tokenize_task(pairs_from_csv(_csv(ok, ok)), tok, v)) == 1
    longer = ("When Mary met John, John thanked", "When Mary met John and Tom, Tom thanked", " Mary", " John")
    with pytest.raises(BadInputError, match="Pair 2: the clean prompt is .* tokens and the corrupted one"):
        tokenize_task(pairs_from_csv(_csv(ok, longer)), tok, v)
    multi = ("When Mary met John, John thanked", "When Mary met John, Tom thanked", " Maryanne-Louise", " John")
    with pytest.raises(BadInputError, match="not one"):
        tokenize_task(pairs_from_csv(_csv(ok, multi)), tok, v)


def test_tasks__builtins_tokenize_to_equal_lengths_with_single_token_answers(tiny_handle):
    for name in ("ioi", "greater-than", "docstring"):
        task = builtin_task(name, n=12, seed=3)
        batches = tokenize_task(task, tiny_handle.tokenizer, tiny_handle.cfg.d_vocab)
        assert sum(b.size for b in batches) == 12
        assert all(b.clean.shape == b.corrupted.shape for b in batches)
    with pytest.raises(BadInputError, match="Unknown task"):
        builtin_task("nope")


def test_run__result_is_json_and_exports(tiny_handle, tmp_path):
    from saelab.reports.circuits import export_result

    cfg = CircuitConfig(task="docstring", methods=["discrete-sae", "attribution-patching"], n_prompts=4,
                        n_repeats=2, subset_size=3, epochs=20)  # fmt: skip
    result = run_circuits(tiny_handle, cfg)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data["scores"]) == {"activation-patching", "discrete-sae", "attribution-patching"}
    assert len(data["reference"]["heads"]) == 1  # ceil(0.05 × 8)
    assert data["repeat_summary"]["discrete-sae"]["roc_auc"]["n"] == 2
    assert "formulas" in data and data["formulas"]["metric"].startswith("m = mean logit")
    written = export_result(result, tmp_path / "out")
    html = written["html"].read_text()
    assert "plotly" in html and "docstring" in html
    assert (tmp_path / "out" / "heads.csv").read_text().count("\n") == 9
    assert active_hook_count(tiny_handle) == 0
    from saelab.circuits.run import CircuitResult
    from saelab.reports import read_export

    back = read_export(tmp_path / "out", CircuitResult)  # the export reloads into the same type
    assert json.loads(json.dumps(back.to_dict())) == data
    assert (back.reference_mask == result.reference_mask).all() and back.task.pairs == result.task.pairs


def test_config__bad_values_refused():
    with pytest.raises(BadInputError, match="Unknown circuit method"):
        CircuitConfig(methods=["magic"])
    with pytest.raises(BadInputError, match="top_frac"):
        CircuitConfig(top_frac=1.5)


@pytest.fixture
def one_thread():
    """torch on one thread for this test (5× faster than two on a shared 2-core box); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_default_model__solves_ioi_and_methods_run_end_to_end(default_handle, one_thread):
    check = check_task(default_handle, builtin_task("ioi", n=12, seed=0))
    assert check.accuracy >= 0.9
    cfg = CircuitConfig(task="ioi", methods=["discrete-sae", "attribution-patching"], n_prompts=2, n_repeats=0,
                        epochs=100)  # fmt: skip
    result = run_circuits(default_handle, cfg)
    assert result.scores["activation-patching"].shape == (30, 9)
    assert result.reference_mask.sum() == 14  # ceil(0.05 × 270)
    for name in ("discrete-sae", "attribution-patching"):
        assert np.isfinite(result.evaluation[name]["roc_auc"])
    assert result.evaluation["attribution-patching"]["roc_auc"] > 0.6  # a gradient estimate of the reference itself
    assert active_hook_count(default_handle) == 0


def test_export__user_prompts_are_escaped_in_the_report(tiny_handle):
    from saelab.reports.circuits import build_report

    xss = "<script>alert(1)</script>"
    task = CircuitTask("xss", "html in prompts", "logit_diff", [
        PromptPair(f"{xss} When Mary met John, John thanked", f"{xss} When Mary met John, Tom thanked", [" Mary"],
                   [" John"]),
        PromptPair(f"{xss} When Amy met Dan, Dan thanked", f"{xss} When Amy met Dan, Bob thanked", [" Amy"], [" Dan"]),
    ])  # fmt: skip
    result = run_circuits(tiny_handle, CircuitConfig(methods=["attribution-patching"], n_repeats=0), task=task)
    html = build_report(result).to_html()
    assert xss not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
