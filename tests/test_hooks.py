"""The hooks gate: scoped hooks, one lock, no leaks, thread isolation."""

from __future__ import annotations

import threading

import pytest
import torch

from saelab.errors import BadInputError
from saelab.hooks import active_hook_count, cache_activations, gate, run_with_hooks


def _tokens(seed: int, batch: int = 4, pos: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 20000, (batch, pos), generator=g)


def test_cache__matches_run_with_cache_and_leaves_no_hook(tiny_handle):
    tokens = _tokens(0)
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    got = cache_activations(tiny_handle, tokens, names, stop_early=False)
    _, ref = tiny_handle.model.run_with_cache(tokens, names_filter=names)
    for n in names:
        torch.testing.assert_close(got[n], ref[n])
    assert active_hook_count(tiny_handle) == 0


def test_cache__stop_early_gives_same_activations(tiny_handle):
    tokens = _tokens(1)
    name = "blocks.0.hook_resid_post"
    early = cache_activations(tiny_handle, tokens, [name], stop_early=True)[name]
    full = cache_activations(tiny_handle, tokens, [name], stop_early=False)[name]
    torch.testing.assert_close(early, full)


def test_gate__unknown_hook_lists_valid_names(tiny_handle):
    with pytest.raises(BadInputError, match="blocks.0.hook_resid_post"):
        cache_activations(tiny_handle, _tokens(0), ["blocks.0.hook_nonsense"])


def test_gate__error_inside_hook_leaves_no_hook(tiny_handle):
    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_with_hooks(tiny_handle, _tokens(2), [("blocks.0.hook_resid_post", boom)])
    assert active_hook_count(tiny_handle) == 0


def test_gate__clears_stray_hooks_before_running(tiny_handle):
    # A hook left behind by a crashed caller (added outside the gate on purpose) must not leak in.
    hp = tiny_handle.model.hook_dict["blocks.0.hook_resid_post"]
    hp.add_hook(lambda act, hook: act * 0)
    try:
        tokens = _tokens(3)
        with gate(tiny_handle) as model, torch.inference_mode():
            out = model(tokens)
        assert active_hook_count(tiny_handle) == 0
        assert out.abs().sum() > 0
    finally:
        tiny_handle.model.reset_hooks()


def test_gate__two_threads_with_different_hooks_match_single_thread(tiny_handle):
    """Two threads: one caches, one steers (adds a vector); each must see only its own hooks."""
    tokens = _tokens(4)
    name_a, name_b = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
    steer = torch.randn(tiny_handle.d_model) * 50

    def add_vec(act, hook):
        return act + steer

    ref_a = cache_activations(tiny_handle, tokens, [name_a], stop_early=False)[name_a]
    ref_b = run_with_hooks(tiny_handle, tokens, [(name_b, add_vec)])
    results: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker_a():
        try:
            barrier.wait()
            for _ in range(8):
                results["a"].append(cache_activations(tiny_handle, tokens, [name_a], stop_early=False)[name_a])
        except BaseException as err:  # surfaced below
            errors.append(err)

    def worker_b():
        try:
            barrier.wait()
            for _ in range(8):
                results["b"].append(run_with_hooks(tiny_handle, tokens, [(name_b, add_vec)]))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(torch.equal(r, ref_a) for r in results["a"])
    assert all(torch.equal(r, ref_b) for r in results["b"])
    assert active_hook_count(tiny_handle) == 0
