"""Shared bench helpers: the machine's own matmul roofline, timing, and the results file format.

Every bench writes `bench/results/<name>.json` with `figures` (name → value, unit in the name) and
`ratios` (name → value), plus `machine` and `notes`, so runs can be compared.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


def matmul_gflops(dtype: torch.dtype, m: int = 4096, k: int = 576, n: int = 1536, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of an [m,k]@[k,n] matmul in `dtype` (shapes like the default model's MLP)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        dt = (time.perf_counter() - t0) / 5
        best = max(best, 2 * m * k * n / dt / 1e9)
    return best


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of `fn()` over `repeats` runs after `warmup` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def write_results(
    name: str, figures: dict, ratios: dict, notes: list[str] | None = None, config: dict | None = None
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "figures": {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "config": config or {},
        "machine": machine(),
        "notes": notes or [],
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps({"figures": payload["figures"], "ratios": payload["ratios"]}, indent=2))
    print(f"wrote {out}")
    return out
