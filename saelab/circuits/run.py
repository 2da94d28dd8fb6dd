"""One circuit-discovery run: check the task, compute the reference, run the methods, score them, repeat on subsets.

    result = run_circuits(handle, CircuitConfig(task="ioi", methods=["discrete-sae", "attribution-patching"]))
Steps: (1) tokenize the pairs and measure the model on them (accuracy on clean prompts; a warning below
`min_accuracy`); (2) the reference: clean→corrupted activation patching of every head on all prompts; (3) every
chosen method on all prompts; (4) each method against the reference (`saelab.circuits.evaluate`); (5) the
non-reference methods again on `n_repeats` random subsets of `subset_size` prompts (seeded), mean ± std.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.circuits.evaluate import FORMULAS, evaluate_scores, reference_mask, summarise
from saelab.circuits.heads import head_labels
from saelab.circuits.methods import METHODS, MethodSettings, get_method, run_method
from saelab.circuits.patching import baseline_metrics
from saelab.circuits.tasks import METRICS, CircuitTask, PromptPair, builtin_task, tokenize_task
from saelab.configs import DictConfig
from saelab.errors import BadInputError, CorruptFileError
from saelab.typed_json import required

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
REFERENCE = "activation-patching"
KIND = "saelab.circuits"  # result.json's tag


@dataclass
class CircuitConfig(DictConfig):
    """What to run. `task` names a built-in task (ignored when a task object is passed to `run_circuits`)."""

    task: str = "ioi"
    methods: list[str] = field(default_factory=lambda: ["discrete-sae", "attribution-patching"])
    n_prompts: int = 24
    seed: int = 0
    top_frac: float = 0.05
    n_repeats: int = 3
    subset_size: int = 10
    repeat_reference: bool = False  # also run activation patching on each subset (costly; the bench does)
    d_sae: int = 200
    l1: float = 0.02
    lr: float = 1e-3
    epochs: int = 500
    max_batch: int = 32
    min_accuracy: float = 0.9

    def __post_init__(self) -> None:
        self.methods = list(dict.fromkeys(self.methods))
        for name in self.methods:
            get_method(name)
        if not 0 < self.top_frac < 1:
            raise BadInputError(
                f"top_frac must be between 0 and 1 (e.g. 0.05 = top 5 % of heads), got {self.top_frac}."
            )
        for name in ("n_prompts", "subset_size", "d_sae", "epochs", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.n_repeats < 0:
            raise BadInputError(f"n_repeats cannot be negative, got {self.n_repeats}.")

    def settings(self, seed: int | None = None) -> MethodSettings:
        return MethodSettings(self.d_sae, self.l1, self.lr, self.epochs, self.seed if seed is None else seed)


@dataclass
class TaskCheck:
    """How the model does on the task before any method runs. Metrics per pair, in task order."""

    task: CircuitTask
    clean_metric: np.ndarray
    corrupted_metric: np.ndarray

    @property
    def accuracy(self) -> float:
        """Fraction of clean prompts the model solves (metric > 0, see the metric's `solved` rule)."""
        return float(np.mean(self.clean_metric > 0))

    @property
    def corrupted_accuracy(self) -> float:
        return float(np.mean(self.corrupted_metric > 0))

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"clean": p.clean, "corrupted": p.corrupted, "correct": "|".join(p.correct), "wrong": "|".join(p.wrong),
             "clean_metric": float(c), "corrupted_metric": float(k), "solved": bool(c > 0)}
            for p, c, k in zip(self.task.pairs, self.clean_metric, self.corrupted_metric)
        ]  # fmt: skip


def check_task(handle, task: CircuitTask, max_batch: int = 32) -> TaskCheck:
    """Tokenize (raising on unequal lengths / multi-token answers) and score every pair's clean and corrupted run."""
    batches = tokenize_task(task, handle.tokenizer, handle.cfg.d_vocab, max_batch=max_batch)
    base = baseline_metrics(handle, batches, task.metric)
    return TaskCheck(task, base.clean, base.corrupted)


