"""Tokenising texts into padded batches, and pooling token vectors into one vector per text.

Every text becomes `[sep] + its first max_tokens tokens`, where `sep` is the `<|endoftext|>` separator the
default SAE saw in front of every training document (`saelab.corpus.separator_id`). Position 0 is an attention
sink (residual norm ~1e4 in SmolLM2), so it is never pooled. Batches are right-padded with `sep` and run with an
attention mask: in a causal model a real token never attends to padding on its right, so a text's features do not
depend on its batch-mates (tested). Texts are sorted by length before batching to waste little compute on padding.

Pooling (keep = real tokens after position 0, T = their count, a_t = the token vectors):
  max       x = max_t a_t
  mean      x = (1/T) Σ_t a_t
  last      x = a_T (the text's last real token)
  topn-sum  x_j = Σ_t 1[j ∈ top-n(a_t) and a_tj > 0]  (MOSAIC: one-hot each token's top-n latents, sum over tokens)
A text with no tokens (empty after cutting) pools to zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from saelab.errors import BadInputError

PAD_SIDE = "right"
SKIP_POSITIONS = "position 0 (separator) and right padding"


@dataclass
class Encoded:
    """Token ids of each text (separator first) and how many texts were cut to `max_tokens`."""

    ids: list[list[int]]
    n_truncated: int
    max_tokens: int
    sep: int


@dataclass
class Batch:
    """One padded batch: `index` into the text list, tokens/mask [B, P], keep [B, P] (real tokens after pos 0)."""

    index: np.ndarray
    tokens_BP: torch.Tensor
    mask_BP: torch.Tensor
    keep_BP: torch.Tensor
    last_B: torch.Tensor  # position of the last real token (0 for an empty text: its separator)


def encode_texts(tokenizer, texts: list[str], max_tokens: int) -> Encoded:
    """Tokenise without special tokens, cut to `max_tokens`, put the separator in front."""
    from saelab.corpus import separator_id

    sep = separator_id(tokenizer)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BadInputError(f"Texts must be strings; rows {bad[:5]} are not (convert or drop them).")
    raw = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    n_cut = sum(len(r) > max_tokens for r in raw)
    return Encoded([[sep, *r[:max_tokens]] for r in raw], n_cut, max_tokens, sep)


def iter_batches(enc: Encoded, batch_size: int, device: str | torch.device = "cpu") -> Iterator[Batch]:
    """Length-sorted, right-padded batches covering every text once."""
    from saelab.corpus import sink_mask

    order = np.argsort([len(x) for x in enc.ids], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = [enc.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), enc.sep, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            tokens[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        keep = mask.bool() & sink_mask(tokens, enc.sep)  # real tokens, not position 0 or a separator
        last = torch.tensor([len(r) - 1 for r in rows])
        yield Batch(idx, tokens.to(device), mask.to(device), keep.to(device), last.to(device))


def _max(a_BPD: torch.Tensor, keep_BP: torch.Tensor, last_B: torch.Tensor, topn: int) -> torch.Tensor:
    x = a_BPD.masked_fill(~keep_BP[..., None], float("-inf")).amax(dim=1)
    return torch.where(keep_BP.any(1)[:, None], x, torch.zeros_like(x))


def _mean(a_BPD: torch.Tensor, keep_BP: torch.Tensor, last_B: torch.Tensor, topn: int) -> torch.Tensor:
    k = keep_BP[..., None].to(a_BPD.dtype)
    return (a_BPD * k).sum(1) / k.sum(1).clamp_min(1.0)


def _last(a_BPD: torch.Tensor, keep_BP: torch.Tensor, last_B: torch.Tensor, topn: int) -> torch.Tensor:
    x = a_BPD[torch.arange(a_BPD.shape[0], device=a_BPD.device), last_B]
    return torch.where(keep_BP.any(1)[:, None], x, torch.zeros_like(x))


def _topn_sum(a_BPD: torch.Tensor, keep_BP: torch.Tensor, last_B: torch.Tensor, topn: int) -> torch.Tensor:
    n = min(topn, a_BPD.shape[-1])
    vals, idx = a_BPD.topk(n, dim=-1)
    hot = ((vals > 0) & keep_BP[..., None]).to(a_BPD.dtype)
    out = torch.zeros(a_BPD.shape[0], a_BPD.shape[-1], dtype=a_BPD.dtype, device=a_BPD.device)
    return out.scatter_add_(1, idx.flatten(1), hot.flatten(1))


PoolFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
POOLINGS: dict[str, PoolFn] = {"max": _max, "mean": _mean, "last": _last, "topn-sum": _topn_sum}
DENSE_POOLINGS = ("last", "mean", "max")  # topn-sum counts sparse latents; it means nothing on dense vectors
POOLING_FORMULAS = {
    "max": "x = max over tokens t of a_t",
    "mean": "x = (1/T) Σ_t a_t",
    "last": "x = a_T (last real token)",
    "topn-sum": "x_j = Σ_t 1[j ∈ top-n(a_t) and a_tj > 0] (MOSAIC)",
}


def check_pooling(pooling: str, allowed: tuple[str, ...] | None = None) -> str:
    choices = allowed or tuple(POOLINGS)
    if pooling not in choices:
        raise BadInputError(f"Unknown pooling {pooling!r} for this source; choose one of {list(choices)}.")
    return pooling


def pool(a_BPD: torch.Tensor, batch: Batch, pooling: str, topn: int = 20) -> torch.Tensor:
    """[B, P, ...] token vectors → [B, D] float32 (trailing dims flattened), over `batch.keep_BP` only."""
    return POOLINGS[check_pooling(pooling)](a_BPD.flatten(2).float(), batch.keep_BP, batch.last_B, topn)


def binarise(X: np.ndarray, threshold: float | None) -> np.ndarray:
    """1[X > threshold] as float32 (unchanged when threshold is None)."""
    return X if threshold is None else (X > threshold).astype(np.float32)


def truncation_note(enc: Encoded, n_texts: int) -> list[str]:
    if not enc.n_truncated:
        return []
    return [f"{enc.n_truncated} of {n_texts} texts were cut to their first {enc.max_tokens} tokens (max_tokens)."]


def run_batches(handle, enc: Encoded, names: list[str], batch_size: int, progress=None) -> Iterator[tuple[Batch, dict]]:
    """For each batch: one forward through `saelab.hooks.cache_activations` (stopped after the deepest hook in
    `names`, attention mask on) → (batch, {hook: [B, P, ...] activations}). Callers pool and drop them at once."""
    from saelab.hooks import cache_activations

    if handle is None:
        raise BadInputError("This feature source needs a model; load one (or choose the tfidf source).")
    n = len(enc.ids)
    done = 0
    for batch in iter_batches(enc, batch_size, handle.cfg.device):
        acts = cache_activations(handle, batch.tokens_BP, names, attention_mask=batch.mask_BP)
        yield batch, acts
        done += len(batch.index)
        if progress is not None:
            progress(done, n)


def run_pooled(handle, enc: Encoded, names: list[str], batch_size: int, pooling: str, topn: int = 20, progress=None):
    """Like `run_batches`, but each hook pools its activation inside the forward (closures over this call's batch),
    so a many-layer read keeps [B, width] per hook instead of [B, P, width]. Yields (batch, {hook: [B, width]})."""
    from saelab.hooks import run_with_hooks

    if handle is None:
        raise BadInputError("This feature source needs a model; load one (or choose the tfidf source).")
    for name in names:
        handle.check_hook(name)
    stop = handle.stop_layer_for(list(names))
    n, done = len(enc.ids), 0
    for batch in iter_batches(enc, batch_size, handle.cfg.device):
        store: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook, batch=batch, store=store) -> None:
            store[hook.name] = pool(act.detach(), batch, pooling, topn)

        kwargs = {"return_type": None, "attention_mask": batch.mask_BP}
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        run_with_hooks(handle, batch.tokens_BP, [(h, keep) for h in names], **kwargs)
        yield batch, store
        done += len(batch.index)
        if progress is not None:
            progress(done, n)
