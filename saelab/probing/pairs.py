"""Paired contrast: when a CSV holds pairs of texts (a minimal edit, a before/after), rank SAE latents by how much
they change within the pairs: score_j = Σ_i |x_j(a_i) − x_j(b_i)| (x pooled per text, default last token).

The ranking itself is `saelab.probing.feature_sources.paired_contrast_ranking`; this module reads the pairs from a CSV
(as data: pandas, strings only) and attaches labels, for the page and `saelab probe --pairs A B`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saelab.errors import BadInputError

FORMULA = "score_j = Σ_i |x_j(a_i) − x_j(b_i)| over the pairs, x = the latent pooled over each text's tokens"
MAX_PAIRS = 5_000


def read_pairs(
    data: bytes | str | Path, col_a: str, col_b: str, *, max_pairs: int = MAX_PAIRS, seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """(texts_a, texts_b, notes) from two text columns; rows with an empty side are dropped; big files sampled."""
    from saelab.textsets import read_frame

    df, notes, _ = read_frame(data)
    missing = [c for c in (col_a, col_b) if c not in df.columns]
    if missing:
        raise BadInputError(f"No column {missing[0]!r}; the file has {[str(c) for c in df.columns]}.")
    if col_a == col_b:
        raise BadInputError("Choose two different text columns for the pairs.")
    a, b = df[col_a].astype(str).str.strip(), df[col_b].astype(str).str.strip()
    keep = (a != "") & (b != "")
    if (~keep).any():
        notes.append(f"Dropped {int((~keep).sum()):,} pair(s) with an empty side.")
    a, b = a[keep], b[keep]
    if a.empty:
        raise BadInputError("No pairs are left after dropping empty texts.")
    if len(a) > max_pairs:
        notes.append(f"Sampled {max_pairs:,} of {len(a):,} pairs at random (seed {seed}).")
        idx = a.sample(n=max_pairs, random_state=seed).sort_index().index
        a, b = a[idx], b[idx]
    return a.tolist(), b.tolist(), notes


def rank_pairs(
    handle: Any,
    loaded_sae: Any,
    texts_a: list[str],
    texts_b: list[str],
    *,
    labels: dict[int, str] | None = None,
    pooling: str = "last",
    max_tokens: int = 128,
    top: int = 30,
) -> list[dict[str, Any]]:
    """The `top` latents by paired contrast, with their (proxy) labels."""
    from saelab.probing.feature_sources import paired_contrast_ranking

    ranked = paired_contrast_ranking(handle, loaded_sae, texts_a, texts_b, pooling=pooling, max_tokens=max_tokens)
    labels = labels or {}
    return [
        {"rank": i + 1, "latent": j, "score": s, "mean_abs_delta": s / len(texts_a), "label": labels.get(j, "")}
        for i, (j, s) in enumerate(ranked[:top])
    ]
