"""Attribution patching at head level: a first-order (gradient) estimate of clean→corrupted activation patching.

    effect(L, h) ≈ [ Σ_pairs Σ_pos Σ_d (z_clean − z_corrupted)[pos, h, d] · ∂m/∂z_corrupted[pos, h, d] ] / B
                   / (m̄_clean − m̄_corrupted)
Cost per batch: one no-grad forward of the clean prompts (to read z_clean) and one forward + backward of the
corrupted prompts. The gradient is taken with respect to z alone: each `hook_z` output is swapped for a detached
leaf tensor that requires grad, so no parameter gradients are computed and the shared model is not touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from saelab.circuits.heads import last_logits, run_capture, z_hook
from saelab.circuits.patching import check_gap
from saelab.circuits.tasks import PairBatch, PairMetrics, metric_values
from saelab.hooks import gate
from saelab.models.handle import ModelHandle

Progress = Callable[[int, int], None]


def _leaf_hook(leaves: dict[str, torch.Tensor]):
    """A hook that swaps the activation for a detached leaf requiring grad, and keeps it in `leaves`."""

    def as_leaf(z: torch.Tensor, hook) -> torch.Tensor:
        leaf = z.detach().requires_grad_(True)
        leaves[hook.name] = leaf
        return leaf

    return as_leaf


def attribution_patching(
    handle: ModelHandle, batches: Sequence[PairBatch], metric: str, *, progress: Progress | None = None
) -> tuple[np.ndarray, PairMetrics]:
    """Estimated normalised clean→corrupted effect of every head [n_layers, n_heads], and the baselines."""
    n_layers, n_heads = handle.n_layers, handle.cfg.n_heads
    names = [z_hook(layer) for layer in range(n_layers)]
    n = 1 + max(int(b.idx.max()) for b in batches)
    clean_m, corr_m = np.full(n, np.nan), np.full(n, np.nan)
    total = np.zeros((n_layers, n_heads))
    for i, b in enumerate(batches):
        clean_logits, clean_store = run_capture(handle, b.clean, names)
        clean_m[b.idx] = metric_values(metric, clean_logits, b.correct_mask, b.wrong_mask).numpy()
        leaves: dict[str, torch.Tensor] = {}
        as_leaf = _leaf_hook(leaves)
        with gate(handle, [(name, as_leaf) for name in names]) as model, torch.enable_grad():
            logits = last_logits(model, b.corrupted)
            m = metric_values(metric, logits.float(), b.correct_mask, b.wrong_mask)
            grads = torch.autograd.grad(m.sum(), [leaves[name] for name in names])
        corr_m[b.idx] = m.detach().numpy()
        for layer, (name, grad) in enumerate(zip(names, grads)):
            diff = clean_store[name] - leaves[name].detach()  # [B, P, H, D]
            total[layer] += (diff * grad).sum(dim=(0, 1, 3)).numpy()
        if progress:
            progress(i + 1, len(batches))
    base = PairMetrics(clean_m, corr_m)
    gap = check_gap(base.gap)
    return total / sum(b.size for b in batches) / gap, base
