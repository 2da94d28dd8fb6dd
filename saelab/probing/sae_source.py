"""SAE-latent sources: pooled latents per text, per-token latent activations, and paired-contrast ranking.

f_t = SAE.encode(h_t) for every token t of a text (`saelab.sae.text_latents`), pooled over the text's real
non-sink tokens with max / mean / last / topn-sum (MOSAIC), then optionally binarised: x_j ← 1[x_j > θ].
The SAE encodes one batch at a time and only pooled [B, d_sae] rows are kept.

Paired contrast (bug-detection pairs, arXiv 2505.10375): for pairs (a_i, b_i), score_j = Σ_i |x_j(a_i) − x_j(b_i)|
with last-token pooling by default; latents ranked by score, largest first.
"""

from __future__ import annotations

import numpy as np

from saelab.activations.text_batches import encode_texts
from saelab.errors import BadInputError
from saelab.probing.feature_set import FeatureSet, SourceParams
from saelab.probing.hidden import base_params
from saelab.probing.pooling import POOLING_FORMULAS, binarise, check_pooling, pool
from saelab.sae.text_latents import latent_batches, text_latents


def _need(handle, loaded_sae) -> None:
    if handle is None or loaded_sae is None:
        raise BadInputError("SAE features need a model and an SAE; load both (the default SAE reads layer 12).")


def sae_latents(params: SourceParams, texts: list[str], handle, loaded_sae, progress=None) -> tuple[np.ndarray, int]:
    """[n_texts, d_sae] pooled (not binarised) latents, and how many texts were cut."""
    _need(handle, loaded_sae)
    check_pooling(params.pooling)
    enc = encode_texts(handle.tokenizer, texts, params.max_tokens)
    X = np.zeros((len(texts), int(loaded_sae.sae.cfg.d_sae)), np.float32)
    for batch, f_BPS in latent_batches(handle, loaded_sae, enc, params.batch_size, progress):
        X[batch.index] = pool(f_BPS.to(batch.keep_BP.device), batch, params.pooling, params.topn).cpu().numpy()
        del f_BPS
    return X, enc.n_truncated


def sae_source(
    params: SourceParams, texts: list[str], *, handle=None, loaded_sae=None, progress=None, **_
) -> FeatureSet:
    _need(handle, loaded_sae)
    X, n_cut = sae_latents(params, texts, handle, loaded_sae, progress)
    X = binarise(X, params.binarise)
    formula = f"f_t = SAE.encode(h_t) at {loaded_sae.hook}; {POOLING_FORMULAS[params.pooling]}, a_t = f_t"
    if params.pooling == "topn-sum":
        formula += f", n = {params.topn}"
    if params.binarise is not None:
        formula += f"; binarised: x_j ← 1[x_j > {params.binarise:g}]"
    notes = [f"{n_cut} of {len(texts)} texts were cut to their first {params.max_tokens} tokens."] if n_cut else []
    d_sae = X.shape[1]
    return FeatureSet(
        X=X,
        names=[f"latent {j}" for j in range(d_sae)],
        source=params.source,
        params=base_params(params, hook=loaded_sae.hook, sae_path=str(loaded_sae.path), d_sae=d_sae),
        latent_ids=list(range(d_sae)),
        extra={"formula": formula, "notes": notes, "n_truncated": n_cut},
    )


def latent_token_activations(
    handle, loaded_sae, text: str, latents: list[int], *, max_tokens: int = 128
) -> tuple[list[str], np.ndarray]:
    """The text's tokens (separator dropped) and [n_tokens, len(latents)] activations of `latents`, for highlights
    (0 at attention sinks)."""
    _need(handle, loaded_sae)
    d_sae = int(loaded_sae.sae.cfg.d_sae)
    bad = [j for j in latents if isinstance(j, bool) or not isinstance(j, int | np.integer) or not 0 <= int(j) < d_sae]
    if bad:
        raise BadInputError(f"Latents {bad[:5]} do not exist; this SAE has latents 0…{d_sae - 1}.")
    enc, f_PS = text_latents(handle, loaded_sae, text, max_tokens)
    ids = enc.ids[0][1:]
    tokens = [handle.tokenizer.decode([i]) for i in ids]
    return tokens, f_PS[1:, [int(j) for j in latents]].numpy().astype(np.float32)


def paired_contrast_ranking(
    handle, loaded_sae, texts_a: list[str], texts_b: list[str], *, pooling: str = "last", max_tokens: int = 128
) -> list[tuple[int, float]]:
    """Latents by Σ_i |x(a_i) − x(b_i)| over the pairs, largest first (latents with a zero sum are left out)."""
    if len(texts_a) != len(texts_b) or not texts_a:
        raise BadInputError(
            f"Paired contrast needs two equally long, non-empty text lists (got {len(texts_a)} and {len(texts_b)})."
        )
    params = SourceParams(source="sae", pooling=pooling, max_tokens=max_tokens)
    X, _ = sae_latents(params, list(texts_a) + list(texts_b), handle, loaded_sae)
    n = len(texts_a)
    score = np.abs(X[:n] - X[n:]).sum(0)
    order = np.argsort(-score, kind="stable")
    return [(int(j), float(score[j])) for j in order if score[j] > 0]
