"""Per-head activations: every attention head's output `z` at `blocks.L.attn.hook_z` and the forwards around it.

`hook_z` is [batch, pos, n_heads, d_head]: each head's attention-weighted values before W_O (with grouped-query
attention the key/value heads are already expanded, so every query head has its own slice). All forwards here
run inside `saelab.hooks.gate` and return only the last position's logits (the unembedding of one position
instead of all: patching runs hundreds of forwards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from saelab.hooks import gate
from saelab.models.handle import ModelHandle

HookFn = Callable[..., torch.Tensor | None]


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def resid_pre_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """ "L{layer}H{head}" in layer-major order (the order of flattened [n_layers, n_heads] scores)."""
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]


def last_logits(model, x: torch.Tensor, *, start_at_layer: int | None = None) -> torch.Tensor:
    """Logits at the last position [batch, d_vocab] from tokens (or from a residual with `start_at_layer`)."""
    resid = model(x, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers)
    return model.unembed(model.ln_final(resid[:, -1:, :]))[:, 0, :]


def run_capture(
    handle: ModelHandle, tokens: torch.Tensor, names: Sequence[str], extra_hooks: Sequence[tuple[str, HookFn]] = ()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One no-grad forward of `tokens` [B, P]: (last-position logits [B, V], {name: activation})."""
    store: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook) -> None:
        store[hook.name] = act.detach().clone()

    hooks = list(extra_hooks) + [(n, save) for n in names]
    with gate(handle, hooks) as model, torch.inference_mode():
        logits = last_logits(model, tokens)
    return logits.float(), store


def head_outputs(handle: ModelHandle, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(last-position logits [B, V], z of every head [B, n_layers, P, n_heads, d_head])."""
    names = [z_hook(layer) for layer in range(handle.n_layers)]
    logits, store = run_capture(handle, tokens, names)
    return logits, torch.stack([store[n] for n in names], dim=1)
