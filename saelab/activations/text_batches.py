"""Texts into the model: tokenise, batch, run one forward per batch, and say which positions count.

This is the one way every analysis reads a model's activations on user texts (probing sources, steering
directions, prompt analysis, label scoring through `saelab.sae.text_latents`):

* each text becomes `[sep] + its first max_tokens tokens` (tokenised without special tokens), where `sep` is
  the `<|endoftext|>` separator every SAE here saw in front of each training document
  (`saelab.corpus.separator_id`); a text longer than `max_tokens × 64` characters is cut before tokenising, so
  a pasted book stays fast (the cut is counted as truncation);
* batches are length-sorted and right-padded with `sep`, and run with an attention mask: in a causal model a real
  token never attends to padding on its right, so a text's activations do not depend on its batch-mates (tested);
* `Batch.keep_BP` marks the positions an analysis may use: real tokens that are not attention sinks (position 0
  and every separator token, `saelab.corpus.sink_mask`: residual norms ~100× the rest).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saelab.errors import BadInputError

PAD_SIDE = "right"
SKIP_POSITIONS = "position 0 (separator), separator tokens and right padding"
CHARS_PER_TOKEN_CAP = 64  # tokenise at most max_tokens × this many characters of a text


@dataclass
class Encoded:
    """Token ids of each text (separator first) and how many texts were cut to `max_tokens`.

    `n_input_tokens[i]` is text i's token count before the cut (a lower bound when `char_cut[i]`: only its first
    max_tokens × 64 characters were tokenised)."""

    ids: list[list[int]]
    n_truncated: int
    max_tokens: int
    sep: int
    n_input_tokens: list[int]
    char_cut: list[bool]

    def truncated(self, i: int) -> bool:
        return self.char_cut[i] or self.n_input_tokens[i] > self.max_tokens


@dataclass
class Batch:
    """One padded batch: `index` into the text list, tokens/mask [B, P], keep [B, P] (real, non-sink tokens)."""

    index: np.ndarray
    tokens_BP: torch.Tensor
    mask_BP: torch.Tensor
    keep_BP: torch.Tensor
    last_B: torch.Tensor  # position of the last real token (0 for an empty text: its separator)


def check_max_tokens(max_tokens: object) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadInputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return max_tokens


def encode_texts(tokenizer, texts: Sequence[str], max_tokens: int) -> Encoded:
    """Tokenise without special tokens, cut to `max_tokens`, put the separator in front."""
    from saelab.corpus import separator_id

    check_max_tokens(max_tokens)
    sep = separator_id(tokenizer)
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BadInputError(f"Texts must be strings; rows {bad[:5]} are not (convert or drop them).")
    cap = max_tokens * CHARS_PER_TOKEN_CAP
    cut = [len(t) > cap for t in texts]
    raw = tokenizer([t[:cap] for t in texts], add_special_tokens=False)["input_ids"] if texts else []
    n_in = [len(r) for r in raw]
    n_cut = sum(c or n > max_tokens for c, n in zip(cut, n_in))
    return Encoded([[sep, *r[:max_tokens]] for r in raw], n_cut, max_tokens, sep, n_in, cut)


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
        keep = mask.bool() & sink_mask(tokens, enc.sep)
        last = torch.tensor([len(r) - 1 for r in rows])
        yield Batch(idx, tokens.to(device), mask.to(device), keep.to(device), last.to(device))


def run_batches(handle, enc: Encoded, names: list[str], batch_size: int, progress=None) -> Iterator[tuple[Batch, dict]]:
    """For each batch: one forward through `saelab.hooks.cache_activations` (stopped after the deepest hook in
    `names`, attention mask on) → (batch, {hook: [B, P, ...] activations}). Callers reduce and drop them at once."""
    from saelab.hooks import cache_activations

    if handle is None:
        raise BadInputError("This needs a model; load one first.")
    n = len(enc.ids)
    done = 0
    for batch in iter_batches(enc, batch_size, handle.cfg.device):
        acts = cache_activations(handle, batch.tokens_BP, names, attention_mask=batch.mask_BP)
        yield batch, acts
        done += len(batch.index)
        if progress is not None:
            progress(done, n)


def text_hook_acts(
    handle, texts: Sequence[str], hook: str, *, max_tokens: int = 128, batch_size: int = 32
) -> list[torch.Tensor]:
    """Per text, float32 `[n_kept, ...]` activations at `hook` of its non-sink tokens (see `Batch.keep_BP`); at an
    attention hook with a head dimension (`attn.hook_z`) that is `[n_kept, n_heads, d_head]`."""
    handle.check_hook(hook)
    enc = encode_texts(handle.tokenizer, texts, max_tokens)
    out: list[torch.Tensor | None] = [None] * len(enc.ids)
    for batch, acts in run_batches(handle, enc, [hook], batch_size):
        act = acts[hook].float().cpu()
        keep = batch.keep_BP.cpu()
        for b, i in enumerate(batch.index):
            out[int(i)] = act[b][keep[b]]
    return [t for t in out if t is not None]


__all__ = [
    "CHARS_PER_TOKEN_CAP",
    "Batch",
    "Encoded",
    "check_max_tokens",
    "encode_texts",
    "iter_batches",
    "run_batches",
    "text_hook_acts",
]