@dataclass
class CircuitResult:
    """Everything a run produced. Scores are [n_layers, n_heads] arrays keyed by method name."""

    config: CircuitConfig
    model: str
    task: CircuitTask
    check: TaskCheck
    n_layers: int
    n_heads: int
    scores: dict[str, np.ndarray]
    seconds: dict[str, float]
    reference_mask: np.ndarray
    evaluation: dict[str, dict[str, float]]
    repeats: dict[str, list[dict[str, float]]]
    edges: np.ndarray | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return head_labels(self.n_layers, self.n_heads)

    def repeat_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        return {m: summarise(runs) for m, runs in self.repeats.items()}

    def formulas(self) -> dict[str, str]:
        metric = METRICS[self.task.metric]
        out = {"metric": metric.formula, "solved": metric.solved, **FORMULAS}
        out.update({f"method:{m}": METHODS[m].formula for m in self.scores})
        return out

    def to_dict(self) -> dict[str, Any]:
        def arr(a):
            return None if a is None else np.round(np.asarray(a, dtype=float), 6).tolist()

        return _json_safe(
            {
                "kind": KIND,
                "model": self.model,
                "config": self.config.to_dict(),
                "task": {
                    "name": self.task.name,
                    "description": self.task.description,
                    "metric": self.task.metric,
                    "provenance": self.task.provenance,
                },  # fmt: skip
                "accuracy": self.check.accuracy,
                "corrupted_accuracy": self.check.corrupted_accuracy,
                "prompts": self.check.rows(),
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "head_labels": self.labels,
                "scores": {m: arr(s) for m, s in self.scores.items()},
                "seconds": self.seconds,
                "reference": {
                    "method": REFERENCE,
                    "top_frac": self.config.top_frac,
                    "heads": [lab for lab, m in zip(self.labels, self.reference_mask.ravel()) if m],
                },  # fmt: skip
                "evaluation": self.evaluation,
                "repeats": self.repeats,
                "repeat_summary": self.repeat_summary(),
                "edges": arr(self.edges),
                "extra": self.extra,
                "formulas": self.formulas(),
                "notes": self.notes,
            }
        )

    @classmethod
    def from_dict(cls, data: Any) -> CircuitResult:
        """From `to_dict()` (an export's result.json). Scores come back as saved (6 decimals); the task's pairs are
        rebuilt from the prompt rows (several answers joined by '|', as in an uploaded CSV)."""
        return _result_from_dict(data)


def _result_from_dict(data: Any) -> CircuitResult:
    what = "circuit result"
    if not isinstance(data, dict) or data.get("kind") != KIND:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise CorruptFileError(f"This is not a circuit result (kind {got!r}, expected {KIND!r}).")
    n_layers, n_heads = required(data, "n_layers", int, what), required(data, "n_heads", int, what)
    shape = (n_layers, n_heads)
    task = required(data, "task", dict[str, Any], what)
    rows = required(data, "prompts", list[dict[str, Any]], what)
    answers = [{k: required(r, k, str, f"{what}.prompts[{i}]") for k in ("clean", "corrupted", "correct", "wrong")}
               for i, r in enumerate(rows)]  # fmt: skip
    metrics = {k: np.array([required(r, k, float, f"{what}.prompts[{i}]") for i, r in enumerate(rows)])
               for k in ("clean_metric", "corrupted_metric")}  # fmt: skip
    try:
        circuit_task = CircuitTask(
            name=required(task, "name", str, f"{what}.task"),
            description=required(task, "description", str, f"{what}.task"),
            metric=required(task, "metric", str, f"{what}.task"),
            pairs=[PromptPair(a["clean"], a["corrupted"], [x for x in a["correct"].split("|") if x],
                              [x for x in a["wrong"].split("|") if x]) for a in answers],
            provenance=required(task, "provenance", dict[str, Any], f"{what}.task"),
        )  # fmt: skip
    except BadInputError as err:
        raise CorruptFileError(f"The {what}'s task is not valid: {err}") from err
    scores = required(data, "scores", dict[str, np.ndarray], what)
    edges = required(data, "edges", np.ndarray | None, what)
    bad = [m for m, s in scores.items() if s.shape != shape]
    if bad or (edges is not None and edges.ndim != 2):
        raise CorruptFileError(f"The {what}'s scores {bad} are not [n_layers, n_heads] = {list(shape)} arrays, or its "
                               "edges are not a matrix.")  # fmt: skip
    labels = head_labels(n_layers, n_heads)
    heads = set(required(required(data, "reference", dict[str, Any], what), "heads", list[str], f"{what}.reference"))
    unknown = sorted(heads - set(labels))
    if unknown:
        raise CorruptFileError(f"The {what}'s reference names heads the model does not have: {unknown[:5]}.")
    return CircuitResult(
        config=required(data, "config", CircuitConfig, what), model=required(data, "model", str, what),
        task=circuit_task, check=TaskCheck(circuit_task, metrics["clean_metric"], metrics["corrupted_metric"]),
        n_layers=n_layers, n_heads=n_heads, scores=scores, seconds=required(data, "seconds", dict[str, float], what),
        reference_mask=np.array([lab in heads for lab in labels]).reshape(shape),
        evaluation=required(data, "evaluation", dict[str, dict[str, float]], what),
        repeats=required(data, "repeats", dict[str, list[dict[str, float]]], what), edges=edges,
        extra=required(data, "extra", dict[str, dict[str, Any]], what), notes=required(data, "notes", list[str], what),
    )  # fmt: skip


