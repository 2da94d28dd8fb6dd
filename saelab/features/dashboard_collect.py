"""The activations phase of a dashboard build: forward + encode every batch, keep the positive entries, and
checkpoint them so a killed build resumes where it stopped.

Checkpoints live in a hidden folder beside the output (`<sae>/.dashboards.partial/`):
    chunk_00000.safetensors …   the entries (token, latent, value) of the batches since the previous chunk,
                                plus the running per-latent count / sum / max after them
    state.json                  what the build is (SAE weights, tokens, settings) and how many chunks are done
Each chunk is written atomically before `state.json` names it, so after a SIGKILL the folder always describes
a prefix of the work; a chunk written but not yet named is ignored and recomputed. A resumed build processes
exactly the batches an uninterrupted one would (checkpoints fall on batch boundaries), so it ends with the same
dashboards. A checkpoint of another build (other weights, tokens or settings) or an unreadable one is discarded
and the build starts over, saying so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saelab.errors import BadInputError, CorruptFileError
from saelab.hooks import cache_activations
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE
from saelab.storage import SAE_WEIGHTS_FILE, load_tensors, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

F16_MAX = float(torch.finfo(torch.float16).max)
STATE_FILE = "state.json"
_CHUNK = "chunk_{:05d}.safetensors"


@dataclass
class Entries:
    """The positive activations, in token order (then latent order within a token)."""

    tok: torch.Tensor  # int32 [M] flat index row * seq_len + pos into the analysed tokens
    lat: torch.Tensor  # int16 (int32 if d_sae > 32767) [M]
    val: torch.Tensor  # float16 [M] > 0 (clamped to float16's max)
    count: torch.Tensor  # int64 [d] positive activations per latent
    total: torch.Tensor  # float64 [d] their sum (exact float32 values)
    vmax: torch.Tensor  # float32 [d] their maximum


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


class Checkpoint:
    """The chunks of one build (see the module docstring). `identity` must match for a resume."""

    def __init__(self, folder: Path, identity: dict[str, Any]):
        self.folder, self.identity = folder, identity
        self.n_chunks, self.rows_done = 0, 0

    def resume(self) -> tuple[int, list[dict[str, torch.Tensor]]]:
        """(rows done, chunks) of a matching checkpoint, else (0, []) after clearing any other one."""
        if not (self.folder / STATE_FILE).is_file():
            self.clear()
            return 0, []
        try:
            state = read_json(self.folder / STATE_FILE)
            if not isinstance(state, dict) or state.get("identity") != self.identity:
                log.info("dashboards: discarding the checkpoint of another build in %s", self.folder)
                self.clear()
                return 0, []
            n, rows = int(state["n_chunks"]), int(state["rows_done"])
            chunks = [load_tensors(self.folder / _CHUNK.format(i)) for i in range(n)]
        except (CorruptFileError, FileNotFoundError, KeyError, TypeError, ValueError) as err:
            log.warning("dashboards: unreadable checkpoint in %s (%s); starting over", self.folder, err)
            self.clear()
            return 0, []
        self.n_chunks, self.rows_done = n, rows
        log.info("dashboards: resuming after row %d from %d checkpoint chunk(s)", rows, n)
        return rows, chunks

    def save(self, rows_done: int, tensors: dict[str, torch.Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.folder / _CHUNK.format(self.n_chunks), tensors)
        self.n_chunks, self.rows_done = self.n_chunks + 1, rows_done
        write_json(self.folder / STATE_FILE, {"identity": self.identity, "n_chunks": self.n_chunks,
                                              "rows_done": rows_done})  # fmt: skip

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def encode_batch(handle: ModelHandle, loaded: LoadedSAE, tokens_BP: torch.Tensor, keep_BP: torch.Tensor,
                 flat_BP: torch.Tensor) -> dict[str, torch.Tensor] | None:  # fmt: skip
    """One batch: forward, encode, and the positive activations of its `keep` positions as (flat token index,
    latent, value), with this batch's per-latent count, sum and max (None when nothing in it is kept)."""
    if not keep_BP.any():
        return None
    sae, hook, d = loaded.sae, loaded.hook, int(loaded.sae.cfg.d_sae)
    act = cache_activations(handle, tokens_BP, [hook], stop_early=True)[hook]
    f_ND = sae.encode(act[keep_BP].to(device=sae.device, dtype=sae.dtype))
    f_ND = (f_ND.to_dense() if f_ND.is_sparse else f_ND).float().cpu()
    nz = (f_ND > 0).nonzero()
    row, lat = nz[:, 0], nz[:, 1]
    val = f_ND[row, lat]
    vmax = torch.zeros(d, dtype=torch.float32).scatter_reduce_(0, lat, val, "amax")
    return {
        "tok": flat_BP[keep_BP][row],
        "lat": lat.to(torch.int16 if d <= 32767 else torch.int32),
        "val": val.clamp(max=F16_MAX).half(),
        "count": torch.bincount(lat, minlength=d),
        "total": torch.bincount(lat, weights=val.double(), minlength=d),
        "vmax": vmax,
    }


