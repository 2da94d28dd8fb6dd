"""The pruned attribution graph of one prompt (`AttributionGraph`): nodes, edges, scores, and its exports.

`attribution_graph(handle, tcs, prompt)` builds the raw graph (`attribution.build_raw_graph`), prunes it
(`prune.prune`) and keeps, per node: kind (token / feature / error / logit), layer, position, latent, activation,
influence on the target logits, and a label when the transcoder folder has dashboards. Scores (`prune.scores`) are
given for the full and the pruned graph. Exports:
  * `to_neuronpedia()`: the JSON layout Neuronpedia's graph viewer (and circuit-tracer's local server) reads:
    {metadata, qParams, nodes, links}; node ids "<layer>_<latent>_<pos>" for features, "<layer>_-1_<pos>" for
    errors, "E_<token id>_<pos>" for tokens, "<n_layers + 1>_<token id>_<pos>" for logits;
  * `saelab.reports.graphs.graph_html(graph)`: one self-contained HTML file (figure, scores, node table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from saelab.graphs import prune as pr
from saelab.graphs.attribution import GraphConfig, RawGraph, build_raw_graph
from saelab.typed_json import from_checked_dict

KINDS = ("feature", "error", "token", "logit")


@dataclass
class AttributionGraph:
    """A pruned graph. Nodes are dicts {id, kind, layer, pos, latent, activation, influence, label, token, prob};
    edges are {source, target, weight} (weight = direct effect A[target, source], see `attribution`)."""

    model: str
    prompt: str
    tokens: list[int]
    token_strs: list[str]
    n_layers: int
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    scores: dict[str, float]
    config: dict[str, Any]
    stats: dict[str, Any]
    transcoders: str = ""
    formulas: dict[str, str] = field(default_factory=lambda: dict(pr.FORMULAS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> AttributionGraph:
        return from_checked_dict(cls, data)

    def node(self, node_id: str) -> dict[str, Any]:
        for n in self.nodes:
            if n["id"] == node_id:
                return n
        raise KeyError(node_id)

    def to_neuronpedia(self, slug: str = "saelab-graph") -> dict[str, Any]:
        """The graph in the layout Neuronpedia's graph viewer reads (module docstring)."""
        nodes = []
        for n in self.nodes:
            kind = n["kind"]
            base = {"node_id": n["id"], "ctx_idx": n["pos"], "run_idx": 0, "reverse_ctx_idx": 0,
                    "influence": n.get("influence"), "activation": n.get("activation"), "clerp": n.get("label") or ""}  # fmt: skip
            if kind == "feature":
                lay, lat = n["layer"], n["latent"]
                pair = (lay + lat) * (lay + lat + 1) // 2 + lat  # a unique integer per (layer, latent)
                base.update(feature=pair, layer=str(lay), feature_type="cross layer transcoder",
                            jsNodeId=f"{lay}_{lat}-0")  # fmt: skip
            elif kind == "error":
                base.update(feature=-1, layer=str(n["layer"]), feature_type="mlp reconstruction error",
                            jsNodeId=f"{n['layer']}_-1-{n['pos']}")  # fmt: skip
            elif kind == "token":
                base.update(feature=n["pos"], layer="E", feature_type="embedding",
                            jsNodeId=f"E_{n['token']}-{n['pos']}")  # fmt: skip
            else:
                base.update(feature=n["token"], layer=str(self.n_layers + 1), feature_type="logit",
                            token_prob=n["prob"], is_target_logit=n.get("is_target", False),
                            jsNodeId=f"L_{n['token']}-{n['pos']}",
                            clerp=f'Output "{n.get("token_str", "")}" (p={n["prob"]:.3f})')  # fmt: skip
            nodes.append(base)
        return {
            "metadata": {
                "slug": slug,
                "scan": self.model,
                "transcoder_list": [self.transcoders] if self.transcoders else [],
                "prompt_tokens": self.token_strs,
                "prompt": self.prompt,
                "node_threshold": self.config.get("node_threshold"),
                "schema_version": 1,
                "info": {"generator": "saelab", "scores": self.scores},
            },  # fmt: skip
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes,
            "links": [{"source": e["source"], "target": e["target"], "weight": e["weight"]} for e in self.edges],
        }


def _node_ids(raw: RawGraph, n_layers: int) -> list[str]:
    ids = [f"{int(l_)}_{int(f)}_{int(p)}" for l_, p, f in raw.features]
    ids += [f"{int(l_)}_-1_{int(p)}" for l_, p in raw.errors]
    ids += [f"E_{int(t)}_{p}" for p, t in enumerate(raw.tokens)]
    last = len(raw.tokens) - 1
    ids += [f"{n_layers + 1}_{int(t)}_{last}" for t in raw.logit_tokens]
    return ids


