"""Harvest shards on Ray actors (`saelab harvest --ray [ADDRESS]`).

    runner = RayShardRunner("smollm2-135m-instruct", address="local", workers=2)
    harvest(handle, corpus, cfg, out_dir, runner=runner)
The driver keeps the corpus and the output folder: each shard's token rows go to an actor of a
`ray_pool.RayModelPool`, which runs the single-process code (`activations.harvesting.harvest_shard`), and
`harvest` writes the returned buffers in shard order and the manifest after every shard, as without Ray. So the
folder is the same as a single-process harvest's, shard for shard (tests/test_ray.py compares bytes); a killed
actor's shard is retried; a killed driver resumes from the shards already written (run the same command again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from saelab.distributed.ray_pool import RayModelPool, connect


def _shard(handle, tokens: torch.Tensor, keep: torch.Tensor, hooks: list[str], widths: dict[str, int], cfg_dict):
    """On an actor: one shard with the single-process code."""
    from saelab.activations.harvesting import HarvestConfig, harvest_shard

    return harvest_shard(handle, tokens, keep, hooks, widths, HarvestConfig(**cfg_dict), lambda n: None)


class RayShardRunner(RayModelPool):
    """A `harvesting.ShardRunner` that computes shards on Ray actors (see the module docstring)."""

    @property
    def shards_done(self) -> int:
        return self.items_done

    def __call__(self, todo, tokens, keep, hooks, widths, cfg, on_batch: Callable[[int], None]) -> Iterator[tuple]:
        cfg_dict = cfg.to_dict()
        items = ((tokens[r0:r1].clone(), keep[r0:r1].clone(), hooks, widths, cfg_dict) for _, r0, r1 in todo)
        for (_, r0, r1), result in zip(todo, self.map(_shard, items, dtype=cfg.compute_dtype), strict=True):
            on_batch(int(keep[r0:r1].sum()))
            yield result


__all__ = ["RayShardRunner", "connect"]
