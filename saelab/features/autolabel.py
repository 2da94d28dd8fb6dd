"""The offline labelling algorithm: a contrastive-token rule per latent, scored by detection on held-out rows.

How the rule is chosen and scored is described in `saelab.features.labels` (the types and files) and
`formula_text`; detection itself is `saelab.features.label_detection`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from saelab.errors import CorruptFileError, IncompatibleSAEError
from saelab.features.label_detection import check_tokens
from saelab.features.labels import (
    LabelConfig,
    LabelSet,
    LatentLabel,
    Progress,
    dashboard_arrays,
    dashboard_ctx_left,
    formula_text,
    show_token,
    token_formula_text,
)
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE

log = logging.getLogger(__name__)


def _log_odds_z(y: np.ndarray, n: int, b: np.ndarray, total: float, alpha: float) -> np.ndarray:
    """z-score of the smoothed log-odds ratio of counts y/n (latent) against b/total (background)."""
    a = alpha
    delta = np.log((y + a) / (n - y + a)) - np.log((b + a) / (total - b + a))
    var = 1 / (y + a) + 1 / (n - y + a) + 1 / (b + a) + 1 / (total - b + a)
    return delta / np.sqrt(var)


@dataclass
class _Candidate:
    token: int
    where: Literal["at", "after"]
    z: float


def _candidates(
    tokens: np.ndarray, n: int, own: tuple[np.ndarray, np.ndarray], bg: np.ndarray, bg_total: float, cfg: LabelConfig
) -> list[_Candidate]:
    """Tokens of `tokens` (one per context) that pass the count, share and z thresholds."""
    if n == 0 or tokens.size == 0:
        return []
    ids, y = np.unique(tokens, return_counts=True)
    keep = y >= max(cfg.min_count, math.ceil(cfg.min_share * n))
    ids, y = ids[keep], y[keep]
    if ids.size == 0:
        return []
    own_ids, own_counts = own
    pos = np.searchsorted(own_ids, ids)
    own_y = np.where(
        (pos < own_ids.size) & (own_ids[np.minimum(pos, own_ids.size - 1)] == ids),
        own_counts[np.minimum(pos, own_ids.size - 1)],
        0,
    )
    b = np.maximum(bg[ids] - own_y, 0).astype(np.float64)
    total = max(bg_total - float(own_counts.sum()), 1.0)
    z = _log_odds_z(y.astype(np.float64), n, b, total, cfg.alpha)
    ok = z >= cfg.z_min
    return [_Candidate(int(t), "at", float(s)) for t, s in zip(ids[ok], z[ok])]


def _rule_text(chosen: list[_Candidate], tokenizer, cache: dict[int, str]) -> str:
    at = [show_token(tokenizer, c.token, cache) for c in chosen if c.where == "at"]
    after = [show_token(tokenizer, c.token, cache) for c in chosen if c.where == "after"]
    parts = ([f"tokens: {', '.join(at)}"] if at else []) + ([f"after: {', '.join(after)}"] if after else [])
    return "; ".join(parts)


def auto_label(
    top_tokens: np.ndarray,
    top_acts: np.ndarray,
    ctx_left: int,
    tokenizer,
    logit_pos_ids: np.ndarray | None = None,
    cfg: LabelConfig | None = None,
) -> list[LatentLabel]:
    """Offline contrastive-token rules for every latent (no detection score yet).

    Args:
        top_tokens: int [d_sae, n_top, ctx] token ids of each latent's top contexts (-1 = padding).
        top_acts: float [d_sae, n_top, ctx] activations; the max-activating token sits at `ctx_left`.
        ctx_left: index of the max-activating token in each window.
        tokenizer: decodes rule tokens for display.
        logit_pos_ids: int [d_sae, ≥n_promoted] most promoted tokens, for the fallback rule (optional).
    """
    cfg = cfg or LabelConfig()
    top_tokens = np.asarray(top_tokens)
    top_acts = np.asarray(top_acts, dtype=np.float32)
    if top_tokens.ndim != 3 or top_tokens.shape != top_acts.shape:
        raise CorruptFileError(
            f"top_tokens {top_tokens.shape} and top_acts {top_acts.shape} must both be [d_sae, n_top, ctx]"
        )
    d_sae = top_tokens.shape[0]
    valid_tok = top_tokens >= 0
    vocab = int(top_tokens.max(initial=0)) + 1
    if logit_pos_ids is not None and np.size(logit_pos_ids):
        vocab = max(vocab, int(np.max(logit_pos_ids)) + 1)
    bg = np.bincount(top_tokens[valid_tok].ravel(), minlength=vocab).astype(np.float64)
    bg_total = float(bg.sum())
    cache: dict[int, str] = {}
    out: list[LatentLabel] = []
    for i in range(d_sae):
        tt, ta = top_tokens[i], top_acts[i]
        ctx_ok = (tt[:, ctx_left] >= 0) & (ta[:, ctx_left] > 0)
        n = int(ctx_ok.sum())
        if n == 0:
            out.append(LatentLabel("dead (never fired in the dashboard sample)", [], "dead"))
            continue
        own = np.unique(tt[tt >= 0], return_counts=True)
        cands = _candidates(tt[ctx_ok, ctx_left], n, own, bg, bg_total, cfg)
        if cfg.use_previous and ctx_left > 0:
            prev = tt[ctx_ok, ctx_left - 1]
            prev_ok = prev >= 0
            for c in _candidates(prev[prev_ok], int(prev_ok.sum()), own, bg, bg_total, cfg):
                c.where = "after"
                cands.append(c)
        chosen: list[_Candidate] = []
        for c in sorted(cands, key=lambda c: (-c.z, c.token)):
            if c.token not in {x.token for x in chosen}:
                chosen.append(c)
            if len(chosen) == cfg.max_tokens:
                break
        if chosen:
            after = [c.token for c in chosen if c.where == "after"]
            text = _rule_text(chosen, tokenizer, cache)
            out.append(LatentLabel(text, [c.token for c in chosen], "tokens", after_ids=after))
            continue
        promoted = [] if logit_pos_ids is None else [int(t) for t in np.asarray(logit_pos_ids[i])[: cfg.n_promoted]]
        promoted = [t for t in promoted if t >= 0]
        if promoted:
            shown = ", ".join(show_token(tokenizer, t, cache) for t in promoted)
            out.append(LatentLabel(f"promotes: {shown}", promoted, "promotes", note="top contexts share no token"))
        else:
            out.append(LatentLabel("no shared token", [], "none", note="top contexts share no token; no logit data"))
    return out


# ---------------------------------------------------------------- everything


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def detection_summary(labels: list[LatentLabel], cfg: LabelConfig, n_rows: int, seq_len: int, n_positions: int):
    """labels.json's "detection" block: what each level measures, on which rows, and the medians."""
    tok = [lab.token_balanced_accuracy for lab in labels if lab.token_balanced_accuracy is not None]
    seq = [lab.detection_balanced_accuracy for lab in labels if lab.detection_balanced_accuracy is not None]
    live = sum(lab.kind != "dead" for lab in labels)
    return {
        "metric": "balanced accuracy = (TPR + TNR)/2 of the label's rule predicting where the latent fires",
        "level": "token (primary: every analysed position of the TEST half) and sequence (rows of the TEST half)",
        "token_level": "the rule fires at the position vs the latent fires there (activation > 0); all positions",
        "sequence_level": "the rule fires somewhere in the row vs the latent fires in the row; "
        f"up to {cfg.n_per_class} rows of each, seeded; also F1",
        "split": f"a seeded random half of the {n_rows} held-out rows chooses the rule (FIT, {n_rows // 2} rows), "
        f"the other half scores it (TEST; token_rules.split_rows, seed {cfg.seed})",
        "n_rows": n_rows,
        "seq_len": seq_len,
        "n_positions": n_positions,
        "n_per_class": cfg.n_per_class,
        "excluded_positions": "position 0 and separator tokens (attention sinks)",
        "n_live": live,
        "n_scored": len(seq),
        "n_token_scored": len(tok),
        "median_token_balanced_accuracy": _median(tok),
        "median_sequence_balanced_accuracy": _median(seq),
        "share_token_ge_0.7": float(np.mean(np.asarray(tok) >= 0.7)) if tok else None,
    }


