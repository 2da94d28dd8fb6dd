"""Attribution-graph bench (issue 19): build time and peak memory for a 32-token prompt, the cost of a row by
backward pass against patching, and the faithfulness check on the circuits tasks.

1. Speed: the default model, one 32-token prompt, `GraphConfig()` (512 features given inputs, 64 targets per
   backward pass); wall seconds, the process's peak RSS, nodes and edges. Bar: ≤ 60 s on this 2-core machine.
2. Baseline in the same run: one feature row by patching (scale each source feature by 1.5 in the replacement
   model and re-run it; measured on 16 sources, scaled to the row's number of sources) against the same row
   from the batched backward pass (the build's seconds per row).
3. Faithfulness (IOI and greater-than, `--prompts` each): per prompt, the graph's 8 most influential features are
   ablated one at a time; the graph predicts the change of the target answer's demeaned logit (linear propagation
   over the kept edges, `graphs.interventions.predict`) and the real model measures it (`measure`); Pearson and
   Spearman correlations over all (prompt, feature) pairs with 95 % bootstrap intervals (2,000 resamples of the
   prompts, seed 0), and the share with the same sign.

Writes bench/results/graph.json. Without trained transcoders (`--transcoders`, default
cached_features/transcoders) it uses random stand-in transcoders of the same shape (said so in the results):
their speed figures are representative, their faithfulness is not.

    python bench/graph.py [--transcoders DIR] [--prompts 6]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from common import ROOT, write_results

# exactly 32 tokens for the default tokenizer (checked in main)
PROMPT = ("When Mary and John went to the busy corner store on a cold and rainy Tuesday afternoon in the middle "
          "of the long winter, John gave a bottle of milk to")  # fmt: skip


def bootstrap_ci(groups: list[tuple[list[float], list[float]]], stat, reps: int = 2000) -> list[float]:
    """95 % percentile interval of `stat(pred, meas)` resampling whole prompts (their interventions share a graph)."""
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(reps):
        pick = rng.integers(0, len(groups), len(groups))
        p = np.concatenate([groups[i][0] for i in pick])
        m = np.concatenate([groups[i][1] for i in pick])
        if len(p) > 2 and np.std(p) > 0 and np.std(m) > 0:
            vals.append(stat(p, m))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else [float("nan")] * 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transcoders", default=str(ROOT / "cached_features" / "transcoders"))
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--d-sae", type=int, default=1152, help="stand-in width when no transcoders exist")
    args = ap.parse_args()

    import torch
    from scipy.stats import pearsonr, spearmanr

    from saelab.circuits.tasks import builtin_task
    from saelab.graphs.attribution import GraphConfig
    from saelab.graphs.graph import attribution_graph
    from saelab.graphs.interventions import Change, measure, predict
    from saelab.graphs.linearised import clean_state, replacement_preacts
    from saelab.graphs.transcoders import load_transcoder_set, random_transcoder_set
    from saelab.models import load_model

    handle = load_model()
    path = Path(args.transcoders)
    real = path.is_dir() and any(path.glob("layer_*"))
    tcs = load_transcoder_set(path) if real else random_transcoder_set(handle, args.d_sae, density=16 / args.d_sae)
    prompt = PROMPT
    if len(handle.tokenizer.encode(prompt, add_special_tokens=False)) != 32:
        raise SystemExit("the bench prompt must be exactly 32 tokens for this tokenizer")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    graph = attribution_graph(handle, tcs, prompt, GraphConfig())
    build_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    n_rows = graph.stats["expanded_features"] + sum(n["kind"] == "logit" for n in graph.nodes)
    print(f"graph: {build_s:.1f} s, {graph.stats}", flush=True)

    # patching baseline: one feature row's sources re-run one at a time in the replacement model
    clean = clean_state(handle, tcs, torch.tensor(graph.tokens))
    last = len(graph.tokens) - 1  # a row at the last position has the most sources (every earlier position)
    target = max((n for n in graph.nodes if n["kind"] == "feature" and n["layer"] > 2 and n["pos"] == last),
                 key=lambda n: n["influence"], default=None) or max(
        (n for n in graph.nodes if n["kind"] == "feature" and n["layer"] > 2), key=lambda n: n["influence"])  # fmt: skip
    sources = [(layer, p, f) for layer in tcs.layers if layer < target["layer"]
               for p, f in zip(*clean.acts[layer][: target["pos"] + 1].nonzero(as_tuple=True))]  # fmt: skip
    t1 = time.perf_counter()
    for layer, p, f in sources[:16]:
        acts = {k: v.clone() for k, v in clean.acts.items()}
        acts[layer][p, f] *= 1.5
        replacement_preacts(handle, tcs, clean, target["layer"], acts)
    patch_per_source = (time.perf_counter() - t1) / min(16, len(sources))
    patch_row_s = patch_per_source * len(sources)
    backward_row_s = build_s / max(n_rows, 1)

    # faithfulness
    pred, meas, tasks, groups = [], [], {}, []
    for task_name in ("ioi", "greater-than"):
        task = builtin_task(task_name, n=args.prompts, seed=0)
        tp, tm = [], []
        for pair in task.pairs:
            g = attribution_graph(handle, tcs, pair.clean, GraphConfig(max_feature_nodes=256))
            answer = handle.tokenizer.encode(pair.correct[0], add_special_tokens=False)[0]
            if answer not in {n["token"] for n in g.nodes if n["kind"] == "logit"}:
                continue
            feats = sorted((n for n in g.nodes if n["kind"] == "feature"), key=lambda n: -n["influence"])[:8]
            gp, gm = [], []
            for n in feats:
                ch = [Change(n["layer"], n["pos"], n["latent"], 0.0)]
                gp.append(predict(g, ch)[answer])
                gm.append(measure(handle, tcs, g, ch)[answer])
            tp += gp
            tm += gm
            groups.append((gp, gm))
        tasks[task_name] = {"pairs": len(task.pairs), "interventions": len(tp),
                            "pearson": float(pearsonr(tp, tm)[0]) if len(tp) > 2 else float("nan"),
                            "sign_agreement": float(np.mean(np.sign(tp) == np.sign(tm))) if tp else float("nan")}  # fmt: skip
        pred += tp
        meas += tm
        print(task_name, tasks[task_name], flush=True)
    figures = {
        "graph_s": build_s,
        "prompt_tokens": len(graph.tokens),
        "peak_rss_gb": rss1,
        "rss_before_graph_gb": rss0,
        "active_features": graph.stats["active_features"],
        "kept_features": graph.stats["kept_features"],
        "kept_edges": graph.stats["kept_edges"],
        "replacement_score": graph.scores["replacement_score"],
        "completeness_score": graph.scores["completeness_score"],
        "backward_row_s": backward_row_s,
        "patching_row_s_extrapolated": patch_row_s,
        "faithfulness_pearson": float(pearsonr(pred, meas)[0]) if len(pred) > 2 else float("nan"),
        "faithfulness_spearman": float(spearmanr(pred, meas)[0]) if len(pred) > 2 else float("nan"),
        "faithfulness_pearson_ci95": bootstrap_ci(groups, lambda p, m: pearsonr(p, m)[0]),
        "faithfulness_spearman_ci95": bootstrap_ci(groups, lambda p, m: spearmanr(p, m)[0]),
        "faithfulness_sign_agreement": float(np.mean(np.sign(pred) == np.sign(meas))) if pred else float("nan"),
        "faithfulness_interventions": len(pred),
    }
    ratios = {"graph_s_over_60s_bar": build_s / 60.0, "patching_row_over_backward_row": patch_row_s / backward_row_s}
    write_results(
        "graph",
        figures,
        ratios,
        notes=[
            "Transcoders: "
            + (
                f"{path} (trained)"
                if real
                else f"RANDOM stand-ins (d_sae {args.d_sae}, ~16 active per "
                "token): speed figures are representative, faithfulness and scores are NOT."
            ),  # fmt: skip
            f"Prompt ({len(graph.tokens)} tokens): {prompt!r}; GraphConfig defaults (512 features with rows, batch 64).",
            f"Patching baseline: {min(16, len(sources))} of {len(sources)} sources of feature {target['id']} re-run "
            "one at a time in the replacement model, scaled to all of them.",
            "Faithfulness: top 8 features by influence per prompt, ablated one at a time; predicted = linear "
            "propagation over the pruned graph; measured = the real model with the decoder change added.",
            "peak_rss_gb is the process's ru_maxrss (model load included).",
        ],
        config={"tasks": tasks, "transcoders": str(path) if real else "random", "graph_stats": graph.stats},
    )


if __name__ == "__main__":
    main()
