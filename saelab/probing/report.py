"""The typed result of one probing run: `ProbeReport`, what `run_probe` returns, the figures and exports read, and
`ProbeReport.from_dict` rebuilds from an export's result.json (with its nested CV, C-tuning and detection results)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from saelab.probing.classify import CTuning, CVResult
from saelab.probing.concept_detection import DetectionResult
from saelab.typed_json import from_checked_dict


@dataclass
class ProbeReport:
    """Everything a run found. Metric dicts hold floats; CIs are (low, high) 95 % bootstrap intervals.

    `predictions` has one row per test text (index into the text set, text, true and predicted class names,
    max probability, correct); misclassified first. `weights` are the probe's arrays (exported as safetensors).
    A report read back from JSON has None where the run had NaN inside the free-form dicts (`metrics`, rows)."""

    config: dict[str, Any]  # ProbeConfig.to_dict() as asked (re-running it reproduces every number)
    data: dict[str, Any]  # TextSet description, task, classes used, split sizes and indices, class counts
    features: dict[str, Any]  # source, params, n_features, whether columns are SAE latents, source extras
    task: str  # "classification" or "regression"
    classifier: str
    metrics: dict[str, Any]
    ci: dict[str, list[float]]
    cv: CVResult
    sparse: list[dict[str, Any]]
    learning: list[dict[str, Any]]
    msp_error: dict[str, Any] | None
    msp_ood: dict[str, Any] | None
    layers: list[dict[str, Any]] | None
    detection: DetectionResult | None
    source_results: dict[str, Any]  # source-specific: SAV head vote metrics, best neuron by layer
    top_features: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    formulas: dict[str, str]
    timings: dict[str, float]
    notes: list[str]
    weights: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    tuning: CTuning | None = None  # the cross-validated choice of C, when asked

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (weights excluded: they go to safetensors); nested results as their own `to_dict()`."""
        out = {}
        for f in fields(self):
            if f.name != "weights":
                value = getattr(self, f.name)
                out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    @classmethod
    def from_dict(cls, data: Any, *, weights: dict[str, np.ndarray] | None = None) -> ProbeReport:
        """From `to_dict()` or an export's result.json (its format tag is ignored); `weights` as saved beside it."""
        return from_checked_dict(cls, data, weights=dict(weights or {}))

    @property
    def headline(self) -> tuple[str, float]:
        key = "r2" if self.task == "regression" else "macro_f1"
        return key, float(self.metrics[key])
