"""Llama-style decoders: RMSNorm, rotary, gated MLP, pre-norm blocks (Llama, Mistral, Qwen2, Qwen3, Phi-3).

They differ in small ways, each read from the HF config: Qwen2 has q/k/v biases (its converter reads
them), Qwen3 normalises q and k per head (`use_qk_norm`) and may have head_dim != d_model / n_heads, Phi-3
fuses qkv and gate/up (its converter splits them), Mistral and Phi-3 may slide a window over every layer.
"""

from __future__ import annotations

from typing import Any

from saelab.models.architectures.common import (
    Architecture,
    head_dim,
    n_ctx,
    positions,
    refuse,
    rms_decoder_shape,
    tl_converter,
)


def llama_like(hf: Any, *, arch: str, always_kv_heads: bool = False) -> dict[str, Any]:
    """TransformerLens config kwargs shared by the family. `always_kv_heads`: the converter writes `_W_K`
    (grouped layout) even when there are as many key/value heads as query heads."""
    n_heads = int(hf.num_attention_heads)
    d_head = head_dim(hf)
    n_kv = int(getattr(hf, "num_key_value_heads", None) or n_heads)
    n_layers = int(hf.num_hidden_layers)
    ctx = n_ctx(hf)
    if getattr(hf, "mlp_bias", False):
        refuse(hf, "MLP biases (mlp_bias=True) have no place in TransformerLens's gated MLP")
    return {
        **rms_decoder_shape(hf, d_head, n_heads, ctx, getattr(hf, "hidden_act", "silu")),
        "n_key_value_heads": n_kv if (n_kv != n_heads or always_kv_heads) else None,
        "normalization_type": "RMS",
        **positions(hf, d_head, n_layers, ctx),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": arch,
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": False,
    }


def _llama(hf: Any) -> dict[str, Any]:
    if getattr(hf, "attention_bias", False):
        refuse(hf, "attention biases (attention_bias=True) are dropped by TransformerLens's Llama converter")
    return llama_like(hf, arch="LlamaForCausalLM")


def _qwen3(hf: Any) -> dict[str, Any]:
    if getattr(hf, "attention_bias", False):
        refuse(hf, "attention biases (attention_bias=True) are dropped by TransformerLens's Qwen3 converter")
    return {**llama_like(hf, arch="Qwen3ForCausalLM"), "use_qk_norm": True}


def _phi3(hf: Any) -> dict[str, Any]:
    if int(hf.hidden_size) != int(hf.num_attention_heads) * head_dim(hf):
        refuse(hf, "head_dim * heads != hidden_size, which TransformerLens's Phi-3 converter assumes")
    return llama_like(hf, arch="Phi3ForCausalLM")


def _convert_phi3(hf_model: Any, cfg: Any) -> dict:
    """TransformerLens's Phi-3 converter, squared with the model it is loaded into: it writes LayerNorm
    biases (`ln*.b`, zeros) an RMSNorm model has no parameter for, and no MLP biases (Phi-3 has none; the
    gated MLP's `b_in`/`b_out` must be zeros, not left uninitialised)."""
    import torch

    state = tl_converter("convert_phi3_weights")(hf_model, cfg)
    state = {k: v for k, v in state.items() if not (k.rsplit(".", 1)[-1] == "b" and ".ln" in f".{k}")}
    for layer in range(cfg.n_layers):
        state.setdefault(f"blocks.{layer}.mlp.b_in", torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
        state.setdefault(f"blocks.{layer}.mlp.b_out", torch.zeros(cfg.d_model, dtype=cfg.dtype))
    return state


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(_llama, tl_converter("convert_llama_weights")),
    "mistral": Architecture(
        lambda hf: llama_like(hf, arch="MistralForCausalLM", always_kv_heads=True),
        tl_converter("convert_mistral_weights"),
    ),
    "qwen2": Architecture(
        lambda hf: llama_like(hf, arch="Qwen2ForCausalLM", always_kv_heads=True), tl_converter("convert_qwen2_weights")
    ),
    "qwen3": Architecture(_qwen3, tl_converter("convert_qwen3_weights")),
    "phi3": Architecture(_phi3, _convert_phi3),
}
