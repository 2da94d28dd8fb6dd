"""`saelab transcoders` (train and evaluate a skip-transcoder per layer) and `saelab graph` (a prompt's
attribution graph, exported as JSON for Neuronpedia's viewer and as an HTML report). Issue 19.

    saelab transcoders --out cached_features/transcoders --d-sae 1152 --k 16 --tokens 2000000
    saelab graph --transcoders cached_features/transcoders --prompt "When Mary and John went to the store, John gave a drink to" \
                 --out runs/graph.json --html runs/graph.html
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _bar(label: str):
    def report(done: int, total: int, *rest) -> None:
        extra = f" {rest[0]}" if rest and rest[0] else ""
        sys.stderr.write(f"\r{label}: {done:,}/{total:,}{extra[:120]}")
        sys.stderr.flush()

    return report


def cmd_transcoders(args: argparse.Namespace) -> int:
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.graphs.train_transcoders import TranscoderTrainConfig, evaluate_layers, train_transcoders
    from saelab.models import load_model
    from saelab.storage import read_json, write_json

    handle = load_model(args.model)
    cfg = TranscoderTrainConfig(d_sae=args.d_sae, k=args.k, n_tokens=args.tokens, rows_per_step=args.rows_per_step,
                                seq_len=args.seq_len, lr=args.lr, seed=args.seed,
                                init_tokens=args.init_tokens)  # fmt: skip
    out = Path(args.out)
    tset = train_transcoders(handle, cfg, out, progress=_bar("transcoders (steps)"))
    sys.stderr.write("\n")
    held = build_corpus(
        handle.tokenizer, CorpusConfig(seq_len=args.seq_len, n_tokens=args.eval_tokens, split="heldout")
    )
    rows = evaluate_layers(handle, tset, held.tokens, cfg.massive_factor)
    meta = read_json(out / "transcoders.json")
    write_json(out / "transcoders.json", {**meta, "evaluation": {"rows": rows, "tokens": int(held.tokens.numel()),
                                                                 "split": "heldout"}})  # fmt: skip
    print("layer  NMSE    L0     dead   massive  CE-loss score (MLP replaced)")
    for r in rows:
        print(f"{r['layer']:>5}  {r['nmse']:.3f}  {r['l0']:5.1f}  {r['dead_fraction']:.3f}  "
              f"{r['massive_fraction']:.4f}   {r['ce_loss_score']:.3f}")  # fmt: skip
    print(f"wrote {out}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from saelab.graphs.attribution import GraphConfig
    from saelab.graphs.graph import attribution_graph
    from saelab.graphs.transcoders import load_transcoder_set
    from saelab.models import load_model
    from saelab.reports.graphs import graph_html
    from saelab.storage import write_json

    handle = load_model(args.model)
    tcs = load_transcoder_set(args.transcoders)
    cfg = GraphConfig(max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size,
                      node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)  # fmt: skip
    graph = attribution_graph(handle, tcs, args.prompt, cfg, progress=_bar("graph rows"))
    sys.stderr.write("\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, graph.to_neuronpedia(slug=out.stem))
    write_json(out.with_suffix(".saelab.json"), graph.to_dict())
    if args.html:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.html).with_suffix(".tmp")
        tmp.write_text(graph_html(graph), encoding="utf-8")
        tmp.replace(args.html)
    s = graph.scores
    print(json.dumps({"seconds": graph.stats["seconds"], **graph.stats, **{k: round(v, 4) for k, v in s.items()}}))
    print(
        f"wrote {out} (Neuronpedia layout) and {out.with_suffix('.saelab.json')}"
        + (f", {args.html}" if args.html else "")
    )
    return 0


def register(sub) -> None:
    from saelab.defaults import DEFAULT_MODEL

    t = sub.add_parser("transcoders", help="train a skip-transcoder for every layer (attribution graphs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    t.add_argument("--model", default=DEFAULT_MODEL)
    t.add_argument("--out", required=True, help="folder of layer_<L>/ SAE-Lens transcoder folders")
    t.add_argument("--d-sae", type=int, default=1152)
    t.add_argument("--k", type=int, default=16, help="BatchTopK: active latents per token on average")
    t.add_argument("--tokens", type=int, default=2_000_000)
    t.add_argument("--rows-per-step", type=int, default=32)
    t.add_argument("--seq-len", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-tokens", type=int, default=65_536, help="tokens the skip path's least-squares start uses")
    t.add_argument("--eval-tokens", type=int, default=16_384, help="held-out tokens for the per-layer evaluation")
    t.set_defaults(func=cmd_transcoders)

    g = sub.add_parser("graph", help="a prompt's attribution graph through transcoder features",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--transcoders", required=True, help="folder written by `saelab transcoders`")
    g.add_argument("--prompt", required=True, help="at most 64 tokens")
    g.add_argument("--out", default="runs/graph.json", help="graph JSON in Neuronpedia's layout")
    g.add_argument("--html", help="also write a self-contained HTML report")
    g.add_argument("--max-feature-nodes", type=int, default=512)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--node-threshold", type=float, default=0.8)
    g.add_argument("--edge-threshold", type=float, default=0.98)
    g.set_defaults(func=cmd_graph)
