"""Token-level label rules (issue 17 item 3): chosen on a FIT half of held-out rows, scored on the TEST half."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from saelab.features.label_detection import HeldoutRows, predict_rows, token_presence
from saelab.features.labels import LatentLabel
from saelab.features.search import labels_by_quality
from saelab.features.token_rules import TokenRows, TokenRule, fit_and_score, rule_text, split_rows, token_rows

V = 50


def _rows(n_rows: int = 1500, seq_len: int = 12, seed: int = 0) -> tuple[np.ndarray, TokenRows]:
    """Random rows of tokens 10..29 (position 0 a sink) with four planted latents."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(10, 30, size=(n_rows, seq_len))
    keep = np.ones_like(tokens, dtype=bool)
    keep[:, 0] = False
    prev = np.concatenate([np.zeros((n_rows, 1), int), tokens[:, :-1]], axis=1)
    cur, prv = tokens[keep], prev[keep]
    row = np.repeat(np.arange(n_rows), seq_len).reshape(n_rows, seq_len)[keep]
    fires = np.stack(
        [
            cur == 15,  # 0: a token
            prv == 17,  # 1: the token before
            (prv == 12) & (cur == 13),  # 2: a pair (12 and 13 are common alone)
            rng.random(cur.size) < 0.05,  # 3: noise
            np.ones(cur.size, bool),  # 4: everywhere
        ],
        axis=1,
    )
    return tokens, TokenRows(cur, prv, row, sparse.csc_matrix(fires), n_rows, V)


def test_split_rows__disjoint_halves_covering_every_row():
    fit, test = split_rows(101, seed=0)
    assert fit.size == 50 and test.size == 51 and not set(fit) & set(test) and set(fit) | set(test) == set(range(101))
    assert not np.array_equal(fit, np.arange(50)), "a random half, not the first rows (held-out rows come in datasets)"


def test_fit_and_score__finds_token_previous_token_and_pair_rules_and_scores_noise_at_half():
    _, rows = _rows()
    out = fit_and_score(rows, [None] * 5, max_tokens=3, min_positions=5, n_per_class=100)
    assert out[0]["rule"].family == "tokens" and out[0]["rule"].at[0] == 15
    assert out[1]["rule"].family == "after" and out[1]["rule"].after[0] == 17
    assert out[2]["rule"].family == "pairs" and out[2]["rule"].pairs[0] == (12, 13)
    for j in (0, 1, 2):
        assert out[j]["token_balanced_accuracy"] > 0.95, (j, out[j])
        assert out[j]["token_tpr"] == 1.0
    assert abs(out[3]["token_balanced_accuracy"] - 0.5) < 0.08, out[3]  # chosen on FIT noise, scored on TEST
    assert out[3]["fit_balanced_accuracy"] > out[3]["token_balanced_accuracy"]  # the FIT score is optimistic
    assert out[4]["rule"] is None and "too few positions without it" in out[4]["note"]
    assert 0 < out[0]["n_pos"] <= 100 and out[0]["detection_balanced_accuracy"] > 0.5  # sequence level beside it


def test_fit_and_score__a_better_dashboard_rule_wins_and_a_worse_one_loses():
    _, rows = _rows()
    good = TokenRule(at=[15], family="dashboard")
    bad = TokenRule(at=[20, 21, 22], family="dashboard")
    out = fit_and_score(rows, [bad, None, None, None, None], max_tokens=3)
    assert out[0]["rule"].family == "tokens"
    exact = fit_and_score(rows, [good, None, None, None, None], max_tokens=1)
    assert exact[0]["rule"].at == [15]  # tie with the fitted set: the simpler family (tokens) is kept


def test_token_rows__match_a_direct_encode_without_sinks(tiny_handle):
    from sae_lens import StandardSAE, StandardSAEConfig

    from saelab.hooks import cache_activations
    from saelab.sae.files import LoadedSAE

    torch.manual_seed(0)
    hook = "blocks.0.hook_resid_post"
    sae = StandardSAE(StandardSAEConfig(d_in=tiny_handle.d_model, d_sae=16)).eval()
    with torch.no_grad():
        sae.W_enc.normal_()
    loaded = LoadedSAE(sae=sae, meta=None, path=None, hook=hook)
    tokens = torch.randint(1, 100, (6, 10))
    tokens[2, 4] = 0  # a separator
    rows = token_rows(tiny_handle, loaded, tokens, sep_id=0, batch_size=4, compute_dtype=torch.float32)
    with torch.no_grad():
        f = sae.encode(cache_activations(tiny_handle, tokens, [hook])[hook]) > 0
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False
    keep[tokens == 0] = False
    assert rows.cur.size == int(keep.sum()) and np.array_equal(rows.cur, tokens[keep].numpy())
    assert np.array_equal(rows.fires.toarray(), f[keep].numpy())
    assert np.array_equal(rows.prev, torch.cat([tokens[:, :1], tokens[:, :-1]], 1)[keep].numpy())
    assert rows.row_fires().shape == (6, 16) and rows.fires.nnz > 0


def test_predict_rows__pair_rules_need_both_tokens_in_order():
    tokens = torch.tensor([[1, 12, 13, 5], [1, 13, 12, 5], [1, 12, 5, 13], [12, 13, 5, 5]])
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False
    rows = HeldoutRows(tokens, keep, torch.zeros(4, 1, dtype=torch.bool), token_presence(tokens, keep, V),
                       token_presence(tokens, keep, V, before=True))  # fmt: skip
    lab = LatentLabel("pairs: 12 13", [], "tokens", pair_ids=[[12, 13]])
    assert predict_rows(rows, lab).tolist() == [True, False, False, True]  # row 3: 13 at position 1 is analysed


def test_rule_text_and_quality_browsing(tiny_handle):
    text = rule_text(TokenRule(at=[260], after=[198], pairs=[(260, 550)]), tiny_handle.tokenizer)
    assert text == "tokens: ' the'; after: '\\n'; pairs: ' the' ' other'"
    long = rule_text(TokenRule(at=list(range(300, 310))), tiny_handle.tokenizer, shown=3)
    assert long.startswith("tokens: ") and long.endswith("(+7 more)") and long.count("'") == 6
    from saelab.features.labels import LabelSet

    labs = [LatentLabel(f"l{i}", [], "tokens", token_balanced_accuracy=s, detection_balanced_accuracy=0.5)
            for i, s in enumerate([0.9, None, 0.6, 0.75])]  # fmt: skip
    rows, n = labels_by_quality(LabelSet(labs), min_score=0.7)
    assert n == 2 and [r.latent for r in rows] == [0, 3]
    rows, n = labels_by_quality(LabelSet(labs), best_first=False)
    assert [r.latent for r in rows] == [2, 3, 0]
