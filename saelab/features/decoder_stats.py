"""Dashboard statistics that come from the SAE's weights alone: direct logit effects and decoder neighbours.

* `logit_effects`: effect[i, v] = Σ_j r_i[j] · ln_final.w[j] · W_U[j, v], with r_i what decoder row i writes into
  the residual stream (`residual_directions`: W_dec[i] itself at a residual hook, W_dec[i] @ W_O at `attn.hook_z`,
  W_dec[i] @ W_out at `mlp.hook_post`); the n largest and n smallest per latent.
* `neighbours`: the n decoder rows with the largest cosine similarity to each latent's row (itself excluded).
"""

from __future__ import annotations

import torch

from saelab.models.handle import ModelHandle


def residual_directions(model, hook: str, W_dec: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """`[d_sae, d_model]`: what each decoder row writes into the residual stream (None if unknown)."""
    layer = ModelHandle.hook_layer(hook)
    if hook.endswith("attn.hook_z") and layer is not None:
        W_O = model.blocks[layer].attn.W_O.detach().float()  # [heads, d_head, d_model]
        return torch.einsum(
            "shd,hdm->sm", W_dec.view(len(W_dec), *W_O.shape[:2]), W_O
        ), f"W_dec[i] @ blocks.{layer}.attn.W_O"
    if hook.endswith("mlp.hook_post") and layer is not None:
        return W_dec @ model.blocks[layer].mlp.W_out.detach().float(), f"W_dec[i] @ blocks.{layer}.mlp.W_out"
    return (W_dec, "W_dec[i]") if W_dec.shape[1] == model.cfg.d_model else (None, "")


def logit_effects(handle: ModelHandle, hook: str, W_dec: torch.Tensor, n: int) -> tuple[dict, str]:
    """Top/bottom `n` tokens of each latent's direct effect on the logits, and the formula used."""
    model, d = handle.model, len(W_dec)
    names = ("logit_pos_ids", "logit_pos_vals", "logit_neg_ids", "logit_neg_vals")
    D, r = residual_directions(model, hook, W_dec)
    if D is None:
        out = {k: torch.full((d, n), -1 if "ids" in k else float("nan")) for k in names}
        return out, f"not computed: {hook} does not write into the residual stream (ids -1, values NaN)"
    W_U = model.W_U.detach().float()
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if w is not None:
        W_U = w.detach().float()[:, None] * W_U
    formula = (
        f"effect[i, v] = sum_j r_i[j] * {'ln_final.w[j] * ' if w is not None else ''}W_U[j, v] with r_i = {r} "
        "(the direction through the unembedding; no RMS scale, no b_U); logit_pos = the n_logits largest "
        "effects (descending), logit_neg = the n_logits smallest (ascending)"
    )
    k = min(n, W_U.shape[1])
    parts: dict[str, list] = {name: [] for name in names}
    for c0 in range(0, d, 256):
        L = D[c0 : c0 + 256] @ W_U  # [256, d_vocab]
        top, bot = L.topk(k, dim=1), L.topk(k, dim=1, largest=False)
        for name, t in zip(names, (top.indices, top.values, bot.indices, bot.values)):
            parts[name].append(t)
    return {name: torch.cat(v) for name, v in parts.items()}, formula


def neighbours(W_dec: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    d = len(W_dec)
    U = W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ids, cos = torch.full((d, n), -1, dtype=torch.int32), torch.full((d, n), float("nan"))
    k = min(n, d - 1)
    for c0 in range(0, d, 1024):
        S = U[c0 : c0 + 1024] @ U.T
        S[torch.arange(len(S)), torch.arange(c0, c0 + len(S))] = -float("inf")  # not its own neighbour
        top = S.topk(k, dim=1)
        ids[c0 : c0 + len(S), :k], cos[c0 : c0 + len(S), :k] = top.indices.int(), top.values
    return {"nbr_ids": ids, "nbr_cos": cos}


__all__ = ["logit_effects", "neighbours", "residual_directions"]