def _json_safe(x: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python numbers, recursively."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


class _Stages:
    """Maps each stage's own progress(done, total) onto one overall 0..1000 scale."""

    def __init__(self, n_stages: int, progress: Progress | None):
        self.n, self.i, self.progress = max(n_stages, 1), 0, progress

    def stage(self) -> Progress:
        i = self.i
        self.i += 1

        def inner(done: int, total: int) -> None:
            if self.progress:
                self.progress(int(1000 * (i + done / max(total, 1)) / self.n), 1000)

        return inner


def run_circuits(handle, cfg: CircuitConfig, task: CircuitTask | None = None, progress: Progress | None = None
                 ) -> CircuitResult:  # fmt: skip
    """Run the reference and `cfg.methods` on `task` (default: the built-in `cfg.task`) and evaluate them."""
    task = task or builtin_task(cfg.task, n=cfg.n_prompts, seed=cfg.seed)
    batches = tokenize_task(task, handle.tokenizer, handle.cfg.d_vocab, max_batch=cfg.max_batch)
    others = [m for m in cfg.methods if m != REFERENCE]
    n_sub = min(cfg.subset_size, len(task.pairs))
    repeat_methods = others + ([REFERENCE] if cfg.repeat_reference else [])
    stages = _Stages(1 + len(others) + cfg.n_repeats * len(repeat_methods), progress)
    notes: list[str] = []

    ref = run_method(REFERENCE, handle, batches, task.metric, cfg.settings(), stages.stage())
    check = TaskCheck(task, ref.baseline.clean, ref.baseline.corrupted)
    if check.accuracy < cfg.min_accuracy:
        notes.append(f"The model solves only {check.accuracy:.0%} of the clean prompts (below {cfg.min_accuracy:.0%}); "
                     "the circuit of a task the model fails is not meaningful.")  # fmt: skip
    mask = reference_mask(ref.scores, cfg.top_frac)
    scores, seconds = {REFERENCE: ref.scores}, {REFERENCE: ref.seconds}
    extra: dict[str, dict[str, Any]] = {}
    evaluation = {REFERENCE: evaluate_scores(ref.scores, mask)}
    edges = None
    for name in others:
        out = run_method(name, handle, batches, task.metric, cfg.settings(), stages.stage())
        scores[name], seconds[name], extra[name] = out.scores, out.seconds, out.extra
        evaluation[name] = evaluate_scores(out.scores, mask, natural=name == "discrete-sae")
        if out.edges is not None:
            edges = out.edges
    repeats: dict[str, list[dict[str, float]]] = {m: [] for m in repeat_methods}
    rng = np.random.default_rng(cfg.seed)
    for r in range(cfg.n_repeats):
        idx = np.sort(rng.choice(len(task.pairs), n_sub, replace=False))
        sub = tokenize_task(task.subset(idx), handle.tokenizer, handle.cfg.d_vocab, max_batch=cfg.max_batch)
        for name in repeat_methods:
            t0 = time.perf_counter()
            try:
                out = run_method(name, handle, sub, task.metric, cfg.settings(cfg.seed + 1 + r), stages.stage())
            except BadInputError as err:  # e.g. a subset whose clean and corrupted metrics coincide
                notes.append(f"Repeat {r + 1}, {name}: skipped ({err})")
                continue
            row = {"repeat": float(r), "seconds": out.seconds or time.perf_counter() - t0}
            row.update(evaluate_scores(out.scores, mask, natural=name == "discrete-sae"))
            repeats[name].append(row)
    if cfg.n_repeats:
        notes.append(f"Repeats: {cfg.n_repeats} random subsets of {n_sub} of the {len(task.pairs)} pairs "
                     f"(numpy seed {cfg.seed}); each scored against the reference computed on all pairs.")  # fmt: skip
    return CircuitResult(
        config=cfg, model=handle.name, task=task, check=check, n_layers=handle.n_layers, n_heads=handle.cfg.n_heads,
        scores=scores, seconds=seconds, reference_mask=mask, evaluation=evaluation, repeats=repeats, edges=edges,
        extra=extra, notes=notes,
    )  # fmt: skip
