"""Hugging Face causal-LM configs and weights → TransformerLens, for the architectures we support.

A registry maps the HF `model_type` to (config builder, weight converter). The weight converters are
TransformerLens's own; the config builders are ours because TransformerLens only knows official
model names, and SmolLM2 (or a user's local Llama-family folder) is not one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saelab.errors import BadInputError


def _rope_theta(hf: Any) -> float:
    params = getattr(hf, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(hf, "rope_theta", 10000.0))


def _llama_like(hf: Any, *, arch: str) -> dict[str, Any]:
    """TransformerLens config kwargs for Llama-style decoders (RMSNorm, rotary, gated SiLU MLP)."""
    n_heads = int(hf.num_attention_heads)
    d_model = int(hf.hidden_size)
    d_head = int(getattr(hf, "head_dim", None) or d_model // n_heads)
    n_kv = int(getattr(hf, "num_key_value_heads", None) or n_heads)
    act = str(getattr(hf, "hidden_act", "silu"))
    ctx = int(min(getattr(hf, "max_position_embeddings", 2048), 8192))
    return {
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf.intermediate_size),
        "n_layers": int(hf.num_hidden_layers),
        "n_ctx": ctx,
        "eps": float(getattr(hf, "rms_norm_eps", 1e-6)),
        "d_vocab": int(hf.vocab_size),
        "act_fn": act,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": _rope_theta(hf),
        "rotary_adjacent_pairs": False,
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": arch,
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": False,
    }


def _convert_llama(hf_model: Any, cfg: Any) -> dict:
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    return convert_llama_weights(hf_model, cfg)


def _convert_mistral(hf_model: Any, cfg: Any) -> dict:
    from transformer_lens.pretrained.weight_conversions import convert_mistral_weights

    return convert_mistral_weights(hf_model, cfg)


def _convert_qwen2(hf_model: Any, cfg: Any) -> dict:
    from transformer_lens.pretrained.weight_conversions import convert_qwen2_weights

    return convert_qwen2_weights(hf_model, cfg)


@dataclass(frozen=True)
class Architecture:
    """How to bring one HF architecture into TransformerLens."""

    build_config: Callable[[Any], dict[str, Any]]
    convert_weights: Callable[[Any, Any], dict]


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(lambda hf: _llama_like(hf, arch="LlamaForCausalLM"), _convert_llama),
    "mistral": Architecture(lambda hf: _llama_like(hf, arch="MistralForCausalLM"), _convert_mistral),
    "qwen2": Architecture(lambda hf: {**_llama_like(hf, arch="Qwen2ForCausalLM")}, _convert_qwen2),
}


def architecture_for(hf_config: Any) -> Architecture:
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise BadInputError(
            f"Model type {model_type!r} is not supported for local loading; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. A TransformerLens model name whose weights are "
            "already in the Hugging Face cache also works."
        )
    return ARCHITECTURES[model_type]
