"""Sparse attention vectors (SAVs): attention-head outputs as features, with a nearest-centroid head vote.

For every layer L and head h, z^{L,h} = the head's output vector at the text's LAST token (`blocks.L.attn.hook_z`,
[d_head], before W_O), all layers read in one forward pass. On the TRAIN rows:
  centroid c^{L,h}_k = mean of z^{L,h} over training texts of class k
  head prediction   ŷ^{L,h}(x) = argmax_k cos(z^{L,h}(x), c^{L,h}_k)
  head accuracy     acc^{L,h} = mean over training rows of 1[ŷ^{L,h} = y]
Keep the `top_heads` (20) heads with the highest accuracy. Features X = those heads' vectors, concatenated
(top_heads × d_head columns, named "L3.H5 dim 7"). `sav_predict` = majority vote of the kept heads' predictions
(ties go to the class with the larger summed cosine similarity).
Memory: the head vectors of all texts are held in float16 (n × n_layers × n_heads × d_head × 2 bytes: 2,000 texts of
SmolLM2 → 69 MB); similarities are computed in float32 in chunks.
"""

from __future__ import annotations

import numpy as np

from saelab.activations.text_batches import encode_texts
from saelab.errors import BadInputError
from saelab.probing.feature_set import FeatureSet, SourceParams
from saelab.probing.hidden import base_params
from saelab.probing.neurons import fit_rows, target_kind
from saelab.probing.pooling import run_pooled, truncation_note


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def head_similarities(Z_NKD: np.ndarray, centroids_KCD: np.ndarray, chunk: int = 512) -> np.ndarray:
    """cos(z, c) for every text, head and class: [N, K heads, C classes] (rows in chunks, computed in float32)."""
    c = _unit(np.asarray(centroids_KCD, np.float32))
    parts = [
        np.einsum("nkd,kcd->nkc", _unit(Z_NKD[i : i + chunk].astype(np.float32)), c)
        for i in range(0, len(Z_NKD), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, c.shape[0], c.shape[1]), np.float32)


def fit_centroids(Z_NKD: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class centroids [K, C, D] and each head's nearest-centroid accuracy [K] on (Z, y)."""
    cent = np.stack([Z_NKD[y == c].mean(0, dtype=np.float32) for c in classes], axis=1)
    pred = classes[head_similarities(Z_NKD, cent).argmax(-1)]  # [N, K]
    return cent.astype(np.float32), (pred == y[:, None]).mean(0)


def vote(sims_NKC: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Majority vote over heads; ties broken by summed cosine similarity."""
    n_cls = len(classes)
    votes = np.zeros((sims_NKC.shape[0], n_cls))
    np.add.at(votes, (np.arange(sims_NKC.shape[0])[:, None], sims_NKC.argmax(-1)), 1)
    score = votes + 1e-6 * sims_NKC.sum(1) / max(1, sims_NKC.shape[1])
    return classes[score.argmax(-1)]


def sav_predict(fs: FeatureSet, X: np.ndarray | None = None) -> np.ndarray:
    """Class predictions of the SAV head vote for rows of `X` (default: `fs.X`), in the labels' own values."""
    sav = fs.extra.get("sav")
    if sav is None:
        raise BadInputError("sav_predict needs a FeatureSet from the 'sav' source.")
    X = fs.X if X is None else np.asarray(X, np.float32)
    cent = np.asarray(sav["centroids"], np.float32)
    k, _, d = cent.shape
    return vote(head_similarities(X.reshape(len(X), k, d), cent), np.asarray(sav["classes"]))


def sav_source(
    params: SourceParams, texts: list[str], *, handle=None, labels=None, fit_texts_mask=None, progress=None, **_
) -> FeatureSet:
    if handle is None:
        raise BadInputError("The SAV source needs a model.")
    y = np.asarray(labels) if labels is not None else None
    train = fit_rows(len(texts), y, fit_texts_mask)
    if target_kind(y[train]) == "numeric":
        raise BadInputError("SAVs classify by class centroids; a numeric target needs another source.")
    cfg = handle.cfg
    n_layers, n_heads, d_head = handle.n_layers, int(cfg.n_heads), int(cfg.d_head)
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    Z = np.zeros((len(texts), n_layers * n_heads, d_head), np.float16)  # half the memory; maths in float32
    enc = encode_texts(handle.tokenizer, texts, params.max_tokens)
    for batch, pooled in run_pooled(handle, enc, hooks, params.batch_size, "last", progress=progress):
        for layer, h in enumerate(hooks):
            z = pooled[h].cpu().numpy().reshape(len(batch.index), n_heads, d_head)
            Z[batch.index, layer * n_heads : (layer + 1) * n_heads] = z
    classes = np.unique(y[train])
    _, acc = fit_centroids(Z[train], y[train], classes)
    top = np.argsort(-acc, kind="stable")[: params.top_heads]
    cent, _ = fit_centroids(Z[train][:, top], y[train], classes)
    heads = [(int(i) // n_heads, int(i) % n_heads) for i in top]
    X = Z[:, top].reshape(len(texts), -1)
    train_vote = float((vote(head_similarities(Z[train][:, top], cent), classes) == y[train]).mean())
    names = [f"L{la}.H{h} dim {j}" for la, h in heads for j in range(d_head)]
    notes = []
    if params.pooling != "last":
        notes.append(f"SAVs read the last token; pooling {params.pooling!r} was not used.")
    return FeatureSet(
        X=X,
        names=names,
        source=params.source,
        params=base_params(params, hook="blocks.*.attn.hook_z", pooling="last", fit_rows=int(len(train))),
        extra={
            "formula": "z = head output at the last token (attn.hook_z); class centroids on training rows; head "
            "accuracy = nearest-centroid (cosine) accuracy on training rows; keep the top "
            f"{params.top_heads} heads; classify by majority vote of their nearest-centroid predictions",
            "sav": {
                "heads": [list(h) for h in heads],
                "head_accuracy": [float(a) for a in acc[top]],
                "centroids": cent,
                "classes": classes.tolist(),
                "d_head": d_head,
                "train_vote_accuracy": train_vote,
            },
            "notes": notes + truncation_note(enc, len(texts)),
            "n_truncated": enc.n_truncated,
        },
    )
