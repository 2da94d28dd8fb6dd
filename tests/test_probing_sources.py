"""Feature sources for probing: pooling invariants, padding independence, one-pass layer sweep, no test-row leakage,
SAV voting, neuron ranking, bad input. Tiny random model + tiny random TopK SAE; one slow test on the real model."""

from __future__ import annotations

import numpy as np
import pytest

from saelab.activations import text_batches
from saelab.errors import BadInputError
from saelab.probing.attention_vectors import fit_centroids, head_similarities, vote
from saelab.probing.feature_sources import (
    FEATURE_SOURCES,
    FeatureSet,
    SourceParams,
    extract_features,
    latent_token_activations,
    paired_contrast_ranking,
    sav_predict,
)
from saelab.probing.neurons import auroc_columns, separability
from tests.fixtures_ui import build_tiny_sae

TEXTS = [
    "a truly wonderful film with great acting",
    "bad",
    "the plot was dull and the jokes fell flat, a waste of two hours",
    "I loved it",
    "terrible, boring, far too long and badly written",
    "fine",
    "one of the best movies of the year",
    "awful",
]
LABELS = np.array([1, 0, 0, 1, 0, 1, 1, 0])
FIT = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory, tiny_handle):
    from saelab.sae.files import load_sae

    return load_sae(build_tiny_sae(tmp_path_factory.mktemp("src-sae") / "sae"), handle=tiny_handle)


def _sae(handle, sae, texts=TEXTS, **kw) -> FeatureSet:
    return extract_features(SourceParams(source="sae", **kw), texts, handle=handle, loaded_sae=sae)


def test_registry__has_every_promised_source():
    assert {"sae", "hidden", "layer_sweep", "neurons", "sav", "tfidf"} <= set(FEATURE_SOURCES)


def test_sae_pooling__max_at_least_mean_and_binarise_is_zero_one(tiny_handle, tiny_sae):
    mx = _sae(tiny_handle, tiny_sae, pooling="max")
    mean = _sae(tiny_handle, tiny_sae, pooling="mean")
    assert mx.X.shape == (len(TEXTS), 32) and mx.latent_ids == list(range(32))
    assert np.all(mx.X >= mean.X - 1e-6)
    assert mx.X.max() > 0
    binar = _sae(tiny_handle, tiny_sae, pooling="max", binarise=0.0)
    assert set(np.unique(binar.X)) <= {0.0, 1.0}
    np.testing.assert_array_equal(binar.X, (mx.X > 0).astype(np.float32))
    assert binar.params["binarise"] == 0.0 and binar.params["skipped_positions"] == text_batches.SKIP_POSITIONS


def test_sae_pooling__topn_sum_counts_each_tokens_top_n_active_latents(tiny_handle, tiny_sae):
    n = 3
    fs = _sae(tiny_handle, tiny_sae, pooling="topn-sum", topn=n)
    for i, text in enumerate(TEXTS):
        _, acts = latent_token_activations(tiny_handle, tiny_sae, text, list(range(32)))
        expected = np.minimum(n, (acts > 0).sum(1)).sum()  # n per token, fewer where fewer latents fire
        assert fs.X[i].sum() == expected
        assert np.all(fs.X[i] == np.round(fs.X[i])) and fs.X[i].max() <= len(acts)


def test_sae_pooling__last_and_max_match_per_token_activations(tiny_handle, tiny_sae):
    mx = _sae(tiny_handle, tiny_sae, pooling="max")
    last = _sae(tiny_handle, tiny_sae, pooling="last")
    for i, text in enumerate(TEXTS):
        tokens, acts = latent_token_activations(tiny_handle, tiny_sae, text, list(range(32)))
        assert len(tokens) == len(acts) == len(tiny_handle.tokenizer(text, add_special_tokens=False)["input_ids"])
        np.testing.assert_allclose(mx.X[i], acts.max(0), atol=1e-5)
        np.testing.assert_allclose(last.X[i], acts[-1], atol=1e-5)


