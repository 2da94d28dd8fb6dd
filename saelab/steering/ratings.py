"""One judged steering output (`Rating`) and AxBench's overall score, shared by the judges, sweeps and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from saelab.errors import CorruptFileError
from saelab.typed_json import from_checked_dict

SCORE_FORMULA = (
    "score = harmonic mean of (concept, relevance, fluency) ratings in {0,1,2} = 3/(1/c+1/r+1/f); 0 if any is 0"
)


def harmonic_score(concept: int, relevance: int, fluency: int) -> float:
    """AxBench's overall score: the harmonic mean of the three ratings, 0 if any rating is 0 (range 0…2)."""
    ratings = (concept, relevance, fluency)
    if min(ratings) <= 0:
        return 0.0
    return 3.0 / sum(1.0 / r for r in ratings)


@dataclass
class Rating:
    """One judged output. `concept`, `relevance`, `fluency` ∈ {0, 1, 2}; `raw` holds the continuous values behind
    them (for the proxy: concept_margin, concept_sim, relevance_cos, perplexity, distinct_3gram)."""

    concept: int
    relevance: int
    fluency: int
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return harmonic_score(self.concept, self.relevance, self.fluency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "relevance": self.relevance,
            "fluency": self.fluency,
            "score": self.score,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Rating:
        """From `to_dict()`; its score is recomputed from the three ratings."""
        rating = from_checked_dict(cls, data)
        bad = {k: v for k, v in (("concept", rating.concept), ("relevance", rating.relevance),
                                 ("fluency", rating.fluency)) if v not in (0, 1, 2)}  # fmt: skip
        if bad:
            raise CorruptFileError(f"Rating values must be 0, 1 or 2, got {bad}.")
        return rating


__all__ = ["SCORE_FORMULA", "Rating", "harmonic_score"]
