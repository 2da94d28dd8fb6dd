"""The SST-2 probing table of the README and docs/probing.md, from one run (issue 17 item 5).

Every row is one `saelab probe` configuration on the same seeded split of `92_glue_sst2` (2,000 train / 872 test
texts, layer 12 of the default model, the shipped SAE), run through `run_probe` as the CLI does:

    saelab probe --dataset 92_glue_sst2 --n-train 2000 --n-test 872 --seed 0 --source S [--pooling P]
                 [--binarise T] [--tune-C]

Writes bench/results/probe_sst2.json: per row test macro-F1 with its 95 % bootstrap CI, accuracy, AUROC, CV
macro-F1, sparse-probe and learning-curve points, the C chosen by CV (with --tune-C) and the time taken;
`ratios` compares the best SAE row with the best dense hidden-state row measured in the same run.

    python bench/probe_sst2.py [--quick]      # --quick: 400 / 200 texts, to check the script
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, write_results

ROWS = [  # (row name, config overrides)
    ("sae_topn_sum", {"source": "sae", "pooling": "topn-sum"}),
    ("sae_topn_sum_bin0", {"source": "sae", "pooling": "topn-sum", "binarise": 0.0}),
    ("sae_topn_sum_bin1", {"source": "sae", "pooling": "topn-sum", "binarise": 1.0}),
    ("sae_mean", {"source": "sae", "pooling": "mean"}),
    ("hidden_last", {"source": "hidden", "pooling": "last"}),
    ("hidden_mean", {"source": "hidden", "pooling": "mean"}),
    ("tfidf", {"source": "tfidf"}),
    ("sae_topn_sum_tuneC", {"source": "sae", "pooling": "topn-sum", "tune_C": True}),
    ("sae_mean_tuneC", {"source": "sae", "pooling": "mean", "tune_C": True}),
    ("hidden_last_tuneC", {"source": "hidden", "pooling": "last", "tune_C": True}),
    ("hidden_mean_tuneC", {"source": "hidden", "pooling": "mean", "tune_C": True}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", help="row names to run, merged into the existing results (default: all)")
    args = ap.parse_args()
    from saelab.probing.run import ProbeConfig, load_textset, run_probe

    n_train, n_test = (400, 200) if args.quick else (2000, 872)
    base = {"dataset": "92_glue_sst2", "n_train": n_train, "n_test": n_test, "seed": 0, "layer": 12,
            "max_tokens": 128, "classifier": "logistic-l2", "C": 1.0, "n_boot": 1000}  # fmt: skip
    figures: dict = {}
    rows = {}
    name_out = "probe_sst2" + ("_quick" if args.quick else "")
    old = RESULTS / f"{name_out}.json"
    if args.only and old.is_file():  # re-run some rows: keep the others
        prev = json.loads(old.read_text())
        figures, rows = prev["figures"], prev["config"]["details"]
    textset = None
    for name, over in ROWS:
        if args.only and name not in args.only:
            continue
        cfg = ProbeConfig(**{**base, **over})
        textset = textset or load_textset(cfg)
        t0 = time.perf_counter()
        report = run_probe(cfg, textset=textset)
        wall = time.perf_counter() - t0
        m, ci = report.metrics, report.ci
        row = {
            "config": over,
            "n_features": report.features["n_features"],
            "macro_f1": m["macro_f1"],
            "macro_f1_ci95": ci.get("macro_f1"),
            "accuracy": m.get("accuracy"),
            "auroc": m.get("auroc"),
            "cv_macro_f1": [report.cv.mean, float(np.std(report.cv.scores, ddof=1))],  # mean, sample std
            "cv_scores": list(report.cv.scores),
            "sparse": report.sparse,
            "learning": report.learning,
            "C_chosen": report.tuning.best_C if report.tuning is not None else cfg.C,
            "seconds": round(wall, 1),
            "features_s": report.timings.get("features_s"),
        }
        rows[name] = row
        figures[f"{name}_macro_f1"] = float(m["macro_f1"])
        lo, hi = ci.get("macro_f1", [float("nan")] * 2)
        figures[f"{name}_macro_f1_lo"], figures[f"{name}_macro_f1_hi"] = float(lo), float(hi)
        print(f"{name}: macro-F1 {m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] C={row['C_chosen']} ({wall:.0f} s)",
              flush=True)  # fmt: skip
    ratios = {}
    sae = [v["macro_f1"] for k, v in rows.items() if k.startswith("sae")]
    dense = [v["macro_f1"] for k, v in rows.items() if k.startswith("hidden")]
    if sae and dense:
        ratios["best_sae_over_best_hidden_macro_f1"] = max(sae) / max(dense)
    split = {"classes": report.data.get("class_counts")} if rows else {}
    write_results(
        name_out,
        figures,
        ratios,
        notes=[
            f"92_glue_sst2, seeded stratified split (seed 0), {n_train} train / {n_test} test texts, the same texts "
            "for every row; layer 12 (blocks.12.hook_resid_post), shipped TopK SAE (d_sae 4,608, k 64) for sae rows.",
            "Probe: logistic L2, balanced, standardised features, C = 1 unless tune_C (C from 1e-5..10 by 5-fold CV "
            "on the training split); macro-F1 on the test split with a 95 % bootstrap CI (B = 1,000).",
            "One run on a shared 2-core CPU; times are wall seconds.",
            "cv_macro_f1 = [mean, sample std (ddof 1)] over the 5 folds of the training split. The first run "
            "(2026-12-04) stored the population std; it was converted by x sqrt(5/4), exact for 5 folds.",
        ],
        config={
            "base": base,
            "rows": {k: v["config"] for k, v in rows.items()},
            "split": split,
            "details": rows,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