@pytest.mark.parametrize("source,pool_name", [("sae", "max"), ("sae", "mean"), ("sae", "last"), ("hidden", "mean")])
def test_padding__batched_features_equal_one_text_at_a_time(tiny_handle, tiny_sae, source, pool_name):
    def run(bs):
        p = SourceParams(source=source, pooling=pool_name, layer=1, batch_size=bs)
        return extract_features(p, TEXTS, handle=tiny_handle, loaded_sae=tiny_sae).X

    np.testing.assert_allclose(run(8), run(1), atol=1e-5, rtol=1e-5)


def test_truncation__is_counted_and_cuts_features(tiny_handle, tiny_sae):
    fs = _sae(tiny_handle, tiny_sae, pooling="last", max_tokens=3)
    assert fs.extra["n_truncated"] == sum(
        len(tiny_handle.tokenizer(t, add_special_tokens=False)["input_ids"]) > 3 for t in TEXTS
    )
    assert fs.extra["notes"] and fs.params["max_tokens"] == 3
    cut = _sae(tiny_handle, tiny_sae, [TEXTS[0]], pooling="last", max_tokens=3)
    tokens, acts = latent_token_activations(tiny_handle, tiny_sae, TEXTS[0], list(range(32)), max_tokens=3)
    assert len(tokens) == 3
    np.testing.assert_allclose(cut.X[0], acts[-1], atol=1e-5)


def test_empty_text__pools_to_zeros(tiny_handle, tiny_sae):
    for how in ("max", "mean", "last", "topn-sum"):
        fs = _sae(tiny_handle, tiny_sae, ["", "good"], pooling=how)
        assert np.all(fs.X[0] == 0)


def test_layer_sweep__equals_separate_per_layer_passes(tiny_handle):
    sweep = extract_features(SourceParams(source="layer_sweep", pooling="mean", layer=0), TEXTS, handle=tiny_handle)
    assert sorted(sweep.extra["layers"]) == list(range(tiny_handle.n_layers))
    np.testing.assert_array_equal(sweep.X, sweep.extra["layers"][0])
    for layer in range(tiny_handle.n_layers):
        one = extract_features(SourceParams(source="hidden", pooling="mean", layer=layer), TEXTS, handle=tiny_handle)
        np.testing.assert_allclose(sweep.extra["layers"][layer], one.X, atol=1e-5)
        assert one.params["hook"] == f"blocks.{layer}.hook_resid_post"


def test_hidden__topn_sum_falls_back_to_last_and_says_so(tiny_handle):
    fs = extract_features(SourceParams(source="hidden", pooling="topn-sum", layer=1), TEXTS, handle=tiny_handle)
    last = extract_features(SourceParams(source="hidden", pooling="last", layer=1), TEXTS, handle=tiny_handle)
    np.testing.assert_array_equal(fs.X, last.X)
    assert fs.params["pooling"] == "last" and "last-token" in fs.extra["notes"][0]


def test_tfidf__vocabulary_comes_from_training_rows_only():
    texts = ["good film", "bad film", "good plot", "zebra unicorn"]
    fs = extract_features(
        SourceParams(source="tfidf"), texts, labels=np.array([1, 0, 1, 0]), fit_texts_mask=np.array([1, 1, 1, 0], bool)
    )
    assert "tfidf 'zebra'" not in fs.names and "tfidf 'good film'" in fs.names
    assert np.all(fs.X[3] == 0)
    np.testing.assert_allclose(np.linalg.norm(fs.X[:3], axis=1), 1.0, rtol=1e-5)


