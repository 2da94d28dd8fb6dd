"""One batched decoder per model: every generation in the process joins the same running batch.

Steering, strength sweeps, the steering evaluation and detox all generate through `submit(handle, request)`.
A `DecodeRequest` is a set of rows (token ids of each prompt), hooks that act on some of its rows only,
and sampling settings with its own seeded generator. The model's engine thread

  1. prefills each new request alone (its own left-padded batch and KV cache, its own hooks),
  2. merges the KV caches of all live requests into one batch (left-padded: rotary positions come from the
     attention mask, so a row's positions do not depend on who it shares the batch with),
  3. runs one forward per new token for every live row at once, with every request's hooks attached,
     each hook seeing and changing only its own request's rows (`saelab.models.decode_step` when the
     architecture and the attached hooks allow, TransformerLens's forward otherwise),
  4. samples each request's rows with that request's generator, streams the new tokens back to the
     caller's thread, and retires requests that finished or were cancelled (their rows leave the batch).

Concurrency and isolation: each forward runs inside `saelab.hooks.gate` (the model's lock, stray hooks
cleared, only the live requests' hooks attached, all removed afterwards), so other hooked work — a prompt
analysis, a probe — interleaves between decode steps instead of waiting for a whole generation. A hook
that raises fails only its own request. Callbacks run in the caller's thread (`Generation.stream`), never
in the engine's, so a Streamlit session that goes away stops its own script, whose `finally` cancels its
request.

Sampling (`sample_rows`): temperature 0 is greedy; otherwise inverse CDF over the temperature-scaled,
top-p-filtered distribution with one uniform per row. Rows with the same `noise_ids` entry get the same
uniform at each step (common random numbers), so an unsteered and a steered copy of a prompt differ only by
the steering, and identical logits give identical tokens (factor 0 reproduces the unsteered text).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator

import torch

from saelab.batching import (
    DecodeRequest,
    HookFn,
    Phase,
    RowHook,
    kv_cache,
    left_pad,
    merge_caches,
    sample_rows,
    slice_cache,
)
from saelab.hooks import gate
from saelab.models import decode_step
from saelab.models.handle import ModelHandle

log = logging.getLogger(__name__)


class Generation:
    """A submitted request: stream its tokens, wait for its result, or cancel it."""

    def __init__(self, request: DecodeRequest, streaming: bool = False) -> None:
        self.request = request
        self.streaming = streaming  # only then does the engine copy each step's tokens into `stream()`'s queue
        self.out: list[list[int]] = [[] for _ in request.rows]
        self._events: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._cancel = threading.Event()
        self.error: BaseException | None = None

    # ---- caller side
    def cancel(self) -> None:
        """Ask the engine to drop this request at its next step (a no-op once finished)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def stream(self) -> Iterator[dict[int, list[int]]]:
        """Yield {row: tokens so far} for the rows that grew, coalescing steps the caller was too slow for."""
        while True:
            event = self._events.get()
            if event is None:
                break
            grown = dict(event)
            try:  # take whatever else is queued: the newest state per row is enough
                while True:
                    more = self._events.get_nowait()
                    if more is None:
                        self._events.put(None)
                        break
                    grown.update(more)
            except queue.Empty:
                pass
            yield grown
        self.result()

    def result(self, timeout: float | None = None) -> list[list[int]]:
        """The generated ids per row (stop token excluded); raises what the engine raised for this request."""
        if not self._done.wait(timeout):
            raise TimeoutError("generation still running")
        if self.error is not None:
            raise self.error
        return self.out

    # ---- engine side
    def _publish(self, grown: list[int]) -> None:
        if not self.streaming:
            return
        self._events.put({i: list(self.out[i]) for i in grown})

    def _finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self._done.set()
        self._events.put(None)


