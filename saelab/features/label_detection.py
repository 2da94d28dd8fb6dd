"""Detection scores for latent labels: does a label's rule predict where the latent fires on held-out text?

Sequence level, on held-out rows the dashboards never saw: one forward gives a [n_rows, d_sae] "fires in
row" matrix (`latent_activity`); a sparse [n_rows, vocab] token-presence matrix (`token_presence`) times a
sparse [vocab, d_sae] rule matrix gives every rule's prediction on every row at once. Per latent, up to N
rows where it fires and as many where it never fires are sampled (seeded); the score is the balanced
accuracy (TPR + TNR) / 2, with F1 and the counts. Position 0 and separators are attention sinks and count
neither as "fires" nor as "contains".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse

from saelab.corpus import separator_id, sink_mask
from saelab.errors import BadInputError
from saelab.features.labels import LabelConfig, LatentLabel
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- held-out activity


def check_tokens(handle: ModelHandle, tokens: torch.Tensor) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.numel() == 0 or tokens.shape[1] < 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise BadInputError(f"Held-out tokens must be a non-empty [n_seq, seq_len ≥ 2] tensor, got {shape}.")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise BadInputError(f"Held-out tokens must be integer ids, got dtype {tokens.dtype}.")
    vocab = int(handle.cfg.d_vocab)
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise BadInputError(f"Token ids must lie in [0, {vocab}); got {int(tokens.min())}..{int(tokens.max())}.")
    return tokens.long()


def latent_activity(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    batch_size: int = 32,
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    progress: Progress | None = None,
) -> torch.Tensor:
    """bool [n_seq, d_sae]: does each latent fire (activation > 0) anywhere in each row?

    Position 0 and separator tokens (attention sinks) are left out. The forward stops after the SAE's hook
    and runs in `compute_dtype` on a private copy of the model (`saelab.activations.compute_handle`); the SAE
    encodes in its own dtype. `progress(done_batches, n_batches)`.
    """
    from saelab.features.token_rules import token_rows  # the one forward over held-out rows (it imports this module)

    rows = token_rows(handle, loaded, tokens, separator_id(handle.tokenizer), batch_size,
                      compute_dtype=compute_dtype, progress=progress)  # fmt: skip
    return torch.from_numpy(rows.row_fires())


def token_presence(tokens: torch.Tensor, keep: torch.Tensor, vocab: int, *, before: bool = False) -> sparse.csr_matrix:
    """Sparse 0/1 [n_seq, vocab]: does row r hold token t at a kept position (`before`: just before one)?"""
    if before:  # the token at p − 1 for every kept p ≥ 1 (a separator or position 0 may precede one)
        tokens, keep = tokens[:, :-1], keep[:, 1:]
    n_seq, seq_len = tokens.shape
    rows = np.repeat(np.arange(n_seq), seq_len)[keep.reshape(-1).numpy()]
    cols = tokens.reshape(-1)[keep.reshape(-1)].numpy()
    m = sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_seq, vocab))
    m.data[:] = 1.0  # duplicates were summed
    return m


@dataclass
class HeldoutRows:
    """Held-out rows and what the detection score needs from them.

    Attributes:
        tokens: int64 [n_rows, seq_len].
        keep: bool [n_rows, seq_len], False at attention sinks (position 0, separators).
        fires: bool [n_rows, d_sae], latent fires at a kept position of the row.
        presence: sparse [n_rows, vocab], row holds the token at a kept position.
        presence_before: sparse [n_rows, vocab], row holds the token right before a kept position.
    """

    tokens: torch.Tensor
    keep: torch.Tensor
    fires: torch.Tensor
    presence: sparse.csr_matrix
    presence_before: sparse.csr_matrix

    @property
    def n_rows(self) -> int:
        return int(self.tokens.shape[0])


def heldout_rows(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    *,
    batch_size: int = 32,
    compute_dtype: torch.dtype = torch.bfloat16,
    progress: Progress | None = None,
) -> HeldoutRows:
    """Run the held-out rows once: latent activity and token presence (see `HeldoutRows`)."""
    tokens = check_tokens(handle, tokens)
    fires = latent_activity(handle, loaded, tokens, batch_size, compute_dtype=compute_dtype, progress=progress)
    keep = sink_mask(tokens, separator_id(handle.tokenizer))
    vocab = int(handle.cfg.d_vocab)
    return HeldoutRows(
        tokens,
        keep,
        fires,
        token_presence(tokens, keep, vocab),
        token_presence(tokens, keep, vocab, before=True),
    )


def predict_rows(rows: HeldoutRows, label: LatentLabel) -> np.ndarray:
    """bool [n_rows]: does each row contain `label`'s rule (see `LatentLabel.token_ids` and `pair_ids`)?"""
    after = set(label.after_ids)
    at = [t for t in label.token_ids if t not in after]
    hit = np.asarray(rows.presence[:, at].sum(axis=1)).ravel() > 0
    if after:
        hit |= np.asarray(rows.presence_before[:, sorted(after)].sum(axis=1)).ravel() > 0
    if label.pair_ids:  # [previous token, token] pairs ending at a kept position
        vocab = int(rows.presence.shape[1])
        keys = (rows.tokens[:, :-1] * vocab + rows.tokens[:, 1:]).numpy()
        wanted = [int(a) * vocab + int(b) for a, b in label.pair_ids]
        hit |= (np.isin(keys, wanted) & rows.keep[:, 1:].numpy()).any(axis=1)
    return hit


