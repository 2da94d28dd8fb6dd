"""The local replacement model of an attribution graph: the real forward with every MLP replaced by its
transcoder plus an error node, attention patterns and normalisation scales frozen (issue 19).

Given a prompt, `clean_state` runs the real model once and records, per layer L, the transcoder input n_L
(`ln2.hook_normalized`), the MLP output, the feature activations a_L = encode(n_L), the error
e_L = mlp_out_L − decode(a_L, n_L), every attention pattern and norm scale, and the logits.

`replacement_hooks` turns that into hooks for a forward pass in which
  * each `attn.hook_pattern` and `*.hook_scale` is replaced by its clean value (frozen: the map from the
    residual stream to everything downstream is then linear, except through the feature activations);
  * each MLP is skipped and `hook_mlp_out` returns a_L·W_dec + b_dec + n_L·W_skipᵀ + e_L, with a_L given
    (the clean activations, or an override for a patching check) — so with the clean a_L the replacement
    forward reproduces the real logits (up to float rounding);
  * optional zero "probe" tensors are added at `hook_embed` and each `hook_mlp_out`; the gradient of a target
    with respect to them is what the attribution engine turns into edge weights.
Every forward goes through `saelab.hooks.gate` (the model's lock); the MLPs are skipped by an instance-level
`forward` set and removed inside that lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from saelab.graphs.transcoders import TranscoderSet, hook_in, hook_out
from saelab.hooks import gate
from saelab.models.handle import ModelHandle


@dataclass
class CleanState:
    """What the real forward of one prompt computed (all [P, …], batch dimension dropped)."""

    tokens: torch.Tensor  # [P] int64
    n_in: dict[int, torch.Tensor]  # layer -> [P, d] transcoder input
    mlp_out: dict[int, torch.Tensor]  # layer -> [P, d]
    acts: dict[int, torch.Tensor]  # layer -> [P, F] feature activations
    errors: dict[int, torch.Tensor]  # layer -> [P, d]
    frozen: dict[str, torch.Tensor]  # hook name -> clean pattern / scale (with batch dim 1)
    embed: torch.Tensor  # [P, d] hook_embed output
    logits: torch.Tensor  # [P, vocab]


def _frozen_names(handle: ModelHandle) -> list[str]:
    names = [n for n in handle.model.hook_dict if n.endswith("attn.hook_pattern") or n.endswith("hook_scale")]
    return names


@contextmanager
def mlps_skipped(model) -> Iterator[None]:
    """Each block's MLP returns zeros (its output is replaced at hook_mlp_out); call inside the gate."""
    blocks = list(model.blocks)
    try:
        for b in blocks:
            b.mlp.forward = lambda x: torch.zeros_like(x)  # noqa: B023 - no loop state is used
        yield
    finally:
        for b in blocks:
            b.mlp.__dict__.pop("forward", None)


def clean_state(handle: ModelHandle, tcs: TranscoderSet, tokens: torch.Tensor) -> CleanState:
    """One real forward of `tokens` [P] (see the module docstring)."""
    store: dict[str, torch.Tensor] = {}
    names = [hook_in(layer) for layer in tcs.layers] + [hook_out(layer) for layer in tcs.layers]
    names += _frozen_names(handle) + ["hook_embed"]

    def keep(x, hook):
        store[hook.name] = x.detach().clone()

    with gate(handle, [(n, keep) for n in names]) as model, torch.inference_mode():
        logits = model(tokens[None], return_type="logits")[0].float()
    n_in, mlp_out, acts, errors = {}, {}, {}, {}
    for layer in tcs.layers:
        tc = tcs[layer]
        n = store[hook_in(layer)][0].float()
        a = tc.encode(n)
        n_in[layer], mlp_out[layer], acts[layer] = n, store[hook_out(layer)][0].float(), a
        errors[layer] = mlp_out[layer] - tc.decode(a, n)
    frozen = {k: v for k, v in store.items() if k.endswith("hook_pattern") or k.endswith("hook_scale")}
    return CleanState(tokens, n_in, mlp_out, acts, errors, frozen, store["hook_embed"][0].float(), logits)


def replacement_hooks(tcs: TranscoderSet, clean: CleanState, *, acts: dict[int, torch.Tensor] | None = None,
                      probes: dict[str, torch.Tensor] | None = None, n_store: dict[int, torch.Tensor] | None = None):  # fmt: skip
    """Hooks for a replacement forward of any number of copies of the prompt (module docstring). `acts` overrides
    the feature activations ([P, F] per layer, or [batch, P, F]); `probes` maps "embed" / layer ints to tensors
    added at those hooks; `n_store` receives each layer's transcoder input (with its autograd graph)."""
    acts = acts or clean.acts
    probes = probes or {}
    hooks = []
    for name, value in clean.frozen.items():
        hooks.append((name, lambda x, hook, v=value: v.to(x.dtype).expand_as(x).clone()))
    if "embed" in probes:
        hooks.append(("hook_embed", lambda x, hook: x + probes["embed"].to(x.dtype)))
    current: dict[int, torch.Tensor] = {}  # layer -> this forward's transcoder input
    for layer in tcs.layers:
        tc = tcs[layer]

        def grab(x, hook, layer=layer):
            current[layer] = x
            if n_store is not None:
                n_store[layer] = x

        def replace(x, hook, layer=layer, tc=tc):
            n = current[layer].float()
            a = acts[layer]
            a = a.expand(n.shape[0], *a.shape[-2:]) if a.ndim == 2 else a
            out = tc.decode(a, n) + clean.errors[layer]
            if layer in probes:
                out = out + probes[layer]
            return out.to(x.dtype)

        hooks += [(hook_in(layer), grab), (hook_out(layer), replace)]
    return hooks


def replacement_logits(handle: ModelHandle, tcs: TranscoderSet, clean: CleanState,
                       acts: dict[int, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Logits [P, vocab] of the replacement forward (clean activations: the real logits)."""
    with gate(handle, replacement_hooks(tcs, clean, acts=acts)) as model, mlps_skipped(model):
        with torch.inference_mode():
            return model(clean.tokens[None], return_type="logits")[0].float()


def replacement_preacts(handle: ModelHandle, tcs: TranscoderSet, clean: CleanState, layer: int,
                        acts: dict[int, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Pre-activations [P, F] of layer `layer`'s transcoder in the replacement forward (for patching checks)."""
    n_store: dict[int, torch.Tensor] = {}
    hooks = replacement_hooks(tcs, clean, acts=acts, n_store=n_store)
    with gate(handle, hooks) as model, mlps_skipped(model), torch.inference_mode():
        model(clean.tokens[None], return_type=None, stop_at_layer=layer + 1)
    return tcs[layer].pre(n_store[layer][0].float())


__all__ = [
    "CleanState",
    "clean_state",
    "mlps_skipped",
    "replacement_hooks",
    "replacement_logits",
    "replacement_preacts",
]
