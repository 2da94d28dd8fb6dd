"""Side-by-side SAEBench core metrics of several SAEs, read from each SAE folder's `eval.json` (`SaeEval`).

Numbers are only comparable when the evaluations saw the same held-out tokens; the table flags when they did
not (the corpus provenance `saelab eval` records in the notes, and the token count and row length)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import SaelabError
from saelab.storage import EVAL_FILE

SHOWN = ("l0", "explained_variance", "mse", "ce_loss_score_zero", "ce_loss_score_mean", "delta_loss",
         "kl_score_zero", "dead_fraction", "dense_fraction")  # fmt: skip
PROVENANCE_PREFIXES = ("held-out corpus:", "held-out rows")


@dataclass
class SaeMetrics:
    """The core metrics of one SAE (None: no eval.json, or the metric is undefined), and its tokens' identity."""

    name: str
    d_sae: int | None
    metrics: dict[str, float | None]
    tokens: str | None  # "n_seq×seq_len | provenance note", None without an eval
    note: str = ""


@dataclass
class MetricsTable:
    rows: list[SaeMetrics]
    same_tokens: bool
    notes: list[str] = field(default_factory=list)

    def table_rows(self) -> list[dict[str, Any]]:
        out = []
        for r in self.rows:
            row: dict[str, Any] = {"SAE": r.name, "d_sae": r.d_sae if r.d_sae is not None else "–"}
            row.update({k: (float("nan") if v is None else v) for k, v in r.metrics.items()})
            row["eval tokens"] = r.tokens or "no eval.json"
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.__dict__ for r in self.rows], "same_tokens": self.same_tokens, "notes": self.notes}


def _tokens_identity(ev) -> str:
    prov = next((n for n in ev.notes if n.startswith(PROVENANCE_PREFIXES)), "no corpus provenance recorded")
    return f"{ev.n_seq}×{ev.seq_len} tokens | {prov}"


def read_metrics(sae_dirs: list[str | Path], names: list[str] | None = None) -> MetricsTable:
    """One row per SAE folder; a missing or unreadable eval.json gives a row of None and a note."""
    from saelab.sae.evaluate import SaeEval

    names = names or [str(p) for p in sae_dirs]
    rows = []
    for path, name in zip(sae_dirs, names, strict=True):
        file = Path(path) / EVAL_FILE
        if not file.is_file():
            rows.append(SaeMetrics(name, None, dict.fromkeys(SHOWN), None, f"no {EVAL_FILE} (run `saelab eval`)"))
            continue
        try:
            ev = SaeEval.load(file)
        except (SaelabError, TypeError, ValueError) as err:
            rows.append(SaeMetrics(name, None, dict.fromkeys(SHOWN), None, f"{file} unreadable: {err}"))
            continue
        rows.append(SaeMetrics(name, ev.d_sae, {k: getattr(ev, k) for k in SHOWN}, _tokens_identity(ev)))
    seen = {r.tokens for r in rows if r.tokens is not None}
    notes = [f"{r.name}: {r.note}" for r in rows if r.note]
    same = len(seen) <= 1
    if not same:
        notes.append("The evaluations used different held-out tokens (see 'eval tokens'); their numbers are not "
                     "directly comparable — rerun `saelab eval` with the same --tokens, --seq-len and --seed.")  # fmt: skip
    elif seen and any("no corpus provenance" in t for t in seen):
        notes.append("The evaluations record no corpus provenance; they may have used different tokens.")
    return MetricsTable(rows, same, notes)
