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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from saelab.errors import BadInputError
from saelab.hooks import gate
from saelab.models import decode_step
from saelab.models.handle import ModelHandle

log = logging.getLogger(__name__)

HookFn = Callable[..., torch.Tensor | None]


class Phase:
    """Which forward a request is in: its prefill (`generating` False) or a decode step (True)."""

    def __init__(self) -> None:
        self.generating = False

    def active(self, positions: str) -> bool:
        return positions == "all" or (positions == "generated") == self.generating


@dataclass
class RowHook:
    """A hook on some rows of one request: `fn(act_rows, hook=...)` sees `act[rows]` and may return new values.

    rows: request-relative row indices, or None for all of the request's rows.
    """

    name: str
    fn: HookFn
    rows: Sequence[int] | None = None


@dataclass
class DecodeRequest:
    """One generation: rows of prompt token ids, per-row hooks and sampling settings.

    Attributes:
        rows: the model input of each row (token ids; rows may differ in length).
        max_new_tokens: tokens to generate per row at most.
        hooks: `RowHook`s applied in prefill and decode (read `phase` to act in one only).
        temperature, top_p: sampling (temperature 0 = greedy).
        seed: seed of this request's own `torch.Generator`.
        noise_ids: per row, which uniform of each step's draw it uses (default: row i uses draw i);
            rows with equal ids share their sampling noise.
        n_noise: uniforms drawn per step (default max(noise_ids) + 1); fixing it keeps the draws of
            several requests of one experiment aligned.
        stop_ids: tokens that end a row (not included in its output); empty = always max_new_tokens.
        phase: flipped to generating after the prefill; the hooks of `saelab.steering` read it.
    """

    rows: list[list[int]]
    max_new_tokens: int
    hooks: list[RowHook] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    noise_ids: list[int] | None = None
    n_noise: int | None = None
    stop_ids: frozenset[int] = frozenset()
    phase: Phase = field(default_factory=Phase)

    def __post_init__(self) -> None:
        if not self.rows or any(not r for r in self.rows):
            raise BadInputError("A generation needs at least one row, and every row needs a token.")
        if self.max_new_tokens < 1:
            raise BadInputError("max_new_tokens must be at least 1.")
        if self.noise_ids is None:
            self.noise_ids = list(range(len(self.rows)))
        if len(self.noise_ids) != len(self.rows):
            raise BadInputError("noise_ids needs one entry per row.")
        if self.n_noise is None:
            self.n_noise = max(self.noise_ids) + 1
        for h in self.hooks:
            if h.rows is not None and any(not 0 <= r < len(self.rows) for r in h.rows):
                raise BadInputError(f"Hook on {h.name} names rows outside 0..{len(self.rows) - 1}.")


def sample_rows(logits_BV: torch.Tensor, temperature: float, top_p: float, u_B: torch.Tensor) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else inverse CDF with the given uniforms."""
    if temperature == 0:
        return logits_BV.argmax(dim=-1)
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p >= 1:  # the full distribution: inverse CDF in vocabulary order, no sort needed
        cum = probs.cumsum(dim=-1)
        idx = torch.searchsorted(cum, (u_B.float() * cum[:, -1]).unsqueeze(-1))
        return idx.clamp_max(cum.shape[-1] - 1).squeeze(-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    keep = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p  # the smallest prefix whose mass reaches top_p
    cum = (sorted_p * keep).cumsum(dim=-1)
    idx = torch.searchsorted(cum, (u_B.float() * cum[:, -1]).unsqueeze(-1)).clamp_max(cum.shape[-1] - 1)
    return order.gather(-1, idx).squeeze(-1)


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows → (tokens [B, W], attention mask [B, W]), right-aligned so every row's next token is last."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return tokens, mask


def kv_cache(model, batch: int):
    """An empty TransformerLens key-value cache for `batch` rows."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)


def _merge_caches(model, caches: list) -> object:
    """Concatenate KV caches along the batch, left-padding shorter ones with masked-out zero positions."""
    if len(caches) == 1:
        return caches[0]
    width = max(c.previous_attention_mask.shape[1] for c in caches)
    merged = kv_cache(model, sum(c.previous_attention_mask.shape[0] for c in caches))

    def pad(t: torch.Tensor) -> torch.Tensor:
        missing = width - t.shape[1]
        if not missing:
            return t
        return torch.cat([t.new_zeros((t.shape[0], missing, *t.shape[2:])), t], dim=1)

    for layer, entry in enumerate(merged.entries):
        entry.past_keys = torch.cat([pad(c.entries[layer].past_keys) for c in caches])
        entry.past_values = torch.cat([pad(c.entries[layer].past_values) for c in caches])
    merged.previous_attention_mask = torch.cat([pad(c.previous_attention_mask) for c in caches])
    return merged


def _slice_cache(model, cache, start: int, stop: int) -> object:
    """Rows start:stop of a cache, with the leading positions that are padding for all of them dropped."""
    mask = cache.previous_attention_mask[start:stop]
    first = int((mask.sum(dim=0) > 0).int().argmax()) if mask.numel() else 0
    out = kv_cache(model, stop - start)
    for layer, entry in enumerate(out.entries):
        entry.past_keys = cache.entries[layer].past_keys[start:stop, first:]
        entry.past_values = cache.entries[layer].past_values[start:stop, first:]
    out.previous_attention_mask = mask[:, first:]
    return out


class Generation:
    """A submitted request: stream its tokens, wait for its result, or cancel it."""

    def __init__(self, request: DecodeRequest) -> None:
        self.request = request
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

    def submit(self, request: DecodeRequest) -> Generation:
        gen = Generation(request)
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
                    if not lv.sample(self._stops(lv)):
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
            state["merged"] = _merge_caches(self.handle.model, [lv.cache for lv in live])
            for lv in live:
                lv.cache = None
        self._step(live, state["merged"])

    def _stops(self, lv: _Live) -> frozenset[int]:
        return lv.gen.request.stop_ids

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
                lv.cache = _slice_cache(self.handle.model, merged, start, start + lv.n_rows)
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


def submit(handle: ModelHandle, request: DecodeRequest) -> Generation:
    """Join the model's running batch with `request` (see the module docstring)."""
    return engine_for(handle).submit(request)


def run(
    handle: ModelHandle,
    request: DecodeRequest,
    on_step: Callable[[dict[int, list[int]]], None] | None = None,
) -> list[list[int]]:
    """Submit `request`, call `on_step({row: ids so far})` in this thread as tokens arrive, return the ids.

    If this thread stops (an exception from `on_step`, e.g. a Streamlit session that went away), the
    request is cancelled so its rows leave the batch.
    """
    gen = submit(handle, request)
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
