"""SAE training speed: SAE Lab's trainer against the dense roofline for that SAE size and SAE-Lens used plainly.

Measured in one run on this machine, on in-memory random activations (speed does not depend on values):
  * roofline: best sustained fp32 / bf16 matmul GFLOP/s (bench.common); an SAE step on a batch of B costs
    about 12 · d_in · d_sae · B FLOPs (encoder + decoder forward 4·d·D, backward twice that), dense;
  * plain: `SAETrainer(...).fit()` with an endless in-memory data provider (SAE-Lens used the obvious way);
  * saelab: `saelab.sae.train.train_sae` (same SAE-Lens step, our loop with progress + checkpoints), fp32 and bf16 autocast;
  * streaming: `train_sae` with the progress callback the Train page uses (every step's metrics into a
    `CurveBuffer`, read by the page), against `fit()` on the same data and SAE size.
All four are run `--repeats` times interleaved (plain, saelab fp32, streaming, saelab bf16, plain, ...), so load
from other processes on the machine hits them alike; each figure is the median of its repeats.
Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from common import matmul_gflops, write_results
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from saelab.features.train_job import CurveBuffer
from saelab.sae.registry import SaeKnobs, get_architecture
from saelab.sae.train import TrainConfig, train_sae


def endless(d_in: int, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(batch * 8, d_in, generator=g) * 3
    i = 0
    while True:
        yield pool[(i % 8) * batch : (i % 8 + 1) * batch]
        i += 1


def run_plain(d_in: int, d_sae: int, k: int, batch: int, steps: int) -> float:
    sae = get_architecture("topk").build(SaeKnobs(d_in=d_in, d_sae=d_sae, k=k, normalize_activations="none"))
    cfg = SAETrainerConfig(
        total_training_samples=batch * steps,
        train_batch_size_samples=batch,
        lr_end=3e-5,  # SAETrainerConfig leaves it None; SAE-Lens's runner sets lr / 10
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=endless(d_in, batch))
    t0 = time.perf_counter()
    trainer.fit()
    return batch * steps / (time.perf_counter() - t0)


def run_ours(d_in: int, d_sae: int, k: int, batch: int, steps: int, bf16: bool, stream: bool = False) -> float:
    """Samples/s of `train_sae`'s training loop; `stream` feeds every step's metrics to a CurveBuffer as the Train
    page's job does. Timed like `fit()` above: from the callback `train_sae` makes just before its first step to
    the one after its last (checkpoint write and curve feeding included; building the SAE and saving it are not,
    as `fit()`'s timing leaves out building the trainer)."""
    cfg = TrainConfig(
        architecture="topk",
        d_sae=d_sae,
        k=k,
        batch_size=batch,
        total_samples=batch * steps,
        normalize_activations="none",
        checkpoint_every_steps=10**9,
        autocast_bf16=bf16,
    )
    feed = _streaming(d_sae) if stream else None
    marks: dict[int, float] = {}

    def on_step(done: int, total: int, metrics: dict[str, float]) -> None:
        if feed is not None:
            feed(done, total, metrics)
        if done in (0, total):
            marks[done] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        res = train_sae(cfg, lambda start: endless(d_in, batch), d_in, f"{tmp}/sae", {"model": "bench", "hook": "x"},
                        progress=on_step)  # fmt: skip
    return res.samples / (marks[steps] - marks[0])


def _streaming(d_sae: int):
    curves = CurveBuffer(d_sae)

    def on_step(done: int, total: int, metrics: dict[str, float]) -> None:  # train_job.run_training's callback
        if metrics:
            curves.add(done, total, metrics)
        if done == total:
            curves.snapshot()  # what the page reads

    return on_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each measurement (median)")
    a = ap.parse_args()

    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)
    flops_per_sample = 12.0 * a.d_in * a.d_sae
    roof32 = fp32 * 1e9 / flops_per_sample
    roof16 = bf16 * 1e9 / flops_per_sample

    shape = (a.d_in, a.d_sae, a.k, a.batch_size, a.steps)
    runs = {
        "plain": lambda: run_plain(*shape),
        "ours32": lambda: run_ours(*shape, bf16=False),
        "stream": lambda: run_ours(*shape, bf16=False, stream=True),
    }
    with_bf16 = bf16 >= fp32  # no native bf16 (e.g. AVX2 only): autocast is ~100x slower, measured above; skipped
    if with_bf16:
        runs["ours16"] = lambda: run_ours(*shape, bf16=True)
    run_plain(a.d_in, a.d_sae, a.k, a.batch_size, min(a.steps, 5))  # warm-up: first-call costs hit no one
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(a.repeats):
        for name, fn in runs.items():
            samples[name].append(fn())
    plain, ours32, stream = (statistics.median(samples[n]) for n in ("plain", "ours32", "stream"))
    ours16 = statistics.median(samples["ours16"]) if with_bf16 else 0.0
    paired = [s / p for s, p in zip(samples["stream"], samples["plain"], strict=True)]

    figures = {
        "matmul_fp32_gflops": fp32,
        "matmul_bf16_gflops": bf16,
        "roofline_fp32_samples_per_s": roof32,
        "roofline_bf16_samples_per_s": roof16,
        "sae_lens_fit_fp32_samples_per_s": plain,
        "saelab_train_fp32_samples_per_s": ours32,
        "saelab_streaming_fp32_samples_per_s": stream,
        "repeats_samples_per_s": {n: [round(v, 1) for v in vals] for n, vals in samples.items()},
    }
    ratios = {
        "saelab_fp32_over_sae_lens_fit": ours32 / plain,
        "saelab_streaming_vs_sae_lens_fit": stream / plain,
        "saelab_streaming_vs_sae_lens_fit_paired_median": statistics.median(paired),
        "saelab_fp32_over_fp32_roofline": ours32 / roof32,
    }
    if with_bf16:
        figures["saelab_train_bf16_autocast_samples_per_s"] = ours16
        ratios["saelab_bf16_over_sae_lens_fit"] = ours16 / plain
        ratios["saelab_bf16_over_bf16_roofline"] = ours16 / roof16
    notes = [
        "FLOPs per sample = 12 * d_in * d_sae (dense encoder + decoder, forward and backward); TopK's sparse "
        "decoder could do less, SAE-Lens computes it dense.",
        "bf16 autocast keeps fp32 master weights (SAE-Lens's autocast option); the Adam update and TopK stay fp32.",
        "streaming = train_sae feeding every step's metrics to a CurveBuffer (the Train page's job); its goal is "
        ">= 0.95x fit(). Medians of interleaved repeats; paired = median of per-repeat streaming/fit ratios.",
        "Both sides time the training loop only: fit() from its call to its return; train_sae from its callback "
        "before the first step to the one after the last (its end-of-run checkpoint and the curve feeding "
        "included, building and saving the SAE not).",
    ]
    if not with_bf16:
        notes.append("bf16 autocast not run: this CPU's bf16 matmul is slower than fp32 (no native bf16).")
    write_results("train", figures, ratios, notes, config=vars(a))


if __name__ == "__main__":
    main()
