"""The fast forward (no per-forward weight copies) and the batched decode engine, on the tiny model."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from saelab.decode import DecodeRequest, RowHook, engine_for, run, sample_rows, submit
from saelab.errors import BadInputError
from saelab.hooks import active_hook_count
from saelab.models import fastpath
from saelab.steering import GenerationConfig, Intervention, generate, text_direction
from tests.fixtures_ui import HOOK

POS = ["I love football, the match was great.", "Soccer fans cheered the team."]
NEG = ["The recipe needs flour and sugar.", "Bake the cake for forty minutes."]
PROMPTS = [
    "Tell me about your day.",
    "Write a short poem about the sea and the sky, with waves and gulls.",
    "Hi",
    "Explain how a bicycle works in three sentences.",
]


@pytest.fixture(scope="module")
def direction(tiny_handle):
    return text_direction(tiny_handle, "diffmean", POS, NEG, hook=HOOK)


def _weight_copies(model, tokens) -> list[list[int]]:
    """Shapes of `aten::copy_` calls whose tensor has the shape of a (transposed) weight matrix."""
    weight_shapes = set()
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ("W_gate", "W_in", "W_out", "W_U", "W_O", "W_Q", "_W_K", "_W_V"):
            weight_shapes.add(tuple(p.shape))
            weight_shapes.add(tuple(reversed(p.shape)))
            weight_shapes.add((int(p.numel() // p.shape[-1]), int(p.shape[-1])))
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(tokens)
    return [
        e.input_shapes[0]
        for e in prof.events()
        if e.name == "aten::copy_" and e.input_shapes and tuple(e.input_shapes[0]) in weight_shapes
    ]


def test_fastpath__forward_makes_no_weight_copies_and_keeps_values(tiny_handle):
    model = tiny_handle.model
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.inference_mode():
        before = model(tokens)
    assert fastpath.relayout(model) == 0  # already done at load time
    assert _weight_copies(model, tokens) == []
    stock = {n: p.detach().contiguous().clone() for n, p in model.named_parameters()}
    try:  # the stock layout copies weights on every forward: the check above can fail
        for n, p in model.named_parameters():
            p.data = stock[n]
        assert _weight_copies(model, tokens)
        with torch.inference_mode():
            assert torch.allclose(model(tokens), before, atol=1e-5)
    finally:
        assert fastpath.relayout(model) > 0
    with torch.inference_mode():
        assert torch.equal(model(tokens), before)


@pytest.mark.parametrize("rows", [1, 2, 7, 600])
def test_fast_linear__equals_torch_linear(rows):
    g = torch.Generator().manual_seed(rows)
    x, w, b = torch.randn(rows, 1, 48, generator=g), torch.randn(80, 48, generator=g), torch.randn(80, generator=g)
    assert torch.allclose(fastpath.fast_linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5)
    assert torch.allclose(fastpath.fast_linear(x, w), torch.nn.functional.linear(x, w), atol=1e-5)


def test_fastpath__installed_and_idempotent(tiny_handle):
    assert fastpath.is_installed()
    assert fastpath.install() == fastpath.install()


@pytest.mark.parametrize("top_p", [1.0, 0.5])
def test_sample_rows__equal_uniforms_and_logits_give_equal_tokens(top_p):
    logits = torch.randn(1, 50).repeat(3, 1)
    u = torch.tensor([0.3, 0.3, 0.9], dtype=torch.float64)
    tok = sample_rows(logits, 1.0, top_p, u)
    assert tok[0] == tok[1]
    assert sample_rows(logits, 0.0, top_p, u).tolist() == [int(logits[0].argmax())] * 3


def test_request__bad_rows_and_hooks_are_refused():
    with pytest.raises(BadInputError):
        DecodeRequest(rows=[], max_new_tokens=4)
    with pytest.raises(BadInputError):
        DecodeRequest(rows=[[1]], max_new_tokens=4, hooks=[RowHook(HOOK, lambda a, hook=None: a, rows=[3])])


def _steer_jobs(direction):
    # Greedy: a batch of another size may change logits in the last bit, which can move an inverse-CDF draw
    # on the tiny model's near-uniform distribution; an argmax it does not move. Cross-talk (hooks on the
    # wrong rows: ±20 × max_act) changes the argmax at once.
    greedy = {"temperature": 0.0}
    return [
        (PROMPTS[:2], [Intervention("add", direction, 20.0)], GenerationConfig(max_new_tokens=12, seed=1, **greedy)),
        (PROMPTS[2:3], [Intervention("add", direction, -20.0)], GenerationConfig(max_new_tokens=16, **greedy)),
        (PROMPTS[1:4], [Intervention("ablate", direction)], GenerationConfig(max_new_tokens=9, **greedy)),
        (PROMPTS[3:4], [], GenerationConfig(max_new_tokens=14, seed=4, temperature=0.0)),
    ]


def test_engine__four_concurrent_sessions_join_one_batch_and_get_their_solo_outputs(
    tiny_handle, direction, monkeypatch
):
    jobs = _steer_jobs(direction)
    solo = [generate(tiny_handle, p, ivs, cfg) for p, ivs, cfg in jobs]
    engine = engine_for(tiny_handle)
    engine.max_batch_rows = 0
    submitted = []
    real_submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda req, *a: submitted.append(req) or real_submit(req, *a))
    together: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            p, ivs, cfg = jobs[i]
            together[i] = generate(tiny_handle, p, ivs, cfg)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    with tiny_handle.lock:  # the engine waits at its first forward until every session has submitted
        for t in threads:
            t.start()
        for _ in range(3000):
            if len(submitted) == len(jobs):
                break
            threading.Event().wait(0.01)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for got, want in zip(together, solo):
        assert got.steered_token_ids == want.steered_token_ids
        assert got.unsteered_token_ids == want.unsteered_token_ids
    solo_rows = max(len(p) * (2 if ivs else 1) for p, ivs, _ in jobs)
    assert engine.max_batch_rows > solo_rows  # they really shared a batch
    assert active_hook_count(tiny_handle) == 0


def test_engine__a_failing_hook_fails_only_its_own_request(tiny_handle, direction):
    def broken(act, hook=None):
        raise RuntimeError("boom")

    good = DecodeRequest(rows=[[1, 2, 3]], max_new_tokens=6, temperature=0.0)
    want = run(tiny_handle, good)
    with tiny_handle.lock:
        bad_gen = submit(tiny_handle, DecodeRequest(rows=[[4, 5]], max_new_tokens=6, hooks=[RowHook(HOOK, broken)]))
        good_gen = submit(tiny_handle, DecodeRequest(rows=[[1, 2, 3]], max_new_tokens=6, temperature=0.0))
    with pytest.raises(RuntimeError, match="boom"):
        bad_gen.result(timeout=60)
    assert good_gen.result(timeout=60) == want


def test_engine__cancel_drops_the_request_and_the_engine_goes_on(tiny_handle):
    seen = threading.Event()

    def slow(act, hook=None):
        seen.set()
        threading.Event().wait(0.02)

    gen = submit(tiny_handle, DecodeRequest(rows=[[1, 2]], max_new_tokens=200, hooks=[RowHook(HOOK, slow)]))
    assert seen.wait(30)
    gen.cancel()
    partial = gen.result(timeout=60)
    assert len(partial[0]) < 200
    assert run(tiny_handle, DecodeRequest(rows=[[7, 8]], max_new_tokens=3, temperature=0.0))[0]
    assert active_hook_count(tiny_handle) == 0


def test_engine__a_stopping_caller_cancels_its_request(tiny_handle):
    class Gone(Exception):
        pass

    def on_step(grown):
        raise Gone

    engine = engine_for(tiny_handle)
    with pytest.raises(Gone):
        run(tiny_handle, DecodeRequest(rows=[[1, 2]], max_new_tokens=200), on_step)
    for _ in range(500):  # the engine drops the cancelled rows at its next step
        if engine._thread is None or not engine._pending:
            break
        threading.Event().wait(0.01)
    assert run(tiny_handle, DecodeRequest(rows=[[3]], max_new_tokens=2, temperature=0.0))


def _record_step(handle, fn):
    """Run fn(model) with a recording hook on every hook point; returns (output, {name: [values]})."""
    from saelab.hooks import gate

    seen: dict[str, list[torch.Tensor]] = {}

    def rec(act, hook=None):
        seen.setdefault(hook.name, []).append(act.detach().clone())

    with gate(handle, [(n, rec) for n in handle.model.hook_dict]) as model, torch.inference_mode():
        out = fn(model)
    return out, seen


def test_decode_step__same_logits_and_hook_values_as_transformer_lens(tiny_handle):
    import copy

    from saelab.decode import kv_cache, left_pad
    from saelab.models import decode_step

    model = tiny_handle.model
    assert decode_step.eligible(model)
    tokens, mask = left_pad([[5, 6, 7, 8, 9], [11, 12]], 0)  # left padding in the cache
    cache = kv_cache(model, 2)
    with torch.inference_mode():
        model(tokens, attention_mask=mask, past_kv_cache=cache)
    new = torch.tensor([[21], [22]])
    c_tl, c_fast = copy.deepcopy(cache), copy.deepcopy(cache)
    want, want_hooks = _record_step(
        tiny_handle, lambda m: m(new, attention_mask=torch.ones_like(new), past_kv_cache=c_tl)
    )
    got, got_hooks = _record_step(tiny_handle, lambda m: decode_step.step(m, new, c_fast))
    assert torch.allclose(got, want, atol=1e-5)
    assert set(got_hooks) == set(want_hooks)
    for name, values in want_hooks.items():
        fired = got_hooks[name]
        assert len(fired) == (1 if ".ln1." in name else len(values)), name
        for a, b in zip(fired, values):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), name
    for layer in range(len(cache.entries)):
        assert torch.equal(c_tl.entries[layer].past_keys, c_fast.entries[layer].past_keys)
    assert torch.equal(c_tl.previous_attention_mask, c_fast.previous_attention_mask)
    assert decode_step.supports(model, ["blocks.0.hook_resid_post"])
    assert not decode_step.supports(model, ["blocks.0.ln1.hook_normalized"])


def test_effective_dtype__bf16_only_where_the_cpu_multiplies_it_natively(tiny_handle, monkeypatch):
    from saelab.activations import compute_handle

    monkeypatch.setattr(fastpath, "_FAST_BF16", False)
    assert fastpath.effective_dtype(torch.bfloat16) == torch.float32
    assert compute_handle(tiny_handle, torch.bfloat16) is tiny_handle  # no private bf16 copy on such a CPU
    monkeypatch.setattr(fastpath, "_FAST_BF16", True)
    assert fastpath.effective_dtype(torch.bfloat16) == torch.bfloat16
    assert compute_handle(tiny_handle, torch.bfloat16).model.cfg.dtype == torch.bfloat16
    assert fastpath.effective_dtype(torch.float32) == torch.float32


def test_engine__a_failed_step_fails_its_requests_and_the_engine_survives(tiny_handle, monkeypatch):
    from saelab.models import decode_step

    def broken_step(*args, **kwargs):
        raise RuntimeError("kernel failure")

    monkeypatch.setattr(decode_step, "step", broken_step)
    with pytest.raises(RuntimeError, match="kernel failure"):
        run(tiny_handle, DecodeRequest(rows=[[1, 2]], max_new_tokens=5, temperature=0.0))
    monkeypatch.undo()
    assert len(run(tiny_handle, DecodeRequest(rows=[[1, 2]], max_new_tokens=5, temperature=0.0))[0]) == 5
