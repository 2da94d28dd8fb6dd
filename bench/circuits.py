"""Circuit discovery on the default model: discrete-SAE codes vs activation patching vs attribution patching.

For each task, in one process on the same prompt pairs: activation patching of every head (clean→corrupted,
the reference) on all `--prompts` pairs, then discrete-SAE and attribution patching on the same pairs (time
ratios) and on `--repeats` random subsets of `--subset` pairs (ROC-AUC, P@k mean ± std against the reference).
Wall and CPU seconds are both recorded: the bench machine is shared, so wall time varies with load.
Writes bench/results/circuits.json (figures, ratios) and bench/results/circuits_details.json.
Usage: nice -n 10 .venv/bin/python bench/circuits.py [--tasks ioi greater-than docstring] [--prompts 12]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import RESULTS, write_results  # noqa: E402  (bench/common.py puts the repo on sys.path)

from saelab.circuits.evaluate import evaluate_scores, reference_mask, summarise
from saelab.circuits.methods import MethodSettings, run_method
from saelab.circuits.run import check_task
from saelab.circuits.tasks import builtin_task, tokenize_task
from saelab.models import load_model
from saelab.storage import write_json

FAST = ["discrete-sae", "attribution-patching"]


def timed(name, handle, batches, metric, settings):
    cpu = time.process_time()
    out = run_method(name, handle, batches, metric, settings)
    return out, out.seconds, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="*", default=["ioi", "greater-than", "docstring"])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--subset", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--top-frac", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on the shared 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    handle = load_model()
    figures, ratios, details = {}, {}, {}
    for name in args.tasks:
        task = builtin_task(name, n=args.prompts, seed=args.seed)
        check = check_task(handle, task)
        batches = tokenize_task(task, handle.tokenizer, handle.cfg.d_vocab)
        ref, ref_wall, ref_cpu = timed("activation-patching", handle, batches, task.metric, MethodSettings())
        mask = reference_mask(ref.scores, args.top_frac)
        figures[f"{name}.accuracy_clean"] = check.accuracy
        figures[f"{name}.accuracy_corrupted"] = check.corrupted_accuracy
        figures[f"{name}.activation_patching.seconds_wall"] = ref_wall
        figures[f"{name}.activation_patching.seconds_cpu"] = ref_cpu
        row = {"accuracy": check.accuracy, "reference_heads": [f"L{i // handle.cfg.n_heads}H{i % handle.cfg.n_heads}"
               for i in np.flatnonzero(mask.ravel())], "full": {}, "repeats": {m: [] for m in FAST}}  # fmt: skip
        for m in FAST:
            out, wall, cpu = timed(m, handle, batches, task.metric, MethodSettings(seed=args.seed))
            ev = evaluate_scores(out.scores, mask, natural=m == "discrete-sae")
            row["full"][m] = {**ev, "seconds_wall": wall, "seconds_cpu": cpu, **out.extra}
            figures[f"{name}.{m}.full.roc_auc"] = ev["roc_auc"]
            figures[f"{name}.{m}.full.precision_at_k"] = ev["precision_at_k"]
            figures[f"{name}.{m}.full.seconds_wall"] = wall
            figures[f"{name}.{m}.full.seconds_cpu"] = cpu
            ratios[f"{name}.activation_patching_over_{m}.wall"] = ref_wall / wall
            ratios[f"{name}.activation_patching_over_{m}.cpu"] = ref_cpu / max(cpu, 1e-9)
        rng = np.random.default_rng(args.seed)
        for r in range(args.repeats):
            idx = np.sort(rng.choice(len(task.pairs), min(args.subset, len(task.pairs)), replace=False))
            sub = tokenize_task(task.subset(idx), handle.tokenizer, handle.cfg.d_vocab)
            for m in FAST:
                out, wall, cpu = timed(m, handle, sub, task.metric, MethodSettings(seed=args.seed + 1 + r))
                ev = evaluate_scores(out.scores, mask, natural=m == "discrete-sae")
                row["repeats"][m].append({**ev, "seconds_wall": wall, "seconds_cpu": cpu, "subset": idx.tolist()})
        for m in FAST:
            summ = summarise([{k: v for k, v in x.items() if k != "subset"} for x in row["repeats"][m]])
            row.setdefault("repeat_summary", {})[m] = summ
            for key in ("roc_auc", "precision_at_k", "seconds_wall", "seconds_cpu", "natural_precision",
                        "natural_recall"):  # fmt: skip
                if key in summ:
                    figures[f"{name}.{m}.subsets.{key}.mean"] = summ[key]["mean"]
                    figures[f"{name}.{m}.subsets.{key}.std"] = summ[key]["std"]
        details[name] = row
        print(name, {k: v for k, v in figures.items() if k.startswith(name)}, flush=True)
    notes = [
        f"Reference = clean→corrupted activation patching of every head on {args.prompts} pairs per task; reference "
        f"circuit = top {args.top_frac:.0%} of heads by |effect|. Subsets: {args.repeats} × {args.subset} pairs "
        f"(numpy seed {args.seed}).",
        "Activation patching is batched per layer from that layer on (about half the blocks of one forward per "
        "head); the paper's 'hours' baseline is edge-level ACDC on a GPU, not this head-level reference.",
        "Shared 2-core machine: wall seconds vary with other jobs; CPU seconds are the process's own.",
    ]
    write_results("circuits", figures, ratios, notes, config=vars(args))
    write_json(RESULTS / "circuits_details.json", details)


if __name__ == "__main__":
    main()
