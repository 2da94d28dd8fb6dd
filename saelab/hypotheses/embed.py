"""Text embeddings for hypothesis generation, cached on disk (HypotheSAEs step 1).

Two sources, in a registry:
  * "minilm": all-MiniLM-L6-v2 sentence embeddings (`saelab.embeddings.embed_texts`; unit norm, 384-d),
    the paper's kind of embedding (it used OpenAI's text-embedding-3; this is the offline stand-in).
  * "lm": the default LM's residual stream at `blocks.{layer}.hook_resid_post`, mean-pooled over each
    text's non-sink tokens (tokenised, batched and masked by `saelab.activations.text_batches`, as every
    analysis reads texts: separator first, which is an attention sink with ~100× the norm, never pooled).
    Texts are cut to `LM_MAX_TOKENS` tokens.
The cache key is a SHA-256 of the texts, the source, the model and the layer; files are safetensors under
`cache_dir()/hypotheses/embeddings/`, written atomically. Recomputing never changes a cached file's
meaning: the key names everything the embedding depends on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saelab.errors import BadInputError, CorruptFileError
from saelab.storage import cache_dir, load_tensors, save_tensors

log = logging.getLogger(__name__)

LM_MAX_TOKENS = 128
EMBED_VERSION = 2  # in the cache key: 2 = texts read through saelab.activations.text_batches
Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class EmbedSpec:
    """Which embedding: `source` ("minilm" or "lm"), and for "lm" the model spec and layer."""

    source: str = "minilm"
    model: str | None = None
    layer: int = 12

    def describe(self) -> str:
        if self.source == "lm":
            return f"{self.model or 'default LM'} mean-pooled blocks.{self.layer}.hook_resid_post"
        return "all-MiniLM-L6-v2 sentence embeddings"


def _minilm(texts: Sequence[str], spec: EmbedSpec, progress: Progress, handle: Any) -> tuple[np.ndarray, str]:
    from saelab.embeddings import EMBEDDER_NAME, embed_texts

    return embed_texts(texts, progress=progress), EMBEDDER_NAME


def _lm(texts: Sequence[str], spec: EmbedSpec, progress: Progress, handle: Any) -> tuple[np.ndarray, str]:
    from saelab.activations.text_batches import encode_texts, run_batches

    if handle is None:
        from saelab.models import load_model

        handle = load_model(spec.model) if spec.model else load_model()
    hook = handle.check_hook(f"blocks.{spec.layer}.hook_resid_post")
    enc = encode_texts(handle.tokenizer, texts, LM_MAX_TOKENS)
    out = np.zeros((len(texts), handle.d_model), dtype=np.float32)
    # batch 64: per-forward overhead dominates short texts on CPU; bigger batches amortise it
    for batch, acts in run_batches(handle, enc, [hook], 64, progress):
        keep = batch.keep_BP[..., None].float()
        pooled = (acts[hook].float() * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        out[batch.index] = pooled.cpu().numpy()
    return out, handle.name


EMBEDDERS: dict[str, Callable[[Sequence[str], EmbedSpec, Progress, Any], tuple[np.ndarray, str]]] = {
    "minilm": _minilm,
    "lm": _lm,
}


def cache_key(texts: Sequence[str], spec: EmbedSpec, model_name: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(
        f"{EMBED_VERSION}|{spec.source}|{spec.model or model_name or ''}|{spec.layer if spec.source == 'lm' else ''}".encode()
    )
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()[:32]


def embed(
    texts: Sequence[str], spec: EmbedSpec = EmbedSpec(), *, progress: Progress = None, handle: Any = None,
    use_cache: bool = True,
) -> np.ndarray:  # fmt: skip
    """Embeddings [n, d] (float32) of `texts` from `spec`, read from / written to the disk cache."""
    if spec.source not in EMBEDDERS:
        raise BadInputError(f"Unknown embedding source {spec.source!r}; choose one of {', '.join(EMBEDDERS)}.")
    texts = list(texts)
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise BadInputError("Empty texts cannot be embedded; drop them first.")
    model_name = getattr(handle, "name", None)
    path = cache_dir() / "hypotheses" / "embeddings" / f"{spec.source}-{cache_key(texts, spec, model_name)}.safetensors"
    if use_cache and path.exists():
        try:
            X = load_tensors(path)["embeddings"].numpy()
            if X.shape[0] == len(texts):
                if progress is not None:
                    progress(len(texts), len(texts))
                return X
        except CorruptFileError as err:
            log.warning("ignoring an unreadable embedding cache: %s", err)
    X, name = EMBEDDERS[spec.source](texts, spec, progress, handle)
    X = np.ascontiguousarray(X, dtype=np.float32)
    if use_cache:
        save_tensors(path, {"embeddings": torch.from_numpy(X)}, {"source": spec.source, "model": name})
    return X
