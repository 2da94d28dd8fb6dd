"""Texts through the model and an SAE: f_t = SAE.encode(h_t), h_t read at the SAE's own hook.

The one place every analysis turns text into SAE latents (prompt analysis, probing's SAE source, steering's
latent scales, highlights). Tokenising, batching and the sink positions come from
`saelab.activations.text_batches` (separator first, `max_tokens` cap, right padding with an attention mask);
here the SAE encodes each batch and every position that is not kept — attention sinks (position 0, separator
tokens) and padding — carries zero latents, since SAEs are trained without sinks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from saelab.activations.text_batches import Batch, Encoded, encode_texts, run_batches
from saelab.errors import BadInputError
from saelab.sae.files import LoadedSAE


def check_latent(loaded: LoadedSAE, latent: object) -> int:
    """`latent` as an int, or a clear error when it is not an index of this SAE."""
    d_sae = int(loaded.sae.cfg.d_sae)
    if isinstance(latent, bool) or not isinstance(latent, int):
        raise BadInputError(f"Latent {latent!r} is not an integer; use an index from 0 to {d_sae - 1}.")
    if not 0 <= latent < d_sae:
        raise BadInputError(f"There is no latent {latent}: this SAE has latents 0 to {d_sae - 1}.")
    return latent


def encode(loaded: LoadedSAE, acts: torch.Tensor) -> torch.Tensor:
    """SAE latents (float32) of activations `[..., d_in]` read at the SAE's hook."""
    sae = loaded.sae
    with torch.no_grad():
        return sae.encode(acts.to(device=sae.device, dtype=sae.dtype)).float()


def latent_batches(
    handle, loaded: LoadedSAE, enc: Encoded, batch_size: int = 32, progress=None
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Per batch of `enc`: (batch, f_BPS float32 latents, zero where `batch.keep_BP` is False)."""
    for batch, acts in run_batches(handle, enc, [loaded.hook], batch_size, progress):
        f = encode(loaded, acts[loaded.hook])
        f *= batch.keep_BP.to(f.device)[..., None]
        yield batch, f


def text_latents(handle, loaded: LoadedSAE, text: str, max_tokens: int) -> tuple[Encoded, torch.Tensor]:
    """One text: its encoding (`enc.ids[0]` starts with the separator) and `[n_ids, d_sae]` latents on CPU."""
    enc = encode_texts(handle.tokenizer, [text], max_tokens)
    (_, f_BPS), *_ = latent_batches(handle, loaded, enc, 1)
    return enc, f_BPS[0].cpu()


def ids_latents(handle, loaded: LoadedSAE, ids: Sequence[int]) -> torch.Tensor:
    """`[len(ids), d_sae]` latents of a given token sequence read as is (sinks: position 0, separators → 0)."""
    from saelab.corpus import separator_id, sink_mask
    from saelab.hooks import cache_activations

    tokens = torch.tensor([list(ids)], dtype=torch.long)
    act = cache_activations(handle, tokens.to(handle.cfg.device), [loaded.hook])[loaded.hook][0]
    f = encode(loaded, act).cpu()
    return f * sink_mask(tokens, separator_id(handle.tokenizer))[0][:, None]


def latent_max(
    handle, loaded: LoadedSAE, latent: int, texts: Sequence[str], *, max_tokens: int = 128, batch_size: int = 32
) -> float:
    """Latent `latent`'s largest activation over the non-sink tokens of `texts` (0.0 if it never fires)."""
    latent = check_latent(loaded, latent)
    best = 0.0
    enc = encode_texts(handle.tokenizer, texts, max_tokens)
    for _, f in latent_batches(handle, loaded, enc, batch_size):
        best = max(best, float(f[..., latent].max()))
    return best


__all__ = ["check_latent", "encode", "ids_latents", "latent_batches", "latent_max", "text_latents"]