def label_all(
    handle: ModelHandle,
    loaded: LoadedSAE,
    store_or_arrays: Any,
    heldout_tokens: torch.Tensor,
    progress: Progress | None = None,
    *,
    cfg: LabelConfig | None = None,
) -> LabelSet:
    """Label every latent offline and score each label on `heldout_tokens` [n_rows, seq_len].

    `store_or_arrays`: the SAE folder, a `DashboardStore`, or a mapping of dashboard arrays (see
    `dashboard_arrays`). The held-out rows must be text the dashboards did not use. `progress(done, total)`
    counts forward batches plus one step each for the rules and the scoring.
    """
    cfg = cfg or LabelConfig()
    t0 = time.perf_counter()
    heldout_tokens = check_tokens(handle, heldout_tokens)
    arrays, meta = dashboard_arrays(store_or_arrays, ("top_tokens", "top_acts", "logit_pos_ids"))
    missing = [k for k in ("top_tokens", "top_acts") if k not in arrays]
    if missing:
        raise CorruptFileError(f"the dashboard data lacks {', '.join(missing)}")
    d_sae = int(loaded.sae.cfg.d_sae)
    if arrays["top_tokens"].shape[0] != d_sae:
        raise IncompatibleSAEError(
            f"The dashboards describe {arrays['top_tokens'].shape[0]} latents but the SAE at {loaded.path} has "
            f"{d_sae}; rebuild the dashboards for this SAE."
        )
    n_batches = math.ceil(heldout_tokens.shape[0] / cfg.batch_size)
    total = n_batches + 2

    def tick(done: int) -> None:
        if progress is not None:
            progress(done, total)

    labels = auto_label(
        arrays["top_tokens"],
        arrays["top_acts"],
        dashboard_ctx_left(meta, arrays["top_tokens"]),
        handle.tokenizer,
        arrays.get("logit_pos_ids"),
        cfg,
    )
    t_rules = time.perf_counter() - t0
    tick(1)
    from saelab.corpus import separator_id
    from saelab.features.token_rules import TokenRule, fit_and_score, rule_text, token_rows

    rows = token_rows(
        handle,
        loaded,
        heldout_tokens,
        separator_id(handle.tokenizer),
        cfg.batch_size,
        compute_dtype=getattr(torch, cfg.compute_dtype),
        progress=lambda done, _n: tick(1 + done),
    )
    t_forward = time.perf_counter() - t0 - t_rules
    dashboard_rules = [
        TokenRule([t for t in lab.token_ids if t not in lab.after_ids], list(lab.after_ids), family="dashboard")
        if lab.token_ids else None
        for lab in labels
    ]  # fmt: skip
    scores = fit_and_score(rows, dashboard_rules, max_tokens=cfg.token_rule_max, min_count=cfg.min_count,
                           min_positions=cfg.min_rows, n_per_class=cfg.n_per_class, seed=cfg.seed)  # fmt: skip
    cache: dict[int, str] = {}
    for lab, score in zip(labels, scores, strict=True):
        rule, note = score.pop("rule"), score.pop("note", None)
        if rule is not None and rule.family != "dashboard":
            lab.label, lab.kind = rule_text(rule, handle.tokenizer, cache), "tokens"
            lab.token_ids, lab.after_ids = [*rule.at, *rule.after], list(rule.after)
            lab.pair_ids = [[int(a), int(b)] for a, b in rule.pairs]
        if rule is not None:
            lab.rule_family = rule.family
        for k, v in score.items():
            setattr(lab, k, v)
        if note:
            lab.note = f"{lab.note}; {note}" if lab.note else note
    tick(total)
    elapsed = time.perf_counter() - t0
    n_rows, seq_len = heldout_tokens.shape
    log.info("labelled %d latents in %.1f s (forward %.1f s)", d_sae, elapsed, t_forward)
    return LabelSet(
        latents=labels,
        formula=formula_text(cfg) + " " + token_formula_text(cfg),
        detection=detection_summary(labels, cfg, int(n_rows), int(seq_len), int(rows.cur.size)),
        config=cfg.to_dict(),
        provenance={
            "model": handle.name,
            "hook": loaded.hook,
            "sae": str(loaded.path),
            "d_sae": d_sae,
            "dashboard_meta": {k: v for k, v in meta.items() if isinstance(v, int | float | str | bool)},
            "dashboard_sae_fingerprint": (meta.get("sae") or {}).get("fingerprint"),
            "elapsed_s": round(elapsed, 2),
            "forward_s": round(t_forward, 2),
        },
    )
