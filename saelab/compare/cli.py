"""`saelab compare`: compare SAEs of one model — core metrics side by side and decoder-cosine feature matching.

    saelab compare runs/sae-a runs/sae-b --out runs/compare-ab
    saelab compare runs/sae-a runs/sae-b runs/sae-c --threshold 0.8
With more than two SAEs, each SAE after the first is matched against the first. Metrics come from each folder's
eval.json (`saelab eval`); labels and densities from its dashboards (`saelab dashboards`) when built.
SAEs of different models or activation widths are refused.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def cmd_compare(args: argparse.Namespace) -> int:
    from saelab.compare.run import compare_saes
    from saelab.reports.compare import export_result, summary_rows

    result = compare_saes(args.saes, model=args.model, threshold=args.threshold, correlation_tokens=args.correlation)
    for note in result.notes:
        print(f"note: {note}")
    print("Core metrics (eval.json):")
    for row in result.metrics.table_rows():
        print("  " + " · ".join(f"{k}: {_fmt(v)}" for k, v in row.items()))
    for note in result.metrics.notes:
        print(f"note: {note}")
    print(f"Feature matching by decoder cosine ({result.pairing}):")
    for row, m in zip(summary_rows(result), result.matches, strict=True):
        print("  " + " · ".join(f"{k}: {_fmt(v)}" for k, v in row.items()) + f" · {m.seconds:.2f}s")
        for note in m.notes:
            print(f"  note: {note}")
    if args.out:
        written = export_result(result, Path(args.out))
        print(f"Wrote {', '.join(str(p) for p in written.values())}")
    return 0


def register(sub) -> None:
    from saelab.compare.matching import DEFAULT_THRESHOLD

    p = sub.add_parser("compare", help="Compare SAEs of one model: metrics side by side, feature matching, splits",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("saes", nargs="+", metavar="SAE", help="SAE folders (two or more)")
    p.add_argument("--model", help="model to check the SAEs against (default: no model is loaded)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="cosine for 'matched' and for feature splits (default %(default)s)")  # fmt: skip
    p.add_argument("--correlation", type=int, default=0, metavar="TOKENS",
                   help="also correlate the matched pairs' activations on this many held-out tokens (needs --model)")  # fmt: skip
    p.add_argument("--out", help="export folder: report.html, result.json, pairs CSVs")
    p.set_defaults(func=cmd_compare)
