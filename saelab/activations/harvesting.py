"""Harvest activations at one or more hook points to sharded safetensors.

`harvest` runs the packed corpus through the model in batches (one forward per batch for all
hooks, stopped after the deepest hooked layer, through `saelab.hooks.cache_activations`) and writes

    out_dir/shard_00000.safetensors …   {hook: [n_tok, d] (store dtype), token_ids, seq_index, pos_index}
    out_dir/manifest.json               model, hooks, widths, dtypes, corpus provenance, shards done

Each shard is written atomically and then recorded in the manifest, so a killed harvest resumes at
the first unrecorded shard and ends with the same bytes as an uninterrupted one. Shards hold whole
corpus rows and are split into the same batches on every run (results do not depend on where a run
stopped).

Traps handled here:
  * Position 0 of every packed row is the attention sink: its residual norm is ~24,000 in SmolLM2
    (vs ~150 elsewhere at layer 12). `skip_first_position` (default) leaves it out and says so in the
    manifest. Every `<|endoftext|>` separator is a sink as well (norm ~1e4, ~1 % of tokens), and
    `skip_separator` (default) leaves those out too, as SAE-Lens's `exclude_special_tokens` does; the
    shards' `seq_index`/`pos_index` say which positions were kept. Values still fit float16 (max
    |x| ~2.6e4 < 65504); a shard that would overflow the store dtype is refused, not written as inf.
  * bf16 compute runs on a private bf16 copy of the model: the shared handle keeps its dtype.

The folder is read back by `saelab.activations.store.ActivationStore`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from saelab.configs import DictConfig
from saelab.corpus import CorpusTokens, sink_mask
from saelab.errors import BadInputError, CorruptFileError
from saelab.hooks import cache_activations
from saelab.models import fastpath
from saelab.models.handle import ModelHandle
from saelab.storage import HARVEST_MANIFEST, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

HARVEST_FORMAT = "saelab.harvest"
_FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INDEX_KEYS = ("token_ids", "seq_index", "pos_index")


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


@dataclass(kw_only=True)
class HarvestConfig(DictConfig):
    """What to harvest and how to store it. `shard_tokens` is rounded down to whole batches of rows."""

    hooks: list[str]
    batch_size: int = 32
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    store_dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    shard_tokens: int = 65536
    skip_first_position: bool = True
    skip_separator: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.hooks, str):
            self.hooks = [self.hooks]
        self.hooks = list(dict.fromkeys(self.hooks))
        if not self.hooks:
            raise BadInputError(
                "HarvestConfig.hooks is empty; name at least one hook point, e.g. blocks.12.hook_resid_post"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BadInputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise BadInputError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
        if self.store_dtype not in _DTYPES:
            raise BadInputError(f"store_dtype must be one of {sorted(_DTYPES)}, got {self.store_dtype!r}")
        if not isinstance(self.shard_tokens, int) or self.shard_tokens < 1:
            raise BadInputError(f"shard_tokens must be a positive integer, got {self.shard_tokens!r}")


@dataclass
class HarvestResult:
    """What `harvest` did in this call.

    `tokens_per_second` counts stored tokens computed in this call; `forward_tokens_per_second` counts
    every position run through the model (skipped ones too), the number to compare with a roofline.
    """

    out_dir: Path
    hooks: list[str]
    n_tokens: int
    n_shards: int
    shards_reused: int
    tokens_computed: int
    seconds: float
    tokens_per_second: float
    forward_tokens_per_second: float
    manifest: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------- harvesting


def _model_fingerprint(model) -> str:
    """Cheap identity of the weights: parameter shapes plus a slice of a few tensors."""
    h = hashlib.sha256()
    params = dict(model.named_parameters())
    for name in sorted(params):
        h.update(f"{name}{tuple(params[name].shape)}".encode())
    for name in sorted(params)[:: max(1, len(params) // 8)]:
        h.update(params[name].detach().reshape(-1)[:4096].float().numpy().tobytes())
    return h.hexdigest()[:16]


def compute_handle(handle: ModelHandle, dtype: torch.dtype) -> ModelHandle:
    """`handle` itself for its own dtype, else a private copy in `dtype` with its own lock.

    The tokenizer is shared, the weights are not: the shared model is never converted.
    """
    src = handle.model
    dtype = fastpath.effective_dtype(dtype)  # bf16 only where the CPU multiplies it natively
    if src.cfg.dtype == dtype:
        return handle
    # Seeding deepcopy's memo with converted parameters copies each weight once, in the new dtype
    # (10x faster than deepcopy + TransformerLens's `to`, which also rebuilds the state dict per key).
    memo: dict[int, Any] = {id(src.tokenizer): src.tokenizer}
    with handle.lock:  # nobody's hooks get copied along
        for p in src.parameters():
            memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        model = copy.deepcopy(src, memo)
    model.cfg.dtype = dtype  # one cfg object shared by all components; RMSNorm upcasts based on it
    torch.nn.Module.to(model, dtype)  # floating buffers (rotary tables); masks stay bool
    return ModelHandle(model=model, name=handle.name, source=handle.source, info={**handle.info, "dtype": str(dtype)})


def _keep_mask(corpus: CorpusTokens, cfg: HarvestConfig) -> torch.Tensor:
    """bool `[n_seq, seq_len]`: the positions whose activations are stored (`saelab.corpus.sink_mask`)."""
    sep = corpus.separator_id if cfg.skip_separator else None
    return sink_mask(corpus.tokens, sep, first=cfg.skip_first_position)


def _layout(corpus: CorpusTokens, cfg: HarvestConfig, keep: torch.Tensor) -> dict[str, int]:
    n_seq, seq_len = corpus.tokens.shape
    per_row = seq_len - int(cfg.skip_first_position)
    if per_row < 1:
        raise BadInputError(f"seq_len={seq_len} leaves no tokens once position 0 is skipped")
    rows = max(1, cfg.shard_tokens // (per_row * cfg.batch_size)) * cfg.batch_size
    return {
        "n_seq": int(n_seq),
        "seq_len": int(seq_len),
        "rows_per_shard": rows,
        "n_shards": math.ceil(n_seq / rows),
        "total_tokens": int(keep.sum()),
    }


def _open_manifest(out_dir: Path, identity: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from: the existing one when it matches `identity`, else `fresh`."""
    path = out_dir / HARVEST_MANIFEST
    if not path.exists():
        if out_dir.exists() and any(p for p in out_dir.iterdir() if not p.name.startswith(".")):
            raise BadInputError(f"{out_dir} is not empty and holds no {HARVEST_MANIFEST}; pick an empty or new folder.")
        return fresh
    old = read_json(path)
    if not isinstance(old, dict) or old.get("format") != HARVEST_FORMAT:
        raise BadInputError(f"{path} is not a SAE Lab harvest manifest; pick another folder.")
    diff = [k for k in identity if old.get("identity", {}).get(k) != identity[k]]
    if diff:
        raise BadInputError(
            f"{out_dir} holds a harvest with a different {', '.join(diff)}. Harvest into a new folder, "
            "or delete this one to start over."
        )
    for shard in old["shards"]:
        if not (out_dir / shard["file"]).exists():
            raise CorruptFileError(
                f"{out_dir / shard['file']} is listed in {path} but missing; delete the folder and re-harvest."
            )
    return old


