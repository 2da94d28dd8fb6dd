"""`saelab sweep`: train a small grid of SAEs one after another from one harvest (`saelab.features.sweep`).

    saelab sweep --k 16,32,64,128                         # TopK at the default hook, widths 8·d_model
    saelab sweep --d-sae 1152,2304,4608 --k 32 --tokens 200000 --root runs/sweeps
    saelab sweep --arch jumprelu --coefficient 1,3,10 --name jr
    saelab sweep --hook blocks.6.hook_resid_post,blocks.12.hook_resid_post --k 32   # one harvest pass, two hooks
    saelab sweep --k 16,32,64,128 --ray --ray-workers 4   # harvest shards and runs on Ray actors (docs/cluster.md)
Each run is written to ROOT/<name>-<setting><value>... with its eval.json, dashboards and proxy labels, as the
Train page writes them (point SAELAB_FEATURES at ROOT to see them in the app's SAE picker and on the Compare
page). Interrupted, the same command resumes: finished runs are skipped. Ends with each run's core metrics.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def cmd_sweep(args: argparse.Namespace) -> int:
    from saelab.compare.metrics import read_metrics
    from saelab.distributed import shard_runner
    from saelab.features import train_job as tj
    from saelab.features.sweep import SweepRequest, check_sweep, parse_values, run_sweep
    from saelab.hooks import hook_slug
    from saelab.models import load_model
    from saelab.progress import phase_bars

    handle = load_model(args.model)
    arch = args.arch
    grid = {axis: parse_values(text, axis) for axis, text in
            (("k", args.k), ("d_sae", args.d_sae), ("coefficient", args.coefficient), ("lr", args.lr)) if text}  # fmt: skip
    fixed = {axis: values[0] for axis, values in grid.items() if len(values) == 1}
    grid = {axis: values for axis, values in grid.items() if len(values) > 1}
    hooks = parse_values(args.hook, "hook") if args.hook else [tj.default_hook(handle)]
    if len(hooks) > 1:
        grid = {"hook": hooks, **grid}
    hook = hooks[0]
    name = args.name or f"sweep-{hook_slug(hook)}-{arch}"
    base = tj.TrainRequest(
        name=name, hook=hook, architecture=arch, d_sae=int(fixed.get("d_sae", 8 * handle.d_model)),
        k=int(fixed.get("k", 32)), coefficient=fixed.get("coefficient"), n_tokens=args.tokens,
        lr=float(fixed.get("lr", 3e-4)), seed=args.seed, eval_tokens=args.eval_tokens,
        dashboard_tokens=args.dashboard_tokens, label_tokens=args.eval_tokens,
    )  # fmt: skip
    sweep = SweepRequest(base, grid)
    root = Path(args.root)
    states = check_sweep(root, sweep)
    print(f"Sweep of {len(states)} runs on {handle.name} at {', '.join(hooks)} ({arch}), into {root}:")
    for run, state in states.items():
        print(f"  {run}: {state}")
    pool = shard_runner(args, args.model)
    try:
        with phase_bars() as progress:
            outs = run_sweep(handle, sweep, root, progress, pool=pool)
    finally:
        if pool is not None:
            pool.shutdown()
    print("Core metrics (each run's eval.json, same held-out tokens):")
    for row in read_metrics(outs, [p.name for p in outs]).table_rows():
        print("  " + " · ".join(f"{k}: {_fmt(v)}" for k, v in row.items() if k != "eval tokens"))
    return 0


def register(sub) -> None:
    from saelab.defaults import DEFAULT_MODEL
    from saelab.distributed import add_ray_arguments
    from saelab.features.train_job import MAX_TOKENS, MIN_TOKENS

    p = sub.add_parser("sweep", help="train a small grid of SAEs (k, width, coefficient, lr) from one harvest",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    p.add_argument("--hook", default=None,
                   help="hook, or comma-separated hooks harvested in one pass (default: the model's default hook)")  # fmt: skip
    p.add_argument("--arch", default="topk", help="architecture (saelab train --help lists them)")
    for axis, example in (("k", "16,32,64"), ("d-sae", "2304,4608"), ("coefficient", "1,3,10"), ("lr", "1e-4,3e-4")):
        p.add_argument(
            f"--{axis}", default=None, help=f"one value, or comma-separated values to sweep (e.g. {example})"
        )
    p.add_argument("--tokens", type=int, default=100_000, help=f"tokens to harvest, {MIN_TOKENS:,}..{MAX_TOKENS:,}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-tokens", type=int, default=16_384, help="held-out tokens to evaluate and to score labels")
    p.add_argument("--dashboard-tokens", type=int, default=65_536, help="dashboard tokens (at most; sized)")
    p.add_argument("--name", default=None, help="run name prefix (default: sweep-<hook>-<arch>)")
    p.add_argument("--root", default="runs", help="folder the SAEs are written into (default: %(default)s)")
    add_ray_arguments(p, "the harvest's shards and the runs (one per actor; ROOT on a shared filesystem)")
    p.set_defaults(func=cmd_sweep)
