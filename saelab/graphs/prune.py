"""Influence, pruning and the graph scores (issue 19), following the circuit-tracing method's definitions.

* Â = |A| with each row divided by its sum (a node's inputs as shares); the graph is acyclic, so the total
  influence of every node on weighted targets w is  w·(Â + Â² + Â³ + …)  (`influence`).
* Node pruning: features sorted by influence on the logits (weights = the logits' probabilities); the fewest
  whose cumulative influence reaches `node_threshold` of all features' are kept (tokens, errors, logits stay).
* Edge pruning: edge score = (influence of its target + the target's logit weight) × Â[t, s]; the highest
  edges up to `edge_threshold` of the total score are kept.
* replacement score = influence of the token nodes / influence of token + error nodes: the share of the
  end-to-end effect that reaches the logits from the input without passing through an error node;
  completeness score = Σ_t (influence_t + w_t) · (1 − Σ_{e error} Â[t, e]) / Σ_t (influence_t + w_t) over
  nodes with inputs: the share of each node's direct input explained by features and tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMULAS = {
    "influence": "Â = |A| row-normalised; influence = w·(Â + Â² + …), w = target logit probabilities",
    "replacement_score": "influence(token nodes) / influence(token + error nodes)",
    "completeness_score": "Σ_t (infl_t + w_t)(1 − Σ_errors Â[t, e]) / Σ_t (infl_t + w_t), over nodes with inputs",
    "node_pruning": "fewest features whose cumulative influence ≥ node_threshold × all features' influence",
    "edge_pruning": "edges by (infl_t + w_t)·Â[t, s], highest first, until edge_threshold of the total",
}


def normalised(A: np.ndarray) -> np.ndarray:
    absA = np.abs(A).astype(np.float64)
    s = absA.sum(1, keepdims=True)
    return np.divide(absA, s, out=np.zeros_like(absA), where=s > 0)


def influence(rows: np.ndarray, row_nodes: np.ndarray, weights: np.ndarray, max_steps: int = 1000) -> np.ndarray:
    """Total influence of every node on the targets weighted by `weights` (see the module docstring); the
    adjacency is given by its existing rows: A[row_nodes[i]] = rows[i] (other rows are zero)."""
    An = normalised(rows)
    r = np.asarray(weights, dtype=np.float64)
    total = np.zeros_like(r)
    for _ in range(max_steps):
        r = r[row_nodes] @ An
        if not r.any() or r.sum() < 1e-12:
            break
        total += r
    return total


def scores(rows: np.ndarray, row_nodes: np.ndarray, weights: np.ndarray, errors: slice,
           tokens: slice) -> dict[str, float]:  # fmt: skip
    An = normalised(rows)
    infl = influence(rows, row_nodes, weights)
    tok, err = float(infl[tokens].sum()), float(infl[errors].sum())
    has_in = An.sum(1) > 0
    mass = (infl + weights)[row_nodes][has_in]
    share = 1 - An[has_in][:, errors].sum(1)
    return {
        "replacement_score": tok / (tok + err) if tok + err > 0 else float("nan"),
        "completeness_score": float((mass * share).sum() / mass.sum()) if mass.sum() > 0 else float("nan"),
    }


def prune(rows: np.ndarray, row_nodes: np.ndarray, weights: np.ndarray, n_features: int, node_threshold: float,
          edge_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(kept node mask [N], edge mask over `rows` [R, N], node influence [N]) for the thresholds (module
    docstring)."""
    infl = influence(rows, row_nodes, weights)
    keep = np.ones(rows.shape[1], dtype=bool)
    f_infl = infl[:n_features]
    if n_features:
        order = np.argsort(-f_infl)
        cum = np.cumsum(f_infl[order])
        total = cum[-1] if len(cum) else 0.0
        n_keep = int(np.searchsorted(cum, node_threshold * total) + 1) if total > 0 else 0
        keep[:n_features] = False
        keep[order[:n_keep]] = True
    sub = np.where(keep[row_nodes][:, None] & keep[None, :], rows, 0.0)
    An = normalised(sub)
    edge_score = (infl + weights)[row_nodes][:, None] * An
    flat = edge_score.ravel()
    nz = np.flatnonzero(flat)
    edges = np.zeros_like(flat, dtype=bool)
    if len(nz):
        order = nz[np.argsort(-flat[nz])]
        cum = np.cumsum(flat[order])
        n_keep = int(np.searchsorted(cum, edge_threshold * cum[-1]) + 1)
        edges[order[:n_keep]] = True
    return keep, edges.reshape(rows.shape), infl


def describe() -> dict[str, Any]:
    return dict(FORMULAS)


__all__ = ["FORMULAS", "influence", "normalised", "prune", "scores"]
