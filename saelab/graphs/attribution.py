"""The attribution engine (issue 19): direct linear effects between the nodes of a prompt's replacement model.

Nodes: input tokens (their embeddings), active transcoder features (layer, position, latent), error nodes
(layer, position) and the target logits (the top tokens at the last position, demeaned: logit_t − mean logit).
In the replacement model (`saelab.graphs.linearised`: patterns and norm scales frozen, feature activations held
as constants) every target is a linear function of the sources' outputs, so the direct effect of source s on
target t is
    A[t, s] = a_s · (W_dec[s] · ∂x_t/∂mlp_out_{l_s, p_s})     (feature s at layer l_s, position p_s)
    A[t, e] = e_{l,p} · ∂x_t/∂mlp_out_{l,p}                    (error node)
    A[t, τ] = embed_p · ∂x_t/∂embed_p                          (token at position p)
where x_t is a feature's pre-activation n_L·W_enc[:, f] (bias excluded) or a demeaned logit. The gradients come
from ONE replacement forward of `batch_size` copies of the prompt with zero probes added at `hook_embed` and every
`hook_mlp_out`; each backward pass seeds row b with a different target, so one pass yields `batch_size` rows
(`torch.autograd.grad` on the retained graph; the model's parameters get no gradients).
Rows are computed for the logits first, then for features in order of their current estimated influence on
the logits (`prune.influence`), `batch_size` at a time, until `max_feature_nodes` features have rows. Only the
rows that exist are stored (`RawGraph.rows`: (max_feature_nodes + logits) × nodes), not the N × N matrix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.graphs.linearised import CleanState, clean_state, mlps_skipped, replacement_hooks
from saelab.graphs.transcoders import TranscoderSet
from saelab.hooks import gate
from saelab.models.handle import ModelHandle

MAX_PROMPT_TOKENS = 64


@dataclass(kw_only=True)
class GraphConfig(DictConfig):
    max_logits: int = 10  # target logits: top tokens at the last position ...
    logit_mass: float = 0.95  # ... until their probabilities sum to this
    max_feature_nodes: int = 512  # features given rows (inputs), most influential first
    batch_size: int = 64  # targets per backward pass
    node_threshold: float = 0.8  # pruning: keep features carrying this share of influence
    edge_threshold: float = 0.98  # pruning: keep edges carrying this share of edge influence

    def __post_init__(self) -> None:
        for name in ("max_logits", "max_feature_nodes", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BadInputError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("logit_mass", "node_threshold", "edge_threshold"):
            if not 0 < float(getattr(self, name)) <= 1:
                raise BadInputError(f"{name} must be in (0, 1], got {getattr(self, name)!r}.")


@dataclass
class RawGraph:
    """The unpruned graph: node tables and the adjacency A[target, source] over all nodes.

    Node order: features (by layer, position, latent), then errors (layer, position), then tokens (position),
    then logits. Rows exist for logits and the features in `expanded`; other rows are zero."""

    features: np.ndarray  # [Nf, 3] int (layer, pos, latent)
    feature_acts: np.ndarray  # [Nf] float
    errors: np.ndarray  # [Ne, 2] int (layer, pos)
    error_norms: np.ndarray  # [Ne]
    tokens: np.ndarray  # [P] int token ids
    logit_tokens: np.ndarray  # [K] int
    logit_probs: np.ndarray  # [K]
    rows: np.ndarray  # [R, N] float32: the adjacency rows that exist (A[row_nodes[i], :] = rows[i])
    row_nodes: np.ndarray  # [R] node index of each row: the logits, then expanded features in expansion order
    expanded: np.ndarray  # [Nx] indices of features with rows
    seconds: float

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_nodes(self) -> int:
        return len(self.features) + len(self.errors) + len(self.tokens) + len(self.logit_tokens)

    @property
    def adjacency(self) -> np.ndarray:
        """The dense [N, N] adjacency (zero rows for nodes without inputs): for small graphs and tests."""
        A = np.zeros((self.n_nodes, self.n_nodes), dtype=np.float32)
        A[self.row_nodes] = self.rows
        return A

    def logit_weights(self) -> np.ndarray:
        w = np.zeros(self.n_nodes)
        w[self.offsets()[3] :] = self.logit_probs / self.logit_probs.sum()
        return w

    def offsets(self) -> tuple[int, int, int, int]:
        nf, ne, nt = len(self.features), len(self.errors), len(self.tokens)
        return 0, nf, nf + ne, nf + ne + nt  # features, errors, tokens, logits start


def _targets_logits(clean: CleanState, cfg: GraphConfig) -> tuple[np.ndarray, np.ndarray]:
    probs = torch.softmax(clean.logits[-1], -1)
    order = torch.argsort(probs, descending=True)
    top, mass = [], 0.0
    for t in order[: cfg.max_logits].tolist():
        top.append(t)
        mass += float(probs[t])
        if mass >= cfg.logit_mass:
            break
    return np.array(top), probs[top].numpy()


def build_raw_graph(handle: ModelHandle, tcs: TranscoderSet, tokens: torch.Tensor, cfg: GraphConfig | None = None,
                    progress: Callable[[int, int], None] | None = None) -> RawGraph:  # fmt: skip
    """Compute the adjacency of `tokens` [P] (see the module docstring)."""
    from saelab.graphs.prune import influence

    cfg = cfg or GraphConfig()
    tcs.check(handle)
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    if not 1 <= len(tokens) <= MAX_PROMPT_TOKENS:
        raise BadInputError(f"A prompt for an attribution graph has 1 … {MAX_PROMPT_TOKENS} tokens, got {len(tokens)}.")
    t0 = time.perf_counter()
    clean = clean_state(handle, tcs, tokens)
    P, layers = len(tokens), tcs.layers
    feats = []
    for layer in layers:
        pos, lat = clean.acts[layer].nonzero(as_tuple=True)
        feats.append(np.stack([np.full(len(pos), layer), pos.numpy(), lat.numpy()], 1))
    features = np.concatenate(feats) if feats else np.zeros((0, 3), int)
    f_acts = np.array([float(clean.acts[int(l_)][p, f]) for l_, p, f in features])
    errors = np.array([(layer, p) for layer in layers for p in range(P)])
    logit_tokens, logit_probs = _targets_logits(clean, cfg)
    nf, ne, nt, nl = len(features), len(errors), P, len(logit_tokens)
    n = nf + ne + nt + nl
    max_rows = nl + min(cfg.max_feature_nodes, nf)
    R = np.zeros((max_rows, n), dtype=np.float32)
    row_nodes = np.full(max_rows, -1, dtype=np.int64)
    n_rows = 0
    layer_feats = {layer: np.nonzero(features[:, 0] == layer)[0] for layer in layers}

    B = cfg.batch_size
    probes = {"embed": torch.zeros(B, P, handle.d_model, requires_grad=True)}
    probes.update({layer: torch.zeros(B, P, handle.d_model, requires_grad=True) for layer in layers})
    n_store: dict[int, torch.Tensor] = {}
    hooks = replacement_hooks(tcs, clean, probes=probes, n_store=n_store)
    with gate(handle, hooks) as model, mlps_skipped(model), torch.enable_grad():
        logits = model(tokens[None].expand(B, P), return_type="logits")
        demeaned = logits[:, -1] - logits[:, -1].mean(-1, keepdim=True)

        def rows(targets: list[tuple]) -> np.ndarray:
            """Adjacency rows for up to B targets: ("logit", k) or ("feature", index)."""
            seeds = []
            for b, target in enumerate(targets):
                if target[0] == "logit":
                    seeds.append(demeaned[b, int(logit_tokens[target[1]])])
                else:
                    layer, p, f = features[target[1]]
                    seeds.append(n_store[int(layer)][b, int(p)].float() @ tcs[int(layer)].W_enc[:, int(f)])
            inputs = [probes["embed"]] + [probes[layer] for layer in layers]
            grads = torch.autograd.grad(torch.stack(seeds).sum(), inputs, retain_graph=True, allow_unused=True)
            k = len(targets)
            out = np.zeros((k, n), dtype=np.float32)
            g_embed = grads[0]
            if g_embed is not None:
                out[:, nf + ne : nf + ne + nt] = (g_embed[:k] * clean.embed).sum(-1).numpy()
            for i, layer in enumerate(layers):
                g = grads[i + 1]
                if g is None:
                    continue
                g = g[:k]
                e0 = nf + i * P
                out[:, e0 : e0 + P] = (g * clean.errors[layer]).sum(-1).numpy()
                idx = layer_feats[layer]
                if len(idx):
                    proj = g @ tcs[layer].W_dec.T  # [k, P, F]
                    p_i, f_i = features[idx, 1], features[idx, 2]
                    out[:, idx] = proj[:, p_i, f_i].numpy() * f_acts[idx][None]
            return out

        def add(nodes: list[int], targets: list[tuple]) -> None:
            nonlocal n_rows
            R[n_rows : n_rows + len(nodes)] = rows(targets)
            row_nodes[n_rows : n_rows + len(nodes)] = nodes
            n_rows += len(nodes)
            if progress:
                progress(n_rows, max_rows)

        for k0 in range(0, nl, B):
            ks = list(range(k0, min(nl, k0 + B)))
            add([nf + ne + nt + k for k in ks], [("logit", k) for k in ks])
        expanded: list[int] = []
        weights = np.zeros(n)
        weights[nf + ne + nt :] = logit_probs / logit_probs.sum()
        while len(expanded) < min(cfg.max_feature_nodes, nf):
            infl = influence(R[:n_rows], row_nodes[:n_rows], weights)[:nf]
            infl[expanded] = -np.inf
            order = np.argsort(-infl)
            take = [int(i) for i in order[: min(B, cfg.max_feature_nodes - len(expanded))] if infl[i] > -np.inf]
            if not take:
                break
            add(take, [("feature", i) for i in take])
            expanded += take
    err_norms = np.array([float(clean.errors[int(layer)][p].norm()) for layer, p in errors])
    return RawGraph(features, f_acts, errors, err_norms, tokens.numpy(), logit_tokens, logit_probs, R[:n_rows],
                    row_nodes[:n_rows], np.array(expanded, dtype=int), time.perf_counter() - t0)  # fmt: skip


__all__ = ["MAX_PROMPT_TOKENS", "GraphConfig", "RawGraph", "build_raw_graph"]