def _harvest_shard(
    handle: ModelHandle,
    tokens: torch.Tensor,
    keep: torch.Tensor,
    hooks: list[str],
    widths: dict[str, int],
    cfg: HarvestConfig,
    on_batch: Callable[[int], None],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """Activations of the kept positions of `tokens` `[rows, seq]`, one forward per batch, plus stats."""
    store_dtype = _DTYPES[cfg.store_dtype]
    n_tok = int(keep.sum())
    bufs = {h: torch.empty(n_tok, widths[h], dtype=store_dtype) for h in hooks}
    stats = {h: {"max_abs": 0.0, "mean_norm": 0.0, "max_norm": 0.0} for h in hooks}
    o0 = 0
    for b0 in range(0, len(tokens), cfg.batch_size):
        b1 = min(len(tokens), b0 + cfg.batch_size)
        acts = cache_activations(handle, tokens[b0:b1], hooks, stop_early=True)
        keep_BP = keep[b0:b1]
        o1 = o0 + int(keep_BP.sum())
        for h in hooks:
            act_ND = acts[h][keep_BP]  # boolean gather: [kept, d], already a fresh tensor
            norms = torch.linalg.vector_norm(act_ND, dim=-1, dtype=torch.float32)
            st = stats[h]
            st["max_abs"] = max(st["max_abs"], float(act_ND.abs().amax()) if len(act_ND) else 0.0)
            st["mean_norm"] += float(norms.sum()) / max(n_tok, 1)
            st["max_norm"] = max(st["max_norm"], float(norms.amax()) if len(norms) else 0.0)
            bufs[h][o0:o1].copy_(act_ND)  # the one dtype conversion
        on_batch(o1 - o0)
        o0 = o1
    limit = torch.finfo(store_dtype).max
    for h in hooks:
        if not stats[h]["max_abs"] <= limit:  # also catches nan/inf
            raise BadInputError(
                f"Activations at {h} reach |x|={stats[h]['max_abs']:.3g}, beyond {cfg.store_dtype}'s range; "
                "harvest with store_dtype='bfloat16' or 'float32'."
            )
    return bufs, stats


ShardRunner = Callable[..., Iterator[tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]]]


