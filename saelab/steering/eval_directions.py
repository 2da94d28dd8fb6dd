"""Steering evaluation: one direction per method from a concept's training texts (see `steering.evaluate`).

    sae        the SAE latent whose per-text max activation best separates positive from negative training
               texts (AUROC, AxBench's SAE-A choice); w = its decoder row, max_act from the dashboards;
    diffmean / pca / probe / lat   `saelab.directions` (AxBench definitions, unit norm), max_act = the largest
               h·w over positive training tokens.
Each direction's meta records its formula and its training AUROC (texts scored by max over tokens of h·w).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saelab.errors import BadInputError
from saelab.steering.concepts import ConceptData


@dataclass
class ConceptActs:
    """A concept's training-text activations at the steering hook (position 0 dropped)."""

    data: ConceptData
    hook: str
    pos: list[torch.Tensor]  # per text [n_tokens, d]
    neg: list[torch.Tensor]


def auroc_per_column(pos_NL: np.ndarray, neg_ML: np.ndarray) -> np.ndarray:
    """AUROC of every column separating rows of `pos` from rows of `neg` (Mann–Whitney, ties averaged)."""
    from scipy.stats import rankdata

    n, m = len(pos_NL), len(neg_ML)
    ranks = rankdata(np.concatenate([pos_NL, neg_ML]), axis=0)
    return (ranks[:n].sum(0) - n * (n + 1) / 2) / (n * m)


def pick_sae_latent(loaded, pos: list[torch.Tensor], neg: list[torch.Tensor]) -> tuple[int, float]:
    """The latent whose per-text max activation best separates positive from negative texts (AUROC)."""
    from saelab.sae.text_latents import encode

    def pooled(texts: list[torch.Tensor]) -> np.ndarray:
        return np.stack([encode(loaded, a).max(0).values.cpu().numpy() for a in texts])

    auc = auroc_per_column(pooled(pos), pooled(neg))
    best = int(np.argmax(auc))
    return best, float(auc[best])


def _sae_direction(handle, loaded, acts: ConceptActs, method: str, seed: int):
    from saelab.steering.direction_sources import sae_latent_direction

    if loaded is None:
        raise BadInputError("The 'sae' method needs an SAE; load one or drop the method.")
    latent, auc = pick_sae_latent(loaded, acts.pos, acts.neg)
    d = sae_latent_direction(loaded, latent, handle=handle, texts=acts.data.train_pos)
    d.meta.update({"train_auroc": auc, "choice": "best AUROC (max over tokens per text) on the training texts"})
    return d


def _text_method_direction(handle, loaded, acts: ConceptActs, method: str, seed: int):
    from saelab.directions import METHOD_FORMULAS, compute_direction
    from saelab.steering.direction_sources import Direction

    flat_pos = [a.flatten(1) for a in acts.pos]  # attn.hook_z: [tokens, heads, d_head] → heads concatenated
    flat_neg = [a.flatten(1) for a in acts.neg]
    pos, neg = torch.cat(flat_pos), torch.cat(flat_neg)
    w = compute_direction(method, pos, neg, seed)
    return Direction(
        name=f"{method}: {acts.data.concept.name}",
        source="text",
        hook=acts.hook,
        vector=w,
        max_act=float((pos @ w).max()),
        meta={
            "method": method,
            "formula": METHOD_FORMULAS[method],
            "max_act_formula": "max over positive training tokens of h·w",
            "n_pos_tokens": int(len(pos)),
            "n_neg_tokens": int(len(neg)),
            "train_auroc": float(auroc_per_column(_maxdot(flat_pos, w), _maxdot(flat_neg, w))[0]),
        },
    )


def _maxdot(texts: list[torch.Tensor], w: torch.Tensor) -> np.ndarray:
    return np.array([[float((a @ w).max())] for a in texts])


METHOD_BUILDERS: dict[str, Callable[..., Any]] = {
    "sae": _sae_direction,
    **{m: _text_method_direction for m in ("diffmean", "probe", "pca", "lat")},
}
