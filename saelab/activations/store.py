"""Read a harvest folder back (`saelab.activations.harvesting` writes it).

`ActivationStore` opens a harvest; `iter_batches` is the endless, seeded, resumable data provider an
SAE trainer wants: `iter_batches(..., start_sample=s)` yields exactly the fresh stream minus its first
`s` samples and reads only the shards it needs to get there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from saelab.activations.harvesting import HARVEST_FORMAT, INDEX_KEYS
from saelab.errors import BadInputError, CorruptFileError
from saelab.storage import HARVEST_MANIFEST, read_json


def _read_tensor(path: Path, key: str) -> torch.Tensor:
    """One tensor of a safetensors file; unreadable files raise `CorruptFileError`."""
    if not path.exists():
        raise CorruptFileError(f"{path} is missing; delete the harvest folder and re-harvest.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({err}); delete it and re-harvest.") from err


class ActivationStore:
    """A finished harvest folder, read-only. `allow_partial=True` opens an unfinished one too."""

    def __init__(self, out_dir: str | Path, allow_partial: bool = False):
        self.path = Path(out_dir)
        mpath = self.path / HARVEST_MANIFEST
        if not mpath.exists():
            raise BadInputError(f"No harvest at {self.path} ({HARVEST_MANIFEST} missing); run a harvest first.")
        m = read_json(mpath)
        try:
            if m["format"] != HARVEST_FORMAT:
                raise KeyError("format")
            self.manifest: dict[str, Any] = m
            self._sizes = np.array([int(s["n_tokens"]) for s in m["shards"]], dtype=np.int64)
            self._files = [self.path / s["file"] for s in m["shards"]]
            self._d = {h: int(m["d"][h]) for h in m["hooks"]}
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(f"{mpath} is not a valid harvest manifest (bad or missing {err}).") from err
        if not m["complete"] and not allow_partial:
            raise BadInputError(
                f"The harvest in {self.path} is unfinished ({len(self._files)} of {m['n_shards']} shards); "
                "run the same harvest again to resume it."
            )
        if not self._files:
            raise BadInputError(f"The harvest in {self.path} has no shards yet.")
        for f in self._files:
            if not f.exists():
                raise CorruptFileError(f"{f} is listed in {mpath} but missing; delete the folder and re-harvest.")

    @property
    def n_tokens(self) -> int:
        return int(self._sizes.sum())

    @property
    def hooks(self) -> list[str]:
        return list(self._d)

    @property
    def n_shards(self) -> int:
        return len(self._files)

    def d_in(self, hook: str) -> int:
        return self._d[self._check(hook)]

    def _check(self, hook: str) -> str:
        if hook not in self._d:
            raise BadInputError(f"{self.path} has no activations for {hook!r}; it holds {', '.join(self._d)}.")
        return hook

    def _shard(self, i: int, key: str) -> torch.Tensor:
        t = _read_tensor(self._files[i], key)
        want = (int(self._sizes[i]), self._d[key]) if key in self._d else (int(self._sizes[i]),)
        if tuple(t.shape) != want:
            raise CorruptFileError(f"{self._files[i]}[{key}] has shape {tuple(t.shape)}, the manifest says {want}.")
        return t

    def _load(self, key: str, max_tokens: int | None) -> torch.Tensor:
        limit = self.n_tokens if max_tokens is None else min(int(max_tokens), self.n_tokens)
        parts, have = [], 0
        for i in range(self.n_shards):
            if have >= limit:
                break
            parts.append(self._shard(i, key)[: limit - have])
            have += len(parts[-1])
        return torch.cat(parts)

    def load(self, hook: str, max_tokens: int | None = None) -> torch.Tensor:
        """Activations `[n, d]` as float32, in harvest order (the first `max_tokens` if given)."""
        return self._load(self._check(hook), max_tokens).to(torch.float32)

    def load_index(self, max_tokens: int | None = None) -> dict[str, torch.Tensor]:
        """`token_ids`, `seq_index` (corpus row), `pos_index` (position in row), each int64 `[n]`."""
        return {k: self._load(k, max_tokens) for k in INDEX_KEYS}

    def _groups(self, seed: int, epoch: int, mix_shards: int) -> list[np.ndarray]:
        order = np.random.default_rng([seed, epoch]).permutation(self.n_shards)
        return [order[i : i + mix_shards] for i in range(0, self.n_shards, mix_shards)]

    def iter_batches(
        self, hook: str, batch_size: int, seed: int = 0, start_sample: int = 0, mix_shards: int = 4
    ) -> Iterator[torch.Tensor]:
        """Endless float32 batches `[batch_size, d]`, reshuffled every epoch from `seed`.

        Each epoch visits shards in a seeded order, `mix_shards` at a time, and shuffles the rows of
        each such group; batches run across group and epoch boundaries. With `start_sample=s` the
        stream equals the fresh one after `s` samples, and only the group holding sample `s` is read.
        """
        self._check(hook)
        if batch_size < 1 or start_sample < 0 or mix_shards < 1:
            raise BadInputError("batch_size and mix_shards must be ≥ 1 and start_sample ≥ 0")
        epoch, skip = divmod(int(start_sample), self.n_tokens)
        pending: list[torch.Tensor] = []
        need = batch_size
        while True:
            for g, shard_ids in enumerate(self._groups(seed, epoch, mix_shards)):
                size = int(self._sizes[shard_ids].sum())
                if skip >= size:
                    skip -= size
                    continue
                data = torch.cat([self._shard(int(i), hook) for i in shard_ids])
                perm = np.random.default_rng([seed, epoch, g]).permutation(size)
                data = data[torch.from_numpy(perm)]
                pos, skip = skip, 0
                while pos < size:
                    take = min(need, size - pos)
                    pending.append(data[pos : pos + take])
                    pos, need = pos + take, need - take
                    if need == 0:
                        batch = pending[0] if len(pending) == 1 else torch.cat(pending)
                        yield batch.to(torch.float32, copy=True)
                        pending, need = [], batch_size
            epoch += 1


__all__ = ["ActivationStore"]
