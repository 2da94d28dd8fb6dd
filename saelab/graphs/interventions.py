"""Intervening on a graph's features: what the graph predicts, and what the real model does (issue 19).

A change sets feature (layer L, position p, latent f) from its activation a to a new value v (0 = ablate;
c·a = steer by c). Prediction (`predict`): linear propagation along the graph's kept edges in layer order —
a source's relative change r_s = (v − a)/a scales every edge out of it (A[t, s] is the effect at activation a),
so Δpre_t = Σ_s A[t, s]·r_s, and a downstream feature passes on r_t = Δpre_t / a_t (JumpReLU's linear
region); the target logits move by Δ_l = Σ_s A[l, s]·r_s. Measurement (`measure`): the REAL model (attention,
norms and later MLPs all live) with (v − a)·W_dec[f] added to `blocks.L.hook_mlp_out` at position p, through the
hooks gate; Δ of each target logit, demeaned as in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saelab.errors import BadInputError
from saelab.graphs.transcoders import TranscoderSet, hook_out
from saelab.hooks import run_with_hooks


@dataclass
class Change:
    layer: int
    pos: int
    latent: int
    value: float  # the new activation


def _demeaned(logits: torch.Tensor, tokens: list[int]) -> dict[int, float]:
    last = logits[-1].float()
    return {t: float(last[t] - last.mean()) for t in tokens}


def measure(handle, tcs: TranscoderSet, graph, changes: list[Change]) -> dict[int, float]:
    """Δ demeaned logit of each of the graph's logit tokens when the real model runs with `changes`."""
    feats = {n["id"]: n for n in graph.nodes if n["kind"] == "feature"}
    by_layer: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for c in changes:
        node = feats.get(f"{c.layer}_{c.latent}_{c.pos}")
        if node is None:
            raise BadInputError(f"Feature {c.layer}_{c.latent}_{c.pos} is not a node of this graph.")
        delta = (c.value - node["activation"]) * tcs[c.layer].W_dec[c.latent]
        by_layer.setdefault(c.layer, []).append((c.pos, delta))

    def add(x, hook, items):
        x = x.clone()
        for pos, delta in items:
            x[:, pos] += delta.to(x.dtype)
        return x

    tokens = torch.tensor(graph.tokens)[None]
    targets = [n["token"] for n in graph.nodes if n["kind"] == "logit"]
    base = _demeaned(run_with_hooks(handle, tokens, [], return_type="logits")[0], targets)
    hooks = [(hook_out(layer), lambda x, hook, items=items: add(x, hook, items)) for layer, items in by_layer.items()]
    after = _demeaned(run_with_hooks(handle, tokens, hooks, return_type="logits")[0], targets)
    return {t: after[t] - base[t] for t in targets}


def predict(graph, changes: list[Change]) -> dict[int, float]:
    """Δ demeaned logit of each logit token predicted by linear propagation over the graph (module docstring)."""
    nodes = {n["id"]: n for n in graph.nodes}
    rel: dict[str, float] = {}
    for c in changes:
        nid = f"{c.layer}_{c.latent}_{c.pos}"
        if nid not in nodes or not nodes[nid]["activation"]:
            raise BadInputError(f"Feature {nid} is not an active node of this graph.")
        rel[nid] = (c.value - nodes[nid]["activation"]) / nodes[nid]["activation"]
    incoming: dict[str, list[tuple[str, float]]] = {}
    for e in graph.edges:
        incoming.setdefault(e["target"], []).append((e["source"], e["weight"]))
    order = sorted((n for n in graph.nodes if n["kind"] == "feature"), key=lambda n: (n["layer"], n["pos"]))
    for n in order:
        if n["id"] in rel:
            continue
        d = sum(w * rel.get(s, 0.0) for s, w in incoming.get(n["id"], []))
        if d and n["activation"]:
            rel[n["id"]] = d / n["activation"]
    out = {}
    for n in graph.nodes:
        if n["kind"] == "logit":
            out[n["token"]] = sum(w * rel.get(s, 0.0) for s, w in incoming.get(n["id"], []))
    return out


__all__ = ["Change", "measure", "predict"]
