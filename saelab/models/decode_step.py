"""One decode step (a single new token per row, KV cache) for Llama-family HookedTransformers, with less overhead.

With the weight copies gone (`saelab.models.fastpath`) a TransformerLens decode step of SmolLM2 still
spends as long in Python and small ops as in its matmuls: `HookedTransformer.forward` re-derives rotary
positions and gathers cos/sin per layer, normalises `ln1` three times per layer (once each for the
query, key and value inputs), and goes through einops and its generic mask builder. `step()` computes the
same thing directly for the one configuration the engine decodes most (RMSNorm, rotary, gated MLP,
grouped-query or plain attention, pre-norm, no soft caps, no sliding window: Llama, Qwen2, Phi-3,
windowless Mistral), using the model's own modules, weights, KV cache entries and **hook points**: every
hook point of a TransformerLens forward fires here too, in the same order and with the same values (to
float rounding; tested), except that `blocks.*.ln1.*` fires once per layer instead of three times.
`supports(model, hook_names)` therefore refuses a step when a hook is attached to `ln1`, and for any other
configuration (GPT-2, NeoX, Gemma, Qwen3, ...); the engine then runs TransformerLens's own forward.

Shapes: B rows, T cached positions (before this step), H query heads, K key/value heads, D d_head.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saelab.models.fastpath import fast_linear

_POST_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def eligible(model) -> bool:
    """Does the model's configuration match what `step` computes?"""
    cfg = model.cfg
    flags_off = (
        "use_attn_in",
        "use_split_qkv_input",
        "parallel_attn_mlp",
        "attn_only",
        "use_normalization_before_and_after",
        "use_hook_mlp_in",
        "use_attn_result",
        "use_qk_norm",
        "use_logn_attn",
        "use_dynamic_ntk_rope",
        "use_attention_sinks",
        "load_in_4bit",
        "post_embedding_ln",
        "ungroup_grouped_query_attention",
        "use_local_attn",  # sliding windows (Mistral v0.1, Gemma): `step` attends to every cached position
    )
    return (
        cfg.normalization_type == "RMS"
        and cfg.final_rms
        and cfg.positional_embedding_type == "rotary"
        and cfg.gated_mlp
        and cfg.attention_dir == "causal"
        and cfg.original_architecture not in _POST_NORM
        and getattr(cfg, "clip_qkv", None) is None
        and not (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0
        and not (getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0) > 0
        and getattr(cfg, "n_devices", 1) == 1
        and not any(getattr(cfg, f, False) for f in flags_off)
    )


def supports(model, hook_names: Iterable[str]) -> bool:
    """True when `step` can run with hooks at `hook_names` attached (and the model is eligible)."""
    if not getattr(model, "_saelab_fast_decode", None):
        model._saelab_fast_decode = "yes" if eligible(model) else "no"
    if model._saelab_fast_decode != "yes":
        return False
    return not any(".ln1." in name for name in hook_names)


def _rotary(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rd = attn.cfg.rotary_dim
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    rotated = x_rot * cos + attn.rotate_every_two(x_rot) * sin
    return torch.cat([rotated, x_pass], dim=-1)


def _heads(x: torch.Tensor, w_HMD: torch.Tensor, b_HD: torch.Tensor) -> torch.Tensor:
    """x [B, 1, M] @ per-head weights [H, M, D] + [H, D] → [B, 1, H, D] (TransformerLens's attention linear)."""
    h, m, d = w_HMD.shape
    out = fast_linear(x, w_HMD.permute(0, 2, 1).reshape(h * d, m), b_HD.reshape(h * d))
    return out.reshape(x.shape[0], x.shape[1], h, d)


def _attention(attn, x, entry, positions_BT: torch.Tensor, keep_B11T: torch.Tensor) -> torch.Tensor:
    grouped = hasattr(attn, "_W_K")
    w_k, b_k = (attn._W_K, attn._b_K) if grouped else (attn.W_K, attn.b_K)
    w_v, b_v = (attn._W_V, attn._b_V) if grouped else (attn.W_V, attn.b_V)
    q = attn.hook_q(_heads(x, attn.W_Q, attn.b_Q))  # [B, 1, H, D]
    k = attn.hook_k(_heads(x, w_k, b_k))  # [B, 1, K, D]
    v = attn.hook_v(_heads(x, w_v, b_v))
    k, v = entry.append(k, v)  # [B, T+1, K, D], keys cached before rotation as TransformerLens does
    needed = int(positions_BT.max()) + 1
    if needed > attn.rotary_cos.shape[0]:  # grow the tables as TransformerLens's own apply_rotary does
        attn._extend_rotary_embeddings(min(attn.cfg.n_ctx, max(needed, 2 * attn.rotary_cos.shape[0])))
    cos_BT1R = attn.rotary_cos[positions_BT][:, :, None, :]
    sin_BT1R = attn.rotary_sin[positions_BT][:, :, None, :]
    q = attn.hook_rot_q(_rotary(attn, q, cos_BT1R[:, -1:], sin_BT1R[:, -1:]))
    k = attn.hook_rot_k(_rotary(attn, k, cos_BT1R, sin_BT1R))
    if grouped:
        k = torch.repeat_interleave(k, dim=2, repeats=attn.repeat_kv_heads)
        v = torch.repeat_interleave(v, dim=2, repeats=attn.repeat_kv_heads)
    scores = (q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1)) / attn.attn_scale  # [B, H, 1, T+1]
    scores = attn.hook_attn_scores(torch.where(keep_B11T, scores, attn.IGNORE))
    pattern = torch.softmax(scores, dim=-1)
    pattern = attn.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
    z = attn.hook_z((pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))  # [B, 1, H, D]
    h, d, m = attn.W_O.shape
    w_o = attn.W_O.permute(2, 0, 1).reshape(m, h * d)
    return fast_linear(z.reshape(z.shape[0], 1, h * d), w_o, attn.b_O)


def step(model, tokens_B1: torch.Tensor, cache) -> torch.Tensor:
    """Logits [B, 1, vocab] for one new token per row; appends to `cache` as `model(tokens, past_kv_cache=…)`."""
    from transformer_lens.utilities.tensors import get_offset_position_ids

    mask_BT = cache.append_attention_mask(torch.ones_like(tokens_B1))  # [B, T+1]
    positions_BT = get_offset_position_ids(0, mask_BT)
    keep_B11T = mask_BT.bool()[:, None, None, :]
    residual = model.hook_embed(model.embed(tokens_B1))
    for i, block in enumerate(model.blocks):
        resid_pre = block.hook_resid_pre(residual)
        attn_out = block.hook_attn_out(_attention(block.attn, block.ln1(resid_pre), cache[i], positions_BT, keep_B11T))
        resid_mid = block.hook_resid_mid(resid_pre + attn_out)
        mlp_out = block.hook_mlp_out(block.mlp(block.ln2(resid_mid)))
        residual = block.hook_resid_post(resid_mid + mlp_out)
    return model.unembed(model.ln_final(residual))


__all__ = ["eligible", "step", "supports"]
