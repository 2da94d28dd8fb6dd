"""`saelab probe`: run a probe and export its report; `saelab probe --rerun FOLDER` re-runs an export.

    saelab probe --dataset 92_glue_sst2 --source sae --pooling topn-sum --report out.html
    saelab probe --csv my.csv --text-col review --target-col stars --source tfidf --out runs/probe-stars
    saelab probe --rerun runs/probe-stars          # same config, same seeds → the same metrics

The export folder (default: beside `--report`, else `runs/probe-<dataset>-<source>`) holds report.html,
result.json, weights.safetensors and predictions.csv; `--report PATH` also copies the HTML to PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def _progress():
    state = {"phase": None}

    def report(phase: str, done: int, total: int) -> None:
        if phase != state["phase"]:
            if state["phase"] is not None:
                sys.stderr.write("\n")
            state["phase"] = phase
        sys.stderr.write(f"\r{phase}: {done:,}/{total:,}")
        sys.stderr.flush()

    return report


def _config(args: argparse.Namespace):
    from saelab.probing.run import ProbeConfig

    if args.csv is None and args.dataset is None:
        args.dataset = "92_glue_sst2"
    data = {
        "dataset": None if args.csv else args.dataset,
        "csv_path": args.csv,
        "text_col": args.text_col,
        "target_col": args.target_col,
        "kind": args.kind,
        "numeric_mode": args.numeric_mode,
        "max_rows": args.max_rows,
        "test_fraction": args.test_fraction,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "seed": args.seed,
        "source": args.source,
        "pooling": args.pooling,
        "topn": args.topn,
        "binarise": args.binarise,
        "layer": args.layer,
        "hook": args.hook,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "model": args.model,
        "sae_path": args.sae,
        "classifier": args.classifier,
        "C": args.C,
        "tune_C": args.tune_C,
        "k": args.k,
        "cv_folds": args.folds,
        "n_boot": args.n_boot,
        "learning_curve": not args.no_learning_curve,
        "ood_dataset": args.ood,
        "detection": args.detect or [],
    }
    return ProbeConfig(**data)


def cmd_pairs(args: argparse.Namespace) -> int:
    """Rank latents by paired contrast over two text columns of --csv."""
    from saelab.errors import BadInputError
    from saelab.probing.pairs import FORMULA, rank_pairs, read_pairs
    from saelab.probing.run import ProbeConfig, _label_lookup, load_resources

    if not args.csv:
        raise BadInputError("--pairs needs --csv FILE with the two text columns.")
    a, b, notes = read_pairs(args.csv, args.pairs[0], args.pairs[1], seed=args.seed)
    cfg = ProbeConfig(dataset=None, csv_path=args.csv, model=args.model, sae_path=args.sae, source="sae")
    handle, loaded = load_resources(cfg)
    pooling = args.pooling if args.pooling != "topn-sum" else "last"
    rows = rank_pairs(
        handle, loaded, a, b, labels=_label_lookup(cfg, None), pooling=pooling, max_tokens=args.max_tokens
    )
    for note in notes:
        print(f"note: {note}")
    print(f"{len(a):,} pairs · {FORMULA} · pooling {pooling}")
    for r in rows:
        print(f"{r['rank']:>3}  latent {r['latent']:>6}  Σ|Δ| {r['score']:10.3f}  {r['label'][:70]} (proxy label)")
    if args.out:
        from saelab.storage import write_json

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out) / "pairs.json", {"formula": FORMULA, "pooling": pooling, "n_pairs": len(a),
                                                     "notes": notes, "latents": rows})  # fmt: skip
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from saelab.probing.run import load_textset, run_probe
    from saelab.reports.probing import export, read_config

    if args.pairs:
        return cmd_pairs(args)

    cfg = read_config(args.rerun) if args.rerun else _config(args)
    textset = load_textset(cfg)
    report = run_probe(cfg, textset=textset, progress=_progress())
    sys.stderr.write("\n")
    if args.out:
        out = Path(args.out)
    elif args.rerun:
        out = Path(args.rerun if Path(args.rerun).is_dir() else Path(args.rerun).parent) / "rerun"
    elif args.report:
        out = Path(args.report).with_suffix("")
    else:
        out = Path(f"runs/probe-{cfg.dataset or Path(cfg.csv_path).stem}-{cfg.source}")
    paths = export(report, out, textset=textset if cfg.csv_path else None)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths["html"], args.report)
    key, value = report.headline
    ci = report.ci.get(key)
    ci_txt = f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    print(f"test {key} {value:.4f}{ci_txt} · {report.features['n_features']:,} {report.features['source']} features")
    print(json.dumps({k: v for k, v in report.metrics.items() if k != "confusion"}))
    print(f"export: {out}" + (f" · report: {args.report}" if args.report else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from saelab.probing.classify import CLASSIFIERS
    from saelab.probing.concept_detection import DETECTORS

    p = sub.add_parser("probe", help="probe SAE latents / hidden states / neurons / TF-IDF on a labelled text set")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="built-in sae-probes set, e.g. 92_glue_sst2 (default)")
    g.add_argument("--csv", help="a CSV file instead (choose --text-col and --target-col)")
    g.add_argument("--text-col", default="text")
    g.add_argument("--target-col", default="label")
    g.add_argument("--kind", default="auto", choices=["auto", "binary", "multiclass", "numeric"])
    g.add_argument("--numeric-mode", default="regress", choices=["regress", "median"],
                   help="numeric targets: ridge regression (R²) or two classes split at the training median")  # fmt: skip
    g.add_argument("--max-rows", type=int, default=20_000, help="read at most this many rows (seeded sample)")
    g.add_argument("--test-fraction", type=float, default=0.2)
    g.add_argument("--n-train", type=int, help="stratified subsample of the training split")
    g.add_argument("--n-test", type=int, help="stratified subsample of the test split")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--pairs", nargs=2, metavar=("COL_A", "COL_B"),
                   help="instead of a probe: rank SAE latents by Σ|Δ| between two text columns of --csv")  # fmt: skip
    g = p.add_argument_group("features")
    g.add_argument("--source", default="sae", help="sae, hidden, neurons, sav, tfidf, layer_sweep")
    g.add_argument("--pooling", default="topn-sum", choices=["max", "mean", "last", "topn-sum"])
    g.add_argument("--topn", type=int, default=20, help="MOSAIC top-n per token (topn-sum pooling)")
    g.add_argument("--binarise", type=float, help="binarisation threshold (feature = value > threshold)")
    g.add_argument("--layer", type=int, default=12)
    g.add_argument("--hook")
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--model", help="model spec (default: the default model)")
    g.add_argument("--sae", help="SAE folder (default: the shipped default SAE)")
    g = p.add_argument_group("probe")
    g.add_argument("--classifier", default="logistic-l2", choices=sorted(CLASSIFIERS))
    g.add_argument("-C", type=float, default=1.0, help="inverse regularisation strength")
    g.add_argument(
        "--tune-C", action="store_true", help="choose C from 1e-5…10 by CV on the training split (ignores -C)"
    )
    g.add_argument("--k", type=int, default=5, help="features kept by the topk classifier")
    g.add_argument("--folds", type=int, default=5)
    g.add_argument("--n-boot", type=int, default=1000)
    g.add_argument("--no-learning-curve", action="store_true")
    g.add_argument("--ood", help="another built-in set to score as out-of-distribution (MSP AUROC)")
    g.add_argument("--detect", nargs="*", choices=sorted(DETECTORS), help="AxBench detectors to run too")
    g = p.add_argument_group("output")
    g.add_argument("--report", help="also copy the HTML report to this path")
    g.add_argument("--out", help="export folder")
    g.add_argument("--rerun", help="re-run an export folder (or its result.json); other options are ignored")
    p.set_defaults(func=cmd_probe)
