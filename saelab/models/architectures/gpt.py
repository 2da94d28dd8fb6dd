"""GPT-2 and GPT-NeoX (Pythia): LayerNorm with biases, biased attention and MLP, ungated MLP.

GPT-2 has learned positional embeddings (W_pos, one row per position up to n_positions) and Conv1D weights
(TL's converter transposes them). GPT-NeoX runs attention and MLP in parallel off the same residual
(`parallel_attn_mlp`: no `hook_resid_mid` exists then) and rotates only the first `partial_rotary_factor`
of each head's dimensions.
"""

from __future__ import annotations

from typing import Any

from saelab.models.architectures.common import Architecture, n_ctx, positions, refuse, tl_converter


def _act(hf: Any, value: str) -> str:
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    if value not in SUPPORTED_ACTIVATIONS:
        refuse(hf, f"activation {value!r} is not one TransformerLens implements")
    return value


def _gpt2(hf: Any) -> dict[str, Any]:
    d_model, n_heads = int(hf.n_embd), int(hf.n_head)
    if getattr(hf, "add_cross_attention", False):
        refuse(hf, "cross-attention (an encoder-decoder GPT-2) is not a causal language model")
    return {
        "d_model": d_model,
        "d_head": d_model // n_heads,
        "n_heads": n_heads,
        "d_mlp": int(getattr(hf, "n_inner", None) or 4 * d_model),
        "n_layers": int(hf.n_layer),
        "n_ctx": int(hf.n_positions),  # W_pos has exactly this many rows
        "eps": float(hf.layer_norm_epsilon),
        "d_vocab": int(hf.vocab_size),
        "act_fn": _act(hf, str(hf.activation_function)),
        "use_attn_scale": bool(getattr(hf, "scale_attn_weights", True)),
        "scale_attn_by_inverse_layer_idx": bool(getattr(hf, "scale_attn_by_inverse_layer_idx", False)),
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "original_architecture": "GPT2LMHeadModel",
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": False,
    }


def _gpt_neox(hf: Any) -> dict[str, Any]:
    if not getattr(hf, "attention_bias", True):
        refuse(hf, "attention without biases (attention_bias=False) is not handled by TransformerLens's NeoX converter")
    d_model, n_heads = int(hf.hidden_size), int(hf.num_attention_heads)
    d_head = d_model // n_heads
    n_layers = int(hf.num_hidden_layers)
    ctx = n_ctx(hf)
    return {
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf.intermediate_size),
        "n_layers": n_layers,
        "n_ctx": ctx,
        "eps": float(hf.layer_norm_eps),
        "d_vocab": int(hf.vocab_size),
        "act_fn": _act(hf, str(hf.hidden_act)),
        "parallel_attn_mlp": bool(getattr(hf, "use_parallel_residual", True)),
        "normalization_type": "LN",
        **positions(hf, d_head, n_layers, ctx),
        "original_architecture": "GPTNeoXForCausalLM",
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": False,
    }


def _convert_gpt2(hf_model: Any, cfg: Any) -> dict:
    """TransformerLens's GPT-2 converter, plus the zero unembedding bias it leaves out (GPT-2's head has none)."""
    import torch

    state = tl_converter("convert_gpt2_weights")(hf_model, cfg)
    state.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
    return state


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(_gpt2, _convert_gpt2),
    "gpt_neox": Architecture(_gpt_neox, tl_converter("convert_neox_weights")),
}
