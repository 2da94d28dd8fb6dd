"""Compare several SAEs of one model: core metrics for all, decoder matching for each pair against the first.

With more than two SAEs every other SAE is matched against the first one (A = the first, B = each other), so
each table reads "the first SAE versus ...". Labels and densities come from each SAE's dashboards, when built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saelab.compare.matching import DEFAULT_THRESHOLD, MatchResult, check_comparable, match_saes
from saelab.compare.metrics import MetricsTable, read_metrics
from saelab.errors import BadInputError, CorruptFileError, SaelabError

KIND = "saelab-sae-compare"
PAIRING = "each SAE after the first is matched against the first"


@dataclass
class LatentInfo:
    """Per-latent labels and densities of one SAE from its dashboards (None when it has none)."""

    labels: list[str] | None = None
    density: list[float] | None = None


@dataclass
class CompareResult:
    names: list[str]
    paths: list[str]
    metrics: MetricsTable
    matches: list[MatchResult]
    info: list[LatentInfo]
    pairing: str = PAIRING
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "names": self.names, "paths": self.paths, "pairing": self.pairing,
                "metrics": self.metrics.to_dict(), "matches": [m.to_dict() for m in self.matches],
                "info": [i.__dict__ for i in self.info], "notes": self.notes}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> CompareResult:
        from saelab.compare.metrics import SaeMetrics

        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise CorruptFileError(
                f"This is not an SAE comparison (kind {data.get('kind') if isinstance(data, dict) else None!r})."
            )
        try:
            m = data["metrics"]
            table = MetricsTable([SaeMetrics(**r) for r in m["rows"]], bool(m["same_tokens"]), list(m["notes"]))
            return cls(names=list(data["names"]), paths=list(data["paths"]), metrics=table,
                       matches=[MatchResult.from_dict(x) for x in data["matches"]],
                       info=[LatentInfo(**i) for i in data["info"]], pairing=str(data["pairing"]),
                       notes=list(data["notes"]))  # fmt: skip
        except (KeyError, TypeError) as err:
            raise CorruptFileError(f"SAE comparison could not be rebuilt: {err}") from err


def latent_info(sae_dir: str | Path) -> tuple[LatentInfo, str | None]:
    """Labels (`labels.json`) and densities of an SAE's dashboards; a note when they cannot be read."""
    from saelab.features.store import DashboardStore

    try:
        store = DashboardStore(sae_dir)
    except BadInputError:
        return LatentInfo(), None
    except SaelabError as err:
        return LatentInfo(), f"{sae_dir}: dashboards unreadable ({err})"
    info = LatentInfo(density=[float(x) for x in np.asarray(store.summary()["density"])])
    try:
        labels = store.labels()
    except SaelabError as err:
        return info, f"{sae_dir}: labels unreadable ({err})"
    if labels is not None:
        info.labels = [lab.label for lab in labels.latents]
    return info, None


def compare_saes(paths: list[str | Path], *, model: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 handle=None, names: list[str] | None = None, correlation_tokens: int = 0) -> CompareResult:  # fmt: skip
    """Load every SAE (checked against `model`/`handle` when given), refuse incompatible ones, read their
    metrics, and match each SAE after the first against the first. With `correlation_tokens` (needs a model),
    each match also gets the activation correlation of its assigned pairs on that many held-out corpus tokens."""
    from saelab.sae.files import load_sae

    if len(paths) < 2:
        raise BadInputError("Give at least two SAEs to compare.")
    names = names or [Path(p).name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    if handle is None and model is not None:
        from saelab.models import load_model

        handle = load_model(model)
    loaded = [load_sae(p, handle=handle) for p in paths]
    notes = check_comparable(loaded, names)
    metrics = read_metrics(list(paths), names)
    matches = [match_saes(loaded[0], other, threshold=threshold, name_a=names[0], name_b=name)
               for other, name in zip(loaded[1:], names[1:], strict=True)]  # fmt: skip
    if correlation_tokens:
        if handle is None:
            raise BadInputError("Activation correlation runs the model: name it (--model).")
        from saelab.compare.matching import activation_correlation
        from saelab.corpus import CorpusConfig, build_corpus

        corpus = build_corpus(handle.tokenizer, CorpusConfig(seq_len=128, n_tokens=int(correlation_tokens),
                                                             seed=0, split="heldout"))  # fmt: skip
        matches = [activation_correlation(handle, loaded[0], other, m, corpus.tokens)
                   for other, m in zip(loaded[1:], matches, strict=True)]  # fmt: skip
    info = []
    for p in paths:
        i, note = latent_info(p)
        info.append(i)
        if note:
            notes.append(note)
    return CompareResult([str(n) for n in names], [str(p) for p in paths], metrics, matches, info, notes=notes)
