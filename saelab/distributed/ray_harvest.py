"""Harvest shards on a Ray cluster: one actor per worker holds a model copy and computes whole shards.

    runner = RayShardRunner("smollm2-135m-instruct", address="local", workers=2)
    harvest(handle, corpus, cfg, out_dir, runner=runner)        # saelab harvest --ray [ADDRESS]
The driver keeps the corpus and the output folder: it sends each shard's token rows to an actor
(`activations.harvesting.harvest_shard`, the single-process code) and writes the returned buffers in shard order
through `harvest`, which writes the manifest after every shard, as without Ray. So
  * the folder is the same as a single-process harvest's, shard for shard (tests/test_ray.py compares bytes);
  * a killed actor is restarted and its in-flight shard retried by Ray (`max_restarts`, `max_task_retries`);
  * a killed driver resumes from the shards already written (run the same command again).
Each actor loads the model from its spec on its own node (no hub: the spec must resolve there, e.g. the default
model's wheel installed on every node, or a path on a shared filesystem) and runs with `threads_per_worker` torch
threads. `address`: "local" starts a private cluster of `workers` CPUs on this machine; "auto" or "ray://host:port"
joins a running one (docs/cluster.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from saelab.errors import BadInputError

MAX_IN_FLIGHT_PER_WORKER = 2  # shards queued per actor: keeps actors busy without holding the corpus twice


def _ray():
    try:
        import ray
    except ModuleNotFoundError as err:
        raise BadInputError(
            "--ray needs Ray: pip install 'ray==2.60.0' (the README's test command installs it)."
        ) from err
    return ray


def connect(address: str = "local", workers: int = 2) -> Any:
    """Start (address "local") or join a Ray cluster; returns the ray module. Idempotent within a process."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


class _Worker:
    """One model copy; computes whole shards with the single-process code."""

    def __init__(self, model_spec: str, compute_dtype: str, threads: int) -> None:
        from saelab.activations.harvesting import _DTYPES, compute_handle
        from saelab.models import load_model

        torch.set_num_threads(threads)
        self.handle = compute_handle(load_model(model_spec), _DTYPES[compute_dtype])

    def shard(self, tokens: torch.Tensor, keep: torch.Tensor, hooks: list[str], widths: dict[str, int], cfg_dict):
        from saelab.activations.harvesting import HarvestConfig, harvest_shard

        with torch.inference_mode():
            return harvest_shard(self.handle, tokens, keep, hooks, widths, HarvestConfig(**cfg_dict), lambda n: None)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayShardRunner:
    """A `harvesting.ShardRunner` that computes shards on Ray actors (see the module docstring)."""

    def __init__(self, model_spec: str, *, address: str = "local", workers: int = 2, threads_per_worker: int = 1,
                 max_retries: int = 3) -> None:  # fmt: skip
        if workers < 1 or threads_per_worker < 1:
            raise BadInputError(
                f"Ray needs ≥ 1 worker and ≥ 1 thread per worker, got {workers} and {threads_per_worker}."
            )
        self.model_spec, self.address, self.workers = model_spec, address, workers
        self.threads, self.max_retries = threads_per_worker, max_retries
        self.actors: list[Any] = []
        self.shards_done = 0

    def start(self, compute_dtype: str) -> list[Any]:
        ray = connect(self.address, self.workers)
        if not self.actors:
            actor = ray.remote(num_cpus=1, max_restarts=self.max_retries, max_task_retries=self.max_retries)(_Worker)
            self.actors = [actor.remote(self.model_spec, compute_dtype, self.threads) for _ in range(self.workers)]
        return self.actors

    def __call__(self, todo, tokens, keep, hooks, widths, cfg, on_batch: Callable[[int], None]) -> Iterator[tuple]:
        ray = _ray()
        actors = self.start(cfg.compute_dtype)
        cfg_dict = cfg.to_dict()
        pending: deque = deque()
        it = iter(todo)
        sent = 0

        def submit() -> bool:
            nonlocal sent
            item = next(it, None)
            if item is None:
                return False
            _, r0, r1 = item
            actor = actors[sent % len(actors)]  # round robin: shards are equal-sized
            sent += 1
            ref = actor.shard.remote(tokens[r0:r1].clone(), keep[r0:r1].clone(), hooks, widths, cfg_dict)
            pending.append((ref, int(keep[r0:r1].sum())))
            return True

        while len(pending) < MAX_IN_FLIGHT_PER_WORKER * len(actors) and submit():
            pass
        while pending:
            ref, n_tok = pending.popleft()
            result = ray.get(ref)  # in shard order: the driver writes shards in order
            self.shards_done += 1
            on_batch(n_tok)
            submit()
            yield result

    def shutdown(self) -> None:
        if self.actors:
            ray = _ray()
            for a in self.actors:
                ray.kill(a)
            self.actors = []


__all__ = ["RayShardRunner", "connect"]
