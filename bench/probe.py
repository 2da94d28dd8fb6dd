"""Probing speed: the all-layer hidden-state sweep (ONE forward per batch caching every `blocks.L.hook_resid_post`)
against separate passes, one per layer, each stopped after its own layer — same texts, same run.

    .venv/bin/python bench/probe.py [--texts 2000] [--separate-texts 250] [--max-tokens 64] [--batch-size 32] [--threads 1]

Texts: a seeded sample of `92_glue_sst2`, cut to `--max-tokens` tokens (the separator in front makes one more).
Separate passes run on the first `--separate-texts` of those texts (all of them when equal to `--texts`); their time
is scaled linearly by texts/separate_texts to the full set, and the results file says so. The bench also checks
that the sweep's features equal the separate passes' features on that subset (max |Δ|).
Writes bench/results/probe.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write_results

from saelab.activations.text_batches import encode_texts
from saelab.models import load_model
from saelab.probing.feature_sources import SourceParams, extract_features
from saelab.textsets import from_builtin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--separate-texts", type=int, default=250)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pooling", default="last")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    handle = load_model()
    texts = from_builtin("92_glue_sst2", max_rows=args.texts, seed=0).texts
    sub = texts[: min(args.separate_texts, len(texts))]
    enc = encode_texts(handle.tokenizer, texts, args.max_tokens)
    n_tok = sum(len(x) for x in enc.ids)
    n_tok_sub = sum(len(x) for x in enc.ids[: len(sub)])

    def params(source: str, layer: int = 0) -> SourceParams:
        return SourceParams(
            source=source, pooling=args.pooling, layer=layer, max_tokens=args.max_tokens, batch_size=args.batch_size
        )

    extract_features(params("hidden"), texts[: args.batch_size], handle=handle)  # warm-up
    t0 = time.perf_counter()
    sweep = extract_features(params("layer_sweep"), texts, handle=handle)
    t_sweep = time.perf_counter() - t0
    print(f"sweep: {len(texts)} texts, {n_tok} tokens, {t_sweep:.1f}s", flush=True)

    t_sep_sub, max_diff = 0.0, 0.0
    for layer in range(handle.n_layers):
        t1 = time.perf_counter()
        one = extract_features(params("hidden", layer), sub, handle=handle)
        t_sep_sub += time.perf_counter() - t1
        max_diff = max(max_diff, float(np.abs(one.X - sweep.extra["layers"][layer][: len(sub)]).max()))
        print(f"layer {layer}: {time.perf_counter() - t1:.1f}s", flush=True)
    scale = n_tok / n_tok_sub
    t_sep = t_sep_sub * scale
    notes = [
        f"{len(texts)} texts of 92_glue_sst2 (seeded sample, seed 0), cut to {args.max_tokens} tokens "
        f"({enc.n_truncated} cut); separator in front; batch {args.batch_size}; pooling {args.pooling}; fp32 CPU.",
        f"Sweep: one forward per batch to the last layer, caching all {handle.n_layers} blocks.L.hook_resid_post.",
        f"Separate: {handle.n_layers} passes, each stopped after its layer, measured on the first {len(sub)} texts "
        f"({n_tok_sub} tokens) and scaled linearly by tokens ×{scale:.2f} to the full set"
        + (" (no scaling: all texts)." if len(sub) == len(texts) else "."),
        f"Sweep features equal the separate passes' on the measured subset: max |Δ| = {max_diff:.2e}.",
        "Machine shared with other jobs (2 cores): absolute times are noisy; the ratio is the figure to read.",
    ]
    write_results(
        "probe",
        figures={
            "texts": len(texts),
            "tokens": n_tok,
            "layers": handle.n_layers,
            "sweep_s": t_sweep,
            "separate_s_measured": t_sep_sub,
            "separate_texts_measured": len(sub),
            "separate_s_extrapolated": t_sep,
            "sweep_tokens_per_s": n_tok / t_sweep,
            "separate_tokens_per_s_per_pass": n_tok_sub * handle.n_layers / t_sep_sub,
            "layer_tokens_per_s_sweep": n_tok * handle.n_layers / t_sweep,
            "max_abs_diff": max_diff,
        },
        ratios={"separate_over_sweep": t_sep / t_sweep},
        notes=notes,
        config={**vars(args), "torch_threads": torch.get_num_threads()},
    )


if __name__ == "__main__":
    main()
