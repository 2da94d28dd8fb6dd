"""The hooks gate: the one place where hooks touch a model.

TransformerLens keeps hooks on the model object (global state), and Streamlit serves every browser
session from its own thread on one shared model. So every hooked forward — caching, steering,
patching, SAE splicing — runs inside `gate(handle, hooks)`, which
  1. takes the handle's lock for the whole call (other sessions wait, never interleave),
  2. clears any stray hooks left by a crashed caller,
  3. adds exactly the caller's hooks, and removes them on exit, even on error.
Hook functions should be closures over per-call data, never module-level state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformer_lens import HookedTransformer

from saelab.models.handle import ModelHandle

HookFn = Callable[..., torch.Tensor | None]


def _stray(model: HookedTransformer) -> bool:
    """Any non-permanent hook attached anywhere (a crashed caller's leftovers)? A scan of lists, ~0.1 ms."""
    return any(not h.is_permanent for hp in model.hook_dict.values() for h in (*hp.fwd_hooks, *hp.bwd_hooks))


@contextmanager
def gate(handle: ModelHandle, fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> Iterator[HookedTransformer]:
    """Hold the model's lock with `fwd_hooks` attached; yields the model for any number of forwards.

    Cheap enough to take per decode step: TransformerLens's `reset_hooks` walks all ~800 hook points
    (11 ms on the default model, twice per call), so the gate only resets when a scan finds a stray hook
    and otherwise attaches to, and afterwards clears, just the hook points it was given.
    """
    for name, _ in fwd_hooks:
        handle.check_hook(name)
    with handle.lock:
        model = handle.model
        if _stray(model):
            model.reset_hooks(including_permanent=False)
        points = [model.hook_dict[name] for name in dict.fromkeys(n for n, _ in fwd_hooks)]
        try:
            for name, fn in fwd_hooks:
                model.hook_dict[name].add_hook(fn, dir="fwd")
            yield model
        finally:
            for hp in points:
                hp.remove_hooks("fwd", including_permanent=False)


def run_with_hooks(handle: ModelHandle, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, HookFn]], **kwargs):
    """One forward pass with `fwd_hooks`; keyword arguments go to `HookedTransformer.forward`."""
    with gate(handle, fwd_hooks) as model, torch.inference_mode():
        return model(tokens, **kwargs)


def cache_activations(
    handle: ModelHandle,
    tokens: torch.Tensor,
    names: Sequence[str],
    *,
    stop_early: bool = True,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Activations at `names` for `tokens` [batch, pos] → {name: [batch, pos, ...]}.

    With `stop_early` the forward stops after the deepest requested layer (no logits computed).
    """
    names = list(dict.fromkeys(names))
    for name in names:
        handle.check_hook(name)
    store: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook) -> None:
        store[hook.name] = act.detach().clone()

    stop = handle.stop_layer_for(names) if stop_early else None
    kwargs = {"return_type": None}
    if stop is not None:
        kwargs["stop_at_layer"] = stop
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    run_with_hooks(handle, tokens, [(n, save) for n in names], **kwargs)
    return {n: store[n] for n in names}


def active_hook_count(handle: ModelHandle) -> int:
    """How many forward/backward hooks are attached right now (0 outside a gate)."""
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) for hp in handle.model.hook_dict.values())


def hook_slug(hook: str) -> str:
    """A hook name as a folder-name part: blocks.6.hook_resid_post -> l6-resid_post."""
    return hook.replace("blocks.", "l").replace(".hook_", "-").replace(".", "-")
