"""The feature-source registry: `extract_features(params, texts, ...)` → `FeatureSet`.

Sources (key → module):
  "sae"          SAE latents, pooled max / mean / last / topn-sum (MOSAIC), optional binarisation  (sae_source)
  "hidden"       residual stream at one layer (or any hook), pooled last / mean / max               (hidden)
  "layer_sweep"  residual stream at EVERY layer from one forward pass per batch; extra["layers"]    (hidden)
  "neurons"      top-k MLP neurons by separability on training rows, plus a best-neuron-by-layer series (neurons)
  "sav"          sparse attention vectors: top heads by nearest-centroid accuracy; `sav_predict`    (attention_vectors)
  "tfidf"        TF-IDF 1–2-gram baseline, vocabulary fitted on training rows                       (tfidf)
Sources that learn anything from the data (tfidf vocabulary, neuron ranking, SAV heads) use only the rows in
`fit_texts_mask` (the training split), so nothing leaks from the test rows. Formulas: each module's docstring and
`FeatureSet.extra["formula"]`; docs/probing_sources.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from saelab.errors import BadInputError
from saelab.probing.attention_vectors import sav_predict, sav_source
from saelab.probing.feature_set import FeatureSet, Progress, SourceParams
from saelab.probing.hidden import hidden_source, layer_sweep_source
from saelab.probing.neurons import neuron_source
from saelab.probing.sae_source import latent_token_activations, paired_contrast_ranking, sae_source
from saelab.probing.tfidf import tfidf_source

__all__ = [
    "FEATURE_SOURCES",
    "FeatureSet",
    "SourceParams",
    "extract_features",
    "latent_token_activations",
    "paired_contrast_ranking",
    "sav_predict",
]

log = logging.getLogger(__name__)

FEATURE_SOURCES: dict[str, Callable[..., FeatureSet]] = {
    "sae": sae_source,
    "hidden": hidden_source,
    "layer_sweep": layer_sweep_source,
    "neurons": neuron_source,
    "sav": sav_source,
    "tfidf": tfidf_source,
}

# What each source needs: a model, an SAE, labels (fitted sources).
NEEDS = {
    "sae": ("model", "sae"),
    "hidden": ("model",),
    "layer_sweep": ("model",),
    "neurons": ("model", "labels"),
    "sav": ("model", "labels"),
    "tfidf": (),
}


def extract_features(
    params: SourceParams,
    texts: list[str],
    *,
    handle=None,
    loaded_sae=None,
    labels: np.ndarray | None = None,
    fit_texts_mask: np.ndarray | None = None,
    progress: Progress | None = None,
) -> FeatureSet:
    """Features of `texts` from the source `params.source`; fitted sources learn from `fit_texts_mask` rows only."""
    if params.source not in FEATURE_SOURCES:
        raise BadInputError(f"Unknown feature source {params.source!r}; choose one of {sorted(FEATURE_SOURCES)}.")
    texts = list(texts)
    if not texts:
        raise BadInputError("No texts to extract features from.")
    needs = NEEDS[params.source]
    if "model" in needs and handle is None:
        raise BadInputError(f"The {params.source!r} source needs a loaded model.")
    if "sae" in needs and loaded_sae is None:
        raise BadInputError(f"The {params.source!r} source needs an SAE; load one (the default SAE reads layer 12).")
    if labels is not None and len(labels) != len(texts):
        raise BadInputError(f"{len(labels)} labels for {len(texts)} texts; give one label per text.")
    if fit_texts_mask is not None and np.asarray(fit_texts_mask).shape != (len(texts),):
        raise BadInputError(f"fit_texts_mask must have one entry per text ({len(texts)}).")
    fs = FEATURE_SOURCES[params.source](
        params,
        texts,
        handle=handle,
        loaded_sae=loaded_sae,
        labels=labels,
        fit_texts_mask=fit_texts_mask,
        progress=progress,
    )
    if progress is not None:
        progress(len(texts), len(texts))  # sources without a forward (tfidf) report once, at the end
    log.info("%s features: %d texts × %d features", params.source, *fs.X.shape)
    return fs
