"""A joint feature map of several SAEs: every SAE's decoder directions laid out together, coloured by SAE.

The rows of every W_dec are unit-normalised and laid out by one t-SNE on cosine distance (the same layout as
the single-SAE map, `saelab.features.projection`), so a region where two SAEs learned the same directions shows
both colours interleaved, and a region one SAE alone covers shows one colour.

Each SAE contributes at most `per_sae` latents (a seeded random subset, the same every time) so the layout takes
seconds, not minutes, on a laptop CPU; the map says how many of how many it shows.

The number beside it, **neighbour mixing**, says how interleaved the SAEs are on the map:

    mixing = mean over shown latents i of  (# of i's k nearest map neighbours from another SAE) / k
             ÷  (that fraction expected if SAE membership were random: 1 − Σ_s n_s (n_s − 1) / (n (n − 1)))

1 means the SAEs are as mixed as random labels would be (they cover the same directions), 0 means every latent's
neighbours come from its own SAE (they cover different regions of the space).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.errors import BadInputError

PER_SAE = 1_500
NEIGHBOURS = 10


@dataclass
class JointMap:
    """Shown latents of every SAE: `xy` [n, 2], `sae` [n] (index into `names`), `latent` [n] (id in that SAE)."""

    names: list[str]
    xy: np.ndarray
    sae: np.ndarray
    latent: np.ndarray
    d_sae: list[int]
    mixing: float
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def shown(self, s: int) -> int:
        return int((self.sae == s).sum())

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "xy": self.xy.tolist(), "sae": self.sae.tolist(),
                "latent": self.latent.tolist(), "d_sae": self.d_sae, "mixing": self.mixing, "seed": self.seed,
                "notes": self.notes}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointMap:
        return cls(list(data["names"]), np.asarray(data["xy"], np.float32), np.asarray(data["sae"], np.int32),
                   np.asarray(data["latent"], np.int64), [int(d) for d in data["d_sae"]], float(data["mixing"]),
                   int(data.get("seed", 0)), list(data.get("notes", [])))  # fmt: skip


def neighbour_mixing(xy: np.ndarray, group: np.ndarray, k: int = NEIGHBOURS) -> float:
    """The module docstring's mixing score of a layout `xy` [n, 2] with group ids `group` [n]."""
    from sklearn.neighbors import NearestNeighbors

    n = len(xy)
    counts = np.bincount(group)
    expected = 1.0 - float((counts * (counts - 1)).sum()) / (n * (n - 1)) if n > 1 else 0.0
    if n <= k or expected <= 0:
        return float("nan")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    other = (group[idx[:, 1:]] != group[:, None]).mean()
    return float(other / expected)


def joint_map(decoders: list[np.ndarray], names: list[str], *, per_sae: int = PER_SAE, seed: int = 0) -> JointMap:
    """Lay out the decoder rows of several SAEs (each `[d_sae_s, d_in]`, same d_in) together."""
    from saelab.features.projection import project_decoder

    if len(decoders) < 2 or len(decoders) != len(names):
        raise BadInputError("A joint map needs two or more SAEs, each with a name.")
    widths = {int(np.shape(w)[1]) for w in decoders}
    if len(widths) != 1:
        raise BadInputError(f"These SAEs write vectors of different widths ({sorted(widths)}): no joint map.")
    rng = np.random.default_rng(seed)
    rows, sae, latent, notes = [], [], [], []
    for s, (W, name) in enumerate(zip(decoders, names, strict=True)):
        W = np.asarray(W, np.float32)
        keep = np.sort(rng.choice(len(W), per_sae, replace=False)) if len(W) > per_sae else np.arange(len(W))
        if len(keep) < len(W):
            notes.append(f"{name}: {len(keep):,} of {len(W):,} latents shown (a seeded random subset).")
        rows.append(W[keep])
        sae.append(np.full(len(keep), s, np.int32))
        latent.append(keep.astype(np.int64))
    W_all = np.concatenate(rows)
    xy, _ = project_decoder(W_all, method="tsne" if len(W_all) >= 5 else "pca", n_clusters=1, seed=seed)
    group = np.concatenate(sae)
    return JointMap(list(names), xy, group, np.concatenate(latent), [len(w) for w in decoders],
                    neighbour_mixing(xy, group), seed, notes)  # fmt: skip


__all__ = ["JointMap", "joint_map", "neighbour_mixing"]
