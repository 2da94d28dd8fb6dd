"""How many tokens a dashboard build can afford on this machine: measured, not guessed.

`dashboard_tokens` times the build's own inner loop (forward to the SAE's hook in the build's compute dtype, then
`sae.encode`) on one batch of real-shaped rows after a warm-up batch, and returns the token count that fits a time
budget (default 8 minutes, so that a whole build with its statistics, logits and map stays under 10 minutes):

    n_tokens = clamp(rate × budget_s × 0.9, min_tokens, max_tokens), rounded down to a power-of-two number of rows

The 0.9 leaves room for the phases after the forward passes (a few seconds for 4k latents). Rounding to a power of
two keeps the answer stable across noisy measurements, so a killed build that is started again asks for the same
tokens and resumes from its checkpoint. The result says what it measured so the caller can show it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from saelab.activations import compute_handle
from saelab.hooks import cache_activations
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE

DEFAULT_BUDGET_S = 480.0
MIN_TOKENS = 16_384
MAX_TOKENS = 1_048_576


@dataclass(frozen=True)
class Sizing:
    n_tokens: int
    tokens_per_s: float
    budget_s: float
    formula: str

    @property
    def note(self) -> str:
        return (f"{self.n_tokens:,} tokens: measured {self.tokens_per_s:,.0f} tokens/s here, budget "
                f"{self.budget_s / 60:.0f} min ({self.formula})")  # fmt: skip


def measure_rate(
    handle: ModelHandle, loaded: LoadedSAE, *, seq_len: int = 128, rows: int = 16, compute_dtype: str = "bfloat16"
) -> float:
    """Tokens per second of forward + encode on `rows` random rows of `seq_len` (one warm-up batch first)."""
    run = compute_handle(handle, getattr(torch, compute_dtype))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, int(handle.cfg.d_vocab), (rows, seq_len), generator=g)
    sae = loaded.sae
    with torch.inference_mode():
        for timed in (False, True):
            t0 = time.perf_counter()
            act = cache_activations(run, tokens, [loaded.hook], stop_early=True)[loaded.hook]
            sae.encode(act.flatten(0, 1).to(device=sae.device, dtype=sae.dtype))  # [tokens, ...] as the build
            if timed:
                return rows * seq_len / max(time.perf_counter() - t0, 1e-6)
    raise AssertionError("unreachable")


def dashboard_tokens(
    handle: ModelHandle,
    loaded: LoadedSAE,
    *,
    seq_len: int = 128,
    budget_s: float = DEFAULT_BUDGET_S,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
    compute_dtype: str = "bfloat16",
) -> Sizing:
    """The token count a dashboard build of `loaded` can afford within `budget_s` on this machine."""
    rate = measure_rate(handle, loaded, seq_len=seq_len, compute_dtype=compute_dtype)
    rows = max(1, int(min(max(rate * budget_s * 0.9, min_tokens), max_tokens)) // seq_len)
    n = (1 << (rows.bit_length() - 1)) * seq_len
    formula = f"clamp(rate × budget × 0.9, {min_tokens:,}, {max_tokens:,}), a power-of-two number of rows of {seq_len}"
    return Sizing(n_tokens=n, tokens_per_s=rate, budget_s=budget_s, formula=formula)


__all__ = ["DEFAULT_BUDGET_S", "Sizing", "dashboard_tokens", "measure_rate"]
