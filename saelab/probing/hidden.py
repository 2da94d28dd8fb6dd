"""Hidden-state sources: the residual stream at one layer ("hidden") or at every layer from one pass ("layer_sweep").

"hidden": x = pool(h^L_t) over the text's tokens, h^L = `blocks.L.hook_resid_post` (or any `hook` given).
"layer_sweep": the same for every L in 0..n_layers-1, all cached in ONE forward per batch (the model runs to its
last block once instead of once per layer); `extra["layers"]` = {L: X_L}, and X is the chosen `layer`'s matrix.
Memory: n_texts × n_layers × d_model × 4 bytes for the sweep (2,000 texts × 30 × 576 → 138 MB); nothing is kept
per token.
"""

from __future__ import annotations

import numpy as np

from saelab.activations.text_batches import PAD_SIDE, SKIP_POSITIONS, encode_texts, run_batches
from saelab.errors import BadInputError
from saelab.probing.feature_set import FeatureSet, SourceParams
from saelab.probing.pooling import DENSE_POOLINGS, POOLING_FORMULAS, pool, truncation_note


def dense_pooling(params: SourceParams) -> tuple[str, list[str]]:
    """The pooling a dense source uses: topn-sum (a count of sparse latents) falls back to last-token, said."""
    if params.pooling in DENSE_POOLINGS:
        return params.pooling, []
    if params.pooling == "topn-sum":
        return "last", [f"Pooling 'topn-sum' applies to SAE latents only; {params.source} used last-token pooling."]
    raise BadInputError(
        f"Unknown pooling {params.pooling!r} for {params.source}; choose one of {list(DENSE_POOLINGS)}."
    )


def resid_hook(handle, layer: int) -> str:
    if not 0 <= layer < handle.n_layers:
        raise BadInputError(f"Layer {layer} does not exist; the model has layers 0…{handle.n_layers - 1}.")
    return f"blocks.{layer}.hook_resid_post"


def base_params(params: SourceParams, **resolved) -> dict:
    return {**params.to_dict(), "pad_side": PAD_SIDE, "skipped_positions": SKIP_POSITIONS, **resolved}


def pooled_hooks(handle, texts, hooks: list[str], params: SourceParams, pooling: str, progress=None):
    """{hook: [n_texts, width] float32 pooled activations} for all `hooks` from one forward per batch."""
    enc = encode_texts(handle.tokenizer, texts, params.max_tokens)
    out: dict[str, np.ndarray] = {}
    for batch, acts in run_batches(handle, enc, hooks, params.batch_size, progress):
        for h in hooks:
            x = pool(acts[h], batch, pooling, params.topn).cpu().numpy()
            if h not in out:
                out[h] = np.zeros((len(texts), x.shape[1]), np.float32)
            out[h][batch.index] = x
        del acts
    return out, enc


def hidden_source(params: SourceParams, texts: list[str], *, handle=None, progress=None, **_) -> FeatureSet:
    if handle is None:
        raise BadInputError("The hidden-state source needs a model.")
    pooling, notes = dense_pooling(params)
    hook = handle.check_hook(params.hook) if params.hook else resid_hook(handle, params.layer)
    out, enc = pooled_hooks(handle, texts, [hook], params, pooling, progress)
    layer = handle.hook_layer(hook)
    tag = f"L{layer}" if layer is not None else hook
    X = out[hook]
    return FeatureSet(
        X=X,
        names=[f"{tag} dim {j}" for j in range(X.shape[1])],
        source=params.source,
        params=base_params(params, hook=hook, pooling=pooling),
        extra={
            "formula": f"hidden state at {hook}, {POOLING_FORMULAS[pooling]}, a_t = h_t",
            "notes": notes + truncation_note(enc, len(texts)),
            "n_truncated": enc.n_truncated,
        },
    )


def layer_sweep_source(params: SourceParams, texts: list[str], *, handle=None, progress=None, **_) -> FeatureSet:
    if handle is None:
        raise BadInputError("The layer sweep needs a model.")
    pooling, notes = dense_pooling(params)
    chosen = resid_hook(handle, params.layer)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(handle.n_layers)]
    out, enc = pooled_hooks(handle, texts, hooks, params, pooling, progress)
    layers = {layer: out[h] for layer, h in enumerate(hooks)}
    X = layers[params.layer]
    return FeatureSet(
        X=X,
        names=[f"L{params.layer} dim {j}" for j in range(X.shape[1])],
        source=params.source,
        params=base_params(params, hook=chosen, pooling=pooling, sweep_hooks="blocks.*.hook_resid_post"),
        extra={
            "layers": layers,
            "formula": f"for every layer L: {POOLING_FORMULAS[pooling]}, a_t = blocks.L.hook_resid_post; "
            "all layers cached in one forward pass per batch",
            "notes": notes + truncation_note(enc, len(texts)),
            "n_truncated": enc.n_truncated,
        },
    )
