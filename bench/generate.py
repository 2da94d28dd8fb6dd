"""Generation speed against plain `transformers`, measured in one run on the same prompts (issue 12).

Every figure is greedy decoding (temperature 0), fp32, KV cache, exactly `--tokens` new tokens per prompt
(end tokens do not stop a row), on the shipped default model:

  hf_*            plain `transformers` `generate` (batch 1, do_sample=False, min_new_tokens = max_new_tokens)
  tl_before_*     TransformerLens's HookedTransformer as saelab ran it before the fast path (contiguous
                  weights, stock F.linear), the same greedy loop over its KV cache — for reference
  unsteered_*     `saelab.steering.generate` with no intervention (one row per prompt)
  steered_*       `generate` with one SAE latent added (two rows per prompt: unsteered + steered, one batch)
  sessions_N_*    N threads each calling `generate` (steered, different latents) at once: they join one
                  batched decode; per-session wall time over its solo time is the ratio to watch

tokens/s counts the steered text's tokens only (one text per prompt), so `steered_over_hf_tokens_per_s`
compares our two-row step with `transformers`' one-row step. Runs alternate and the best of `--repeats`
is kept. `kernel_*` records the BLAS effect `saelab.models.fastpath.fast_linear` exploits.

    .venv/bin/python bench/generate.py [--tokens 64] [--repeats 3] [--sessions 1,2,4,8]
"""

from __future__ import annotations

import argparse
import copy
import threading
import time

import numpy as np
import torch
from common import write_results

from saelab.defaults import default_sae_dir

PROMPT = "Tell me about your weekend."


def _kernels() -> dict[str, float]:
    """ms for 30 MLP-sized [1536, 576] products with 2 rows: F.linear vs (W @ x.T).T."""
    ws = [torch.randn(1536, 576) for _ in range(30)]
    x = torch.randn(2, 576)

    def t(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        return (time.perf_counter() - t0) / 5 * 1e3

    return {
        "kernel_F_linear_2rows_30mats_ms": t(lambda: [torch.nn.functional.linear(x, w) for w in ws]),
        "kernel_mm_transposed_2rows_30mats_ms": t(lambda: [torch.mm(w, x.T) for w in ws]),
    }


def _step_profile(handle, ids: list[int], rows: int = 2, steps: int = 8) -> dict[str, float]:
    """Where a `rows`-row decode step of the fast path spends its time (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    from saelab.decode import kv_cache
    from saelab.models import decode_step

    model = handle.model
    with torch.inference_mode():
        cache = kv_cache(model, rows)
        logits = model(torch.tensor([ids] * rows), past_kv_cache=cache)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                logits = decode_step.step(model, logits[:, -1].argmax(-1)[:, None], cache)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    copies = sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_")
    return {
        "profile_step_ms": total / steps / 1e3,
        "profile_matmul_share": mm / total,
        "profile_copy_share": copies / total,
        "profile_other_share": 1 - (mm + copies) / total,
    }


def _tl_before(handle):
    """A copy of the model with TransformerLens's stock layout (contiguous weights)."""
    memo = {id(handle.model.tokenizer): handle.model.tokenizer}
    for p in handle.model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().contiguous(), requires_grad=False)
    return copy.deepcopy(handle.model, memo)


