"""A Top-K SAE on text embeddings, trained through SAE-Lens (HypotheSAEs step 2).

Sizes follow the paper's rules of thumb, (M latents, K active) ≈ (64, 4) for ~1k texts, (256, 8) for
~10k, (1024, 8) for ~100k; we switch at the geometric midpoints (3k, 30k training texts). Training uses
`saelab.sae.train.train_sae` (SAE-Lens's TopK training SAE: MSE + aux-K loss on dead latents, Adam)
with the paper's lr 5e-4 and batch 512 (smaller when there are fewer texts). Inputs are scaled to mean
norm √d by SAE-Lens's "expected_average_only_in" and the factor is folded back, so the SAE reads raw
embeddings. Deviation: the paper stops early on a validation loss; here the number of epochs is fixed
(`epochs`, default 100) and the validation split's normalised MSE is reported instead.
Trained SAEs are cached on disk under `cache_dir()/hypotheses/sae/<hash of embeddings + settings>`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saelab.errors import BadInputError
from saelab.storage import cache_dir

log = logging.getLogger(__name__)

MIN_TRAIN_PER_LATENT = 2  # at least 2 training texts per latent: 128 for the smallest (64-latent) SAE
LR = 5e-4
BATCH = 512


def sae_size(n_train: int) -> tuple[int, int]:
    """(M, K) for a training set of n_train texts (the paper's rules of thumb)."""
    if n_train < 3_000:
        return 64, 4
    if n_train < 30_000:
        return 256, 8
    return 1024, 8


def min_train_texts(m: int = 64) -> int:
    return MIN_TRAIN_PER_LATENT * m


@dataclass
class EmbeddingSAE:
    """A trained SAE over embeddings and how it did.

    Attributes:
        sae: the SAE-Lens inference SAE (reads raw embeddings).
        m, k: latents and active latents per text.
        path: its folder (SAE-Lens format + saelab.json), reusable by other tools.
        metrics: "val_nmse" = Σ‖x − x̂‖² / Σ‖x − x̄‖² on the validation split, "dead_fraction" (latents that
            never fire on the training split), "epochs", "steps", "cached" (1.0 when read from the cache).
    """

    sae: Any
    m: int
    k: int
    path: Path
    metrics: dict[str, float]

    def encode(self, X: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Latent activations [n, M] of embeddings X [n, d] (float32)."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(X), batch):
                out.append(self.sae.encode(torch.as_tensor(X[i : i + batch], dtype=torch.float32)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.m), dtype=np.float32)

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(X, dtype=torch.float32)
            return self.sae.decode(self.sae.encode(x)).numpy()


def _batches(X: torch.Tensor, batch: int, seed: int) -> Callable[[int], Iterator[torch.Tensor]]:
    """An endless stream of shuffled [batch, d] rows (a fresh permutation each epoch), from sample `start`."""

    def data(start: int) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        buf = torch.empty(0, dtype=torch.long)
        skipped = 0
        while True:
            while len(buf) < batch:
                buf = torch.cat([buf, torch.randperm(len(X), generator=gen)])
            idx, buf = buf[:batch], buf[batch:]
            if skipped < start:
                skipped += batch
                continue
            yield X[idx]

    return data


def _key(X: np.ndarray, settings: dict[str, Any]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


def nmse(X: np.ndarray, X_hat: np.ndarray) -> float:
    denom = float(((X - X.mean(0)) ** 2).sum())
    return float(((X - X_hat) ** 2).sum()) / denom if denom > 0 else float("nan")


def train_embedding_sae(
    X_train: np.ndarray,
    X_val: np.ndarray,
    *,
    m: int | None = None,
    k: int | None = None,
    epochs: int = 100,
    seed: int = 0,
    source: str = "embeddings",
    progress: Callable[[int, int], None] | None = None,
    use_cache: bool = True,
) -> EmbeddingSAE:
    """Train (or read from the cache) a Top-K SAE on X_train [n, d]; sizes from `sae_size` unless given."""
    from saelab.sae.files import load_sae
    from saelab.sae.train import TrainConfig, train_sae

    n, d = X_train.shape
    auto_m, auto_k = sae_size(n)
    m, k = m or auto_m, k or auto_k
    if n < min_train_texts(m):
        raise BadInputError(
            f"The SAE needs at least {min_train_texts(m)} training texts ({MIN_TRAIN_PER_LATENT} per latent of its "
            f"{m}); the training split has {n}. Add texts or choose fewer latents."
        )
    if k > m:
        raise BadInputError(f"K ({k}) cannot exceed the number of latents M ({m}).")
    if not np.isfinite(X_train).all():
        raise BadInputError("Some embeddings are not finite; check the texts.")
    batch = min(BATCH, 2 ** int(math.log2(max(n // 2, 1))))
    steps = max(1, epochs * n // batch)
    settings = {"m": m, "k": k, "epochs": epochs, "seed": seed, "lr": LR, "batch": batch, "source": source, "v": 1}
    folder = cache_dir() / "hypotheses" / "sae" / _key(X_train, settings)
    cached = use_cache and (folder / "cfg.json").exists()
    if not cached:
        cfg = TrainConfig(
            architecture="topk",
            d_sae=m,
            k=k,
            lr=LR,
            batch_size=batch,
            total_samples=steps * batch,
            seed=seed,
            n_batches_for_norm_estimate=min(50, max(1, n // batch)),
            dead_feature_window=max(10, min(steps // 4, 20 * max(1, n // batch))),
            feature_sampling_window=max(10, steps),
            checkpoint_every_steps=steps + 1,
        )

        def report(done: int, total: int, _metrics: dict[str, float]) -> None:
            if progress is not None:
                progress(done, total)

        meta = {"model": source, "hook": "text_embedding", "corpus": {"texts": n, "purpose": "hypotheses"}}
        train_sae(cfg, _batches(torch.as_tensor(X_train, dtype=torch.float32), batch, seed), d, folder, meta, report,
                  resume=False)  # fmt: skip
    loaded = load_sae(folder)
    out = EmbeddingSAE(loaded.sae, m, k, folder, {})
    fires = (out.encode(X_train) > 0).any(0)
    out.metrics = {
        "val_nmse": nmse(X_val, out.reconstruct(X_val)) if len(X_val) else float("nan"),
        "dead_fraction": float(1 - fires.mean()),
        "epochs": float(epochs),
        "steps": float(steps),
        "batch": float(batch),
        "cached": float(cached),
    }
    return out