def harvest(
    handle: ModelHandle,
    corpus: CorpusTokens,
    cfg: HarvestConfig,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    runner: ShardRunner | None = None,
) -> HarvestResult:
    """Harvest `cfg.hooks` over `corpus` into `out_dir`, resuming a matching unfinished harvest there.

    `progress(done_tokens, total_tokens)` is called after every batch (a tqdm bar shows on stderr too).
    `runner` computes the shards elsewhere (`saelab.distributed.ray_harvest`): given the shards still to do as
    (index, first row, end row), the corpus tokens, the keep mask, hooks, widths, the config and `on_batch`,
    it yields each shard's (buffers, stats) in that order; this function writes them exactly as it writes its
    own, so the folder does not depend on where the shards were computed.
    """
    out_dir = Path(out_dir)
    hooks = [handle.check_hook(h) for h in cfg.hooks]
    widths = {h: handle.hook_width(h) for h in hooks}
    keep = _keep_mask(corpus, cfg)
    layout = _layout(corpus, cfg, keep)
    identity = {
        "model": {"name": handle.name, "fingerprint": _model_fingerprint(handle.model)},
        "harvest_config": cfg.to_dict(),
        "corpus_fingerprint": corpus.fingerprint(),
        "layout": layout,
    }
    fresh = {
        "format": HARVEST_FORMAT,
        "format_version": _FORMAT_VERSION,
        "identity": identity,
        "model": {"name": handle.name, "source": handle.source, "n_layers": handle.n_layers, "d_model": handle.d_model},
        "hooks": hooks,
        "d": widths,
        "compute_dtype": cfg.compute_dtype,
        "compute_dtype_used": str(fastpath.effective_dtype(_DTYPES[cfg.compute_dtype])).removeprefix("torch."),
        "store_dtype": cfg.store_dtype,
        "first_position_skipped": cfg.skip_first_position,
        "separator_skipped": cfg.skip_separator,
        "separator_id": corpus.separator_id,
        **{k: layout[k] for k in ("seq_len", "rows_per_shard", "n_shards", "total_tokens")},
        "harvest_config": cfg.to_dict(),
        "corpus": corpus.provenance(),
        "shards": [],
        "complete": False,
    }
    manifest = _open_manifest(out_dir, identity, fresh)
    reused, total, rows_per_shard = len(manifest["shards"]), layout["total_tokens"], layout["rows_per_shard"]
    done = sum(s["n_tokens"] for s in manifest["shards"])
    if manifest["complete"]:
        return HarvestResult(out_dir, hooks, total, layout["n_shards"], reused, 0, 0.0, 0.0, 0.0, manifest)
    write_json(out_dir / HARVEST_MANIFEST, manifest)

    model_handle = compute_handle(handle, _DTYPES[cfg.compute_dtype]) if runner is None else None
    t0, start_done, rows_run = time.perf_counter(), done, 0
    with torch.inference_mode(), tqdm(total=total, initial=done, unit="tok", desc="harvest", disable=None) as bar:

        def on_batch(n: int) -> None:
            nonlocal done
            done += n
            bar.update(n)
            if progress is not None:
                progress(done, total)

        todo = [(s, s * rows_per_shard, min(layout["n_seq"], (s + 1) * rows_per_shard))
                for s in range(reused, layout["n_shards"])]  # fmt: skip
        if runner is None:
            results = (
                _harvest_shard(model_handle, corpus.tokens[r0:r1], keep[r0:r1], hooks, widths, cfg, on_batch)
                for _, r0, r1 in todo
            )
        else:
            results = runner(todo, corpus.tokens, keep, hooks, widths, cfg, on_batch)
        for (s, r0, r1), (bufs, stats) in zip(todo, results, strict=True):
            rows_run += r1 - r0
            seq_BP, pos_BP = torch.meshgrid(torch.arange(r0, r1), torch.arange(layout["seq_len"]), indexing="ij")
            index = {
                "token_ids": corpus.tokens[r0:r1][keep[r0:r1]],
                "seq_index": seq_BP[keep[r0:r1]],
                "pos_index": pos_BP[keep[r0:r1]],
            }
            save_tensors(out_dir / _shard_name(s), {**bufs, **index}, metadata={"format": HARVEST_FORMAT})
            n_tok = int(keep[r0:r1].sum())
            manifest["shards"].append({"file": _shard_name(s), "n_tokens": n_tok, "rows": [r0, r1], "stats": stats})
            write_json(out_dir / HARVEST_MANIFEST, manifest)
    seconds = time.perf_counter() - t0
    computed = done - start_done
    manifest["complete"] = True
    manifest["seconds"] = round(seconds + manifest.get("seconds", 0.0), 3)
    write_json(out_dir / HARVEST_MANIFEST, manifest)
    tps = computed / seconds if seconds > 0 else 0.0
    fwd = rows_run * layout["seq_len"] / seconds if seconds > 0 else 0.0
    log.info("harvested %d tokens in %.1fs (%.0f stored, %.0f forward tokens/s)", computed, seconds, tps, fwd)
    return HarvestResult(out_dir, hooks, total, layout["n_shards"], reused, computed, seconds, tps, fwd, manifest)


__all__ = [
    "HARVEST_FORMAT",
    "INDEX_KEYS",
    "HarvestConfig",
    "HarvestResult",
    "ShardRunner",
    "compute_handle",
    "harvest",
    "harvest_shard",
]

harvest_shard = _harvest_shard  # what a remote worker runs (saelab.distributed)