def sae_fingerprint(loaded: LoadedSAE) -> str:
    """sha256[:16] of the SAE's weights file (of W_dec when it has none): which SAE a build or checkpoint is of."""
    path = Path(loaded.path) / SAE_WEIGHTS_FILE
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    else:
        h.update(loaded.sae.W_dec.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


_SAES: dict[tuple[str, str, str], LoadedSAE] = {}  # on a Ray actor: SAEs already read, by (path, hook, fingerprint)


def encode_rows(handle: ModelHandle, sae_path: str, hook: str, fingerprint: str, tokens: torch.Tensor,
                keep: torch.Tensor, flat: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor] | None]:  # fmt: skip
    """On a Ray actor (`dashboards --ray`): `encode_batch` for each batch of these rows, the SAE read from
    `sae_path` (a shared filesystem) and checked to be the driver's by its weights' fingerprint."""
    from saelab.sae.files import load_sae

    key = (sae_path, hook, fingerprint)
    if key not in _SAES:
        loaded = load_sae(sae_path, handle=handle, hook=hook)
        found = sae_fingerprint(loaded)
        if found != fingerprint:
            raise BadInputError(
                f"The SAE at {sae_path} on this Ray node is not the driver's (weights {found} vs {fingerprint}): "
                "put SAEs on a filesystem every node shares (docs/cluster.md)."
            )
        _SAES[key] = loaded
    loaded = _SAES[key]
    return [encode_batch(handle, loaded, tokens[b0 : b0 + batch_size], keep[b0 : b0 + batch_size],
                         flat[b0 : b0 + batch_size]) for b0 in range(0, len(tokens), batch_size)]  # fmt: skip


BATCHES_PER_TASK = 4  # dashboards --ray: rows sent to an actor at once (a task costs ~1 s of overhead)


