"""SAE training speed: SAE Lab's trainer against the dense roofline for that SAE size and SAE-Lens used plainly.

Measured in one run on this machine, on in-memory random activations (speed does not depend on values):
  * roofline: best sustained fp32 / bf16 matmul GFLOP/s (bench.common); an SAE step on a batch of B costs
    about 12 · d_in · d_sae · B FLOPs (encoder + decoder forward 4·d·D, backward twice that), dense;
  * plain: `SAETrainer(...).fit()` with an endless in-memory data provider (SAE-Lens used the obvious way);
  * saelab: `saelab.sae.train.train_sae` (same SAE-Lens step, our loop with progress + checkpoints), fp32 and bf16 autocast.
Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import matmul_gflops, write_results
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

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


def run_ours(d_in: int, d_sae: int, k: int, batch: int, steps: int, bf16: bool) -> float:
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
    with tempfile.TemporaryDirectory() as tmp:
        res = train_sae(
            cfg,
            lambda start: endless(d_in, batch),
            d_in,
            f"{tmp}/sae",
            {"model": "bench", "hook": "x"},
            progress=lambda *a: None,
        )
    return res.samples / res.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()

    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)
    flops_per_sample = 12.0 * a.d_in * a.d_sae
    roof32 = fp32 * 1e9 / flops_per_sample
    roof16 = bf16 * 1e9 / flops_per_sample

    plain = run_plain(a.d_in, a.d_sae, a.k, a.batch_size, a.steps)
    ours32 = run_ours(a.d_in, a.d_sae, a.k, a.batch_size, a.steps, bf16=False)
    ours16 = run_ours(a.d_in, a.d_sae, a.k, a.batch_size, a.steps, bf16=True)

    figures = {
        "matmul_fp32_gflops": fp32,
        "matmul_bf16_gflops": bf16,
        "roofline_fp32_samples_per_s": roof32,
        "roofline_bf16_samples_per_s": roof16,
        "sae_lens_fit_fp32_samples_per_s": plain,
        "saelab_train_fp32_samples_per_s": ours32,
        "saelab_train_bf16_autocast_samples_per_s": ours16,
    }
    ratios = {
        "saelab_fp32_over_sae_lens_fit": ours32 / plain,
        "saelab_bf16_over_sae_lens_fit": ours16 / plain,
        "saelab_fp32_over_fp32_roofline": ours32 / roof32,
        "saelab_bf16_over_bf16_roofline": ours16 / roof16,
    }
    notes = [
        "FLOPs per sample = 12 * d_in * d_sae (dense encoder + decoder, forward and backward); TopK's sparse "
        "decoder could do less, SAE-Lens computes it dense.",
        "bf16 autocast keeps fp32 master weights (SAE-Lens's autocast option); the Adam update and TopK stay fp32.",
    ]
    write_results("train", figures, ratios, notes, config=vars(a))


if __name__ == "__main__":
    main()
