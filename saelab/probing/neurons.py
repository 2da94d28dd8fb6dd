"""Single MLP neurons as features (sparse-neuron probing): rank neurons by separability, keep the top k.

Activations: a_t = `blocks.L.mlp.hook_post` (the d_mlp neuron activations), pooled per text (last / mean / max).
Separability of neuron j, on TRAIN rows only (fit mask):
  two classes   s_j = max(AUROC_j, 1 − AUROC_j), AUROC_j = P(x_j(pos) > x_j(neg)) + ½ P(tie) (rank formula)
  > 2 classes   s_j = Fisher score = ANOVA F = between-class variance / within-class variance (sklearn f_classif)
  numeric       s_j = |Pearson r(x_j, y)|
X = the top-k neurons of the chosen layer (k = top_k_neurons), ordered by s_j.
Layer series: every layer's mlp.hook_post is pooled in the SAME forward pass (hooks pool inside the forward), and
the best s_j per layer is computed on at most `MAX_SERIES_ROWS` train rows (a seeded subsample beyond that), so
memory stays n × d_mlp for the chosen layer plus 1,000 × d_mlp per other layer.
"""

from __future__ import annotations

import numpy as np

from saelab.activations.text_batches import encode_texts
from saelab.errors import BadInputError
from saelab.probing.feature_set import FeatureSet, SourceParams
from saelab.probing.hidden import base_params, dense_pooling, resid_hook
from saelab.probing.pooling import POOLING_FORMULAS, run_pooled, truncation_note

MAX_SERIES_ROWS = 1000


def target_kind(y: np.ndarray) -> str:
    """'binary', 'multiclass' or 'numeric' from the label values."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise BadInputError("Labels contain NaN or infinite values; drop those rows first.")
    if y.dtype.kind == "f" and not np.allclose(y, np.round(y)):
        return "numeric"
    n = len(np.unique(y))
    if n < 2:
        raise BadInputError("The training rows hold only one class; separability needs at least two.")
    return "binary" if n == 2 else "multiclass"


def auroc_columns(X: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUROC of every column of X for the boolean labels `pos` (Mann–Whitney with mid-ranks for ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(X, axis=0)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def separability(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-column separability score and its name (see the module docstring)."""
    kind = target_kind(y)
    if kind == "binary":
        auc = auroc_columns(X, y == np.unique(y)[1])
        return np.maximum(auc, 1 - auc), "max(AUROC, 1 − AUROC)"
    if kind == "multiclass":
        from sklearn.feature_selection import f_classif

        with np.errstate(divide="ignore", invalid="ignore"):
            f, _ = f_classif(X, y)
        return np.nan_to_num(f, nan=0.0, posinf=0.0), "Fisher score (ANOVA F)"
    Xc, yc = X - X.mean(0), (y - y.mean()).astype(np.float64)
    denom = np.sqrt((Xc**2).sum(0) * (yc**2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, (Xc * yc[:, None]).sum(0) / np.where(denom > 0, denom, 1), 0.0)
    return np.abs(r), "|Pearson r|"


def fit_rows(n: int, labels, fit_texts_mask) -> np.ndarray:
    """Indices of the rows a fitted source may learn from (all rows only when no mask is given)."""
    if labels is None:
        raise BadInputError("This feature source ranks features against the labels; pass labels.")
    if len(labels) != n:
        raise BadInputError(f"{len(labels)} labels for {n} texts; give one label per text.")
    if fit_texts_mask is None:
        return np.arange(n)
    mask = np.asarray(fit_texts_mask, dtype=bool)
    if mask.shape != (n,) or not mask.any():
        raise BadInputError("fit_texts_mask must be a boolean mask over the texts with at least one training row.")
    return np.flatnonzero(mask)


def neuron_source(
    params: SourceParams, texts: list[str], *, handle=None, labels=None, fit_texts_mask=None, progress=None, **_
) -> FeatureSet:
    if handle is None:
        raise BadInputError("The neuron source needs a model.")
    pooling, notes = dense_pooling(params)
    resid_hook(handle, params.layer)  # validates the layer
    y = np.asarray(labels) if labels is not None else None
    train = fit_rows(len(texts), y, fit_texts_mask)
    series_rows = train
    if len(train) > MAX_SERIES_ROWS:
        series_rows = np.sort(np.random.default_rng(0).choice(train, MAX_SERIES_ROWS, replace=False))
        notes.append(f"Per-layer best-neuron scores use a seeded sample of {MAX_SERIES_ROWS} training rows.")
    slot = np.full(len(texts), -1)
    slot[series_rows] = np.arange(len(series_rows))
    hooks = [f"blocks.{layer}.mlp.hook_post" for layer in range(handle.n_layers)]
    chosen = hooks[params.layer]
    d_mlp = handle.hook_width(chosen)
    full = np.zeros((len(texts), d_mlp), np.float32)
    per_layer = {h: np.zeros((len(series_rows), d_mlp), np.float32) for h in hooks}
    enc = encode_texts(handle.tokenizer, texts, params.max_tokens)
    for batch, pooled in run_pooled(handle, enc, hooks, params.batch_size, pooling, params.topn, progress):
        rows = slot[batch.index]
        sel = rows >= 0
        for h in hooks:
            x = pooled[h].cpu().numpy()
            if h == chosen:
                full[batch.index] = x
            per_layer[h][rows[sel]] = x[sel]
    scores, metric = separability(full[train], y[train])
    top = np.argsort(-scores, kind="stable")[: params.top_k_neurons]
    series = []
    for layer, h in enumerate(hooks):
        s, _ = separability(per_layer[h], y[series_rows])
        j = int(np.argmax(s))
        series.append({"layer": layer, "neuron": j, "score": float(s[j])})
    return FeatureSet(
        X=full[:, top],
        names=[f"neuron L{params.layer}.{int(j)}" for j in top],
        source=params.source,
        params=base_params(params, hook=chosen, pooling=pooling, fit_rows=int(len(train))),
        extra={
            "formula": f"a_t = {chosen}; {POOLING_FORMULAS[pooling]}; keep the top {params.top_k_neurons} neurons "
            f"by separability s_j = {metric} on the training rows",
            "separability": metric,
            "neuron_ranking": [{"neuron": int(j), "score": float(scores[j])} for j in top],
            "best_neuron_by_layer": series,
            "notes": notes + truncation_note(enc, len(texts)),
            "n_truncated": enc.n_truncated,
        },
    )
