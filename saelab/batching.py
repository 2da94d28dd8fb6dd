"""The pieces of a batched generation: requests, per-row hooks, sampling, left padding and KV-cache batching.

`saelab.decode` runs them; this module holds what a request is and the tensor work on batches of rows:
    DecodeRequest / RowHook / Phase   what a caller submits (rows, hooks on some rows, sampling settings)
    sample_rows                       greedy or inverse-CDF sampling with one given uniform per row
    left_pad, kv_cache                a batch of prompts and an empty TransformerLens KV cache for it
    merge_caches, slice_cache         join requests' caches into one batch (left-padded) and take them apart
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from saelab.errors import BadInputError

HookFn = Callable[..., torch.Tensor | None]


class Phase:
    """Which forward a request is in: its prefill (`generating` False) or a decode step (True)."""

    def __init__(self) -> None:
        self.generating = False

    def active(self, positions: str) -> bool:
        return positions == "all" or (positions == "generated") == self.generating


@dataclass
class RowHook:
    """A hook on some rows of one request: `fn(act_rows, hook=...)` sees `act[rows]` and may return new values.

    rows: request-relative row indices, or None for all of the request's rows.
    """

    name: str
    fn: HookFn
    rows: Sequence[int] | None = None


@dataclass
class DecodeRequest:
    """One generation: rows of prompt token ids, per-row hooks and sampling settings.

    Attributes:
        rows: the model input of each row (token ids; rows may differ in length).
        max_new_tokens: tokens to generate per row at most.
        hooks: `RowHook`s applied in prefill and decode (read `phase` to act in one only).
        temperature, top_p: sampling (temperature 0 = greedy).
        seed: seed of this request's own `torch.Generator`.
        noise_ids: per row, which uniform of each step's draw it uses (default: row i uses draw i);
            rows with equal ids share their sampling noise.
        n_noise: uniforms drawn per step (default max(noise_ids) + 1); fixing it keeps the draws of
            several requests of one experiment aligned.
        stop_ids: tokens that end a row (not included in its output); empty = always max_new_tokens.
        phase: flipped to generating after the prefill; the hooks of `saelab.steering` read it.
    """

    rows: list[list[int]]
    max_new_tokens: int
    hooks: list[RowHook] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    noise_ids: list[int] | None = None
    n_noise: int | None = None
    stop_ids: frozenset[int] = frozenset()
    phase: Phase = field(default_factory=Phase)

    def __post_init__(self) -> None:
        if not self.rows or any(not r for r in self.rows):
            raise BadInputError("A generation needs at least one row, and every row needs a token.")
        if self.max_new_tokens < 1:
            raise BadInputError("max_new_tokens must be at least 1.")
        if self.noise_ids is None:
            self.noise_ids = list(range(len(self.rows)))
        if len(self.noise_ids) != len(self.rows):
            raise BadInputError("noise_ids needs one entry per row.")
        if self.n_noise is None:
            self.n_noise = max(self.noise_ids) + 1
        for h in self.hooks:
            if h.rows is not None and any(not 0 <= r < len(self.rows) for r in h.rows):
                raise BadInputError(f"Hook on {h.name} names rows outside 0..{len(self.rows) - 1}.")


def sample_rows(logits_BV: torch.Tensor, temperature: float, top_p: float, u_B: torch.Tensor) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else inverse CDF with the given uniforms."""
    if temperature == 0:
        return logits_BV.argmax(dim=-1)
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p >= 1:  # the full distribution: inverse CDF in vocabulary order, no sort needed
        cum = probs.cumsum(dim=-1)
        idx = torch.searchsorted(cum, (u_B.float() * cum[:, -1]).unsqueeze(-1))
        return idx.clamp_max(cum.shape[-1] - 1).squeeze(-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    keep = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p  # the smallest prefix whose mass reaches top_p
    cum = (sorted_p * keep).cumsum(dim=-1)
    idx = torch.searchsorted(cum, (u_B.float() * cum[:, -1]).unsqueeze(-1)).clamp_max(cum.shape[-1] - 1)
    return order.gather(-1, idx).squeeze(-1)


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows → (tokens [B, W], attention mask [B, W]), right-aligned so every row's next token is last."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return tokens, mask


def kv_cache(model, batch: int):
    """An empty TransformerLens key-value cache for `batch` rows."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)


def merge_caches(model, caches: list) -> object:
    """Concatenate KV caches along the batch, left-padding shorter ones with masked-out zero positions."""
    if len(caches) == 1:
        return caches[0]
    width = max(c.previous_attention_mask.shape[1] for c in caches)
    merged = kv_cache(model, sum(c.previous_attention_mask.shape[0] for c in caches))

    def pad(t: torch.Tensor) -> torch.Tensor:
        missing = width - t.shape[1]
        if not missing:
            return t
        return torch.cat([t.new_zeros((t.shape[0], missing, *t.shape[2:])), t], dim=1)

    for layer, entry in enumerate(merged.entries):
        entry.past_keys = torch.cat([pad(c.entries[layer].past_keys) for c in caches])
        entry.past_values = torch.cat([pad(c.entries[layer].past_values) for c in caches])
    merged.previous_attention_mask = torch.cat([pad(c.previous_attention_mask) for c in caches])
    return merged


def slice_cache(model, cache, start: int, stop: int) -> object:
    """Rows start:stop of a cache, with the leading positions that are padding for all of them dropped."""
    mask = cache.previous_attention_mask[start:stop]
    first = int((mask.sum(dim=0) > 0).int().argmax()) if mask.numel() else 0
    out = kv_cache(model, stop - start)
    for layer, entry in enumerate(out.entries):
        entry.past_keys = cache.entries[layer].past_keys[start:stop, first:]
        entry.past_values = cache.entries[layer].past_values[start:stop, first:]
    out.previous_attention_mask = mask[:, first:]
    return out


__all__ = [
    "DecodeRequest",
    "HookFn",
    "Phase",
    "RowHook",
    "kv_cache",
    "left_pad",
    "merge_caches",
    "sample_rows",
    "slice_cache",
]
