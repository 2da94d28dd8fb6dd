"""The registry of circuit-discovery methods: each turns prompt batches into one score per attention head.

Every method returns a `MethodOutput` with scores [n_layers, n_heads] where a larger |score| means "more part
of the circuit", its wall time, the unpatched baselines it saw, and (discrete-SAE only) code-co-occurrence edges.
Add a method with `register(Method(...))`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.circuits.tasks import PairBatch, PairMetrics
from saelab.errors import BadInputError

Progress = Callable[[int, int], None]


@dataclass
class MethodSettings:
    """Knobs the methods read (only the discrete-SAE uses them today: its code SAE's width, L1, lr, epochs)."""

    d_sae: int = 200
    l1: float = 0.02
    lr: float = 1e-3
    epochs: int = 500
    seed: int = 0


@dataclass
class MethodOutput:
    scores: np.ndarray  # [n_layers, n_heads]
    seconds: float
    baseline: PairMetrics
    edges: np.ndarray | None = None  # [n_heads_total, n_heads_total], earlier → later layer
    extra: dict[str, Any] = field(default_factory=dict)


RunFn = Callable[[Any, Sequence[PairBatch], str, MethodSettings, Progress | None], MethodOutput]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    formula: str
    forwards: str  # how many model passes it needs, in words
    run: RunFn


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise BadInputError(f"Unknown circuit method {name!r}; choose from {', '.join(METHODS)}.")
    return METHODS[name]


def run_method(name: str, handle, batches, metric: str, settings: MethodSettings, progress=None) -> MethodOutput:
    """Run one registered method and time it (wall clock, including its own baseline forwards)."""
    method = get_method(name)
    start = time.perf_counter()
    out = method.run(handle, batches, metric, settings, progress)
    out.seconds = time.perf_counter() - start
    return out


def _discrete_sae(handle, batches, metric, settings, progress):
    from saelab.circuits.discrete_sae import discrete_sae_scores

    scores, edges, table, base = discrete_sae_scores(handle, batches, metric, settings, progress)
    extra = {"sae_train_mse": table.train_mse, "sae_explained_variance": table.explained_variance,
             "sae_l0": table.l0, "n_codes_used": int(len(set(table.pos.ravel()) | set(table.neg.ravel())))}  # fmt: skip
    return MethodOutput(scores, 0.0, base, edges, extra)


def _patching(mode: str) -> RunFn:
    def run(handle, batches, metric, settings, progress):
        from saelab.circuits.patching import activation_patching

        scores, base = activation_patching(handle, batches, metric, mode=mode, progress=progress)
        return MethodOutput(scores, 0.0, base)

    return run


def _attribution(handle, batches, metric, settings, progress):
    from saelab.circuits.attribution import attribution_patching

    scores, base = attribution_patching(handle, batches, metric, progress=progress)
    return MethodOutput(scores, 0.0, base)


register(Method(
    "discrete-sae", "Discrete SAE codes",
    "score = |codes of the head on positives \\ codes on negatives|; code = argmax latent of a ReLU+L1 SAE "
    "(shared by all heads) on the head's z mean-pooled over positions",
    "2 forwards per batch (clean, corrupted) + SAE training", _discrete_sae,
))  # fmt: skip
register(Method(
    "activation-patching", "Activation patching (clean→corrupted)",
    "effect = (m̄_patched − m̄_corrupted) / (m̄_clean − m̄_corrupted), head z from the clean run in the corrupted run",
    "2 + n_heads_total forwards per batch (batched by layer, from that layer on)", _patching("clean_to_corrupted"),
))  # fmt: skip
register(Method(
    "mean-ablation", "Activation patching (mean ablation)",
    "effect = (m̄_clean − m̄_ablated) / (m̄_clean − m̄_corrupted), head z replaced by its mean over the batch's prompts",
    "2 + n_heads_total forwards per batch (batched by layer, from that layer on)", _patching("mean_ablation"),
))  # fmt: skip
register(Method(
    "attribution-patching", "Attribution patching",
    "effect ≈ Σ (z_clean − z_corrupted) · ∂m/∂z at the corrupted run, / B / (m̄_clean − m̄_corrupted)",
    "1 forward (clean) + 1 forward and backward (corrupted) per batch", _attribution,
))  # fmt: skip
