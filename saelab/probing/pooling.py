"""Pooling token vectors into one vector per text (the probing feature sources' last step).

Texts are tokenised and batched by `saelab.activations.text_batches` (separator in front, right padding with an
attention mask, length-sorted batches); `Batch.keep_BP` marks the real, non-sink tokens.

Pooling (keep = real non-sink tokens, T = their count, a_t = the token vectors):
  max       x = max_t a_t
  mean      x = (1/T) Σ_t a_t
  last      x = a_T (the text's last real token)
  topn-sum  x_j = Σ_t 1[j ∈ top-n(a_t) and a_tj > 0]  (MOSAIC: one-hot each token's top-n latents, sum over tokens)
A text with no tokens (empty after cutting) pools to zeros.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saelab.activations.text_batches import Batch, Encoded, iter_batches
from saelab.errors import BadInputError


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
