"""A pool of Ray actors, each holding one model copy, that runs saelab's own functions on it in order.

    pool = RayModelPool("smollm2-135m-instruct", address="local", workers=2)
    for result in pool.map(fn, [args_0, args_1, …], dtype="float32"):   # results in the order of the items
        ...                                                             # fn(handle, *args_i) ran on an actor
    pool.shutdown()

`fn` is an importable module-level function (Ray sends it by reference, so it is the code the driver has) called
as `fn(handle, *args)` with the actor's model in `dtype` (`activations.compute_handle`; None: the model as
loaded, with autograd, for training). The callers keep the single-process merge, so an output does not depend on
where its pieces ran: `harvest --ray` (shards), `dashboards --ray` (row chunks), `sweep --ray` (whole runs).
  * a killed actor is restarted and its in-flight items retried by Ray (`max_restarts`, `max_task_retries`);
  * items are sent round robin and at most `in_flight` per actor are queued, so the driver never holds every
    result at once; results come back in item order (the driver writes them in that order).
Each actor loads the model from its spec on its own node (no hub: the spec must resolve there, e.g. the default
model's wheel installed on every node, or a path on a shared filesystem) and runs with `threads_per_worker` torch
threads. `address`: "local" starts a private cluster of `workers` CPUs on this machine; "auto" or "ray://host:port"
joins a running one (docs/cluster.md).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from saelab.errors import BadInputError

MAX_IN_FLIGHT_PER_WORKER = 2  # items queued per actor: keeps actors busy without holding the corpus twice


def require_ray():
    try:
        import ray
    except ModuleNotFoundError as err:
        raise BadInputError(
            "--ray needs Ray: pip install 'ray==2.60.0' (the README's test command installs it)."
        ) from err
    return ray


def connect(address: str = "local", workers: int = 2) -> Any:
    """Start (address "local") or join a Ray cluster; returns the ray module. Idempotent within a process."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


class _ModelActor:
    """One model copy (and its compute-dtype copies); runs `fn(handle, *args)`."""

    def __init__(self, model_spec: str, threads: int) -> None:
        from saelab.models import load_model

        torch.set_num_threads(threads)
        self.model = load_model(model_spec)
        self.handles: dict[str, Any] = {}

    def call(self, fn: Callable[..., Any], dtype: str | None, args: tuple) -> Any:
        if dtype is None:  # training: the model as loaded, autograd on
            return fn(self.model, *args)
        if dtype not in self.handles:
            from saelab.activations.harvesting import _DTYPES, compute_handle

            self.handles[dtype] = compute_handle(self.model, _DTYPES[dtype])
        with torch.inference_mode():
            return fn(self.handles[dtype], *args)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayModelPool:
    """Ray actors with one model copy each (see the module docstring); `map` runs items on them in order."""

    def __init__(self, model_spec: str, *, address: str = "local", workers: int = 2, threads_per_worker: int = 1,
                 max_retries: int = 3) -> None:  # fmt: skip
        if workers < 1 or threads_per_worker < 1:
            raise BadInputError(
                f"Ray needs ≥ 1 worker and ≥ 1 thread per worker, got {workers} and {threads_per_worker}."
            )
        self.model_spec, self.address, self.workers = model_spec, address, workers
        self.threads, self.max_retries = threads_per_worker, max_retries
        self.actors: list[Any] = []
        self.items_done = 0

    def start(self, *_ignored: Any) -> list[Any]:
        ray = connect(self.address, self.workers)
        if not self.actors:
            actor = ray.remote(num_cpus=1, max_restarts=self.max_retries, max_task_retries=self.max_retries)(
                _ModelActor
            )
            self.actors = [actor.remote(self.model_spec, self.threads) for _ in range(self.workers)]
        return self.actors

    def map(self, fn: Callable[..., Any], items: Iterable[tuple], *, dtype: str | None = "float32",
            in_flight: int = MAX_IN_FLIGHT_PER_WORKER) -> Iterator[Any]:  # fmt: skip
        """Yield `fn(handle, *item)` for every item, in item order, computed on the actors."""
        ray = require_ray()
        actors = self.start()
        pending: deque = deque()
        it = iter(items)
        sent = 0

        def submit() -> bool:
            nonlocal sent
            item = next(it, None)
            if item is None:
                return False
            pending.append(actors[sent % len(actors)].call.remote(fn, dtype, tuple(item)))  # round robin
            sent += 1
            return True

        while len(pending) < max(1, in_flight) * len(actors) and submit():
            pass
        while pending:
            result = ray.get(pending.popleft())
            self.items_done += 1
            submit()
            yield result

    def pids(self) -> set[int]:
        ray = require_ray()
        return {ray.get(a.pid.remote()) for a in self.start()}

    def shutdown(self) -> None:
        if self.actors:
            ray = require_ray()
            for a in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)
            self.actors = []


__all__ = ["MAX_IN_FLIGHT_PER_WORKER", "RayModelPool", "connect", "require_ray"]
