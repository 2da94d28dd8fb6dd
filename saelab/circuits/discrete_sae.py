"""Discrete SAE codes for circuit discovery (O'Neill & Bui 2024, arXiv 2405.12522).

1. For every prompt (positives = clean prompts, negatives = corrupted ones), every head's z at
   `blocks.L.attn.hook_z`, mean-pooled over all positions → one d_head vector per (prompt, head).
2. One SAE shared by all heads (SAE-Lens `StandardTrainingSAE`: ReLU, L1 penalty weighted by decoder norms,
   λ = 0.02), trained full-batch with Adam (lr 1e-3, 500 epochs) on all those vectors. Inputs are scaled by one
   factor so their mean norm is √d_head (SAE-Lens's convention), since raw head norms vary by model.
3. Code of a head on a prompt = argmax latent; a vector with no active latent has no code (−1).
4. Head score = |{codes the head shows on positives} \\ {codes it shows on negatives}|.
5. Edge (i → j, layer_i < layer_j) = fraction of positive prompts on which both heads show a positive-only code.
Training the SAE in our own short loop (SAE-Lens's loss via `training_forward_pass`, not `SAETrainer`): the
trainer's per-step bookkeeping, norm estimate and checkpoint directory cost more than the ~5k-vector job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saelab.circuits.heads import head_outputs
from saelab.circuits.methods import MethodSettings
from saelab.circuits.tasks import PairBatch, PairMetrics, metric_values

Progress = Callable[[int, int], None]


@dataclass
class CodeTable:
    """Codes of every head on every prompt. pos/neg: int [n_prompts, n_layers, n_heads], −1 = no code."""

    pos: np.ndarray
    neg: np.ndarray
    train_mse: float = float("nan")
    explained_variance: float = float("nan")
    l0: float = float("nan")


def pooled_head_outputs(
    handle, batches: Sequence[PairBatch], metric: str
) -> tuple[torch.Tensor, torch.Tensor, PairMetrics]:
    """Mean-over-positions z: positives [N, n_layers, n_heads, d_head], negatives likewise, and the baselines."""
    n = 1 + max(int(b.idx.max()) for b in batches)
    clean_m, corr_m = np.full(n, np.nan), np.full(n, np.nan)
    pos, neg = [], []
    for b in batches:
        for tokens, out, m in ((b.clean, pos, clean_m), (b.corrupted, neg, corr_m)):
            logits, z = head_outputs(handle, tokens)  # z: [B, L, P, H, D]
            out.append(z.mean(dim=2))
            m[b.idx] = metric_values(metric, logits, b.correct_mask, b.wrong_mask).numpy()
    return torch.cat(pos), torch.cat(neg), PairMetrics(clean_m, corr_m)


def train_code_sae(x: torch.Tensor, settings: MethodSettings, progress: Progress | None = None):
    """A SAE-Lens standard (ReLU + L1) SAE on rows of `x` [n, d], full batch; returns (sae, scale, mse)."""
    from sae_lens.saes.sae import TrainStepInput

    from saelab.sae.registry import SaeKnobs, get_architecture

    x = x.float()
    scale = math.sqrt(x.shape[1]) / float(x.norm(dim=1).mean().clamp_min(1e-8))
    xs = x * scale
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        knobs = SaeKnobs(d_in=x.shape[1], d_sae=settings.d_sae, sparsity_coefficient=settings.l1,
                         normalize_activations="none")  # fmt: skip
        sae = get_architecture("standard").build(knobs)
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    mse = float("nan")
    with torch.enable_grad():
        for step in range(settings.epochs):
            out = sae.training_forward_pass(TrainStepInput(
                sae_in=xs, coefficients={"l1": settings.l1}, dead_neuron_mask=None, n_training_steps=step,
                is_logging_step=False,
            ))  # fmt: skip
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            mse = float(out.losses["mse_loss"].detach())
            if progress and (step + 1) % 50 == 0:
                progress(step + 1, settings.epochs)
    sae.eval()
    return sae, scale, mse


def assign_codes(sae, scale: float, x: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """(argmax latent per row, −1 where no latent fires; explained variance; mean L0) for `x` [n, d]."""
    with torch.no_grad():
        xs = x.float() * scale
        acts = sae.encode(xs)
        recon = sae.decode(acts)
        codes = acts.argmax(dim=-1)
        codes[acts.max(dim=-1).values <= 0] = -1
        ev = 1 - float(((xs - recon) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum().clamp_min(1e-12))
        l0 = float((acts > 0).float().sum(-1).mean())
    return codes.numpy(), ev, l0


def head_code_scores(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Score [n_layers, n_heads] = number of distinct codes a head shows on positives and never on negatives."""
    _, n_layers, n_heads = pos.shape
    scores = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        for head in range(n_heads):
            seen_pos = set(pos[:, layer, head].tolist()) - {-1}
            seen_neg = set(neg[:, layer, head].tolist())
            scores[layer, head] = len(seen_pos - seen_neg)
    return scores


def code_edges(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Edge weights [n_heads_total, n_heads_total] (flat layer-major head index), earlier layer → later layer.

    w[i, j] = fraction of positive prompts on which head i and head j both show a positive-only code.
    """
    n, n_layers, n_heads = pos.shape
    flat_pos = pos.reshape(n, -1)
    flat_neg = neg.reshape(neg.shape[0], -1)
    specific = np.zeros_like(flat_pos, dtype=bool)  # [n, heads]: the head's code here never occurs on negatives
    for j in range(flat_pos.shape[1]):
        neg_codes = set(flat_neg[:, j].tolist())
        specific[:, j] = [c != -1 and c not in neg_codes for c in flat_pos[:, j].tolist()]
    co = specific.T.astype(float) @ specific.astype(float) / max(n, 1)
    layer = np.repeat(np.arange(n_layers), n_heads)
    return np.where(layer[:, None] < layer[None, :], co, 0.0)


def discrete_sae_scores(
    handle, batches: Sequence[PairBatch], metric: str, settings: MethodSettings, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, CodeTable, PairMetrics]:
    """Head scores [n_layers, n_heads], edges, the code table and the baselines (see the module docstring)."""
    pos, neg, base = pooled_head_outputs(handle, batches, metric)
    d = pos.shape[-1]
    x = torch.cat([pos.reshape(-1, d), neg.reshape(-1, d)])
    sae, scale, mse = train_code_sae(x, settings, progress)
    codes, ev, l0 = assign_codes(sae, scale, x)
    n_pos = pos.shape[0] * pos.shape[1] * pos.shape[2]
    table = CodeTable(codes[:n_pos].reshape(pos.shape[:3]), codes[n_pos:].reshape(neg.shape[:3]), mse, ev, l0)
    return head_code_scores(table.pos, table.neg), code_edges(table.pos, table.neg), table, base
