"""The typed result of a steering evaluation (`EvalResult`): what `run_eval` returns, the figures and the page
read, and `EvalResult.load` rebuilds from its JSON file (`saelab steer-eval` writes bench/results/steer_eval.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saelab.storage import write_json
from saelab.typed_json import from_checked_dict, read_checked


@dataclass
class EvalResult:
    """Everything a steering evaluation produced (JSON-ready through `to_dict`).

    Attributes:
        config: the EvalConfig as a dict.
        judge: the judge's description (PROXY formulas and thresholds, or the endpoint and its rubric).
        select_ids / report_ids: instruction ids of the two halves.
        items: one dict per (concept, method, factor, instruction): output, ratings, score, half.
        chosen: {concept: {method: factor}} picked on the select half (None for baselines).
        summary: one row per method: mean score on the report half, 95 % CI, mean ratings, n items.
        per_concept: one row per (concept, method): report-half mean score and chosen factor.
        paired: one row per method pair: mean difference, Wilcoxon and paired t-test p-values.
        curves: one row per (method, factor, half): mean score and ratings over concepts × instructions.
        directions: per concept and method, how the direction was made (latent, AUROC, max_act, ...).
        notes: what the reader must know (proxy judge, fallbacks, reductions).
    """

    config: dict[str, Any]
    judge: dict[str, Any]
    select_ids: list[int]
    report_ids: list[int]
    items: list[dict[str, Any]]
    chosen: dict[str, dict[str, float | None]]
    summary: list[dict[str, Any]]
    per_concept: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    directions: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    formulas: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def proxy(self) -> bool:
        """True unless an LLM judge endpoint rated the outputs (the offline PROXY judges are the default)."""
        return bool(self.judge.get("proxy", True))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EvalResult:
        return from_checked_dict(cls, data)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        """Read a saved result; a file that is not one raises `CorruptFileError` naming the file and the field."""
        return read_checked(cls, path)