class _Live:
    """Engine-side state of one request while its rows are in the batch."""

    def __init__(self, gen: Generation, cache, last_logits: torch.Tensor) -> None:
        self.gen = gen
        req = gen.request
        self.cache = cache
        self.last = last_logits  # [rows, vocab] logits for the next token
        self.rng = torch.Generator().manual_seed(req.seed)
        self.noise = torch.tensor(req.noise_ids)
        self.done = [False] * len(req.rows)
        self.steps = 0
        self.error: BaseException | None = None

    @property
    def n_rows(self) -> int:
        return len(self.done)

    def sample(self, stops: frozenset[int]) -> bool:
        """Draw this step's tokens; returns True when the request is complete."""
        req = self.gen.request
        u = torch.rand(req.n_noise, generator=self.rng, dtype=torch.float64)[self.noise]
        nxt = sample_rows(self.last, req.temperature, req.top_p, u).tolist()
        grown = []
        for i, t in enumerate(nxt):
            if self.done[i]:
                continue
            if t in stops:
                self.done[i] = True
            else:
                self.gen.out[i].append(int(t))
                grown.append(i)
        self.steps += 1
        if grown:
            self.gen._publish(grown)
        return all(self.done) or self.steps >= req.max_new_tokens


def _row_hooks(live: _Live, offset: int) -> list[tuple[str, HookFn]]:
    """The request's hooks as TransformerLens hooks on a batch where its rows start at `offset`."""
    out = []
    for rh in live.gen.request.hooks:
        rows = range(live.n_rows) if rh.rows is None else rh.rows
        idx = [offset + r for r in rows]
        consecutive = idx == list(range(idx[0], idx[0] + len(idx))) if idx else True
        sel: slice | torch.Tensor = slice(idx[0], idx[-1] + 1) if consecutive and idx else torch.tensor(idx)

        def hook(act: torch.Tensor, hook=None, _fn=rh.fn, _sel=sel) -> torch.Tensor | None:
            if live.error is not None:
                return None
            try:
                new = _fn(act[_sel], hook=hook)
            except Exception as err:  # fails this request only; the batch goes on
                live.error = err
                return None
            if new is None:
                return None
            act = act.clone()
            act[_sel] = new
            return act

        out.append((rh.name, hook))
    return out


