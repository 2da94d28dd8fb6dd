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
  3. logit effects, neighbours (`saelab.features.decoder_stats`) and the feature map come from the weights alone.

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
from saelab.features.dashboard_collect import F16_MAX, Checkpoint, Entries, collect, partial_dir, sae_fingerprint
from saelab.features.decoder_stats import logit_effects, neighbours
from saelab.features.labels import read_labels
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
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE, check_fits
from saelab.storage import (
    DASHBOARD_DIR,
    SAE_WEIGHTS_FILE,
    atomic_dir,
    read_json,
    remove_stale_temps,
    save_tensors,
    write_json,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
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
    checkpoint_rows: int = 128  # save the activations phase every this many rows (0: never); a rerun resumes

    def __post_init__(self) -> None:
        for name in ("n_top", "n_int", "n_per", "n_bins", "n_logits", "n_neighbours", "n_clusters", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"DashboardConfig.{name} must be a positive integer, got {value!r}")
        for name in ("ctx_left", "ctx_right", "seed", "max_entries", "checkpoint_rows"):
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


def _count_above(skey: torch.Tensor, seg_start: torch.Tensor, edges_DM: torch.Tensor) -> torch.Tensor:
    """int64 `[d, m]`: how many entries of latent i have a float16 value > edges_DM[i, m] (float32)."""
    e16 = edges_DM.clamp(max=F16_MAX).half()
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


def _statistics(e: Entries, tokens: torch.Tensor, n_tokens: int, cfg: DashboardConfig) -> dict[str, torch.Tensor]:
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
    pool: Any = None,
) -> Path:
    """Compute every latent's dashboard over `tokens` `[n_seq, seq_len]`; write `out_dir` (default
    `<loaded.path>/dashboards`) atomically and return it.

    `progress(phase, done, total)` is called as work advances: "activations" after every batch (in
    analysed tokens, 0 … n_tokens), then "statistics", "logits", "neighbours", "projection" and "write"
    (0/1 at the start, 1/1 at the end); a tqdm bar shows the activations phase on a terminal. A labels.json
    already in `out_dir` is kept when it was made for the same SAE weights, dropped otherwise.

    `pool` (a `saelab.distributed.ray_pool.RayModelPool`, `saelab dashboards --ray`) computes the activations
    phase on Ray actors, merged in batch order: the same dashboards as without it (tests/test_ray.py).

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
    fingerprint = sae_fingerprint(loaded)
    tokens_fingerprint = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]
    settings = {k: v for k, v in cfg.to_dict().items() if k != "checkpoint_rows"}
    identity = {"sae": fingerprint, "tokens": tokens_fingerprint, "hook": hook, "config": settings}
    remove_stale_temps(out)

    with torch.inference_mode():
        with phase("activations", n_tokens), tqdm(total=n_tokens, unit="tok", desc="dashboards", disable=None) as bar:
            run_handle = compute_handle(handle, _DTYPES[cfg.compute_dtype]) if pool is None else handle

            def tick(n: int) -> None:
                bar.update(n)
                report("activations", bar.n, n_tokens)

            checkpoint = Checkpoint(partial_dir(out), identity)
            entries = collect(run_handle, loaded, tokens, keep, batch_size=cfg.batch_size, max_entries=cfg.max_entries,
                              tick=tick, checkpoint=checkpoint, checkpoint_rows=cfg.checkpoint_rows, pool=pool,
                              compute_dtype=cfg.compute_dtype)  # fmt: skip
            del run_handle
        n_entries = len(entries.val)
        with phase("statistics"):
            tensors = _statistics(entries, tokens, n_tokens, cfg)
            del entries
        W_dec = sae.W_dec.detach().float().cpu()
        with phase("logits"):
            logits, logit_formula = logit_effects(
                handle, loaded.decoder_hook, W_dec, cfg.n_logits
            )  # transcoders: output
        with phase("neighbours"):
            tensors.update(logits, **neighbours(W_dec, cfg.n_neighbours))
        with phase("projection"):
            xy, cluster = projection.project_decoder(W_dec, cfg.projection, cfg.n_clusters, cfg.seed)
            tensors.update(map_xy=torch.from_numpy(xy), map_cluster=torch.from_numpy(cluster))
            map_keep = projection.neighbourhood_preservation(W_dec, xy)

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
        "tokens_fingerprint": tokens_fingerprint,
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
        "map_neighbourhood_keep_at_10": None if map_keep != map_keep else round(map_keep, 4),
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
    checkpoint.clear()
    size = sum(p.stat().st_size for p in out.iterdir())
    log.info("dashboards for %d latents over %d tokens: %.1f MB in %s", sizes["d_sae"], n_tokens, size / 1e6, out)
    return out


_SIZE_KEYS = ("n_top", "n_int", "n_per", "n_bins", "n_logits", "n_neighbours")


def _write(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Replace `out` whole; keep its labels.json if it was made for the same SAE weights and is readable (a
    corrupt one is dropped: copying it back would make the rebuild that was meant to repair it loop)."""
    keep_labels = False
    if (out / LABELS_FILE).is_file() and (out / META_FILE).is_file():
        try:
            old = read_json(out / META_FILE)
            keep_labels = old.get("sae", {}).get("fingerprint") == meta["sae"]["fingerprint"]
            if keep_labels:
                read_labels(out)
        except (CorruptFileError, AttributeError) as err:  # an unreadable old folder or label file is replaced
            log.warning("dashboards: not keeping %s (%s)", out / LABELS_FILE, err)
            keep_labels = False
    with atomic_dir(out) as tmp:
        save_tensors(tmp / LATENTS_FILE, tensors, metadata={"format": FORMAT})
        if keep_labels:
            shutil.copy2(out / LABELS_FILE, tmp / LABELS_FILE)
        write_json(tmp / META_FILE, meta)


__all__ = ["DashboardConfig", "build_dashboards"]
