"""Harvest throughput on Ray with 1 and 2 workers against one process, the overhead per shard, and a projection.

Measured in one run on this machine (default model, the same corpus and shards for every variant):
  * plain1 / plain2: `harvest` in this process with 1 and 2 torch threads;
  * ray1 / ray2: `harvest --ray` on a private local cluster with 1 and 2 actors of 1 torch thread each.
Overhead per shard = (ray1 seconds − plain1 seconds) / shards: what Ray adds around the same work (actor start,
model load in the actor, shipping tokens and activations). The projection for N machines of W workers is
written as a projection, not a measurement:  tokens/s(N) ≈ min(N · W · ray1 tokens/s per worker, driver write
bandwidth measured here), i.e. linear in workers until the driver's disk is the limit.
Writes bench/results/scale.json.
Usage: nice -n 10 .venv/bin/python bench/scale.py [--tokens 24576] [--shard-tokens 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import write_results  # noqa: E402  (bench/common.py puts the repo on sys.path)

from saelab.activations import HarvestConfig, harvest
from saelab.corpus import CorpusConfig, build_corpus
from saelab.defaults import DEFAULT_HOOK, DEFAULT_MODEL
from saelab.models import load_model


def timed_harvest(handle, corpus, cfg, runner=None) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = harvest(handle, corpus, cfg, Path(tmp) / "h", runner=runner)
        secs = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "h").iterdir())
    return secs, res.n_shards, size


def write_bandwidth(n_bytes: int = 256 * 2**20) -> float:
    """Bytes/s of writing and fsyncing one file in the temp folder (the driver's side of a harvest)."""
    data = torch.randn(n_bytes // 4).numpy().tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with open(Path(tmp) / "x", "wb") as fh:
            fh.write(data)
            fh.flush()
            __import__("os").fsync(fh.fileno())
        return len(data) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24_576)
    ap.add_argument("--shard-tokens", type=int, default=4_096)
    ap.add_argument("--machines", type=int, nargs="*", default=[1, 4, 16], help="N for the projection")
    a = ap.parse_args()
    from saelab.distributed.ray_harvest import RayShardRunner, connect

    handle = load_model(DEFAULT_MODEL)
    corpus = build_corpus(handle.tokenizer, CorpusConfig(seq_len=128, n_tokens=a.tokens, seed=0))
    cfg = HarvestConfig(hooks=[DEFAULT_HOOK], shard_tokens=a.shard_tokens, batch_size=8)
    seconds: dict[str, float] = {}
    threads = torch.get_num_threads()
    for n in (1, 2):
        torch.set_num_threads(n)
        seconds[f"plain{n}"], shards, size = timed_harvest(handle, corpus, cfg)
    torch.set_num_threads(threads)
    connect("local", 2)
    for n in (1, 2):
        runner = RayShardRunner(DEFAULT_MODEL, address="local", workers=n)
        seconds[f"ray{n}"], _, _ = timed_harvest(handle, corpus, cfg, runner)
        runner.shutdown()
    bw = write_bandwidth()
    tokens = int(corpus.tokens.numel())
    per_worker = tokens / seconds["ray1"]
    figures = {
        **{f"{k}_seconds": v for k, v in seconds.items()},
        **{f"{k}_tokens_per_s": tokens / v for k, v in seconds.items()},
        "shards": shards,
        "bytes_written": size,
        "overhead_per_shard_s": (seconds["ray1"] - seconds["plain1"]) / shards,
        "driver_write_bytes_per_s": bw,
        "projection_tokens_per_s": {
            f"{m}x2_workers": min(m * 2 * per_worker, bw / (size / tokens)) for m in a.machines
        },
    }
    ratios = {
        "ray1_over_plain1": seconds["plain1"] / seconds["ray1"],
        "ray2_over_plain2": seconds["plain2"] / seconds["ray2"],
        "ray2_over_ray1": seconds["ray1"] / seconds["ray2"],
    }
    notes = [
        "ratios are speed ratios (higher = faster): plain seconds / Ray seconds on the same shards.",
        "Ray seconds include starting the actors and loading the model in each (a fixed cost per run).",
        "projection_tokens_per_s is a PROJECTION from this machine's numbers: min(N · 2 workers · ray1 tokens/s, "
        "driver write bandwidth / bytes per token); not measured on N machines.",
        "2-core machine: ray2 and plain2 compete for the same 2 cores as the driver.",
    ]
    write_results("scale", figures, ratios, notes, config=vars(a))


if __name__ == "__main__":
    main()