class DecodeEngine:
    """The batched decoder of one model (see the module docstring); `submit` from any thread."""

    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle
        self._pending: list[Generation] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode forwards run so far (for tests and benches)
        self.fast_steps = 0  # of which through `saelab.models.decode_step`
        self.max_batch_rows = 0  # the most rows one decode forward carried

    def submit(self, request: DecodeRequest, streaming: bool = False) -> Generation:
        gen = Generation(request, streaming)
        with self._cv:
            self._pending.append(gen)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="saelab-decode", daemon=True)
                self._thread.start()
            self._cv.notify()
        return gen

    # ---------------------------------------------------------------- engine thread
    def _loop(self) -> None:
        state: dict = {"live": [], "merged": None}  # merged: the batch's KV cache while membership is unchanged
        while True:
            with self._cv:
                if not state["live"] and not self._pending:
                    self._cv.wait(timeout=30)
                    if not self._pending:
                        self._thread = None
                        return
                new, self._pending = self._pending, []
            try:
                self._iterate(state, new)
            except Exception as err:  # a failure outside any request's hooks ends every live request
                log.exception("decode step failed")
                for lv in state["live"]:
                    lv.gen._finish(err)
                for gen in new:
                    if not gen._done.is_set():
                        gen._finish(err)
                state["live"], state["merged"] = [], None

    def _iterate(self, state: dict, new: list[Generation]) -> None:
        """Admit `new` requests, sample every live request once, retire finished ones, run one decode step."""
        live: list[_Live] = state["live"]
        changed = False
        for gen in new:
            if gen.cancelled:
                gen._finish()
                continue
            try:
                live.append(self._prefill(gen))
                changed = True
            except Exception as err:
                gen._finish(err)
        if changed and state["merged"] is not None:  # split the running batch back into its requests
            self._split(live, state["merged"])
            state["merged"] = None
        finished = []
        for lv in live:
            if lv.error is None and not lv.gen.cancelled:
                try:
                    if not lv.sample(lv.gen.request.stop_ids):
                        continue
                except Exception as err:
                    lv.error = err
            finished.append(lv)
        if finished:
            if state["merged"] is not None:
                self._split(live, state["merged"])
                state["merged"] = None
            for lv in finished:
                live.remove(lv)
                lv.gen._finish(lv.error)
        if not live:
            return
        if state["merged"] is None:
            state["merged"] = merge_caches(self.handle.model, [lv.cache for lv in live])
            for lv in live:
                lv.cache = None
        self._step(live, state["merged"])

    def _prefill(self, gen: Generation) -> _Live:
        req = gen.request
        model = self.handle.model
        pad = int(self.handle.tokenizer.pad_token_id or 0)
        tokens, mask = left_pad(req.rows, pad)
        cache = kv_cache(model, len(req.rows))
        lv = _Live(gen, cache, torch.empty(0))
        with gate(self.handle, _row_hooks(lv, 0)) as m, torch.inference_mode():
            logits = m(tokens, attention_mask=mask, past_kv_cache=cache)
        if lv.error is not None:
            raise lv.error
        lv.last = logits[:, -1, :].float()
        req.phase.generating = True
        return lv

    def _split(self, live: list[_Live], merged) -> None:
        start = 0
        for lv in live:
            if lv.cache is None:  # rows that were in the merged batch
                lv.cache = slice_cache(self.handle.model, merged, start, start + lv.n_rows)
                start += lv.n_rows

    def _step(self, live: list[_Live], merged) -> None:
        pad = int(self.handle.tokenizer.pad_token_id or 0)
        feed, hooks, offset = [], [], 0
        for lv in live:
            feed += [pad if lv.done[i] else lv.gen.out[i][-1] for i in range(lv.n_rows)]
            hooks += _row_hooks(lv, offset)
            offset += lv.n_rows
        tokens = torch.tensor(feed)[:, None]
        with gate(self.handle, hooks) as m, torch.inference_mode():
            if decode_step.supports(m, (name for name, _ in hooks)):
                logits = decode_step.step(m, tokens, merged)
                self.fast_steps += 1
            else:  # TransformerLens's own forward (another architecture, or a hook the fast step cannot honour)
                logits = m(tokens, attention_mask=torch.ones_like(tokens), past_kv_cache=merged)
        self.steps += 1
        self.max_batch_rows = max(self.max_batch_rows, offset)
        last = logits[:, -1, :].float()
        offset = 0
        for lv in live:
            lv.last = last[offset : offset + lv.n_rows]
            offset += lv.n_rows


_ENGINES_LOCK = threading.Lock()


def engine_for(handle: ModelHandle) -> DecodeEngine:
    """The model's one decode engine (created on first use)."""
    with _ENGINES_LOCK:
        if handle.engine is None:
            handle.engine = DecodeEngine(handle)
        return handle.engine


def submit(handle: ModelHandle, request: DecodeRequest, streaming: bool = False) -> Generation:
    """Join the model's running batch with `request`; `streaming` makes `Generation.stream()` yield its tokens."""
    return engine_for(handle).submit(request, streaming)


def run(
    handle: ModelHandle,
    request: DecodeRequest,
    on_step: Callable[[dict[int, list[int]]], None] | None = None,
) -> list[list[int]]:
    """Submit `request`, call `on_step({row: ids so far})` in this thread as tokens arrive, return the ids.

    If this thread stops (an exception from `on_step`, e.g. a Streamlit session that went away), the
    request is cancelled so its rows leave the batch.
    """
    gen = submit(handle, request, streaming=on_step is not None)
    try:
        if on_step is None:
            return gen.result()
        for grown in gen.stream():
            on_step(grown)
        return gen.result()
    finally:
        gen.cancel()


__all__ = [
    "DecodeEngine",
    "DecodeRequest",
    "Generation",
    "Phase",
    "RowHook",
    "engine_for",
    "kv_cache",
    "left_pad",
    "run",
    "sample_rows",
    "submit",
]
