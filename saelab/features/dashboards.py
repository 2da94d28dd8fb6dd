"""Build feature dashboards (SAEDashboard / Neuronpedia style) for every latent of an SAE in one pass.

`build_dashboards` writes `<sae_dir>/dashboards/{meta.json, latents.safetensors}` (layout:
`saelab.features.store.TENSORS`; read back with `DashboardStore`):
  1. activations: one forward per batch through `saelab.hooks` (stopped after the hook's layer, on a
     private bf16 copy of the model), `sae.encode`, and only the positive entries kept, as
     (token int32, latent int16, value float16) in token order — TopK k=64 over 1M tokens is 64M
     entries, 512 MB. Counts, sums and maxima are accumulated exactly (float32/64) on the way.
  2. statistics: one stable sort of all entries by a packed int32 key (latent, float16 value desc).
     Top examples are the first n_top entries of each latent's segment; interval and histogram counts
     are `searchsorted` of the bin edges in that key; interval samples are drawn stratified inside
     each interval's range. Window activations are looked up in token order (a CSR row pointer plus a
     vectorised binary search over each token's latents). No Python loop over latents or entries.
  3. logit effects, neighbours and the feature map come from the weights alone.

Traps:
  * Position 0 and document separators are attention sinks (residual norm ~1e4 vs ~150): with
    `skip_first_position` / `skip_separator` they are not analysed and show activation 0 in windows.
  * Ordering, intervals and histogram use the float16 values that are stored; max_act and mean_act are
    exact float32, so a stored peak can differ from max_act by float16 rounding (≤ 0.05 %).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

import saelab
from saelab.activations import compute_handle
from saelab.configs import DictConfig
from saelab.corpus import separator_id, sink_mask
from saelab.errors import BadInputError, CorruptFileError
from saelab.features import projection
from saelab.features.store import (
    FORMAT,
    FORMAT_VERSION,
    FORMULAS,
    LABELS_FILE,
    LATENTS_FILE,
    META_FILE,
    TENSORS,
    tensor_shape,
)
from saelab.hooks import cache_activations
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE, check_fits
from saelab.storage import DASHBOARD_DIR, SAE_WEIGHTS_FILE, atomic_dir, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
_F16_MAX = float(torch.finfo(torch.float16).max)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int32": torch.int32}


@dataclass(kw_only=True)
class DashboardConfig(DictConfig):
    """What to compute. Windows span `ctx_left` tokens before the example and `ctx_right` after it."""

    n_top: int = 16
    ctx_left: int = 10
    ctx_right: int = 5
    n_int: int = 4
    n_per: int = 4
    n_bins: int = 40
    n_logits: int = 10
    n_neighbours: int = 10
    n_clusters: int = 24
    projection: Literal["auto", "tsne", "pca"] = "auto"
    batch_size: int = 64
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    seed: int = 0
    skip_first_position: bool = True
    skip_separator: bool = True
    max_entries: int = 200_000_000  # positive activations held in RAM (8 bytes each)

    def __post_init__(self) -> None:
        for name in ("n_top", "n_int", "n_per", "n_bins", "n_logits", "n_neighbours", "n_clusters", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"DashboardConfig.{name} must be a positive integer, got {value!r}")
        for name in ("ctx_left", "ctx_right", "seed", "max_entries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadInputError(f"DashboardConfig.{name} must be an integer ≥ 0, got {value!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise BadInputError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
        if self.projection not in ("auto", "tsne", "pca"):
            raise BadInputError(f"projection must be 'auto', 'tsne' or 'pca', got {self.projection!r}")

    @property
    def ctx(self) -> int:
        return self.ctx_left + 1 + self.ctx_right


@dataclass
class _Entries:
    """The positive activations, in token order (then latent order within a token)."""

    tok: torch.Tensor  # int32 [M] flat index row * seq_len + pos into the analysed tokens
    lat: torch.Tensor  # int16 (int32 if d_sae > 32767) [M]
    val: torch.Tensor  # float16 [M] > 0 (clamped to float16's max)
    count: torch.Tensor  # int64 [d] positive activations per latent
    total: torch.Tensor  # float64 [d] their sum (exact float32 values)
    vmax: torch.Tensor  # float32 [d] their maximum


def _collect(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    keep: torch.Tensor,
    cfg: DashboardConfig,
    tick: Callable[[int], None],
) -> _Entries:
    """Forward + encode every batch of rows; keep the positive activations of the `keep` positions."""
    sae, hook, d = loaded.sae, loaded.hook, int(loaded.sae.cfg.d_sae)
    lat_dtype = torch.int16 if d <= 32767 else torch.int32
    flat_BP = torch.arange(tokens.numel(), dtype=torch.int32).view_as(tokens)
    count, total = torch.zeros(d, dtype=torch.int64), torch.zeros(d, dtype=torch.float64)
    vmax = torch.zeros(d, dtype=torch.float32)
    parts: tuple[list, list, list] = ([], [], [])
    n_entries = 0
    for b0 in range(0, len(tokens), cfg.batch_size):
        keep_BP = keep[b0 : b0 + cfg.batch_size]
        if keep_BP.any():
            act = cache_activations(handle, tokens[b0 : b0 + cfg.batch_size], [hook], stop_early=True)[hook]
            f_ND = sae.encode(act[keep_BP].to(device=sae.device, dtype=sae.dtype))
            f_ND = (f_ND.to_dense() if f_ND.is_sparse else f_ND).float().cpu()
            nz = (f_ND > 0).nonzero()
            row, lat = nz[:, 0], nz[:, 1]
            val = f_ND[row, lat]
            count += torch.bincount(lat, minlength=d)
            total += torch.bincount(lat, weights=val.double(), minlength=d)
            vmax.scatter_reduce_(0, lat, val, "amax")
            n_entries += len(val)
            if n_entries > cfg.max_entries:
                raise BadInputError(
                    f"More than max_entries={cfg.max_entries:,} positive activations ({n_entries:,} after "
                    f"{b0 + len(keep_BP)} of {len(tokens)} rows): this SAE is too dense for that many tokens. "
                    "Use fewer tokens or raise max_entries (8 bytes of RAM each)."
                )
            parts[0].append(flat_BP[b0 : b0 + cfg.batch_size][keep_BP][row])
            parts[1].append(lat.to(lat_dtype))
            parts[2].append(val.clamp(max=_F16_MAX).half())
        tick(int(keep_BP.sum()))
    dtypes = (torch.int32, lat_dtype, torch.float16)
    tok, lat, val = (torch.cat(p) if p else torch.zeros(0, dtype=dt) for p, dt in zip(parts, dtypes))
    return _Entries(tok, lat, val, count, total, vmax)


def _count_above(skey: torch.Tensor, seg_start: torch.Tensor, edges_DM: torch.Tensor) -> torch.Tensor:
    """int64 `[d, m]`: how many entries of latent i have a float16 value > edges_DM[i, m] (float32)."""
    e16 = edges_DM.clamp(max=_F16_MAX).half()
    bits = e16.view(torch.int16).long() - (e16.float() > edges_DM).long()  # largest f16 ≤ edge
    lat = torch.arange(len(edges_DM)).view(-1, 1)
    query = (lat * 65536 + 32767 - bits).to(skey.dtype).contiguous()
    return torch.searchsorted(skey, query, side="left") - seg_start.view(-1, 1)


def _lookup(ptr: torch.Tensor, e_lat: torch.Tensor, t: torch.Tensor, lat: torch.Tensor):
    """For each (token t, latent lat): (found bool, index of the entry), by binary search in t's row."""
    lo, hi = ptr[t], ptr[t + 1]
    end, lat = hi.clone(), lat.to(e_lat.dtype)
    last = len(e_lat) - 1  # the sentinel
    for _ in range(int((ptr[1:] - ptr[:-1]).max()).bit_length() + 1):
        active = lo < hi
        mid = (lo + hi) // 2
        right = e_lat[mid.clamp(max=last)] < lat
        lo = torch.where(active & right, mid + 1, lo)
        hi = torch.where(active & ~right, mid, hi)
    at = lo.clamp(max=last)
    return (lo < end) & (e_lat[at] == lat), at


