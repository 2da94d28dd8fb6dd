"""Evaluate an SAE on held-out tokens: reconstruction, downstream loss and latent density (SAEBench "core").

`evaluate_sae` runs the model over the caller's token rows and returns a `SaeEval` whose every number is
aggregated exactly over all evaluated tokens (running sums, never a mean of batch means), so the result
does not depend on `batch_size`.

Passes, all through `saelab.hooks` (nothing here touches `model.hooks` directly):
  1. per batch, activations at `hook` (forward stopped early) → the mean activation x̄, needed both by the
     mean-ablation baseline and by explained variance;
  2. per batch, four full forwards: clean, SAE spliced in, zero-ablated, mean-ablated. The spliced pass also
     records x, the latents and x̂, from which the reconstruction and density metrics are taken.

Trap: position 0 of every row is the attention sink, whose residual norm is tens of times larger than any
other token's. With `skip_first_position` it is left out of the reconstruction metrics and is never replaced
(neither by the SAE nor by the ablations), as SAEBench does for BOS; otherwise it dominates MSE and EV.
Every `<|endoftext|>` separator inside a row is the same kind of sink (norm ~1e4, ~1 % of corpus tokens); with
`skip_separator` (default) those positions are treated like position 0: left out of every reconstruction and
density metric and never replaced, as SAE-Lens's `exclude_special_tokens` does in training. CE and KL are
still scored at every predicted position (the sinks' own activations are clean there).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from saelab.errors import BadInputError, IncompatibleSAEError
from saelab.hooks import cache_activations, run_with_hooks
from saelab.models.handle import ModelHandle
from saelab.sae import kinds
from saelab.storage import read_json, write_json

log = logging.getLogger(__name__)

DENSE_THRESHOLD = 0.1  # a latent firing on more than this fraction of tokens counts as dense (SAEBench)
HIST_BIN_WIDTH = 0.25  # width of a log10-density histogram bin
_EPS = 1e-12  # a denominator whose magnitude is below this is treated as zero

FORMULAS: dict[str, str] = {
    "l0": "mean over evaluated tokens of #{i : f_i(x) != 0}",
    "mse": "Σ_tokens ‖x − x̂‖² / (n_tokens · d_in)  (mean over tokens and dimensions)",
    "cosine_similarity": "mean over tokens of x·x̂ / max(‖x‖‖x̂‖, 1e-8)  (a zero vector scores 0)",
    "explained_variance": "1 − Σ_t ‖x_t − x̂_t‖² / Σ_t ‖x_t − x̄‖²  with x̄ the mean over evaluated tokens "
    "(SAE-Lens `explained_variance`, SAEBench; the headline)",
    "explained_variance_legacy": "mean over tokens of 1 − ‖x_t − x̂_t‖² / ‖x_t − x̄‖²  (SAE-Lens "
    "`explained_variance_legacy`, but with the global mean x̄, not a batch mean; tokens with ‖x_t − x̄‖ = 0 skipped)",
    "relative_reconstruction_norm": "mean over tokens of ‖x̂_t‖ / ‖x_t‖  (tokens with ‖x_t‖ = 0 skipped)",
    "x_hat": "decode(encode(x)), i.e. sae(x) without any error term",
    "ce": "next-token cross-entropy in nats, mean over every predicted position (all rows, positions 0..L−2)",
    "kl": "KL(p_clean ‖ p_patched) in nats over the vocabulary, mean over the same predicted positions",
    "zero_ablation": "activation at the hook set to 0 at the spliced positions",
    "mean_ablation": "activation at the hook set to x̄ (mean over evaluated tokens) at the spliced positions",
    "delta_loss": "CE_sae − CE_clean (nats)",
    "ce_loss_score_zero": "(CE_zero − CE_sae) / (CE_zero − CE_clean)  (SAEBench CE-loss score)",
    "ce_loss_score_mean": "(CE_mean − CE_sae) / (CE_mean − CE_clean)",
    "kl_score_zero": "(KL_zero − KL_sae) / KL_zero  (SAEBench KL score)",
    "kl_score_mean": "(KL_mean − KL_sae) / KL_mean",
    "latent_frequency": "fraction of evaluated tokens on which a latent is non-zero",
    "dead_fraction": "fraction of latents with frequency 0 on the evaluated tokens",
    "dense_fraction": f"fraction of latents with frequency > {DENSE_THRESHOLD}",
    "density_histogram": f"counts of log10(frequency) of live latents in bins of width {HIST_BIN_WIDTH}; "
    "dead latents are not in it (see dead_fraction)",
}


@dataclass
class SaeEval:
    """The result of `evaluate_sae`. A metric is None when undefined (a zero denominator); `notes` says why.

    Settings: `hook`, `model`, `d_in`, `d_sae`, `n_seq` × `seq_len` token rows, `batch_size`,
    `skip_first_position` (position 0 excluded from reconstruction metrics and never spliced or ablated),
    `skip_separator` / `separator_id` (separator tokens excluded the same way).
    `n_tokens` evaluated tokens (reconstruction, density); `n_predicted` positions scored for CE and KL.
    Formulas for every metric are in `formulas` (a copy of `FORMULAS`).
    """

    hook: str
    model: str
    d_in: int
    d_sae: int
    n_seq: int
    seq_len: int
    batch_size: int
    skip_first_position: bool
    n_tokens: int
    n_predicted: int
    # reconstruction
    l0: float | None
    mse: float | None
    cosine_similarity: float | None
    explained_variance: float | None
    explained_variance_legacy: float | None
    relative_reconstruction_norm: float | None
    # downstream loss (nats)
    ce_clean: float | None
    ce_sae: float | None
    ce_zero_ablated: float | None
    ce_mean_ablated: float | None
    delta_loss: float | None
    ce_loss_score_zero: float | None
    ce_loss_score_mean: float | None
    kl_sae: float | None
    kl_zero_ablated: float | None
    kl_mean_ablated: float | None
    kl_score_zero: float | None
    kl_score_mean: float | None
    # latent density
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    density_hist_edges: list[float]  # log10(frequency) bin edges, len = len(counts) + 1
    density_hist_counts: list[int]
    formulas: dict[str, str] = field(default_factory=lambda: dict(FORMULAS))
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    skip_separator: bool = False  # separator tokens left out like position 0 (False in files written before)
    separator_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SaeEval:
        """Build from `to_dict()` output; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically (NaN/inf never reach the file: they are None by construction)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SaeEval:
        return cls.from_dict(read_json(path))


