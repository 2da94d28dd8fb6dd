"""`saelab circuits`: find a task's attention-head circuit and score the methods against activation patching.

    saelab circuits --task ioi --method discrete-sae --method attribution-patching
    saelab circuits --csv pairs.csv --metric logit_diff --prompts 20 --out runs/circuits-mine
The CSV needs columns clean, corrupted, correct, wrong (answers one token each; several joined by '|').
Writes report.html, result.json, heads.csv and prompts.csv into --out and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from saelab.defaults import DEFAULT_MODEL
from saelab.errors import BadInputError
from saelab.progress import terminal_bar


def cmd_circuits(args: argparse.Namespace) -> int:
    from saelab.circuits.run import CircuitConfig, check_task, run_circuits
    from saelab.circuits.tasks import builtin_task, pairs_from_csv
    from saelab.models import load_model
    from saelab.reports.circuits import export_result, summary_rows

    cfg = CircuitConfig(
        task=args.task, methods=args.method or ["discrete-sae", "attribution-patching"], n_prompts=args.prompts,
        seed=args.seed, top_frac=args.top_frac, n_repeats=args.repeats, subset_size=args.subset,
        repeat_reference=args.repeat_reference, d_sae=args.d_sae, l1=args.l1, epochs=args.epochs,
    )  # fmt: skip
    if args.csv:
        task = pairs_from_csv(Path(args.csv), name=Path(args.csv).stem, metric=args.metric)
        if len(task.pairs) > args.prompts:
            task = task.subset(range(args.prompts))
    else:
        task = builtin_task(args.task, n=args.prompts, seed=args.seed)
    handle = load_model(args.model)
    check = check_task(handle, task)
    print(f"{task.name}: the model solves {check.accuracy:.0%} of {len(task.pairs)} clean prompts "
          f"(corrupted: {check.corrupted_accuracy:.0%}).")  # fmt: skip
    if check.accuracy < cfg.min_accuracy and not args.force:
        raise BadInputError(f"The model solves only {check.accuracy:.0%} of the clean prompts; its circuit for this "
                            "task is not meaningful. Fix the prompts, or pass --force to run anyway.")  # fmt: skip
    with terminal_bar("Circuits", "‰") as progress:
        result = run_circuits(handle, cfg, task=task, progress=progress)
    out = Path(args.out or f"runs/circuits-{task.name}")
    written = export_result(result, out)
    for note in result.notes:
        print(f"note: {note}")
    for row in summary_rows(result):
        print("  " + " · ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()))
    print(f"Reference circuit: top {cfg.top_frac:.0%} of heads by |activation-patching effect| "
          f"({int(result.reference_mask.sum())} heads). Wrote {', '.join(str(p) for p in written.values())}")  # fmt: skip
    return 0


def register(sub) -> None:
    from saelab.circuits.methods import METHODS
    from saelab.circuits.tasks import BUILTIN_TASKS, METRICS

    p = sub.add_parser("circuits", help="Circuit discovery: discrete-SAE codes vs activation/attribution patching",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--task", default="ioi", choices=list(BUILTIN_TASKS), help="built-in task (default ioi)")
    p.add_argument("--csv", help="CSV of prompt pairs (clean, corrupted, correct, wrong) instead of a built-in task")
    p.add_argument("--metric", default="logit_diff", choices=list(METRICS), help="metric for --csv tasks")
    p.add_argument("--method", action="append", choices=list(METHODS),
                   help="method to compare with the reference (repeatable; default discrete-sae and "
                   "attribution-patching); activation patching always runs as the reference")  # fmt: skip
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--prompts", type=int, default=24, help="prompt pairs (built-in tasks are generated, seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-frac", type=float, default=0.05, help="reference circuit = top fraction of heads by |effect|")
    p.add_argument("--repeats", type=int, default=3, help="random prompt subsets for mean ± std")
    p.add_argument("--subset", type=int, default=10, help="prompts per subset")
    p.add_argument("--repeat-reference", action="store_true", help="also time activation patching on each subset")
    p.add_argument("--d-sae", type=int, default=200)
    p.add_argument("--l1", type=float, default=0.02)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--force", action="store_true", help="run even when the model fails the task")
    p.add_argument("--out", help="output folder (default runs/circuits-<task>)")
    p.set_defaults(func=cmd_circuits)
