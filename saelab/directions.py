"""Concept directions from token activations: AxBench's DiffMean, PCA, LAT and linear probe.

Each method takes the activations of the tokens of positive texts `pos_acts_ND` and of negative texts
`neg_acts_MD` (one row per token, BOS/position 0 already dropped by the caller) and a seed, and returns
a **unit-norm** direction `[d]` oriented so that positives score higher than negatives on average
(mean(pos·w) ≥ mean(neg·w)). Definitions (AxBench, Wu, Arora et al. 2025):

    diffmean  w = mean(H+) − mean(H−)
    pca       w = first principal component of the (mean-centred) positive activations H+
    lat       w = first principal component of normalised differences of random pairs of positives
              (h_i − h_j) / ‖h_i − h_j‖, pairs drawn with `seed` (Linear Artificial Tomography, RepE)
    probe     w = weights of an L2-regularised logistic regression (C = 1, sklearn lbfgs) on every token
              labelled with its text's label, inputs scaled by 1 / mean token norm (the scaling changes only
              the effective regularisation, not the direction's meaning)

PCA and LAT have no intrinsic sign; it is fixed by the orientation rule above. The registry
`DIRECTION_METHODS` maps a method name to its function; `compute_direction` validates the inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saelab.errors import BadInputError

DirectionFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _unit(w_D: torch.Tensor, what: str) -> torch.Tensor:
    norm = float(w_D.norm())
    if not np.isfinite(norm) or norm < 1e-12:
        raise BadInputError(
            f"The {what} direction is zero or not finite: the positive and negative texts give the same "
            "activations. Use texts that differ in the concept you want."
        )
    return w_D / norm


def _orient(w_D: torch.Tensor, pos_ND: torch.Tensor, neg_MD: torch.Tensor) -> torch.Tensor:
    """Flip `w` so the mean positive score is at least the mean negative score."""
    return -w_D if float((pos_ND @ w_D).mean()) < float((neg_MD @ w_D).mean()) else w_D


def _first_pc(x_ND: torch.Tensor) -> torch.Tensor:
    x_ND = x_ND - x_ND.mean(dim=0, keepdim=True)
    # SVD of the centred data: the first right-singular vector is the first principal axis.
    _, _, vh = torch.linalg.svd(x_ND.double(), full_matrices=False)
    return vh[0].float()


def diffmean(pos_ND: torch.Tensor, neg_MD: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """mean(H+) − mean(H−), unit norm."""
    return _unit(pos_ND.mean(dim=0) - neg_MD.mean(dim=0), "DiffMean")


def pca(pos_ND: torch.Tensor, neg_MD: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """First principal component of the positive activations, oriented towards the positives."""
    if len(pos_ND) < 2:
        raise BadInputError("PCA needs at least 2 positive tokens; add more or longer positive texts.")
    return _orient(_unit(_first_pc(pos_ND), "PCA"), pos_ND, neg_MD)


def lat(pos_ND: torch.Tensor, neg_MD: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """PCA of normalised differences of random pairs of positive activations (LAT), oriented."""
    n = len(pos_ND)
    if n < 3:
        raise BadInputError("LAT needs at least 3 positive tokens; add more or longer positive texts.")
    gen = torch.Generator().manual_seed(int(seed))
    i = torch.randperm(n, generator=gen)
    j = torch.roll(i, 1)  # every token in exactly two pairs, never paired with itself
    diff = pos_ND[i] - pos_ND[j]
    diff = diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # Uncentred: the differences are already centred in expectation, and centring would remove the
    # sign-symmetric signal LAT looks for.
    _, _, vh = torch.linalg.svd(diff.double(), full_matrices=False)
    return _orient(_unit(vh[0].float(), "LAT"), pos_ND, neg_MD)


def probe(pos_ND: torch.Tensor, neg_MD: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Logistic-regression weights on token activations (label = the text's label), unit norm."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos_ND, neg_MD]).double().numpy()
    y = np.r_[np.ones(len(pos_ND)), np.zeros(len(neg_MD))]
    scale = float(np.linalg.norm(x, axis=1).mean()) or 1.0
    clf = LogisticRegression(C=1.0, max_iter=1000, random_state=int(seed))
    clf.fit(x / scale, y)
    return _orient(_unit(torch.from_numpy(clf.coef_[0]).float(), "probe"), pos_ND, neg_MD)


DIRECTION_METHODS: dict[str, DirectionFn] = {"diffmean": diffmean, "pca": pca, "lat": lat, "probe": probe}

METHOD_FORMULAS: dict[str, str] = {
    "diffmean": "w = mean(H+) − mean(H−), unit norm",
    "pca": "w = first principal component of mean-centred H+, unit norm, oriented towards H+",
    "lat": "w = first principal component of (h_i − h_j)/‖h_i − h_j‖ over random pairs of H+, unit norm, oriented",
    "probe": "w = logistic regression weights (C=1) on tokens labelled by their text, unit norm, oriented",
}


def _check_acts(acts: object, what: str) -> torch.Tensor:
    if not isinstance(acts, torch.Tensor) or acts.ndim != 2:
        raise BadInputError(f"{what} activations must be a [tokens, d] tensor, got {getattr(acts, 'shape', acts)!r}")
    if len(acts) == 0:
        raise BadInputError(f"There are no {what} tokens: give at least one non-empty {what} text.")
    acts = acts.detach().float().cpu()
    if not torch.isfinite(acts).all():
        raise BadInputError(f"The {what} activations contain NaN or infinite values.")
    return acts


def compute_direction(method: str, pos_acts: torch.Tensor, neg_acts: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The unit-norm `[d]` direction of `method` ("diffmean", "pca", "lat", "probe") from token activations."""
    if method not in DIRECTION_METHODS:
        raise BadInputError(f"Unknown direction method {method!r}; choose one of {sorted(DIRECTION_METHODS)}.")
    pos = _check_acts(pos_acts, "positive")
    neg = _check_acts(neg_acts, "negative")
    if pos.shape[1] != neg.shape[1]:
        raise BadInputError(f"Positive activations have width {pos.shape[1]} but negative ones {neg.shape[1]}.")
    return DIRECTION_METHODS[method](pos, neg, int(seed))


__all__ = ["DIRECTION_METHODS", "METHOD_FORMULAS", "compute_direction", "diffmean", "lat", "pca", "probe"]
