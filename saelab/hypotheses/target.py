"""From a `TextSet` to clean texts and a binary or numeric target y, saying every change made.

HypotheSAEs regresses y on hypotheses: OLS for numeric y, Logit for binary y. Class targets map as:
  * binary: y = 1 for the second class (sorted; or `positive_class`), 0 for the other;
  * more than two classes whose names are all numbers (e.g. Yelp's 0–4 stars): y = the number (numeric);
  * more than two named classes: y = 1 for `positive_class`, 0 for the rest (one-vs-rest), which must be given.
Texts are stripped; empty texts and repeated texts (after the first) are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.errors import BadInputError
from saelab.textsets import TextSet


@dataclass
class Prepared:
    """Clean texts, y as float (0/1 when binary), and the TextSet to stratify the split on."""

    texts: list[str]
    y: np.ndarray
    binary: bool
    for_split: TextSet
    target: str
    provenance: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "n_texts": len(self.texts),
            "kind": "binary" if self.binary else "numeric",
            "target": self.target,
            "y_mean": float(self.y.mean()),
            "provenance": {k: v for k, v in self.provenance.items() if k != "row_ids"},
        }


def _clean(textset: TextSet, notes: list[str]) -> np.ndarray:
    """Indices of rows to keep: non-empty, first occurrence of each text."""
    keep, seen, empty, dup = [], set(), 0, 0
    for i, t in enumerate(textset.texts):
        t = t.strip() if isinstance(t, str) else ""
        if not t:
            empty += 1
        elif t in seen:
            dup += 1
        else:
            seen.add(t)
            keep.append(i)
    if empty:
        notes.append(f"Dropped {empty:,} empty text(s).")
    if dup:
        notes.append(f"Dropped {dup:,} duplicate text(s) (first occurrence kept).")
    if not keep:
        raise BadInputError("Every text is empty; there is nothing to analyse.")
    return np.asarray(keep)


def _numeric_classes(classes: list[str] | None) -> np.ndarray | None:
    try:
        return np.array([float(c) for c in classes or []], dtype=np.float64) if classes else None
    except ValueError:
        return None


def prepare(textset: TextSet, cfg) -> Prepared:
    """Clean `textset`, subsample to `cfg.max_texts`, and code the target (see the module docstring)."""
    if len(textset.texts) != len(textset.target):
        raise BadInputError(f"{len(textset.texts)} texts but {len(textset.target)} targets.")
    notes = list(textset.notes)
    keep = _clean(textset, notes)
    if cfg.max_texts is not None and len(keep) > cfg.max_texts:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(keep, size=cfg.max_texts, replace=False))
        notes.append(f"Used a random {cfg.max_texts:,} of {len(textset.texts):,} texts (seed {cfg.seed}).")
    texts = [textset.texts[i].strip() for i in keep]
    raw = np.asarray(textset.target)[keep]
    kind, classes = textset.kind, textset.classes
    if kind == "numeric":
        y = raw.astype(np.float64)
        if not np.isfinite(y).all():
            raise BadInputError("The numeric target has missing or infinite values; fill or drop those rows.")
        binary, target = False, "numeric value"
    elif kind in ("binary", "multiclass"):
        names = classes or [str(c) for c in sorted(set(raw.tolist()))]
        values = _numeric_classes(names)
        pos = cfg.positive_class
        if pos is not None and pos not in names:
            raise BadInputError(f"positive_class {pos!r} is not a class; the classes are {names}.")
        if len(names) == 2 or pos is not None:
            pos_id = names.index(pos) if pos is not None else 1
            y = (raw == pos_id).astype(np.float64)
            binary, target = True, f"1 if class {names[pos_id]!r}, else 0"
            if len(names) > 2:
                notes.append(f"One class versus the rest: y = 1 for {names[pos_id]!r} ({len(names)} classes).")
        elif values is not None:
            y = values[raw]
            binary, target = False, f"class value ({', '.join(names)})"
            notes.append(
                f"The {len(names)} classes are numbers ({', '.join(names)}), so the target is used as numeric."
            )
        else:
            raise BadInputError(
                f"The target has {len(names)} named classes ({', '.join(names[:8])}…); choose a positive class "
                "to test one class versus the rest."
            )
    else:
        raise BadInputError(f"Unknown target kind {kind!r}.")
    if np.ptp(y) == 0:
        raise BadInputError("The target is constant: every text has the same value, so nothing can predict it.")
    for_split = TextSet(texts, raw, kind, classes)
    return Prepared(texts, y, binary, for_split, target, dict(textset.provenance), notes)