def test_neurons__ranking_ignores_test_labels(tiny_handle):
    p = SourceParams(source="neurons", pooling="mean", layer=1, top_k_neurons=5)
    a = extract_features(p, TEXTS, handle=tiny_handle, labels=LABELS, fit_texts_mask=FIT)
    flipped = LABELS.copy()
    flipped[~FIT] = 1 - flipped[~FIT]
    b = extract_features(p, TEXTS, handle=tiny_handle, labels=flipped, fit_texts_mask=FIT)
    assert a.names == b.names and len(a.names) == 5
    np.testing.assert_array_equal(a.X, b.X)
    series = a.extra["best_neuron_by_layer"]
    assert [s["layer"] for s in series] == list(range(tiny_handle.n_layers))
    assert all(0.5 <= s["score"] <= 1.0 for s in series)
    assert series[1]["score"] == pytest.approx(a.extra["neuron_ranking"][0]["score"])
    ranks = [r["score"] for r in a.extra["neuron_ranking"]]
    assert ranks == sorted(ranks, reverse=True)


def test_neurons__auroc_matches_sklearn_and_scores_are_symmetric():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    X[:, 2] = np.round(X[:, 2])  # ties
    y = rng.integers(0, 2, 40)
    expected = [roc_auc_score(y, X[:, j]) for j in range(6)]
    np.testing.assert_allclose(auroc_columns(X, y == 1), expected)
    s, name = separability(X, y)
    np.testing.assert_allclose(s, np.maximum(expected, 1 - np.array(expected)))
    assert "AUROC" in name
    s_num, name_num = separability(X, X[:, 0] * 2.5 + 0.1)
    assert s_num[0] == pytest.approx(1.0) and "Pearson" in name_num