def _windows(tokens: torch.Tensor, t_S: torch.Tensor, lat_S: torch.Tensor, ptr, e_lat, e_val, cfg):
    """Token ids int32 and activations float16 `[*S, ctx]` around flat positions `t_S` (-1 = none)."""
    seq_len = tokens.shape[1]
    offs = torch.arange(-cfg.ctx_left, cfg.ctx_right + 1)
    row, pos = t_S.clamp(min=0) // seq_len, t_S.clamp(min=0) % seq_len
    wp = pos[..., None] + offs
    ok = (t_S >= 0)[..., None] & (wp >= 0) & (wp < seq_len)
    tg = torch.where(ok, row[..., None] * seq_len + wp, 0)
    ids = torch.where(ok, tokens.reshape(-1)[tg], -1).to(torch.int32)
    found, at = _lookup(ptr, e_lat, tg, lat_S[..., None].expand_as(tg))
    acts = torch.where(ok & found, e_val[at], torch.zeros((), dtype=torch.float16))
    return ids, acts


def _statistics(e: _Entries, tokens: torch.Tensor, n_tokens: int, cfg: DashboardConfig) -> dict[str, torch.Tensor]:
    d, M = len(e.count), len(e.val)
    key_dtype = torch.int32 if d <= 32767 else torch.int64
    key = e.lat.to(key_dtype) * 65536 + (32767 - e.val.view(torch.int16).to(key_dtype))
    skey, perm = torch.sort(key, stable=True)  # latent asc, value desc, token asc
    del key
    sentinel = torch.zeros(1, dtype=torch.int32)
    s_tok = torch.cat([e.tok[perm], sentinel - 1])
    del perm
    ptr = torch.zeros(tokens.numel() + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(e.tok, minlength=tokens.numel()), 0)
    e_lat = torch.cat([e.lat, torch.full((1,), -1, dtype=e.lat.dtype)])
    e_val = torch.cat([e.val, torch.zeros(1, dtype=torch.float16)])
    seg_start = torch.cumsum(e.count, 0) - e.count
    latents = torch.arange(d)
    out: dict[str, torch.Tensor] = {
        "density": (e.count / n_tokens).float(),
        "max_act": e.vmax,
        "mean_act": (e.total / e.count.clamp(min=1)).float(),
    }

    j = torch.arange(cfg.n_top)
    t_top = torch.where(j < e.count[:, None], s_tok[(seg_start[:, None] + j).clamp(max=M)].long(), -1)
    out["top_tokens"], out["top_acts"] = _windows(tokens, t_top, latents[:, None], ptr, e_lat, e_val, cfg)
    seq_len = tokens.shape[1]
    out["top_seq"] = torch.where(t_top >= 0, t_top // seq_len, -1).int()
    out["top_pos"] = torch.where(t_top >= 0, t_top % seq_len, -1).int()

    def above(n: int) -> torch.Tensor:  # [d, n+1] entries above each of n equal bin edges, nonincreasing
        inner = _count_above(skey, seg_start, e.vmax[:, None] * (torch.arange(1, n) / n))
        return torch.cat([e.count[:, None], inner, torch.zeros(d, 1, dtype=torch.int64)], 1)

    hist = above(cfg.n_bins)
    out["hist_counts"] = (hist[:, :-1] - hist[:, 1:]).int()
    a = above(cfg.n_int)
    size, start = a[:, :-1] - a[:, 1:], seg_start[:, None] + a[:, 1:]  # interval j: offsets [a[j+1], a[j])
    out["q_frac"] = (size / e.count.clamp(min=1)[:, None]).float()
    out["q_bounds"] = (e.vmax[:, None, None] * (torch.arange(cfg.n_int)[:, None] + torch.arange(2)) / cfg.n_int).float()
    gen = torch.Generator().manual_seed(cfg.seed)
    m = torch.arange(cfg.n_per)
    u = torch.rand(d, cfg.n_int, cfg.n_per, generator=gen, dtype=torch.float64)
    n = size[..., None]
    off = torch.where(n >= cfg.n_per, ((m + u) * n / cfg.n_per).floor().long(), m)  # one pick per stratum
    t_q = torch.where(m < n, s_tok[(start[..., None] + off).clamp(max=M)].long(), -1)
    out["q_tokens"], out["q_acts"] = _windows(tokens, t_q, latents[:, None, None], ptr, e_lat, e_val, cfg)
    return out


def _residual_directions(model, hook: str, W_dec: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """`[d_sae, d_model]`: what each decoder row writes into the residual stream (None if unknown)."""
    layer = ModelHandle.hook_layer(hook)
    if hook.endswith("attn.hook_z") and layer is not None:
        W_O = model.blocks[layer].attn.W_O.detach().float()  # [heads, d_head, d_model]
        return torch.einsum(
            "shd,hdm->sm", W_dec.view(len(W_dec), *W_O.shape[:2]), W_O
        ), f"W_dec[i] @ blocks.{layer}.attn.W_O"
    if hook.endswith("mlp.hook_post") and layer is not None:
        return W_dec @ model.blocks[layer].mlp.W_out.detach().float(), f"W_dec[i] @ blocks.{layer}.mlp.W_out"
    return (W_dec, "W_dec[i]") if W_dec.shape[1] == model.cfg.d_model else (None, "")


def _logit_effects(handle: ModelHandle, hook: str, W_dec: torch.Tensor, n: int) -> tuple[dict, str]:
    """Top/bottom `n` tokens of each latent's direct effect on the logits, and the formula used."""
    model, d = handle.model, len(W_dec)
    names = ("logit_pos_ids", "logit_pos_vals", "logit_neg_ids", "logit_neg_vals")
    D, r = _residual_directions(model, hook, W_dec)
    if D is None:
        out = {k: torch.full((d, n), -1 if "ids" in k else float("nan")) for k in names}
        return out, f"not computed: {hook} does not write into the residual stream (ids -1, values NaN)"
    W_U = model.W_U.detach().float()
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if w is not None:
        W_U = w.detach().float()[:, None] * W_U
    formula = (
        f"effect[i, v] = sum_j r_i[j] * {'ln_final.w[j] * ' if w is not None else ''}W_U[j, v] with r_i = {r} "
        "(the direction through the unembedding; no RMS scale, no b_U); logit_pos = the n_logits largest "
        "effects (descending), logit_neg = the n_logits smallest (ascending)"
    )
    k = min(n, W_U.shape[1])
    parts: dict[str, list] = {name: [] for name in names}
    for c0 in range(0, d, 256):
        L = D[c0 : c0 + 256] @ W_U  # [256, d_vocab]
        top, bot = L.topk(k, dim=1), L.topk(k, dim=1, largest=False)
        for name, t in zip(names, (top.indices, top.values, bot.indices, bot.values)):
            parts[name].append(t)
    return {name: torch.cat(v) for name, v in parts.items()}, formula


def _neighbours(W_dec: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    d = len(W_dec)
    U = W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ids, cos = torch.full((d, n), -1, dtype=torch.int32), torch.full((d, n), float("nan"))
    k = min(n, d - 1)
    for c0 in range(0, d, 1024):
        S = U[c0 : c0 + 1024] @ U.T
        S[torch.arange(len(S)), torch.arange(c0, c0 + len(S))] = -float("inf")  # not its own neighbour
        top = S.topk(k, dim=1)
        ids[c0 : c0 + len(S), :k], cos[c0 : c0 + len(S), :k] = top.indices.int(), top.values
    return {"nbr_ids": ids, "nbr_cos": cos}


def _fingerprint(loaded: LoadedSAE) -> str:
    path = Path(loaded.path) / SAE_WEIGHTS_FILE
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    else:
        h.update(loaded.sae.W_dec.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_tokens(tokens: torch.Tensor, handle: ModelHandle) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.numel() == 0 or tokens.is_floating_point():
        raise BadInputError("tokens must be a non-empty integer tensor [n_seq, seq_len] (e.g. CorpusTokens.tokens)")
    if tokens.numel() >= 2**31:
        raise BadInputError(f"{tokens.numel():,} tokens is too many for one build; use fewer than 2**31")
    if int(tokens.min()) < 0 or int(tokens.max()) >= handle.cfg.d_vocab:
        raise BadInputError(f"token ids must lie in 0 … {handle.cfg.d_vocab - 1} for model {handle.name}")
    if tokens.shape[1] > handle.cfg.n_ctx:
        raise BadInputError(f"seq_len {tokens.shape[1]} exceeds the model's context of {handle.cfg.n_ctx}")
    return tokens.detach().to("cpu", torch.int64).contiguous()


class _Phases:
    """Times named phases into `seconds` and reports each start and end to the progress callback."""

    def __init__(self, report: Progress):
        self.report, self.seconds = report, {}

    @contextmanager
    def __call__(self, name: str, total: int = 1):
        self.report(name, 0, total)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("dashboards: %s took %.1fs", name, self.seconds[name])
        self.report(name, total, total)


def build_dashboards(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    cfg: DashboardConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    corpus_provenance: dict[str, Any] | None = None,
) -> Path:
    """Compute every latent's dashboard over `tokens` `[n_seq, seq_len]`; write `out_dir` (default
    `<loaded.path>/dashboards`) atomically and return it.

    `progress(phase, done, total)` is called as work advances: "activations" after every batch (in
    analysed tokens, 0 … n_tokens), then "statistics", "logits", "neighbours", "projection" and "write"
    (0/1 at the start, 1/1 at the end); a tqdm bar shows the activations phase on a terminal. A labels.json
    already in `out_dir` is kept when it was made for the same SAE weights, dropped otherwise.

    Cost: the forward pass dominates (see `saelab.activations` for speeds). RAM: ~8 bytes per positive
    activation held, plus ~16 during the sort (TopK k=64 over 1M tokens: ~3 GB at the peak).
    """
    cfg = cfg or DashboardConfig()
    sae, hook = loaded.sae, loaded.hook
    check_fits(sae, handle, hook, loaded.path)
    tokens = _check_tokens(tokens, handle)
    out = Path(out_dir) if out_dir is not None else Path(loaded.path) / DASHBOARD_DIR
    sep = separator_id(handle.tokenizer) if cfg.skip_separator and handle.tokenizer is not None else None
    keep = sink_mask(tokens, sep, first=cfg.skip_first_position)
    n_tokens = int(keep.sum())
    if n_tokens == 0:
        raise BadInputError("No token is left to analyse once row starts and separators are skipped.")
    report = progress or (lambda phase, done, total: None)
    phase = _Phases(report)

    with torch.inference_mode():
        with phase("activations", n_tokens), tqdm(total=n_tokens, unit="tok", desc="dashboards", disable=None) as bar:
            run_handle = compute_handle(handle, _DTYPES[cfg.compute_dtype])

            def tick(n: int) -> None:
                bar.update(n)
                report("activations", bar.n, n_tokens)

            entries = _collect(run_handle, loaded, tokens, keep, cfg, tick)
            del run_handle
        n_entries = len(entries.val)
        with phase("statistics"):
            tensors = _statistics(entries, tokens, n_tokens, cfg)
            del entries
        W_dec = sae.W_dec.detach().float().cpu()
        with phase("logits"):
            logits, logit_formula = _logit_effects(handle, hook, W_dec, cfg.n_logits)
        with phase("neighbours"):
            tensors.update(logits, **_neighbours(W_dec, cfg.n_neighbours))
        with phase("projection"):
            xy, cluster = projection.project_decoder(W_dec, cfg.projection, cfg.n_clusters, cfg.seed)
            tensors.update(map_xy=torch.from_numpy(xy), map_cluster=torch.from_numpy(cluster))

    fingerprint = _fingerprint(loaded)
    sizes = {"d_sae": int(sae.cfg.d_sae), "ctx": cfg.ctx, **{k: getattr(cfg, k) for k in _SIZE_KEYS}}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **sizes,
        "d_in": int(sae.cfg.d_in),
        "n_tokens": n_tokens,
        "n_entries": n_entries,
        "n_seq": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "ctx_left": cfg.ctx_left,
        "ctx_right": cfg.ctx_right,
        "first_position_skipped": cfg.skip_first_position,
        "separator_skipped": sep is not None,
        "separator_id": sep,
        "config": cfg.to_dict(),
        "corpus": corpus_provenance if corpus_provenance is not None else {"note": "no provenance given"},
        "tokens_fingerprint": hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16],
        "sae": {
            "path": str(loaded.path),
            "fingerprint": fingerprint,
            "fingerprint_of": f"sha256[:16] of {SAE_WEIGHTS_FILE}",
            "architecture": sae.cfg.architecture(),
            "d_in": int(sae.cfg.d_in),
            "d_sae": int(sae.cfg.d_sae),
        },
        "model": {"name": handle.name, "source": handle.source},
        "hook": hook,
        "seconds": phase.seconds,  # "write" is missing: meta.json is part of the write
        "formulas": {
            **FORMULAS,
            "logit_effects": logit_formula,
            "projection": projection.describe(int(sae.cfg.d_sae), cfg.projection, cfg.n_clusters),
        },
        "tensors": {name: [dtype, list(tensor_shape(name, sizes))] for name, (dtype, _) in TENSORS.items()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "saelab_version": saelab.__version__,
    }
    for name, (dtype, _) in TENSORS.items():
        tensors[name] = tensors[name].to(_DTYPES[dtype]).contiguous()
        if list(tensors[name].shape) != meta["tensors"][name][1]:
            raise RuntimeError(f"bug: {name} has shape {list(tensors[name].shape)}, expected {meta['tensors'][name]}")
    with phase("write"):
        _write(out, {name: tensors[name] for name in TENSORS}, meta)
    size = sum(p.stat().st_size for p in out.iterdir())
    log.info("dashboards for %d latents over %d tokens: %.1f MB in %s", sizes["d_sae"], n_tokens, size / 1e6, out)
    return out


_SIZE_KEYS = ("n_top", "n_int", "n_per", "n_bins", "n_logits", "n_neighbours")


def _write(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Replace `out` whole; keep its labels.json if it was made for the same SAE weights."""
    keep_labels = False
    if (out / LABELS_FILE).is_file() and (out / META_FILE).is_file():
        try:
            old = read_json(out / META_FILE)
            keep_labels = old.get("sae", {}).get("fingerprint") == meta["sae"]["fingerprint"]
        except (CorruptFileError, AttributeError):  # an unreadable old folder is simply replaced
            pass
    with atomic_dir(out) as tmp:
        save_tensors(tmp / LATENTS_FILE, tensors, metadata={"format": FORMAT})
        if keep_labels:
            shutil.copy2(out / LABELS_FILE, tmp / LABELS_FILE)
        write_json(tmp / META_FILE, meta)


__all__ = ["DashboardConfig", "build_dashboards"]
