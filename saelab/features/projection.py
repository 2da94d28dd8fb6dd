"""The feature map: a 2-D layout of an SAE's decoder directions, plus cluster ids to colour it.

Rows of W_dec are unit-normalised (only direction matters) and laid out by t-SNE on their cosine distance in
the full width (Barnes-Hut, PCA init, fixed seed, 500 iterations: sklearn's default 1,000 doubles the time and
the map does not need it). Past `TSNE_MAX_LATENTS` latents t-SNE would take minutes, so "auto" falls back to the
first two principal components. Clusters are KMeans on the unit rows (full width).

Why not PCA first, as before: SAE decoder directions are nearly orthogonal, so 50 principal components keep
little of who is near whom. Measured on the shipped SAE (4,608 latents, `neighbourhood_preservation`, k = 10):
the old PCA-50 + euclidean t-SNE map kept 2.4 % of each latent's 10 nearest cosine neighbours among its 10
nearest map neighbours; cosine t-SNE on the full rows keeps 21 % (perplexity 30; 18 % at 50), in 17 s.

Trap: sklearn's t-SNE gradient runs OpenMP threads that synchronise every iteration; on a 2-core
machine that is also busy with anything else (a harvest, torch) they stall — 300 points took 13 s
with 2 threads and 0.7 s with 1; 6,144 points 69 s vs 45 s. So this runs single-threaded.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import numpy as np
import torch

from saelab.errors import BadInputError

log = logging.getLogger(__name__)

TSNE_MAX_LATENTS = 20_000
TSNE_ITERATIONS = 500
PCA_DIMS = 50

Method = Literal["auto", "tsne", "pca"]


def choose_method(d_sae: int, method: Method = "auto") -> Literal["tsne", "pca"]:
    """The layout `project_decoder` will use for `d_sae` latents."""
    if method not in ("auto", "tsne", "pca"):
        raise BadInputError(f"projection method must be 'auto', 'tsne' or 'pca', got {method!r}")
    if method == "auto":
        return "tsne" if 5 <= d_sae <= TSNE_MAX_LATENTS else "pca"
    if method == "tsne" and d_sae < 5:
        raise BadInputError(f"t-SNE needs at least 5 latents, this SAE has {d_sae}; use method='pca'")
    return method


def describe(d_sae: int, method: Method = "auto", n_clusters: int = 24) -> str:
    """One line for meta.json saying how the map and the clusters were made."""
    chosen = choose_method(d_sae, method)
    layout = (
        f"t-SNE (sklearn, Barnes-Hut, cosine distance on the full unit rows, perplexity {_perplexity(d_sae):g}, "
        f"init 'pca', {TSNE_ITERATIONS} iterations, fixed random_state)"
        if chosen == "tsne"
        else "the first two principal components"
    )
    return (
        f"rows of W_dec scaled to unit norm, then {layout}; map_cluster = KMeans (k={min(n_clusters, d_sae)}, "
        "n_init=3) on the unit rows"
    )


def _perplexity(d_sae: int) -> float:
    return float(min(30.0, max(1.0, (d_sae - 1) / 3)))


def project_decoder(
    W_dec: torch.Tensor | np.ndarray, method: Method = "auto", n_clusters: int = 24, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """W_dec `[d_sae, d_in]` → (xy float32 `[d_sae, 2]`, cluster int32 `[d_sae]`), deterministic per seed."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    W = W_dec.detach().float().cpu().numpy() if isinstance(W_dec, torch.Tensor) else np.asarray(W_dec, np.float32)
    if W.ndim != 2 or len(W) < 1:
        raise BadInputError(f"W_dec must be a non-empty [d_sae, d_in] matrix, got shape {W.shape}")
    d_sae = len(W)
    chosen = choose_method(d_sae, method)
    unit = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    dims = max(1, min(PCA_DIMS, W.shape[1], d_sae))
    k = max(1, min(n_clusters, d_sae))
    with threadpool_limits(1):  # see the module docstring: OpenMP threads stall on a busy 2-core machine
        if chosen == "tsne":
            tsne = TSNE(2, perplexity=_perplexity(d_sae), metric="cosine", init="pca", max_iter=TSNE_ITERATIONS,
                        random_state=seed)  # fmt: skip
            xy = tsne.fit_transform(unit)
        else:
            Z = PCA(dims, random_state=seed).fit_transform(unit) if d_sae > 1 else np.zeros((1, dims))
            xy = np.zeros((d_sae, 2), np.float32)
            xy[:, : min(2, Z.shape[1])] = Z[:, :2]
        cluster = KMeans(k, n_init=3, random_state=seed).fit_predict(unit) if k > 1 else np.zeros(d_sae)
    log.info("feature map: %s for %d latents, %d clusters", chosen, d_sae, k)
    return np.ascontiguousarray(xy, dtype=np.float32), cluster.astype(np.int32)


_LABEL_WORDS = re.compile(r"'([^']+)'|([A-Za-z][A-Za-z0-9_]{2,})")
_NOT_NAMES = {"tokens", "after", "promotes", "none", "the", "and", "latent"}


def cluster_names(cluster: np.ndarray, labels: dict[int, str], top: int = 3) -> dict[int, str]:
    """Each cluster named by the words and tokens most frequent among its members' labels ("" when unlabelled):
    count, over the cluster's latents, the distinct quoted tokens and words of each label; keep the `top` most
    frequent (ties: first seen)."""
    from collections import Counter

    names: dict[int, str] = {}
    cluster = np.asarray(cluster)
    for c in np.unique(cluster):
        counts: Counter[str] = Counter()
        for i in np.flatnonzero(cluster == c):
            found = {(q or w).strip() for q, w in _LABEL_WORDS.findall(labels.get(int(i), ""))}
            counts.update(f for f in found if f and f.lower() not in _NOT_NAMES)
        names[int(c)] = " · ".join(w for w, _ in counts.most_common(top))
    return names


def neighbourhood_preservation(W_dec: torch.Tensor | np.ndarray, xy: np.ndarray, k: int = 10) -> float:
    """Mean over latents of |their k nearest decoder neighbours (cosine) ∩ their k nearest map neighbours| / k:
    1 = the map keeps every neighbourhood, k / d_sae ≈ chance."""
    from sklearn.neighbors import NearestNeighbors

    W = W_dec.detach().float().cpu().numpy() if isinstance(W_dec, torch.Tensor) else np.asarray(W_dec, np.float32)
    k = min(k, len(W) - 1)
    if k < 1:
        return float("nan")
    near = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(W).kneighbors(W, return_distance=False)[:, 1:]
    mapped = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(near, mapped)]))


__all__ = [
    "TSNE_MAX_LATENTS",
    "choose_method",
    "cluster_names",
    "describe",
    "neighbourhood_preservation",
    "project_decoder",
]