def test_sav__majority_vote_separates_a_toy_with_noisy_heads():
    rng = np.random.default_rng(0)
    n, d = 60, 8
    y = np.repeat([0, 1], n // 2)
    Z = rng.normal(size=(n, 5, d)).astype(np.float32)  # 5 heads: pure noise …
    Z[:, :3, 0] += np.where(y == 1, 3.0, -3.0)[:, None]  # … except heads 0-2 carry the class
    cent, acc = fit_centroids(Z, y, np.array([0, 1]))
    assert acc[:3].min() > 0.9 and acc[3:].max() < acc[:3].min()
    top = np.argsort(-acc)[:3]
    assert set(top) == {0, 1, 2}
    pred = vote(head_similarities(Z[:, top], cent[top]), np.array([0, 1]))
    assert (pred == y).mean() == 1.0
    fs = FeatureSet(
        X=Z[:, top].reshape(n, -1),
        names=[f"h{i}" for i in range(3 * d)],
        source="sav",
        params={},
        extra={"sav": {"centroids": cent[top], "classes": [0, 1]}},
    )
    np.testing.assert_array_equal(sav_predict(fs), pred)


def test_sav__source_fits_heads_on_training_rows(tiny_handle):
    p = SourceParams(source="sav", top_heads=3)
    fs = extract_features(p, TEXTS, handle=tiny_handle, labels=LABELS, fit_texts_mask=FIT)
    d_head = int(tiny_handle.cfg.d_head)
    assert fs.X.shape == (len(TEXTS), 3 * d_head) and len(fs.extra["sav"]["heads"]) == 3
    flipped = LABELS.copy()
    flipped[~FIT] = 1 - flipped[~FIT]
    fs2 = extract_features(p, TEXTS, handle=tiny_handle, labels=flipped, fit_texts_mask=FIT)
    assert fs.extra["sav"]["heads"] == fs2.extra["sav"]["heads"]
    np.testing.assert_array_equal(fs.extra["sav"]["centroids"], fs2.extra["sav"]["centroids"])
    assert set(sav_predict(fs)) <= {0, 1}


def test_paired_contrast__ranks_by_summed_abs_difference(tiny_handle, tiny_sae):
    a, b = TEXTS[:4], TEXTS[4:]
    ranking = paired_contrast_ranking(tiny_handle, tiny_sae, a, b, pooling="last")
    fa = _sae(tiny_handle, tiny_sae, a, pooling="last").X
    fb = _sae(tiny_handle, tiny_sae, b, pooling="last").X
    expected = np.abs(fa - fb).sum(0)
    scores = [s for _, s in ranking]
    assert scores == sorted(scores, reverse=True) and scores
    for j, s in ranking:
        assert s == pytest.approx(expected[j], rel=1e-4, abs=1e-5)
    assert paired_contrast_ranking(tiny_handle, tiny_sae, a, a) == []


def test_bad_input__each_gets_a_clear_error(tiny_handle, tiny_sae):
    with pytest.raises(BadInputError, match="Unknown feature source"):
        extract_features(SourceParams(source="nope"), TEXTS)
    with pytest.raises(BadInputError, match="Unknown pooling"):
        _sae(tiny_handle, tiny_sae, pooling="median")
    with pytest.raises(BadInputError, match="Layer 9 does not exist"):
        extract_features(SourceParams(source="hidden", layer=9), TEXTS, handle=tiny_handle)
    with pytest.raises(BadInputError, match="needs an SAE"):
        extract_features(SourceParams(source="sae"), TEXTS, handle=tiny_handle)
    with pytest.raises(BadInputError, match="labels"):
        extract_features(SourceParams(source="neurons"), TEXTS, handle=tiny_handle, labels=LABELS[:3])
    with pytest.raises(BadInputError, match="numeric"):
        extract_features(SourceParams(source="sav"), TEXTS, handle=tiny_handle, labels=np.linspace(0, 1, len(TEXTS)))
    with pytest.raises(BadInputError, match="positive integer"):
        SourceParams(source="sae", topn=0)
    with pytest.raises(BadInputError, match="latents"):
        latent_token_activations(tiny_handle, tiny_sae, "x", [999])
    with pytest.raises(BadInputError, match="equally long"):
        paired_contrast_ranking(tiny_handle, tiny_sae, ["a"], [])


def test_hooks__none_left_after_extraction(tiny_handle, tiny_sae):
    from saelab.hooks import active_hook_count

    for src in ("sae", "neurons", "sav", "layer_sweep"):
        extract_features(
            SourceParams(source=src, layer=1, top_heads=2),
            TEXTS,
            handle=tiny_handle,
            loaded_sae=tiny_sae,
            labels=LABELS,
            fit_texts_mask=FIT,
        )
        assert active_hook_count(tiny_handle) == 0


@pytest.mark.slow
def test_default_model__sae_and_hidden_features_on_sst2(default_handle):
    from saelab.defaults import default_sae_dir
    from saelab.sae.files import load_sae
    from saelab.textsets import from_builtin

    sae = load_sae(default_sae_dir(), handle=default_handle)
    texts = from_builtin("92_glue_sst2", max_rows=20, seed=0).texts[:4]
    p = SourceParams(source="sae", pooling="topn-sum", topn=20, max_tokens=24, batch_size=2)
    fs = extract_features(p, texts, handle=default_handle, loaded_sae=sae)
    assert fs.X.shape == (4, 4608) and fs.params["hook"] == "blocks.12.hook_resid_post"
    n_tok = [min(24, len(default_handle.tokenizer(t, add_special_tokens=False)["input_ids"])) for t in texts]
    np.testing.assert_array_equal(fs.X.sum(1), 20 * np.array(n_tok))  # TopK k = 64 ≥ 20 latents fire per token
    single = extract_features(
        SourceParams(source="sae", pooling="max", max_tokens=24, batch_size=1),
        texts[:2],
        handle=default_handle,
        loaded_sae=sae,
    )
    batched = extract_features(
        SourceParams(source="sae", pooling="max", max_tokens=24, batch_size=4),
        texts,
        handle=default_handle,
        loaded_sae=sae,
    )
    np.testing.assert_allclose(batched.X[:2], single.X, atol=2e-3, rtol=1e-3)
    hid = extract_features(SourceParams(source="hidden", pooling="last", max_tokens=24), texts, handle=default_handle)
    assert hid.X.shape == (4, 576) and np.isfinite(hid.X).all()
