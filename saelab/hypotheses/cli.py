"""`saelab hypotheses`: generate and test hypotheses about what predicts a target, from the command line.

    saelab hypotheses --dataset 111_yelp_data --max-texts 2000
    saelab hypotheses --csv reviews.csv --text-col review --target-col stars --out runs/hyp-reviews
Writes report.html, result.json and hypotheses.csv into --out and prints both tables.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from saelab.errors import BadInputError
from saelab.progress import terminal_bar

log = logging.getLogger(__name__)


def cmd_hypotheses(args: argparse.Namespace) -> int:
    from saelab.hypotheses.run import HypothesisConfig, run_hypotheses
    from saelab.reports.hypotheses import export_result
    from saelab.textsets import from_builtin, from_csv

    if bool(args.dataset) == bool(args.csv):
        raise BadInputError("Give either --dataset NAME or --csv FILE (with --text-col and --target-col).")
    if args.csv:
        if not (args.text_col and args.target_col):
            raise BadInputError("--csv needs --text-col and --target-col.")
        textset = from_csv(Path(args.csv), text_col=args.text_col, target_col=args.target_col, kind=args.kind,
                           seed=args.seed)  # fmt: skip
        name = Path(args.csv).stem
    else:
        textset = from_builtin(args.dataset, seed=args.seed, kind=args.kind)
        name = args.dataset
    cfg = HypothesisConfig(
        n_hypotheses=args.n, selection=args.selection, embedding=args.embedding, lm_layer=args.layer,
        m=args.m, k=args.k, epochs=args.epochs, seed=args.seed, max_texts=args.max_texts,
        positive_class=args.positive_class, baseline=not args.no_baseline,
    )  # fmt: skip
    endpoint = None
    if args.llm_url:
        from saelab.features.llm import LLMEndpoint

        key = os.environ.get(args.llm_key_env) if args.llm_key_env else None
        endpoint = LLMEndpoint(args.llm_url, args.llm_model or "default", api_key=key, timeout=args.llm_timeout)
    with terminal_bar("Hypotheses", "%") as progress:
        result = run_hypotheses(cfg, textset, progress=progress, endpoint=endpoint)
    out = Path(args.out or f"runs/hypotheses-{name}")
    written = export_result(result, out)
    for note in result.notes:
        print(f"note: {note}")
    for method in (result.sae_method, result.baseline):
        if method is None:
            continue
        print(f"\n{'SAE' if method.method == 'sae' else 'Bag-of-words baseline'}: {method.summary()}")
        for h in method.hypotheses:
            star = "*" if h.significant else " "
            print(f" {star}{h.rank:>3} p={h.p_value:<9.3g} sep={h.separation:+.3f} prev={h.prevalence:.2f}  {h.label}")
    ref = result.latent_reference
    if ref:
        fit = f"AUC {ref['auc']:.3f}" if ref.get("auc") is not None else f"R² {ref['r2']:.3f}"
        print(
            f"\nReference: the latents themselves (fires: a > 0) as hypotheses: {ref['n_significant']}/{ref['n']} significant, "
            f"held-out {fit}; mean fidelity F1 {ref['mean_fidelity_f1']:.2f}"
        )
        from saelab.hypotheses.results import signal_kept

        print(signal_kept(result.sae_method, ref))
    print(f"\n* significant: p < 0.1/m (Bonferroni). Wrote {', '.join(str(p) for p in written.values())}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "hypotheses",
        help="HypotheSAEs offline: hypotheses about what predicts a target, tested on held-out texts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("data")
    src.add_argument("--dataset", help="a built-in sae-probes set, e.g. 111_yelp_data")
    src.add_argument("--csv", help="a CSV file with a text column and a target column")
    src.add_argument("--text-col")
    src.add_argument("--target-col")
    src.add_argument("--kind", default="auto", choices=["auto", "binary", "multiclass", "numeric"])
    src.add_argument("--positive-class", help="for >2 named classes: the class coded 1 (one vs rest)")
    src.add_argument("--max-texts", type=int, help="random subsample of this many texts (seeded)")
    p.add_argument("--n", type=int, default=20, help="hypotheses to select (default 20)")
    p.add_argument("--selection", default="lasso", choices=["lasso", "correlation"])
    p.add_argument("--embedding", default="minilm", choices=["minilm", "lm"])
    p.add_argument("--layer", type=int, default=12, help="residual layer for --embedding lm")
    p.add_argument("--m", type=int, help="SAE latents (default: rule of thumb)")
    p.add_argument("--k", type=int, help="SAE active latents (default: rule of thumb)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--out", help="output folder (default runs/hypotheses-<name>)")
    llm = p.add_argument_group("optional LLM (OpenAI-compatible); offline keyword PROXY otherwise")
    llm.add_argument("--llm-url", help="e.g. http://127.0.0.1:8080/v1")
    llm.add_argument("--llm-model")
    llm.add_argument("--llm-key-env", help="name of an environment variable holding the API key")
    llm.add_argument("--llm-timeout", type=float, default=20.0)
    p.set_defaults(func=cmd_hypotheses)
