"""Sweeps: train a small grid of SAEs one after another from one harvest (issue 16).

A sweep is a base `TrainRequest` and a grid over some of its settings (`SWEEPABLE`: hook, k, width, sparsity
coefficient, learning rate). Every run shares the base's token count, seed and row length, so one harvest feeds
them all: the first run harvests into the sweep's work folder (several hooks: all of them in one pass, first), the
others train from it, and it is deleted when the last run ends. Each run is an ordinary
app training run (`train_job.run_training`: train, evaluate, dashboards + labels) named
`<base name>-<axis><value>...`, so its SAE appears in the SAE picker and, with its eval.json, on the Compare
page's Pareto plot. A cancelled or failed sweep resumes: finished runs are skipped, the unfinished one resumes.

On Ray (`saelab sweep --ray`, the Train page's Ray choice; issue 18) the harvest's shards are computed by the
actors of a `saelab.distributed.ray_harvest.RayShardRunner`, then the runs train side by side, one per actor
(each actor holds a model copy for evaluation and dashboards), writing into the same `root`: a filesystem every
node shares. Each run is the same `run_training` call; the driver reports runs as they finish (no live curves).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from saelab.errors import BadInputError
from saelab.features.train_job import (
    CurveBuffer,
    Progress,
    TrainRequest,
    check_output,
    finished,
    run_paths,
    run_training,
    uses_k,
)
from saelab.hooks import hook_slug
from saelab.models.handle import ModelHandle

SWEEPABLE: dict[str, tuple[str, type]] = {  # setting -> (name tag, value type)
    "hook": ("", str),  # several hooks: one harvest pass feeds them all
    "k": ("k", int),
    "d_sae": ("w", int),
    "coefficient": ("c", float),
    "lr": ("lr", float),
}
MAX_RUNS = 16  # a sweep is a small grid; a few minutes per run on a laptop CPU
SWEEP_SUFFIX = "-sweep"


def _tag(axis: str, value) -> str:
    tag, kind = SWEEPABLE[axis]
    if kind is str:  # blocks.6.hook_resid_post -> l6-resid_post
        return hook_slug(str(value))
    return f"{tag}{value:d}" if kind is int else f"{tag}{value:g}"


@dataclass
class SweepRequest:
    """The base run and the grid: {setting: [values]}; the runs are the grid's product, in `SWEEPABLE` order."""

    base: TrainRequest
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.grid:
            raise BadInputError(f"A sweep needs at least one setting to vary ({', '.join(SWEEPABLE)}).")
        clean: dict[str, list[Any]] = {}
        for axis in SWEEPABLE:  # fixed order: names and run order do not depend on how the grid was written
            if axis not in self.grid:
                continue
            kind = SWEEPABLE[axis][1]
            values = self.grid[axis]
            if not isinstance(values, list | tuple) or not values:
                raise BadInputError(f"Sweep values for {axis} must be a non-empty list, got {values!r}.")
            try:
                typed = [kind(v) for v in values]
            except (TypeError, ValueError):
                raise BadInputError(f"Sweep values for {axis} must be numbers, got {values!r}.") from None
            if kind is int and any(t != v for t, v in zip(typed, values, strict=True)):  # 4.5 -> 4 is refused
                raise BadInputError(f"Sweep values for {axis} must be whole numbers, got {values!r}.")
            clean[axis] = sorted(set(typed))
        unknown = sorted(set(self.grid) - set(SWEEPABLE))
        if unknown:
            raise BadInputError(f"Cannot sweep {unknown}; sweepable settings: {', '.join(SWEEPABLE)}.")
        if "k" in clean and not uses_k(self.base.architecture):
            raise BadInputError(f"{self.base.architecture} takes a sparsity coefficient, not k: sweep 'coefficient'.")
        if "coefficient" in clean and uses_k(self.base.architecture):
            raise BadInputError(f"{self.base.architecture} takes k, not a sparsity coefficient: sweep 'k'.")
        self.grid = clean
        n = len(self.runs())  # also checks every run's settings and name
        if n > MAX_RUNS:
            raise BadInputError(f"This grid has {n} runs; a sweep trains at most {MAX_RUNS} (one after another).")

    def runs(self) -> list[TrainRequest]:
        """One checked `TrainRequest` per grid point (BadInputError naming the first bad one)."""
        axes = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[a] for a in axes)):
            point = dict(zip(axes, values, strict=True))
            name = "-".join([self.base.name, *(_tag(a, v) for a, v in point.items())])
            out.append(replace(self.base, name=name, **point))  # replace re-runs TrainRequest's checks
        return out

    @property
    def name(self) -> str:
        return self.base.name + SWEEP_SUFFIX

    @property
    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "grid": {k: list(v) for k, v in self.grid.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepRequest:
        if not isinstance(data, dict) or set(data) - {"base", "grid"}:
            raise BadInputError("A sweep is {'base': {...TrainRequest...}, 'grid': {setting: [values]}}.")
        return cls(TrainRequest.from_dict(data.get("base", {})), dict(data.get("grid", {})))


def parse_values(text: str, axis: str) -> list[Any]:
    """'16,32,64' -> [16, 32, 64] for `axis` (BadInputError naming the axis)."""
    if axis not in SWEEPABLE:
        raise BadInputError(f"Cannot sweep {axis!r}; sweepable settings: {', '.join(SWEEPABLE)}.")
    kind = SWEEPABLE[axis][1]
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if kind is str:
        if not parts:
            raise BadInputError(f"{axis}: give at least one value.")
        return parts
    try:
        values = [kind(float(p)) if kind is int and float(p).is_integer() else kind(p) for p in parts]
    except ValueError:
        raise BadInputError(f"{axis}: write comma-separated numbers, e.g. 16,32,64; got {text!r}.") from None
    if not values:
        raise BadInputError(f"{axis}: give at least one value.")
    return values


def run_state(root: str | Path, request: TrainRequest) -> str:
    """ "done" when `request` already finished under `root`, else what `check_output` says ("new"/"resume")."""
    return "done" if finished(root, request) else check_output(root, request)


def check_sweep(root: str | Path, sweep: SweepRequest) -> dict[str, str]:
    """Each run's state ("new", "resume", "done"); BadInputError when a run's name is taken by something else."""
    return {r.name: run_state(root, r) for r in sweep.runs()}


@dataclass
class SweepStatus:
    """What a running sweep publishes for the pages: the runs, which one is training, which are finished."""

    runs: list[str]
    current: int = -1
    finished: list[str] = field(default_factory=list)


def run_sweep(
    handle: ModelHandle,
    sweep: SweepRequest,
    root: str | Path,
    progress: Progress,
    on_run: Callable[[int, TrainRequest, CurveBuffer], None] | None = None,
    pool: Any = None,
) -> list[Path]:
    """Train every run of `sweep` in order (shared harvest); returns the SAE folders, in grid order.

    `progress(phase, done, total)` gets phases like "run 2/4 (…-k32) · train"; `on_run(i, request, curves)` is
    called as run i starts, with the curve buffer its training fills. With `pool` (a `RayShardRunner`) the
    harvest and the runs happen on its Ray actors (see the module docstring)."""
    import shutil

    runs = sweep.runs()
    states = check_sweep(root, sweep)  # refuse before harvesting if a name is taken
    shared = run_paths(root, sweep.name)[1] / "acts"
    hooks = list(dict.fromkeys(r.hook for r in runs))
    todo = any(state != "done" for state in states.values())
    if todo and (len(hooks) > 1 or pool is not None):
        _harvest_hooks(handle, runs[0], hooks, shared, progress, runner=pool)
    if pool is not None:
        outs = _run_on_pool(pool, runs, root, shared, progress)
        shutil.rmtree(shared.parent, ignore_errors=True)
        return outs
    outs = []
    for i, request in enumerate(runs):
        out = run_paths(root, request.name)[0]
        curves = CurveBuffer(request.d_sae)
        if on_run is not None:
            on_run(i, request, curves)
        if run_state(root, request) != "done":
            label = f"run {i + 1}/{len(runs)} ({request.name})"
            run_training(handle, request, root, lambda p, d, t, label=label: progress(f"{label} · {p}", d, t),
                         curves, acts=shared)  # fmt: skip
        outs.append(out)
    shutil.rmtree(shared.parent, ignore_errors=True)
    return outs


def _train_remote(handle: ModelHandle, request: dict[str, Any], root: str, acts: str) -> str:
    """On a Ray actor: one run of a sweep, as the single-process sweep runs it."""
    req = TrainRequest.from_dict(request)
    if finished(root, req):
        return str(run_paths(root, req.name)[0])
    return str(run_training(handle, req, root, lambda p, d, t: None, CurveBuffer(req.d_sae), acts=Path(acts)))


def _run_on_pool(pool: Any, runs: list[TrainRequest], root: str | Path, shared: Path, progress: Progress) -> list[Path]:
    """Every run on the pool's actors, one run per actor at a time; progress counts finished runs."""
    phase = f"runs on Ray ({len(pool.start())} workers)"
    progress(phase, 0, len(runs))
    items = ((r.to_dict(), str(root), str(shared)) for r in runs)
    outs = []
    for i, out in enumerate(pool.map(_train_remote, items, dtype=None, in_flight=1)):
        outs.append(Path(out))
        progress(phase, i + 1, len(runs))
    return outs


def _harvest_hooks(handle: ModelHandle, first: TrainRequest, hooks: list[str], acts: Path, progress: Progress,
                   runner: Any = None) -> None:  # fmt: skip
    """One harvest pass over the runs' shared corpus for every hook of the sweep (resumes; a no-op when done)."""
    from saelab.activations import HarvestConfig, harvest
    from saelab.corpus import CorpusConfig, build_corpus

    phase = f"harvest ({len(hooks)} hooks, one pass)"
    progress(phase, 0, first.n_tokens)
    corpus = build_corpus(
        handle.tokenizer, CorpusConfig(seq_len=first.seq_len, n_tokens=first.n_tokens, seed=first.seed)
    )
    cfg = HarvestConfig(hooks=[handle.check_hook(h) for h in hooks])
    harvest(handle, corpus, cfg, acts, progress=lambda d, t: progress(phase, d, t), runner=runner)


def sweep_job(
    handle: ModelHandle, sweep: SweepRequest, root: str | Path, pool: Any = None
) -> Callable[[Any], list[Path]]:
    """`run_sweep` as a `saelab.jobs` function; publishes "sweep" (a `SweepStatus`) and the current "curves"
    (with a Ray `pool`: only "sweep", its `finished` list growing as runs end; the pool is shut down at the end)."""

    def fn(ctx) -> list[Path]:
        status = SweepStatus([r.name for r in sweep.runs()])
        ctx.publish("sweep", status)

        def on_run(i: int, request: TrainRequest, curves: CurveBuffer) -> None:
            if status.current >= 0:
                status.finished.append(status.runs[status.current])
            status.current = i
            ctx.publish("curves", curves)

        if pool is not None:

            def progress(phase: str, done: int, total: int) -> None:
                if phase.startswith("runs on Ray"):
                    status.finished[:] = status.runs[:done]
                    status.current = done if done < len(status.runs) else -1
                ctx.phase_progress(phase, done, total)

            try:
                return run_sweep(handle, sweep, root, progress, pool=pool)
            finally:
                pool.shutdown()
        outs = run_sweep(handle, sweep, root, ctx.phase_progress, on_run)
        status.finished.append(status.runs[status.current])
        return outs

    return fn


__all__ = [
    "MAX_RUNS",
    "SWEEPABLE",
    "SweepRequest",
    "SweepStatus",
    "check_sweep",
    "parse_values",
    "run_state",
    "run_sweep",
    "sweep_job",
]