def feature_density(sae, acts: torch.Tensor) -> torch.Tensor:
    """Fraction of the rows of `acts` [n, d_in] on which each latent is non-zero → [d_sae] (float32)."""
    if acts.ndim != 2 or acts.shape[0] == 0:
        raise BadInputError(f"feature_density needs a non-empty [n, d_in] tensor, got shape {tuple(acts.shape)}")
    with torch.inference_mode():
        f = sae.encode(acts.to(device=sae.device, dtype=sae.dtype))
        return (f != 0).sum(0).float().cpu() / acts.shape[0]


def _check_inputs(handle: ModelHandle, sae, hook: str, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    handle.check_hook(hook)
    kinds.check_not_transcoder(sae, "evaluation")
    head = getattr(getattr(sae.cfg, "metadata", None), "hook_head_index", None)
    if head is not None:
        raise IncompatibleSAEError(f"The SAE reads only head {head} of {hook}; evaluation splices whole activations.")
    width = kinds.hook_z_width(sae, handle.hook_width(hook), int(handle.cfg.n_heads))
    if int(sae.cfg.d_in) != width:
        raise IncompatibleSAEError(
            f"The SAE reads vectors of width d_in={sae.cfg.d_in}, but {hook} on {handle.name} has width {width}. "
            "Pick the hook (and model) the SAE was trained on."
        )
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.numel() == 0:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise BadInputError(f"Evaluation tokens must be a non-empty [n_seq, seq_len] tensor, got {shape}.")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise BadInputError(f"Evaluation tokens must be integer ids, got dtype {tokens.dtype}.")
    if tokens.shape[1] < 2:
        raise BadInputError("Evaluation rows need at least 2 tokens (next-token loss needs a target).")
    vocab = int(handle.cfg.d_vocab)
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise BadInputError(f"Token ids must lie in [0, {vocab}); got {int(tokens.min())}..{int(tokens.max())}.")
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}.")
    return tokens.long().to(handle.cfg.device)


