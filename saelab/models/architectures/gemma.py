"""Gemma 1, 2 and 3 (text): Llama-like blocks with Gemma's own twists, every one read from the HF config.

TransformerLens knows Gemma configs only by official model name, so these builders map the HF config
fields to the same HookedTransformerConfig fields its named Gemma configs use:
    embeddings × sqrt(d_model), RMSNorm × (1 + w)   folded into W_E and the norm weights by TL's converter
    GELU-tanh gated MLP                             act_fn = hidden_activation ("gelu_pytorch_tanh")
    scores × query_pre_attn_scalar^-1/2             attn_scale = sqrt(query_pre_attn_scalar)      (2, 3)
    norms before and after attention and MLP        use_normalization_before_and_after           (2, 3)
    tanh soft caps on scores and final logits       attn_scores_soft_cap, output_logits_soft_cap (2)
    local (sliding) / global layers                 attn_types from layer_types, window_size     (2, 3)
    per-head RMSNorm on q and k                     use_qk_norm                                  (3)
    RoPE base 10k on local layers, 1M on global     rotary_base_local, rotary_base               (3)
    linear RoPE scaling on global layers            rotary_scaling_factor                        (3, 4B+)
Gemma 1 has the embedding scale, the (1 + w) norms and the GELU-tanh MLP only.
"""

from __future__ import annotations

import math
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

_SOFTCAP_OFF = -1.0  # TransformerLens's "no soft cap"


def _softcap(value: Any) -> float:
    return float(value) if value else _SOFTCAP_OFF


def _gemma(hf: Any, *, arch: str, version: int) -> dict[str, Any]:
    if getattr(hf, "attention_bias", False):
        refuse(hf, "attention biases (attention_bias=True) are dropped by TransformerLens's Gemma converter")
    if getattr(hf, "use_bidirectional_attention", None):
        refuse(hf, "bidirectional attention (an encoder variant) is not a causal language model")
    n_heads = int(hf.num_attention_heads)
    d_head = head_dim(hf)
    n_layers = int(hf.num_hidden_layers)
    ctx = n_ctx(hf)
    act = getattr(hf, "hidden_activation", None) or getattr(hf, "hidden_act", None) or "gelu_pytorch_tanh"
    cfg: dict[str, Any] = {
        **rms_decoder_shape(hf, d_head, n_heads, ctx, act),
        # TL's Gemma converter always writes the grouped (`_W_K`) layout
        "n_key_value_heads": int(getattr(hf, "num_key_value_heads", None) or n_heads),
        "normalization_type": "RMS",
        **positions(hf, d_head, n_layers, ctx),
        "final_rms": True,
        "gated_mlp": True,
        "use_attn_scale": True,
        "original_architecture": arch,
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": False,
    }
    if version >= 2:
        scalar = getattr(hf, "query_pre_attn_scalar", None)
        cfg["attn_scale"] = math.sqrt(float(scalar)) if scalar else math.sqrt(d_head)
        cfg["use_normalization_before_and_after"] = True
        cfg["attn_scores_soft_cap"] = _softcap(getattr(hf, "attn_logit_softcapping", None))
        cfg["output_logits_soft_cap"] = _softcap(getattr(hf, "final_logit_softcapping", None))
    else:
        cfg["output_logits_soft_cap"] = _softcap(getattr(hf, "final_logit_softcapping", None))
    if version >= 3:
        cfg["use_qk_norm"] = True
    return cfg


ARCHITECTURES: dict[str, Architecture] = {
    "gemma": Architecture(
        lambda hf: _gemma(hf, arch="GemmaForCausalLM", version=1), tl_converter("convert_gemma_weights")
    ),
    "gemma2": Architecture(
        lambda hf: _gemma(hf, arch="Gemma2ForCausalLM", version=2), tl_converter("convert_gemma_weights")
    ),
    "gemma3_text": Architecture(
        lambda hf: _gemma(hf, arch="Gemma3ForCausalLM", version=3), tl_converter("convert_gemma_weights")
    ),
}
