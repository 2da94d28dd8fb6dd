"""Activation patching of every attention head (the reference the other methods are scored against).

Two variants, both at `blocks.L.attn.hook_z`, the head's slice at every position:
  clean→corrupted  run the corrupted prompt with head (L, h)'s z taken from the clean prompt;
                   effect = (m̄_patched − m̄_corrupted) / (m̄_clean − m̄_corrupted)
                   (1 = the head alone restores the clean metric, 0 = no effect; means over pairs).
  mean-ablation    run the clean prompt with head (L, h)'s z replaced by its mean over all prompts of the batch
                   (clean and corrupted) at each position;
                   effect = (m̄_clean − m̄_ablated) / (m̄_clean − m̄_corrupted) (1 = ablating it loses everything).
Cost is one forward per head, batched: the residual stream before layer L is cached once, then each layer's
n_heads patches run as one batch of n_heads × B prompts from layer L onwards (`start_at_layer`), so a layer
costs (n_layers − L) blocks instead of the whole model. Same numbers as one full forward per head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from saelab.circuits.heads import last_logits, resid_pre_hook, run_capture, z_hook
from saelab.circuits.tasks import PairBatch, PairMetrics, metric_values
from saelab.errors import BadInputError
from saelab.hooks import gate
from saelab.models.handle import ModelHandle

Progress = Callable[[int, int], None]
MIN_GAP = 1e-6  # |m̄_clean − m̄_corrupted| below this: the prompts do not differ on the metric, nothing to patch


def baseline_metrics(handle: ModelHandle, batches: Sequence[PairBatch], metric: str) -> PairMetrics:
    """Clean and corrupted metrics of every pair (two plain forwards per batch)."""
    n = 1 + max(int(b.idx.max()) for b in batches)
    clean, corrupted = np.full(n, np.nan), np.full(n, np.nan)
    for b in batches:
        for tokens, out in ((b.clean, clean), (b.corrupted, corrupted)):
            logits, _ = run_capture(handle, tokens, [])
            out[b.idx] = metric_values(metric, logits, b.correct_mask, b.wrong_mask).numpy()
    return PairMetrics(clean, corrupted)


def check_gap(gap: float) -> float:
    if not np.isfinite(gap) or abs(gap) < MIN_GAP:
        raise BadInputError(
            f"The clean and corrupted prompts give the same mean metric (gap {gap:.3g}); there is no effect to "
            "attribute to heads. Use corrupted prompts that change the answer."
        )
    return gap


def _patch_layer(handle, x, layer, source_z, *, start_at_layer):
    """Metric inputs for n_heads copies of a batch; copy h has head h's z at `layer` set from `source_z`.

    x: tokens [B, P] (start_at_layer None) or resid_pre [B, P, d] (start_at_layer = layer).
    source_z: [B, P, n_heads, d_head] or [P, n_heads, d_head] (broadcast over the batch). Returns logits [H, B, V].
    """
    n_heads = handle.cfg.n_heads
    b = x.shape[0]

    def patch(z: torch.Tensor, hook) -> torch.Tensor:
        z = z.clone().view(n_heads, b, *z.shape[1:])  # [H, B, P, H, D]
        for h in range(n_heads):
            z[h, :, :, h, :] = source_z[..., h, :]
        return z.view(n_heads * b, *z.shape[2:])

    xs = x.repeat(n_heads, *([1] * (x.dim() - 1)))
    with gate(handle, [(z_hook(layer), patch)]) as model, torch.inference_mode():
        logits = last_logits(model, xs, start_at_layer=start_at_layer)
    return logits.float().view(n_heads, b, -1)


def activation_patching(
    handle: ModelHandle,
    batches: Sequence[PairBatch],
    metric: str,
    *,
    mode: str = "clean_to_corrupted",
    progress: Progress | None = None,
) -> tuple[np.ndarray, PairMetrics]:
    """Normalised effect of every head [n_layers, n_heads] (formulas in the module docstring) and the baselines."""
    if mode not in ("clean_to_corrupted", "mean_ablation"):
        raise BadInputError(f"Unknown patching mode {mode!r}; use clean_to_corrupted or mean_ablation.")
    n_layers, n_heads = handle.n_layers, handle.cfg.n_heads
    total_pairs = sum(b.size for b in batches)
    patched_sum = np.zeros((n_layers, n_heads))
    n = 1 + max(int(b.idx.max()) for b in batches)
    clean_m, corr_m = np.full(n, np.nan), np.full(n, np.nan)
    steps, done = len(batches) * n_layers, 0
    for b in batches:
        z_names = [z_hook(layer) for layer in range(n_layers)]
        resid_names = [resid_pre_hook(layer) for layer in range(n_layers)]
        clean_logits, clean_store = run_capture(handle, b.clean, z_names + resid_names)
        corr_logits, corr_store = run_capture(handle, b.corrupted, z_names + resid_names)
        clean_m[b.idx] = metric_values(metric, clean_logits, b.correct_mask, b.wrong_mask).numpy()
        corr_m[b.idx] = metric_values(metric, corr_logits, b.correct_mask, b.wrong_mask).numpy()
        cm = b.correct_mask.repeat(n_heads, 1)
        wm = b.wrong_mask.repeat(n_heads, 1)
        for layer in range(n_layers):
            if mode == "clean_to_corrupted":
                resid, source = corr_store[resid_pre_hook(layer)], clean_store[z_hook(layer)]
            else:
                resid = clean_store[resid_pre_hook(layer)]
                source = torch.cat([clean_store[z_hook(layer)], corr_store[z_hook(layer)]]).mean(0)
            logits = _patch_layer(handle, resid, layer, source, start_at_layer=layer)
            m = metric_values(metric, logits.reshape(n_heads * b.size, -1), cm, wm).view(n_heads, b.size)
            patched_sum[layer] += m.sum(1).numpy()
            done += 1
            if progress:
                progress(done, steps)
    base = PairMetrics(clean_m, corr_m)
    gap = check_gap(base.gap)
    patched = patched_sum / total_pairs
    if mode == "clean_to_corrupted":
        effect = (patched - np.nanmean(corr_m)) / gap
    else:
        effect = (np.nanmean(clean_m) - patched) / gap
    return effect, base


def patched_metric(handle: ModelHandle, batch: PairBatch, metric: str, heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """Metric per pair when the corrupted run takes the given heads' z from the clean run (one full forward).

    The slow, direct form of clean→corrupted patching, for checks: patching no head gives the corrupted metric,
    patching every head gives the clean one.
    """
    n_layers = handle.n_layers
    _, clean_store = run_capture(handle, batch.clean, [z_hook(layer) for layer in range(n_layers)])
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))

    def make(layer: int):
        def patch(z: torch.Tensor, hook) -> torch.Tensor:
            z = z.clone()
            for h in by_layer[layer]:
                z[:, :, h, :] = clean_store[z_hook(layer)][:, :, h, :]
            return z

        return patch

    logits, _ = run_capture(handle, batch.corrupted, [], [(z_hook(layer), make(layer)) for layer in by_layer])
    return metric_values(metric, logits, batch.correct_mask, batch.wrong_mask).numpy()
