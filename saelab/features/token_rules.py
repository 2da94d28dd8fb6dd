"""Token-level label rules: chosen on one half of the held-out text, scored on the other (issue 17 item 3).

A sequence-level score ("does the row contain a rule token?") flatters rules like "' the'", which every
128-token row contains. Here every analysed held-out position (not position 0, not a separator) is one
example: the latent fires there (activation > 0) or not; a rule predicts "fires" at position p from the
token at p ("tokens: …"), the token at p − 1 ("after: …"), the pair (p − 1, p) ("pairs: …"), or a union.

Choosing a rule (on the FIT rows, a seeded random half of the held-out rows, `split_rows`): with P the positions where latent i
fires and N the others, a token set S of one family has balanced accuracy
    BA(S) = (TPR + TNR) / 2 = 1/2 + 1/2 · Σ_{t∈S} (p_t − n_t),    p_t = |P ∩ {x = t}| / |P|,  n_t = |N ∩ {x = t}| / |N|
(x: the token, the previous token or the pair), which is additive, so each family's best set of at most
`max_tokens` members is its members with the largest gains p_t − n_t > 0 (each seen ≥ `min_count` times among
the firing positions). Candidates: the best "tokens", "after" and "pairs" sets, their "tokens + after" union
and the dashboard-derived rule (`autolabel`); the one with the highest FIT balanced accuracy wins (exactly
computed; ties go to the simpler family, in that order).

Scoring (on the TEST rows, the other half, never used to choose): token level, every analysed position —
TPR over all positions where the latent fires, TNR over all where it does not; sequence level, the same rule
"fires somewhere in the row" against "latent fires in the row" on up to `n_per_class` sampled rows of each
(`label_detection.sample_rows`), as before. No token-level score when fewer than `min_rows` positions fire in
either half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse

from saelab.features.label_detection import check_tokens, sample_rows, score_predictions, too_few_rows
from saelab.hooks import cache_activations
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE

FAMILIES = ("tokens", "after", "pairs", "tokens+after", "dashboard")
SHOWN = 6  # members of each part a label's text lists (the rule keeps them all)


@dataclass
class TokenRows:
    """The analysed positions of held-out rows, flattened (position 0 and separators left out).

    Attributes:
        cur, prev: int64 [n] the token at the position and the one before it.
        row: int64 [n] the held-out row of each position.
        fires: sparse CSC bool [n, d_sae], the latent fires at the position.
        n_rows: held-out rows; vocab: the model's vocabulary size.
    """

    cur: np.ndarray
    prev: np.ndarray
    row: np.ndarray
    fires: sparse.csc_matrix
    n_rows: int
    vocab: int

    @property
    def pair(self) -> np.ndarray:
        return self.prev * self.vocab + self.cur

    def row_fires(self) -> np.ndarray:
        """bool [n_rows, d_sae]: the latent fires somewhere in the row."""
        coo = self.fires.tocoo()
        out = np.zeros((self.n_rows, self.fires.shape[1]), dtype=bool)
        out[self.row[coo.row], coo.col] = True
        return out


def token_rows(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    sep_id: int | None,
    batch_size: int = 32,
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    progress: Callable[[int, int], None] | None = None,
) -> TokenRows:
    """One forward over `tokens` [n_rows, seq_len] (stopped after the SAE's hook): where each latent fires."""
    from saelab.activations import compute_handle
    from saelab.corpus import sink_mask

    tokens = check_tokens(handle, tokens)
    keep = sink_mask(tokens, sep_id)
    index = torch.full(tokens.shape, -1, dtype=torch.int64)
    index[keep] = torch.arange(int(keep.sum()))
    run = compute_handle(handle, compute_dtype)
    sae, hook, d_sae = loaded.sae, loaded.hook, int(loaded.sae.cfg.d_sae)
    pos_parts, lat_parts = [], []
    starts = range(0, tokens.shape[0], batch_size)
    with torch.inference_mode():
        for b, start in enumerate(starts):
            rows = slice(start, start + batch_size)
            act = cache_activations(run, tokens[rows].to(run.cfg.device), [hook])[hook]
            f = sae.encode(act.to(device=sae.device, dtype=sae.dtype))
            f = f.reshape(*f.shape[:2], d_sae).cpu()
            r, p, j = torch.nonzero((f > 0) & keep[rows, :, None], as_tuple=True)
            pos_parts.append(index[rows][r, p].numpy())
            lat_parts.append(j.numpy())
            if progress is not None:
                progress(b + 1, len(starts))
    n = int(keep.sum())
    pos, lat = np.concatenate(pos_parts), np.concatenate(lat_parts)
    fires = sparse.csc_matrix((np.ones(pos.size, dtype=bool), (pos, lat)), shape=(n, d_sae))
    prev = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
    row = torch.arange(tokens.shape[0])[:, None].expand_as(tokens)
    return TokenRows(tokens[keep].numpy(), prev[keep].numpy(), row[keep].numpy(), fires, int(tokens.shape[0]),
                     int(handle.cfg.d_vocab))  # fmt: skip


@dataclass
class TokenRule:
    """A label rule at token level: fires at p iff token(p) ∈ at, or token(p−1) ∈ after, or the pair ∈ pairs."""

    at: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    family: str = "tokens"

    def __bool__(self) -> bool:
        return bool(self.at or self.after or self.pairs)

    def predict(self, cur: np.ndarray, prev: np.ndarray, vocab: int, pair: np.ndarray | None = None) -> np.ndarray:
        """bool per position; `pair` (= prev · vocab + cur) may be passed precomputed."""
        hit = np.isin(cur, self.at) if self.at else np.zeros(cur.shape, dtype=bool)
        if self.after:
            hit |= np.isin(prev, self.after)
        if self.pairs:
            hit |= np.isin(prev * vocab + cur if pair is None else pair, [a * vocab + b for a, b in self.pairs])
        return hit


def rule_text(rule: TokenRule, tokenizer, cache: dict[int, str] | None = None, shown: int = SHOWN) -> str:
    """The rule in words, at most `shown` members per part (by gain) and "+N more":
    "tokens: ' Paris', ' France'; after: ' in'; pairs: ' New' ' York'"."""
    from saelab.features.labels import show_token

    def show(t: int) -> str:
        return show_token(tokenizer, t, cache)

    def listed(items: list[str]) -> str:
        more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    parts = [f"tokens: {listed([show(t) for t in rule.at])}"] if rule.at else []
    parts += [f"after: {listed([show(t) for t in rule.after])}"] if rule.after else []
    parts += [f"pairs: {listed([f'{show(a)} {show(b)}' for a, b in rule.pairs])}"] if rule.pairs else []
    return "; ".join(parts)


def _best_set(own: np.ndarray, all_ids: np.ndarray, all_counts: np.ndarray, n_neg: int, max_n: int, min_count: int):
    """The ids of `own` (the firing positions' values) with the largest gains p_t − n_t > 0, at most `max_n`."""
    ids, y = np.unique(own, return_counts=True)
    ok = y >= min_count
    ids, y = ids[ok], y[ok]
    if ids.size == 0 or n_neg <= 0:
        return []
    at = np.searchsorted(all_ids, ids)
    neg = all_counts[at] - y
    gain = y / own.size - neg / n_neg
    order = np.lexsort((ids, -gain))[:max_n]
    return [int(t) for t in ids[order][gain[order] > 0]]


def _ba(pred: np.ndarray, fires: np.ndarray) -> float:
    n_pos = int(fires.sum())
    n_neg = fires.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    tpr = float(pred[fires].mean())
    tnr = 1.0 - float(pred[~fires].mean())
    return (tpr + tnr) / 2


def _family_sets(rows: TokenRows, pair, fit: np.ndarray, pos: np.ndarray, max_n: int, min_count: int, counts) -> dict:
    n_neg = int(fit.sum()) - pos.size
    at = _best_set(rows.cur[pos], *counts["cur"], n_neg, max_n, min_count)
    after = _best_set(rows.prev[pos], *counts["prev"], n_neg, max_n, min_count)
    pairs = _best_set(pair[pos], *counts["pair"], n_neg, max_n, min_count)
    v = rows.vocab
    out = {
        "tokens": TokenRule(at=at, family="tokens"),
        "after": TokenRule(after=after, family="after"),
        "pairs": TokenRule(pairs=[(p // v, p % v) for p in pairs], family="pairs"),
    }
    after_only = [t for t in after if t not in at]  # a token in both sets counts as a current token
    if at and after_only:  # the union, trimmed to max_n members in all
        k_at = max(1, min(len(at), max_n - max_n // 2))
        out["tokens+after"] = TokenRule(at=at[:k_at], after=after_only[: max_n - k_at], family="tokens+after")
    return out


def split_rows(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(FIT rows, TEST rows): a seeded random half each (FIT gets the smaller half), sorted."""
    order = np.random.default_rng((seed, 17)).permutation(n_rows)
    return np.sort(order[: n_rows // 2]), np.sort(order[n_rows // 2 :])


def fit_and_score(
    rows: TokenRows,
    dashboard_rules: Sequence[TokenRule | None],
    *,
    max_tokens: int = 40,
    min_count: int = 2,
    min_positions: int = 5,
    n_per_class: int = 100,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Per latent: the chosen rule and its token- and sequence-level scores on the test half (module docstring).

    Returns one dict per latent: rule (a `TokenRule` or None), fit_balanced_accuracy, token-level test scores
    (token_balanced_accuracy, token_tpr, token_tnr, token_n_pos, token_n_neg), the sequence-level test score
    (`score_predictions`' keys) and a note when a level could not be scored.
    """
    fit_rows, test_rows = split_rows(rows.n_rows, seed)
    in_fit = np.zeros(rows.n_rows, dtype=bool)
    in_fit[fit_rows] = True
    fit = in_fit[rows.row]
    test = ~fit
    test_index = np.full(rows.n_rows, -1)
    test_index[test_rows] = np.arange(test_rows.size)
    pair = rows.pair
    counts = {}
    for name, values in (("cur", rows.cur), ("prev", rows.prev), ("pair", pair)):
        counts[name] = np.unique(values[fit], return_counts=True)
    row_fires = rows.row_fires()[test_rows]
    cur_t, prev_t, pair_t, row_t = rows.cur[test], rows.prev[test], pair[test], test_index[rows.row[test]]
    cur_f, prev_f, pair_f = rows.cur[fit], rows.prev[fit], pair[fit]
    d_sae = rows.fires.shape[1]
    n_fit_all, n_test_all = int(fit.sum()), int(test.sum())
    out: list[dict] = []
    for j in range(d_sae):
        col = rows.fires.indices[rows.fires.indptr[j] : rows.fires.indptr[j + 1]]
        fires_pos = np.zeros(rows.cur.size, dtype=bool)
        fires_pos[col] = True
        pos_fit = col[fit[col]]
        entry: dict = {"rule": None}
        n_fit, n_test = pos_fit.size, col.size - pos_fit.size
        quiet = min(n_fit_all - n_fit, n_test_all - n_test)
        if min(n_fit, n_test) < min_positions or quiet < min_positions:
            entry["note"] = (
                f"fires at {n_fit} + {n_test} held-out positions (fit + test; need {min_positions} in each)"
                if min(n_fit, n_test) < min_positions
                else f"fires at {col.size} of {rows.cur.size} held-out positions: too few positions without it"
            )
            out.append(entry)
            if progress is not None and j % 256 == 0:
                progress(j, d_sae)
            continue
        cands = _family_sets(rows, pair, fit, pos_fit, max_tokens, min_count, counts)
        if dashboard_rules[j]:
            cands["dashboard"] = dashboard_rules[j]
        fires_fit = fires_pos[fit]
        best, best_ba = None, -1.0
        for name in FAMILIES:
            rule = cands.get(name)
            if not rule:
                continue
            ba = _ba(rule.predict(cur_f, prev_f, rows.vocab, pair_f), fires_fit)
            if ba > best_ba + 1e-12:
                best, best_ba = rule, ba
        if best is None:
            entry["note"] = "no token, previous token or pair is more common where the latent fires"
            out.append(entry)
            continue
        pred = best.predict(cur_t, prev_t, rows.vocab, pair_t)
        fires_test = fires_pos[test]
        tpr = float(pred[fires_test].mean())
        tnr = 1.0 - float(pred[~fires_test].mean())
        entry.update(rule=best, fit_balanced_accuracy=best_ba, token_balanced_accuracy=(tpr + tnr) / 2,
                     token_tpr=tpr, token_tnr=tnr, token_n_pos=int(fires_test.sum()),
                     token_n_neg=int((~fires_test).sum()))  # fmt: skip
        row_pred = np.zeros(test_rows.size, dtype=bool)
        row_pred[row_t[pred]] = True
        reason = too_few_rows(int(row_fires[:, j].sum()), test_rows.size, min_positions)
        if reason:
            entry["note"] = f"sequence level: {reason}"
        else:
            p, n = sample_rows(row_fires[:, j], n_per_class, seed, j)
            entry.update(score_predictions(row_pred[p], row_pred[n]))
        out.append(entry)
        if progress is not None and j % 256 == 0:
            progress(j, d_sae)
    return out


__all__ = ["FAMILIES", "TokenRows", "TokenRule", "fit_and_score", "rule_text", "split_rows", "token_rows"]
