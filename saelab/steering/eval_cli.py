"""`saelab steer-eval` (AxBench protocol on the concept suite, PROXY judges) and `saelab detox` (detox tiers).

Both print a table and write a JSON result (default under bench/results/). Heavy imports stay inside the
command functions so `saelab --help` stays fast. Every score printed is labelled PROXY unless an LLM judge
endpoint was configured and answered.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from saelab.defaults import DEFAULT_MODEL, default_sae_dir
from saelab.errors import BadInputError
from saelab.progress import terminal_bar


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError as err:
        raise BadInputError(f"Could not read the numbers {text!r} (write e.g. 0.4,1,2,4).") from err


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _load(args):
    from saelab.models import load_model
    from saelab.sae.files import load_sae

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    handle = load_model(args.model)
    sae_path = Path(args.sae) if args.sae else default_sae_dir()
    loaded = load_sae(sae_path, handle=handle) if (args.sae or handle.name == DEFAULT_MODEL) else None
    return handle, loaded


def cmd_steer_eval(args: argparse.Namespace) -> int:
    from saelab.steering.evaluate import AXBENCH_FACTORS, EvalConfig, run_eval

    cfg = EvalConfig(
        concepts=_names(args.concepts) if args.concepts is not None else EvalConfig().concepts,
        methods=_names(args.methods),
        factors=_floats(args.factors) if args.factors else list(AXBENCH_FACTORS),
        n_instructions=args.instructions,
        n_calibration=args.calibration,
        calibration_fpr=args.calibration_fpr,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        n_train=args.n_train,
        n_judge=args.n_judge,
        seed=args.seed,
        n_boot=args.n_boot,
        batch_rows=args.batch_rows,
        endpoint_url=args.judge_url,
        endpoint_model=args.judge_model,
    )
    handle, loaded = _load(args)
    t0 = time.process_time()
    with terminal_bar("steer-eval", "batch") as progress:
        result = run_eval(handle, loaded, cfg, progress=progress)
    result.notes.append(f"CPU time of the run: {time.process_time() - t0:.0f} s (process time, all threads)")
    out = Path(args.out)
    result.save(out)
    judge = "PROXY judge" if result.proxy else result.judge.get("judge")
    print(f"Steering evaluation ({judge}); score = harmonic mean of ratings 0-2, report half, 95% bootstrap CI "
          "clustered by concept")  # fmt: skip
    for row in result.summary:
        print(
            f"  {row['method']:10s} {row['score']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]  concept "
            f"{row['concept_rating']:.2f} relevance {row['relevance']:.2f} fluency {row['fluency']:.2f}  "
            f"n={row['n_items']}"
        )
    for row in result.paired:
        print(
            f"  {row['a']} − {row['b']}: Δ={row['mean_diff']:+.3f} clustered t-test p={row.get('cluster_t_p')} "
            f"({row.get('n_concepts')} concepts) · item Wilcoxon p={row['wilcoxon_p']} t-test p={row['ttest_p']} "
            f"(n={row['n']})"
        )
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return 0


def cmd_detox(args: argparse.Namespace) -> int:
    from saelab.steering.detox import DetoxConfig, run_detox

    cfg = DetoxConfig(
        tiers=_floats(args.tiers),
        k_latents=args.k,
        n_rank=args.n_rank,
        n_prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    handle, loaded = _load(args)
    if loaded is None:
        raise BadInputError("Detox tiers steer SAE latents: pass --sae (the default model uses the shipped SAE).")
    t0 = time.process_time()
    with terminal_bar("detox", "batch") as progress:
        result = run_detox(handle, loaded, cfg, progress=progress)
    result.notes.append(f"CPU time of the run: {time.process_time() - t0:.0f} s (process time, all threads)")
    out = Path(args.out)
    result.save(out)
    print(f"Toxicity latents (ranked by AUROC, offensive vs clean): {[r['latent'] for r in result.latents]}")
    print(
        f"Toxicity: a PROXY classifier (TF-IDF + logistic regression, not a human or LLM rater), held-out AUROC "
        f"{result.classifier['heldout_auroc']:.3f}"
    )
    for row in result.rows:
        print(
            f"  {row['condition']:9s} factor {row['factor']:+.2f}  toxicity {row['toxicity']:.3f} "
            f"[{row['toxicity_ci_low']:.3f}, {row['toxicity_ci_high']:.3f}]  toxic>0.5 {row['toxic_fraction']:.2f}  "
            f"median ppl {row['perplexity_median']}"
        )
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    """Add `saelab steer-eval` and `saelab detox` to the CLI's subparsers."""
    p = sub.add_parser(
        "steer-eval", help="AxBench steering protocol on the offline concept suite (PROXY judges by default)"
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--sae", help="SAE folder for the 'sae' method (default: cached_features/default)")
    p.add_argument("--concepts", help="comma-separated concept names (default: the first 10 of the suite)")
    p.add_argument("--methods", default="sae,diffmean,probe,pca,prompting", help="comma-separated methods")
    p.add_argument("--factors", help="comma-separated factors (default: AxBench's 14, 0.2 … 5)")
    p.add_argument("--instructions", type=int, default=10, help="instructions (2 … 36; AxBench: 10)")
    p.add_argument(
        "--calibration",
        type=int,
        default=24,
        help="unsteered outputs of separate instructions that calibrate the PROXY concept judge (0: off)",
    )
    p.add_argument("--calibration-fpr", type=float, default=0.05, help="target false-positive rate of that judge")
    p.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per output (AxBench: 128; cap 256)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--n-train", type=int, default=72, help="training texts per class (AxBench: 72)")
    p.add_argument("--n-judge", type=int, default=50, help="held-out concept texts for the concept judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--batch-rows", type=int, default=48, help="continuations generated per batch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--judge-url", help="optional OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--judge-model", help="model name at --judge-url")
    p.add_argument("--out", default="bench/results/steer_eval.json", help="JSON result path")
    p.set_defaults(func=cmd_steer_eval)

    d = sub.add_parser("detox", help="steer against toxicity latents of the SAE at three tiers; toxicity vs fluency")
    d.add_argument("--model", default=DEFAULT_MODEL)
    d.add_argument("--sae", help="SAE folder (default: cached_features/default)")
    d.add_argument("--tiers", default="0.5,1,2", help="three strengths: h ← h − tier·max_act·w per latent")
    d.add_argument("--k", type=int, default=5, help="toxicity latents to steer against")
    d.add_argument("--n-rank", type=int, default=400, help="texts per class for ranking latents")
    d.add_argument("--prompts", type=int, default=32, help="offensive-tweet prompts to continue")
    d.add_argument("--max-new-tokens", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    d.add_argument("--out", default="bench/results/detox.json", help="JSON result path")
    d.set_defaults(func=cmd_detox)


__all__ = ["cmd_steer_eval", "register"]
