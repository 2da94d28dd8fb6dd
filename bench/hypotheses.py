"""HypotheSAEs honest bar: significant hypotheses (SAE vs bag-of-words) and held-out AUC / R² on built-in sets.

Runs the offline pipeline (MiniLM embeddings, Top-K SAE, LASSO to 20, keyword PROXY rules, Bonferroni) on
each set's stated subsample with seed 0, and writes bench/results/hypotheses.json plus the per-set summary.
Usage: nice -n 10 .venv/bin/python bench/hypotheses.py [--sets name:max_texts ...]
"""

from __future__ import annotations

import argparse
import time

from common import RESULTS, write_results  # noqa: E402  (bench/common.py puts the repo on sys.path)

from saelab.hypotheses import HypothesisConfig, run_hypotheses
from saelab.storage import write_json
from saelab.textsets import from_builtin

DEFAULT_SETS = ["26_headline_isfrontpage:5000", "25_headline_year:5000", "111_yelp_data:3000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", nargs="*", default=DEFAULT_SETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="hypotheses", help="results file name (bench/results/<name>.json)")
    args = parser.parse_args()
    figures, ratios, details = {}, {}, {}
    for item in args.sets:
        name, _, cap = item.partition(":")
        ts = from_builtin(name, seed=args.seed)
        cfg = HypothesisConfig(seed=args.seed, max_texts=int(cap) if cap else None)
        t0 = time.perf_counter()
        res = run_hypotheses(cfg, ts)
        secs = time.perf_counter() - t0
        s, b = res.sae_method, res.baseline
        fit = "auc" if res.binary else "r2"
        figures[f"{name}.sae_significant"] = s.n_significant
        figures[f"{name}.bow_significant"] = b.n_significant
        figures[f"{name}.sae_heldout_{fit}"] = getattr(s, fit)
        figures[f"{name}.bow_heldout_{fit}"] = getattr(b, fit)
        figures[f"{name}.sae_redundancy_mean_abs_phi"] = s.redundancy
        figures[f"{name}.bow_redundancy_mean_abs_phi"] = b.redundancy
        ref = res.latent_reference
        figures[f"{name}.latents_significant"] = ref["n_significant"]
        figures[f"{name}.latents_heldout_{fit}"] = ref[fit]
        figures[f"{name}.sae_mean_fidelity_f1"] = ref["mean_fidelity_f1"]
        figures[f"{name}.n_texts"] = res.data["n_texts"]
        figures[f"{name}.n_test"] = s.n_test
        figures[f"{name}.seconds"] = secs
        ratios[f"{name}.sae_over_bow_significant"] = s.n_significant / max(b.n_significant, 1)
        details[name] = {
            "sae": s.summary(),
            "bow": b.summary(),
            "sae_size": [res.sae["m"], res.sae["k"]],
            "latent_reference": ref,
            "sae_val_nmse": res.sae["val_nmse"],
            "sae_dead_fraction": res.sae["dead_fraction"],
            "seconds": res.seconds,
            "hypotheses": [
                {"label": h.label, "coef": h.coefficient, "p": h.p_value, "significant": h.significant}
                for h in s.hypotheses
            ],
            "baseline": [
                {"label": h.label, "coef": h.coefficient, "p": h.p_value, "significant": h.significant}
                for h in b.hypotheses
            ],
            "notes": res.notes,
        }
        print(name, "SAE:", s.summary(), "| BoW:", b.summary(), "| latents:", ref, f"| {secs:.0f} s", flush=True)
    notes = [
        "Offline pipeline: all-MiniLM-L6-v2 embeddings, Top-K SAE by the paper's size rule, LASSO bisected to 20, "
        "keyword PROXY interpretation (no LLM), one OLS/Logit on held-out texts, Bonferroni p < 0.1/20.",
        f"Split 60/20/20, seed {args.seed}; subsample sizes in the set names (name:max_texts).",
    ]
    write_results(args.name, figures, ratios, notes, config={"sets": args.sets, "seed": args.seed})
    from saelab.storage import jsonable

    write_json(RESULTS / f"{args.name}_details.json", jsonable(details))


if __name__ == "__main__":
    main()
