"""What every family's config builder shares: the `Architecture` record, RoPE and sliding-window reading.

A config builder reads a `transformers` config (any 4.x/5.x spelling) and returns HookedTransformerConfig
keyword arguments; it raises BadInputError for a setting it cannot reproduce (an unknown RoPE scaling, a
bias the weight converter would drop), so a model either loads with the logits of `transformers` or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saelab.errors import BadInputError

N_CTX_CAP = 8192  # TransformerLens builds rotary tables and masks for n_ctx; longer prompts are refused upstream


@dataclass(frozen=True)
class Architecture:
    """How to bring one HF architecture into TransformerLens: config kwargs from the HF config, weights from the model."""

    build_config: Callable[[Any], dict[str, Any]]
    convert_weights: Callable[[Any, Any], dict]


def tl_converter(name: str) -> Callable[[Any, Any], dict]:
    """TransformerLens's own weight converter `transformer_lens.pretrained.weight_conversions.<name>`, imported on use."""

    def convert(hf_model: Any, cfg: Any) -> dict:
        from transformer_lens.pretrained import weight_conversions

        return getattr(weight_conversions, name)(hf_model, cfg)

    convert.__name__ = name
    return convert


def refuse(hf: Any, why: str) -> None:
    raise BadInputError(
        f"This {getattr(hf, 'model_type', '?')} model cannot be loaded faithfully: {why}. "
        "TransformerLens would compute different logits than the original, so it is refused."
    )


def head_dim(hf: Any) -> int:
    return int(getattr(hf, "head_dim", None) or int(hf.hidden_size) // int(hf.num_attention_heads))


def n_ctx(hf: Any, key: str = "max_position_embeddings") -> int:
    return int(min(int(getattr(hf, key, None) or 2048), N_CTX_CAP))


def rms_decoder_shape(hf: Any, d_head: int, n_heads: int, ctx: int, act_fn: str) -> dict[str, Any]:
    """The sizes every RMSNorm decoder family (Llama, Gemma) reads the same way from its HF config."""
    return {
        "d_model": int(hf.hidden_size),
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf.intermediate_size),
        "n_layers": int(hf.num_hidden_layers),
        "n_ctx": ctx,
        "eps": float(getattr(hf, "rms_norm_eps", 1e-6)),
        "d_vocab": int(hf.vocab_size),
        "act_fn": str(act_fn),
    }


def _rope_sets(hf: Any) -> dict[str, dict]:
    """RoPE parameters per attention type ("default" when one set serves every layer).

    transformers 5 keeps them in `rope_parameters` (flat, or keyed by layer type as Gemma 3 does);
    4.x in `rope_theta` + `rope_scaling` (+ `rope_local_base_freq`, `partial_rotary_factor`/`rotary_pct`).
    """
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        return {k: dict(v) for k, v in params.items()}
    flat = dict(params) if isinstance(params, dict) else {}
    for key in ("rope_theta", "rotary_emb_base"):  # the second is GPT-NeoX's 4.x name
        if "rope_theta" not in flat and getattr(hf, key, None) is not None:
            flat["rope_theta"] = getattr(hf, key)
    scaling = getattr(hf, "rope_scaling", None)
    if isinstance(scaling, dict) and "rope_type" not in flat:
        flat.update({k: v for k, v in scaling.items() if k != "type"})
        flat["rope_type"] = scaling.get("rope_type") or scaling.get("type")
    for old in ("partial_rotary_factor", "rotary_pct"):
        if "partial_rotary_factor" not in flat and getattr(hf, old, None) is not None:
            flat["partial_rotary_factor"] = getattr(hf, old)
    sets = {"default": flat}
    if getattr(hf, "rope_local_base_freq", None) is not None:
        sets["sliding_attention"] = {"rope_theta": hf.rope_local_base_freq, "rope_type": "default"}
    return sets


def rope(hf: Any, d_head: int) -> dict[str, Any]:
    """TransformerLens rotary kwargs: base (global and local), rotary_dim, and the scalings TL can reproduce."""
    sets = _rope_sets(hf)
    main = sets.get("full_attention") or sets.get("default") or {}
    local = sets.get("sliding_attention")
    out: dict[str, Any] = {
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,  # rotate-half (HF layout), not GPT-J's interleaved pairs
        "rotary_base": float(main.get("rope_theta", 10000.0)),
        "rotary_dim": int(d_head * float(main.get("partial_rotary_factor", 1.0))),
    }
    if local is not None:
        out["rotary_base_local"] = float(local.get("rope_theta", out["rotary_base"]))
        if (local.get("rope_type") or "default") != "default":
            refuse(hf, f"RoPE scaling {local.get('rope_type')!r} on sliding-window layers is not supported")
    kind = main.get("rope_type") or "default"
    if kind == "linear":
        out["rotary_scaling_factor"] = float(main.get("factor", 1.0))  # TL applies it to global layers only
    elif kind == "llama3":
        if local is not None:
            refuse(hf, "llama3 RoPE scaling with a separate RoPE for sliding-window layers is not supported")
        out.update(
            use_NTK_by_parts_rope=True,
            NTK_by_parts_factor=float(main.get("factor", 1.0)),
            NTK_by_parts_low_freq_factor=float(main.get("low_freq_factor", 1.0)),
            NTK_by_parts_high_freq_factor=float(main.get("high_freq_factor", 4.0)),
            NTK_original_ctx_len=int(main.get("original_max_position_embeddings", hf.max_position_embeddings)),
        )
    elif kind != "default":
        refuse(hf, f"RoPE scaling {kind!r} is not supported (supported: default, linear, llama3)")
    return out


def attention_windows(hf: Any, n_layers: int, ctx: int, *, keep_types: bool = False) -> dict[str, Any]:
    """Sliding-window (local) attention per layer, from `layer_types` or a model-wide `sliding_window`.

    Both libraries let a query at position q see keys k with q - window < k <= q. A window as long as the
    context masks nothing, so it is dropped (and the model stays eligible for the fast decode step) unless
    `keep_types`: TransformerLens also picks a layer's RoPE base and scaling by its type (Gemma 3).
    """
    window = getattr(hf, "sliding_window", None)
    if getattr(hf, "use_sliding_window", True) is False:
        window = None
    layer_types = getattr(hf, "layer_types", None)
    if layer_types:
        local = [t == "sliding_attention" for t in layer_types]
        unknown = set(layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            refuse(hf, f"attention layer types {sorted(unknown)} are not supported")
    else:
        local = [True] * n_layers
    if not window or not any(local) or (int(window) >= ctx and not keep_types):
        return {}
    return {
        "use_local_attn": True,
        "window_size": int(window),
        "attn_types": ["local" if is_local else "global" for is_local in local],
    }


def positions(hf: Any, d_head: int, n_layers: int, ctx: int) -> dict[str, Any]:
    """`rope` and `attention_windows` together, refusing the one mix TransformerLens computes differently:
    one linear RoPE scaling for all layers (HF) while some layers are local (TL scales global layers only)."""
    rotary = rope(hf, d_head)
    per_type = "rotary_base_local" in rotary
    windows = attention_windows(hf, n_layers, ctx, keep_types=per_type)
    if rotary.get("rotary_scaling_factor", 1.0) != 1.0 and "local" in windows.get("attn_types", []) and not per_type:
        refuse(hf, "one linear RoPE scaling for every layer, some of them sliding-window, is not supported")
    return {**rotary, **windows}