def _tl_greedy(model, ids: list[int], n: int) -> float:
    from saelab.decode import kv_cache

    with torch.inference_mode():
        cache = kv_cache(model, 1)
        t0 = time.perf_counter()
        logits = model(torch.tensor([ids]), past_kv_cache=cache)
        for _ in range(n - 1):
            logits = model(logits[:, -1].argmax(-1)[:, None], past_kv_cache=cache)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sessions", default="1,2,4,8")
    ap.add_argument("--skip-tl-before", action="store_true")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from saelab.decode import engine_for
    from saelab.models import fastpath, load_model
    from saelab.models.loading import smollm2_gguf_path
    from saelab.sae.files import load_sae
    from saelab.steering import GenerationConfig, Intervention, generate, sae_latent_direction
    from saelab.steering.generate import prompt_ids

    handle = load_model()
    loaded = load_sae(default_sae_dir(), handle=handle)
    cfg = GenerationConfig(max_new_tokens=args.tokens, temperature=0.0, seed=0, stop_at_eos=False)
    ids = prompt_ids(handle, PROMPT, cfg)
    gguf = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    latents = [100, 200, 300, 400, 500, 600, 700, 800]
    ivs = {lat: [Intervention("add", sae_latent_direction(loaded, lat), 2.0)] for lat in latents}

    def hf_run() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                pad_token_id=handle.tokenizer.pad_token_id or 0,
            )
        assert out.shape[1] == len(ids) + args.tokens
        return time.perf_counter() - t0

    def ours(interventions) -> float:
        t0 = time.perf_counter()
        r = generate(handle, PROMPT, interventions, cfg, loaded_sae=loaded)
        assert len(r.steered_token_ids[0]) == args.tokens
        return time.perf_counter() - t0

    tl_model = None
    if not args.skip_tl_before:
        fastpath.uninstall()
        tl_model = _tl_before(handle)

    runs: dict[str, list[float]] = {"hf": [], "unsteered": [], "steered": [], "tl_before": []}
    for rep in range(args.repeats + 1):  # round 0 warms up
        order = [
            ("hf", hf_run),
            ("unsteered", lambda: ours([])),
            ("steered", lambda: ours(ivs[latents[0]])),
        ]
        if tl_model is not None:
            order.append(("tl_before", lambda: _tl_greedy(tl_model, ids, args.tokens)))
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            if name == "tl_before":
                fastpath.uninstall()
            else:
                fastpath.install()
            dt = fn()
            if rep:
                runs[name].append(dt)
            print(f"round {rep} {name}: {dt:.2f} s", flush=True)
    fastpath.install()
    best = {k: min(v) for k, v in runs.items() if v}
    figures: dict = {f"{k}_best_s": v for k, v in best.items()}
    figures.update({f"{k}_tokens_per_s": args.tokens / v for k, v in best.items()})
    figures.update({f"{k}_ms_per_token": v / args.tokens * 1e3 for k, v in best.items()})
    ratios = {f"{k}_over_hf_tokens_per_s": best["hf"] / best[k] for k in best if k != "hf"}

    # ---- concurrent sessions through the batcher
    engine = engine_for(handle)
    solo = best["steered"]
    for n in [int(s) for s in args.sessions.split(",") if s.strip()]:
        per_session: list[float] = [0.0] * n
        barrier = threading.Barrier(n)

        def session(i: int, barrier=barrier, per_session=per_session) -> None:
            barrier.wait()
            per_session[i] = ours(ivs[latents[i % len(latents)]])

        threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
        engine.max_batch_rows = 0
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        figures[f"sessions_{n}_wall_s"] = wall
        figures[f"sessions_{n}_max_session_s"] = max(per_session)
        figures[f"sessions_{n}_max_batch_rows"] = engine.max_batch_rows
        ratios[f"sessions_{n}_max_over_solo"] = max(per_session) / solo
        ratios[f"sessions_{n}_mean_over_solo"] = float(np.mean(per_session)) / solo
        print(f"{n} sessions: wall {wall:.2f} s, slowest {max(per_session):.2f} s (solo {solo:.2f} s)", flush=True)
    figures.update(_kernels())
    figures.update(_step_profile(handle, ids))
    ratios["kernel_F_linear_over_mm_transposed"] = (
        figures["kernel_F_linear_2rows_30mats_ms"] / figures["kernel_mm_transposed_2rows_30mats_ms"]
    )
    write_results(
        "generate",
        figures,
        ratios,
        notes=[
            "bars (issue 12): steered_over_hf_tokens_per_s ≥ 1.0; sessions_4_max_over_solo ≤ 1.5",
            f"greedy, fp32, KV cache, {args.tokens} new tokens, prompt {PROMPT!r} in the chat template, "
            f"best of {args.repeats} rounds (alternating order) after one warm-up",
            "steered = two rows per prompt (unsteered + steered) in one batch; tokens/s counts one text",
            f"torch threads {torch.get_num_threads()}; transformers, TransformerLens and saelab share the process",
        ],
        config=vars(args),
    )


if __name__ == "__main__":
    main()