def _patch_hook(keep: torch.Tensor, replace: Callable[[torch.Tensor], torch.Tensor]):
    """A hook that replaces the positions where `keep` [B, L] is True with `replace(act)` there."""

    def hook_fn(act: torch.Tensor, hook) -> torch.Tensor:
        out = act.clone()
        mask = keep.to(act.device)
        out[mask] = replace(act)[mask].to(device=act.device, dtype=act.dtype)
        return out

    return hook_fn


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities at predicted positions 0..L−2, float32: [B, L−1, V]."""
    return torch.log_softmax(logits[:, :-1].float(), dim=-1)


def _ce_sum(lp: torch.Tensor, tokens: torch.Tensor) -> float:
    return float(-lp.gather(-1, tokens[:, 1:, None]).sum(dtype=torch.float64))


def _kl_sum(lp_clean: torch.Tensor, lp: torch.Tensor) -> float:
    # kl_div(input=log q, target=log p, log_target=True) = p·(log p − log q): KL(clean ‖ patched).
    # A few rows at a time: the elementwise term is [rows, L−1, vocab], 400 MB for a whole batch of 16 × 128.
    pairs = zip(lp_clean.split(4), lp.split(4))
    return sum(float(F.kl_div(q, p, reduction="none", log_target=True).sum(dtype=torch.float64)) for p, q in pairs)


class _Sums:
    """Running float64 sums over evaluated tokens (exact aggregation across batches)."""

    def __init__(self, d_sae: int, mean: torch.Tensor):
        self.mean = mean  # [d] float64
        self.n = 0
        self.l0 = self.sq_err = self.sq_dev = self.cos = 0.0
        self.ev_legacy = self.norm_ratio = 0.0
        self.n_ev_legacy = self.n_norm_ratio = 0
        self.counts = torch.zeros(d_sae, dtype=torch.float64)

    def add(self, x: torch.Tensor, f: torch.Tensor, x_hat: torch.Tensor) -> None:
        """x, x_hat [n, d]; f [n, d_sae]."""
        x, x_hat = x.double().cpu(), x_hat.double().cpu()
        active = (f != 0).cpu()
        self.n += x.shape[0]
        self.l0 += float(active.sum())
        self.counts += active.sum(0).double()
        err = (x - x_hat).pow(2).sum(-1)  # [n]
        dev = (x - self.mean).pow(2).sum(-1)  # [n]
        self.sq_err += float(err.sum())
        self.sq_dev += float(dev.sum())
        ok = dev > 0
        self.ev_legacy += float((1 - err[ok] / dev[ok]).sum())
        self.n_ev_legacy += int(ok.sum())
        self.cos += float(F.cosine_similarity(x, x_hat, dim=-1, eps=1e-8).sum())
        norm_x, norm_hat = x.norm(dim=-1), x_hat.norm(dim=-1)
        ok = norm_x > 0
        self.norm_ratio += float((norm_hat[ok] / norm_x[ok]).sum())
        self.n_norm_ratio += int(ok.sum())


def _ratio(num: float, den: float, name: str, notes: list[str]) -> float | None:
    if not math.isfinite(num) or not math.isfinite(den) or abs(den) < _EPS:
        notes.append(f"{name} is undefined: denominator {den!r} (numerator {num!r}).")
        return None
    return num / den


def _density(counts: torch.Tensor, n_tokens: int) -> tuple[float, float, list[float], list[int]]:
    freq = (counts / n_tokens).numpy()
    dead = float((freq == 0).mean())
    dense = float((freq > DENSE_THRESHOLD).mean())
    # Integer steps, so the last edge is exactly 0 and a latent firing on every token (log10 = 0) is counted.
    k_lo = math.floor(math.log10(1 / n_tokens) / HIST_BIN_WIDTH)
    edges = np.arange(k_lo, 1) * HIST_BIN_WIDTH
    hist, _ = np.histogram(np.log10(freq[freq > 0]), bins=edges)
    return dead, dense, [round(float(e), 6) for e in edges], [int(c) for c in hist]


def evaluate_sae(
    handle: ModelHandle,
    sae,
    hook: str,
    tokens: torch.Tensor,
    *,
    batch_size: int = 16,
    skip_first_position: bool = True,
    skip_separator: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SaeEval:
    """Evaluate `sae` (an SAE-Lens `SAE`) at `hook` on held-out `tokens` [n_seq, seq_len] (int ids).

    The SAE is spliced in at positions 1.. of every row (0.. without `skip_first_position`), except at
    separator tokens (with `skip_separator`); ablations replace exactly the same positions. `progress(done, total)` is called after every forward pass
    (total = 5 × number of batches). Raises BadInputError (hook, tokens) or IncompatibleSAEError (width).
    """
    t0 = time.perf_counter()
    tokens = _check_inputs(handle, sae, hook, tokens, batch_size)
    from saelab.corpus import separator_id, sink_mask

    sep = separator_id(handle.tokenizer) if skip_separator else None
    n_seq, seq_len = tokens.shape
    batches = tokens.split(batch_size)
    total, done = 5 * len(batches), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    notes: list[str] = []
    trained_on = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if trained_on and trained_on != hook:
        notes.append(f"The SAE's metadata says it was trained on {trained_on}, but it was evaluated on {hook}.")
    with torch.inference_mode():
        # Pass 1: mean activation over evaluated tokens (the forward stops after the hook's layer).
        act_sum, n_eval, act_shape = None, 0, None
        keeps = [sink_mask(batch, sep, first=skip_first_position) for batch in batches]
        for batch, keep in zip(batches, keeps, strict=True):
            act = cache_activations(handle, batch, [hook])[hook]
            act_shape = act.shape[2:]
            x = act[keep.to(act.device)].reshape(-1, act_shape.numel()).double().cpu()
            act_sum = x.sum(0) if act_sum is None else act_sum + x.sum(0)
            n_eval += x.shape[0]
            tick()
        if n_eval == 0:
            raise BadInputError("Every evaluation token is position 0 or a separator: nothing to evaluate.")
        mean = act_sum / n_eval
        mean_act = mean.reshape(act_shape)

        # Pass 2: clean, spliced, zero- and mean-ablated forwards per batch.
        sums = _Sums(int(sae.cfg.d_sae), mean)
        ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "mean": 0.0}
        kl = {"sae": 0.0, "zero": 0.0, "mean": 0.0}
        n_pred, d = 0, act_shape.numel()
        captured: dict[str, torch.Tensor] = {}  # the spliced pass leaves x, latents and x̂ here

        def splice(a: torch.Tensor) -> torch.Tensor:
            feats = sae.encode(a.to(device=sae.device, dtype=sae.dtype))
            x_hat = sae.decode(feats)
            captured.update(x=a, f=feats, x_hat=x_hat)
            return x_hat

        replacements = {
            "sae": splice,
            "zero": torch.zeros_like,
            "mean": lambda a: mean_act.to(device=a.device, dtype=a.dtype).expand_as(a),
        }
        for batch, keep in zip(batches, keeps, strict=True):
            lp_clean = _log_probs(run_with_hooks(handle, batch, [], return_type="logits"))
            ce["clean"] += _ce_sum(lp_clean, batch)
            tick()
            for kind, replace in replacements.items():
                logits = run_with_hooks(handle, batch, [(hook, _patch_hook(keep, replace))], return_type="logits")
                lp = _log_probs(logits)
                del logits
                ce[kind] += _ce_sum(lp, batch)
                kl[kind] += _kl_sum(lp_clean, lp)
                del lp
                tick()
            n_pred += batch.shape[0] * (seq_len - 1)
            where = keep.to(captured["x"].device)
            sums.add(
                captured["x"][where].reshape(-1, d),
                captured["f"][where].reshape(-1, int(sae.cfg.d_sae)),
                captured["x_hat"][where].reshape(-1, d),
            )

    n = sums.n
    ce_m = {k: v / n_pred for k, v in ce.items()}
    kl_m = {k: v / n_pred for k, v in kl.items()}
    explained_variance = _ratio(sums.sq_dev - sums.sq_err, sums.sq_dev, "explained_variance", notes)
    if sums.n_ev_legacy < n:
        notes.append(f"explained_variance_legacy skipped {n - sums.n_ev_legacy} tokens equal to the mean.")
    dead, dense, edges, counts = _density(sums.counts, n)
    result = SaeEval(
        hook=hook,
        model=handle.name,
        d_in=int(sae.cfg.d_in),
        d_sae=int(sae.cfg.d_sae),
        n_seq=int(n_seq),
        seq_len=int(seq_len),
        batch_size=int(batch_size),
        skip_first_position=bool(skip_first_position),
        n_tokens=n,
        n_predicted=n_pred,
        l0=sums.l0 / n,
        mse=sums.sq_err / (n * d),
        cosine_similarity=sums.cos / n,
        explained_variance=explained_variance,
        explained_variance_legacy=_ratio(sums.ev_legacy, sums.n_ev_legacy, "explained_variance_legacy", notes),
        relative_reconstruction_norm=_ratio(sums.norm_ratio, sums.n_norm_ratio, "relative_reconstruction_norm", notes),
        ce_clean=ce_m["clean"],
        ce_sae=ce_m["sae"],
        ce_zero_ablated=ce_m["zero"],
        ce_mean_ablated=ce_m["mean"],
        delta_loss=ce_m["sae"] - ce_m["clean"],
        ce_loss_score_zero=_ratio(
            ce_m["zero"] - ce_m["sae"], ce_m["zero"] - ce_m["clean"], "ce_loss_score_zero", notes
        ),
        ce_loss_score_mean=_ratio(
            ce_m["mean"] - ce_m["sae"], ce_m["mean"] - ce_m["clean"], "ce_loss_score_mean", notes
        ),
        kl_sae=kl_m["sae"],
        kl_zero_ablated=kl_m["zero"],
        kl_mean_ablated=kl_m["mean"],
        kl_score_zero=_ratio(kl_m["zero"] - kl_m["sae"], kl_m["zero"], "kl_score_zero", notes),
        kl_score_mean=_ratio(kl_m["mean"] - kl_m["sae"], kl_m["mean"], "kl_score_mean", notes),
        dead_fraction=dead,
        dense_fraction=dense,
        dense_threshold=DENSE_THRESHOLD,
        density_hist_edges=edges,
        density_hist_counts=counts,
        notes=notes,
        skip_separator=sep is not None,
        separator_id=sep,
    )
    _drop_non_finite(result)
    result.elapsed_s = round(time.perf_counter() - t0, 3)
    log.info("evaluated SAE at %s on %d tokens in %.1f s", hook, n, result.elapsed_s)
    return result


def _drop_non_finite(result: SaeEval) -> None:
    """Replace any NaN/inf metric (e.g. a model that overflowed) by None with a note; JSON forbids them."""
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            setattr(result, f.name, None)
            result.notes.append(f"{f.name} was {value!r} (non-finite) and is reported as None.")