def from_raw(raw: RawGraph, *, model: str, prompt: str, token_strs: list[str], n_layers: int, cfg: GraphConfig,
             labels: dict[tuple[int, int], str] | None = None, decode=None, transcoders: str = "") -> AttributionGraph:  # fmt: skip
    """Prune `raw` with `cfg`'s thresholds and describe the kept nodes and edges."""
    w = raw.logit_weights()
    f0, e0, t0, l0 = raw.offsets()
    keep, edges, infl = pr.prune(raw.rows, raw.row_nodes, w, raw.n_features, cfg.node_threshold, cfg.edge_threshold)
    full = pr.scores(raw.rows, raw.row_nodes, w, slice(e0, t0), slice(t0, l0))
    sub_rows = np.where(keep[raw.row_nodes][:, None] & keep[None, :], raw.rows, 0.0)
    pruned = pr.scores(sub_rows, raw.row_nodes, w, slice(e0, t0), slice(t0, l0))
    ids = _node_ids(raw, n_layers)
    labels = labels or {}
    nodes = []
    last = len(raw.tokens) - 1
    for i in np.flatnonzero(keep):
        i = int(i)
        if i < e0:
            layer, pos, lat = (int(v) for v in raw.features[i])
            node = {"kind": "feature", "layer": layer, "pos": pos, "latent": lat, "activation": float(raw.feature_acts[i]),
                    "label": labels.get((layer, lat), "")}  # fmt: skip
        elif i < t0:
            layer, pos = (int(v) for v in raw.errors[i - e0])
            node = {
                "kind": "error",
                "layer": layer,
                "pos": pos,
                "latent": None,
                "activation": float(raw.error_norms[i - e0]),
            }
        elif i < l0:
            pos = i - t0
            node = {"kind": "token", "layer": -1, "pos": pos, "latent": None, "activation": None,
                    "token": int(raw.tokens[pos]), "label": token_strs[pos]}  # fmt: skip
        else:
            k = i - l0
            tok = int(raw.logit_tokens[k])
            node = {"kind": "logit", "layer": n_layers, "pos": last, "latent": None, "activation": None, "token": tok,
                    "prob": float(raw.logit_probs[k]), "is_target": k == 0,
                    "token_str": decode(tok) if decode else str(tok), "label": decode(tok) if decode else str(tok)}  # fmt: skip
        nodes.append({"id": ids[i], "influence": float(infl[i] + w[i]), **node})
    edge_list = []
    for r, c in zip(*np.nonzero(edges)):
        t, s = int(raw.row_nodes[r]), int(c)
        edge_list.append({"source": ids[s], "target": ids[t], "weight": float(raw.rows[r, c])})
    scores = {**full, **{f"pruned_{k}": v for k, v in pruned.items()}}
    stats = {"active_features": raw.n_features, "expanded_features": int(len(raw.expanded)),
             "kept_features": int(keep[:e0].sum()), "kept_edges": len(edge_list), "seconds": round(raw.seconds, 2),
             "error_nodes": int(t0 - e0)}  # fmt: skip
    return AttributionGraph(model, prompt, [int(t) for t in raw.tokens], token_strs, n_layers, nodes, edge_list,
                            {k: float(v) for k, v in scores.items()},
                            cfg.to_dict(), stats, transcoders)  # fmt: skip


def attribution_graph(handle, tcs, prompt: str, cfg: GraphConfig | None = None, progress=None,
                      labels: dict[tuple[int, int], str] | None = None) -> AttributionGraph:  # fmt: skip
    """Tokenise `prompt` (no special tokens added), build, prune and describe its graph."""
    import torch

    from saelab.errors import BadInputError

    cfg = cfg or GraphConfig()
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInputError("Type a prompt to trace.")
    ids = handle.tokenizer.encode(prompt, add_special_tokens=False)
    raw = build_raw_graph(handle, tcs, torch.tensor(ids), cfg, progress)
    strs = [handle.tokenizer.decode([t]) for t in ids]
    return from_raw(raw, model=handle.name, prompt=prompt, token_strs=strs, n_layers=handle.n_layers, cfg=cfg,
                    labels=labels, decode=lambda t: handle.tokenizer.decode([t]),
                    transcoders=str(tcs.path or ""))  # fmt: skip


__all__ = ["KINDS", "AttributionGraph", "attribution_graph", "from_raw"]