# ---------------------------------------------------------------- detection


def sample_rows(fires_row: np.ndarray, n_per_class: int, seed: int, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """(positive rows, negative rows) for one latent: up to `n_per_class` of each, as many of each.

    The sample for a smaller `n_per_class` is a prefix of the one for a larger, so scores made on a few rows
    (an LLM simulator's) use rows the offline score also used.
    """
    rng = np.random.default_rng((seed, latent))
    pos = rng.permutation(np.flatnonzero(fires_row))
    neg = rng.permutation(np.flatnonzero(~fires_row))
    m = min(n_per_class, pos.size, neg.size)
    return pos[:m], neg[:m]


def score_predictions(pred_pos: np.ndarray, pred_neg: np.ndarray) -> dict[str, Any]:
    """Balanced accuracy and F1 of bool predictions on positive and negative rows, with the counts."""
    tp, fp = int(pred_pos.sum()), int(pred_neg.sum())
    fn, tn = int(pred_pos.size) - tp, int(pred_neg.size) - fp
    tpr = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    f1_den = 2 * tp + fp + fn
    return {
        "detection_balanced_accuracy": (tpr + tnr) / 2,
        "detection_f1": 2 * tp / f1_den if f1_den else 0.0,
        "n_pos": int(pred_pos.size),
        "n_neg": int(pred_neg.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def too_few_rows(n_fire: int, n_rows: int, min_rows: int) -> str | None:
    """Why a latent cannot be scored on these rows, or None when it can."""
    if n_fire < min_rows:
        return f"fires in only {n_fire} of {n_rows} held-out rows (need {min_rows})"
    if n_rows - n_fire < min_rows:
        return f"fires in {n_fire} of {n_rows} held-out rows: too few rows without it (need {min_rows})"
    return None


def _hits(presence: sparse.spmatrix, rules: Sequence[Sequence[int]]) -> np.ndarray:
    """float [n_rows, d_sae]: how many of latent j's rule tokens row r holds (one sparse product)."""
    presence = sparse.csr_matrix(presence, dtype=np.float32)
    vocab, d_sae = presence.shape[1], len(rules)
    lat = np.repeat(np.arange(d_sae), [len(r) for r in rules])
    tok = np.fromiter((t for r in rules for t in r), dtype=np.int64, count=lat.size)
    ok = (tok >= 0) & (tok < vocab)  # a token the rows cannot contain predicts nothing
    rule_m = sparse.csr_matrix((np.ones(int(ok.sum()), np.float32), (tok[ok], lat[ok])), shape=(vocab, d_sae))
    return (presence @ rule_m).toarray()


def detection_scores(
    fires: torch.Tensor | np.ndarray,
    presence: sparse.spmatrix,
    rules: Sequence[Sequence[int]],
    cfg: LabelConfig | None = None,
    *,
    presence_before: sparse.spmatrix | None = None,
    after_rules: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Score every rule against latent activity: one dict per latent (see `LatentLabel` fields).

    Args:
        fires: bool [n_rows, d_sae], latent fires in row.
        presence: sparse [n_rows, vocab], row holds token (at an analysed position).
        rules: per latent, the token ids whose presence predicts "fires".
        presence_before, after_rules: likewise for tokens right before an analysed position ("after: …").
    """
    if cfg is None:
        cfg = LabelConfig()
    fires = fires.numpy() if isinstance(fires, torch.Tensor) else np.asarray(fires)
    n_rows, d_sae = fires.shape
    if len(rules) != d_sae or (after_rules is not None and len(after_rules) != d_sae):
        raise BadInputError(f"{len(rules)} rules for {d_sae} latents")
    hits = _hits(presence, rules)
    if after_rules is not None and any(after_rules):
        if presence_before is None:
            raise BadInputError("'after' rules need presence_before")
        hits += _hits(presence_before, after_rules)
    pred_T = np.ascontiguousarray(hits.T > 0)  # [d_sae, n_rows]
    fires_T = np.ascontiguousarray(fires.T.astype(bool))
    has_rule = [bool(r) for r in rules] if after_rules is None else [bool(a or b) for a, b in zip(rules, after_rules)]
    out: list[dict[str, Any]] = []
    for i in range(d_sae):
        if not has_rule[i]:
            out.append({"note": "no rule to score"})
            continue
        reason = too_few_rows(int(fires_T[i].sum()), n_rows, cfg.min_rows)
        if reason:
            out.append({"note": reason, "n_pos": 0, "n_neg": 0})
            continue
        pos, neg = sample_rows(fires_T[i], cfg.n_per_class, cfg.seed, i)
        out.append(score_predictions(pred_T[i, pos], pred_T[i, neg]))
    return out