def collect(
    handle: ModelHandle,
    loaded: LoadedSAE,
    tokens: torch.Tensor,
    keep: torch.Tensor,
    *,
    batch_size: int,
    max_entries: int,
    tick: Callable[[int], None],
    checkpoint: Checkpoint | None = None,
    checkpoint_rows: int = 0,
    pool: Any = None,
    compute_dtype: str = "float32",
) -> Entries:
    """Forward + encode every batch of rows; keep the positive activations of the `keep` positions.

    With a `checkpoint`, resume from it and save a chunk every `checkpoint_rows` rows (rounded up to whole
    batches). With a `pool` (`saelab.distributed.ray_pool.RayModelPool`), the batches are computed on its actors
    (`encode_rows`, `BATCHES_PER_TASK` batches per task) and merged here in batch order exactly as the local
    ones are, so the entries and statistics are the same bit for bit (`handle` is then only the driver's model,
    the actors run in `compute_dtype`)."""
    d = int(loaded.sae.cfg.d_sae)
    lat_dtype = torch.int16 if d <= 32767 else torch.int32
    flat_BP = torch.arange(tokens.numel(), dtype=torch.int32).view_as(tokens)
    count, total = torch.zeros(d, dtype=torch.int64), torch.zeros(d, dtype=torch.float64)
    vmax = torch.zeros(d, dtype=torch.float32)
    parts: tuple[list, list, list] = ([], [], [])
    start = 0
    if checkpoint is not None:
        start, chunks = checkpoint.resume()
        for c in chunks:
            for p, key in zip(parts, ("tok", "lat", "val")):
                p.append(c[key])
        if chunks:
            count, total, vmax = chunks[-1]["count"], chunks[-1]["total"], chunks[-1]["vmax"]
        if start:
            tick(int(keep[:start].sum()))
    n_entries, saved = sum(len(v) for v in parts[2]), len(parts[0])
    every = max(1, -(-checkpoint_rows // batch_size)) * batch_size if checkpoint_rows else 0
    starts = range(start, len(tokens), batch_size)
    for b0, r in zip(starts, _batches(handle, loaded, tokens, keep, flat_BP, starts, batch_size, pool, compute_dtype),
                     strict=True):  # fmt: skip
        keep_BP = keep[b0 : b0 + batch_size]
        if r is not None:
            count += r["count"]
            total += r["total"]
            torch.maximum(vmax, r["vmax"], out=vmax)
            n_entries += len(r["val"])
            if n_entries > max_entries:
                raise BadInputError(
                    f"More than max_entries={max_entries:,} positive activations ({n_entries:,} after "
                    f"{b0 + len(keep_BP)} of {len(tokens)} rows): this SAE is too dense for that many tokens. "
                    "Use fewer tokens or raise max_entries (8 bytes of RAM each)."
                )
            for p, key in zip(parts, ("tok", "lat", "val")):
                p.append(r[key])
        tick(int(keep_BP.sum()))
        done = min(b0 + batch_size, len(tokens))
        if checkpoint is not None and every and done % every == 0 and done < len(tokens):
            new = [torch.cat(p[saved:]) if p[saved:] else torch.zeros(0, dtype=dt)
                   for p, dt in zip(parts, (torch.int32, lat_dtype, torch.float16))]  # fmt: skip
            checkpoint.save(done, {"tok": new[0], "lat": new[1], "val": new[2], "count": count, "total": total,
                                   "vmax": vmax})  # fmt: skip
            parts = tuple([*p[:saved], n] for p, n in zip(parts, new))  # one tensor per chunk
            saved = len(parts[0])
    dtypes = (torch.int32, lat_dtype, torch.float16)
    tok, lat, val = (torch.cat(p) if p else torch.zeros(0, dtype=dt) for p, dt in zip(parts, dtypes))
    return Entries(tok, lat, val, count, total, vmax)


def _batches(handle, loaded, tokens, keep, flat_BP, starts: range, batch_size: int, pool, compute_dtype: str):
    """`encode_batch` of each batch start, in order: here, or on the pool's actors in chunks of batches."""
    if pool is None:
        for b0 in starts:
            sl = slice(b0, b0 + batch_size)
            yield encode_batch(handle, loaded, tokens[sl], keep[sl], flat_BP[sl])
        return
    step, fingerprint = batch_size * BATCHES_PER_TASK, sae_fingerprint(loaded)
    chunks = range(starts.start, starts.stop, step)
    items = ((str(loaded.path), loaded.hook, fingerprint, tokens[c : c + step].clone(), keep[c : c + step].clone(),
              flat_BP[c : c + step].clone(), batch_size) for c in chunks)  # fmt: skip
    for results in pool.map(encode_rows, items, dtype=compute_dtype):
        yield from results


__all__ = ["Checkpoint", "Entries", "collect", "encode_batch", "encode_rows", "partial_dir", "sae_fingerprint"]
