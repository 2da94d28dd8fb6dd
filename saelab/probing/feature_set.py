"""The types every feature source shares: `SourceParams` (what to extract) and `FeatureSet` (what came out).

They live apart from the registry in `sources` so that source modules can import them without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.configs import DictConfig
from saelab.errors import BadInputError

Progress = Callable[[int, int], None]


@dataclass
class SourceParams(DictConfig):
    """What to extract.

    Attributes:
        source: registry key in `saelab.probing.feature_sources.FEATURE_SOURCES`.
        pooling: how token vectors become one vector per text: "max", "mean", "last" or "topn-sum" (MOSAIC; SAE
            latents only). Position 0 (the separator put in front of every text) and padding are never pooled.
        topn: MOSAIC's n: latents one-hot encoded per token for "topn-sum".
        binarise: if set, features become 1[x > binarise] (MOSAIC binarises counts with 1.0: "count > 1").
        layer: block index for hidden states / neurons (the sweep returns every layer and uses this one as X).
        hook: explicit hook point for "hidden" (overrides `layer`); ignored by the other sources.
        max_tokens: texts are cut to their first `max_tokens` tokens (the count of cut texts is reported).
        batch_size: texts per forward pass.
        top_k_neurons: how many top-ranked MLP neurons the "neurons" source keeps.
        top_heads: how many attention heads the "sav" source keeps (the SAV paper uses 20).
        tfidf_max_features: vocabulary cap of the "tfidf" source (MOSAIC uses 20,000).
    """

    source: str
    pooling: str = "max"
    topn: int = 20
    binarise: float | None = None
    layer: int = 12
    hook: str | None = None
    max_tokens: int = 128
    batch_size: int = 16
    top_k_neurons: int = 50
    top_heads: int = 20
    tfidf_max_features: int = 20_000

    def __post_init__(self) -> None:
        for name in ("topn", "max_tokens", "batch_size", "top_k_neurons", "top_heads", "tfidf_max_features"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"SourceParams.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.layer, (int, np.integer)) or self.layer < 0:
            raise BadInputError(f"SourceParams.layer must be a block index ≥ 0, got {self.layer!r}")
        if self.binarise is not None:
            self.binarise = float(self.binarise)


@dataclass
class FeatureSet:
    """Features of a list of texts, one row per text.

    Attributes:
        X: [n_texts, n_features] float32.
        names: one name per column ("latent 123", "L12 dim 5", "neuron L3.1021", "L3.H5 dim 7", "tfidf 'great movie'").
        source: the registry key that produced it.
        params: every parameter that produced X (the `SourceParams` fields plus resolved ones: hook, pooling
            actually used, skipped positions, padding side, fit rows).
        latent_ids: for SAE sources, column → latent index (links into the Feature Explorer); None otherwise.
        extra: source-specific results: always "formula" (str) and "notes" (list[str]) and "n_truncated";
            "layers" {layer: X_layer} for the sweep; "neuron_ranking" / "best_neuron_by_layer" for neurons;
            "sav" (heads, centroids, classes) for SAVs.
    """

    X: np.ndarray
    names: list[str]
    source: str
    params: dict[str, Any]
    latent_ids: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        if self.X.ndim != 2 or self.X.shape[1] != len(self.names):
            raise ValueError(f"X {self.X.shape} does not match {len(self.names)} feature names")
        if self.latent_ids is not None and len(self.latent_ids) != len(self.names):
            raise ValueError("latent_ids must give one latent per column")
