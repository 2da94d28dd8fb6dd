"""The fast forward: TransformerLens's own modules and hook points, without per-forward weight copies.

A CPU profile of TransformerLens 3.9 decoding SmolLM2 spent 71 % of each step in `aten::copy_`: its
components re-lay out weights on every forward —
    gated MLP      `F.linear(x, W_gate.T.contiguous())` (and `W_in`, `W_out`): a [d_mlp, d_model] copy each,
    unembed        `F.linear(x, W_U.T.contiguous())`: the 113 MB unembedding copied per forward,
    attention      `rearrange(W_Q, "h m d -> (h d) m")` and `rearrange(W_O, "h d m -> m (h d)").contiguous()`.
`relayout(model)` stores each of these parameters as a strided *view* of a tensor that already has the
layout the forward asks for, so `.T.contiguous()` and the rearranges return views and copy nothing. The
parameters keep their TransformerLens shapes and values (`W_in[i, j]` is unchanged), so every hook,
`state_dict` read and weight-based analysis sees exactly what it saw before.

Second trap, in the BLAS rather than TransformerLens: on this CPU (MKL, AVX2) `F.linear(x, W)` with a
few rows (a decode step) takes a path 2-3x slower than the same product written as `(W @ x.T).T`, while
one row or many rows are fine either way (`bench/generate.py` records the kernels' timings).
`install()` points TransformerLens's components at `fast_linear`, which picks the faster form by the
number of rows and is otherwise `torch.nn.functional.linear`. The same trap again: `W @ B` with `B` a
contiguous [d_in, rows] tensor is as slow as `F.linear`; only `B = x.T` of a row-major `x` is fast, so
`fast_linear` makes x row-major first and hands back a row-major result. It is process-wide (TransformerLens's
modules hold `F` as a module global) and idempotent; the logits it gives equal the plain path's to
float rounding (tested against `transformers`).
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import torch
import torch.nn.functional as torch_F

# parameter name → permutation under which the forward reads it as a contiguous tensor
_LAYOUTS: dict[str, tuple[int, ...]] = {
    "W_gate": (1, 0),  # F.linear(x, W_gate.T.contiguous())
    "W_in": (1, 0),
    "W_out": (1, 0),
    "W_U": (1, 0),  # F.linear(residual, W_U.T.contiguous())
    "W_Q": (0, 2, 1),  # rearrange "head d_model d_head -> (head d_head) d_model"
    "W_K": (0, 2, 1),
    "W_V": (0, 2, 1),
    "_W_K": (0, 2, 1),  # grouped-query attention keeps the unexpanded key/value weights here
    "_W_V": (0, 2, 1),
    "W_O": (2, 0, 1),  # rearrange "head d_head d_model -> d_model (head d_head)"
}

# TransformerLens modules whose forward calls `F.linear` on the weights above.
_TL_MODULES = (
    "transformer_lens.components.mlps.gated_mlp",
    "transformer_lens.components.unembed",
    "transformer_lens.components.abstract_attention",
    "transformer_lens.utilities.attention",
)

FAST_ROWS = (2, 512)  # row counts for which (W @ x.T).T beats F.linear here (bench/generate.py, kernels)


def relayout(model: torch.nn.Module) -> int:
    """Store every weight the forward re-lays out as a view of the layout it wants; returns how many moved.

    Values and shapes are unchanged; only strides change. Safe to call twice (a view already in the
    wanted layout is left alone).
    """
    moved = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            perm = _LAYOUTS.get(name.rsplit(".", 1)[-1])
            if perm is None or param.dim() != len(perm) or param.permute(*perm).is_contiguous():
                continue
            inverse = tuple(perm.index(i) for i in range(len(perm)))
            param.data = param.data.permute(*perm).contiguous().permute(*inverse)
            moved += 1
    return moved


_FAST_BF16: bool | None = None


def cpu_has_fast_bf16() -> bool:
    """Does this CPU multiply bf16 natively (AVX-512 BF16 or AMX)? Read from /proc/cpuinfo, else measured once."""
    global _FAST_BF16
    if _FAST_BF16 is None:
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
            _FAST_BF16 = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
        except OSError:  # not Linux: time a small product in both dtypes
            import time

            a, b = torch.randn(64, 576), torch.randn(576, 256)
            t0 = time.perf_counter()
            a @ b
            t_fp32 = time.perf_counter() - t0
            t0 = time.perf_counter()
            a.bfloat16() @ b.bfloat16()
            _FAST_BF16 = time.perf_counter() - t0 < 2 * t_fp32
    return _FAST_BF16


def effective_dtype(requested: torch.dtype) -> torch.dtype:
    """`requested`, except bf16 on a CPU without native bf16, where it is float32.

    Trap: on an AVX2 CPU torch's bf16 matmul runs at ~1 GFLOP/s against ~180 for fp32 (`bench/harvest.py`
    measures both), so a bf16 harvest or dashboard build would be ~100x slower there, not faster.
    """
    if requested == torch.bfloat16 and not cpu_has_fast_bf16():
        return torch.float32
    return requested


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`torch.nn.functional.linear`, computed as `(W @ x.T).T` for float32 inputs of 2 to 512 rows.

    x: [..., d_in], weight: [d_out, d_in], bias: [d_out] → [..., d_out].
    """
    d_in = x.shape[-1]
    rows = x.numel() // d_in if d_in else 0
    if (
        x.dtype != torch.float32
        or weight.dtype != torch.float32
        or x.device.type != "cpu"
        or weight.dim() != 2
        or not FAST_ROWS[0] <= rows <= FAST_ROWS[1]
        or x.requires_grad
        or weight.requires_grad
    ):
        return torch_F.linear(x, weight, bias)
    x2 = x.reshape(rows, d_in)
    if x2.stride() != (d_in, 1):  # the fast kernel wants x.T as a transposed view of a row-major x
        x2 = x2.contiguous()
    out = torch.mm(weight, x2.T).T.contiguous()  # row-major out, so the next product's input is fast too
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _functional_with_fast_linear() -> types.ModuleType:
    shim = types.ModuleType("saelab_fast_functional")
    shim.__dict__.update({k: v for k, v in vars(torch_F).items() if not k.startswith("__")})
    shim.linear = fast_linear
    return shim


_SHIM = _functional_with_fast_linear()


def install() -> list[str]:
    """Point TransformerLens's components at `fast_linear` (idempotent); returns the modules patched.

    Raises RuntimeError when a TransformerLens upgrade moved the code this relies on, so a version bump
    fails the tests instead of silently losing the speed.
    """
    patched = []
    for name in _TL_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, "F", None)
        if current is _SHIM:
            patched.append(name)
            continue
        if current is not torch_F:
            raise RuntimeError(
                f"{name} no longer imports torch.nn.functional as F; saelab.models.fastpath needs updating."
            )
        module.F = _SHIM
        patched.append(name)
    return patched


def is_installed() -> bool:
    return all(getattr(importlib.import_module(n), "F", None) is _SHIM for n in _TL_MODULES)


def uninstall() -> None:
    """Give TransformerLens back its stock `F` (benchmarks compare against the stock path)."""
    for name in _TL_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "F", None) is _SHIM:
            module.F = torch_F


__all__ = [
    "FAST_ROWS",
    "fast_linear",
    "install",
    "is_installed",
    "relayout",
    "uninstall",
]
