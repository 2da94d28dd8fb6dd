"""The typed result of one steering run (`SteeringResult`): what `saelab.steering.generate.generate` returns and
`saelab steer --json` prints; `SteeringResult.from_dict` reads that JSON back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from saelab.typed_json import from_checked_dict


@dataclass
class SteeringResult:
    """Unsteered and steered continuations of each prompt.

    Attributes:
        prompts: the prompts as given.
        unsteered, steered: generated text per prompt (special tokens dropped; the end token not included).
            With `with_unsteered=False`, `unsteered` is a list of empty strings.
        steered_token_ids: generated token ids per prompt (end token not included).
        config: `GenerationConfig.to_dict()` plus the interventions' descriptions and formulas.
        notes: anything the reader should know (caps, stops, the empty-intervention shortcut).
        unsteered_token_ids: as `steered_token_ids`, for the unsteered run.
        prompt_token_ids: the model input per prompt (chat template applied), for in-context read-outs.
        elapsed_s: wall time of the batched generation {"batched": s} (unsteered and steered rows together).
    """

    prompts: list[str]
    unsteered: list[str]
    steered: list[str]
    steered_token_ids: list[list[int]]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    unsteered_token_ids: list[list[int]] = field(default_factory=list)
    prompt_token_ids: list[list[int]] = field(default_factory=list)
    elapsed_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SteeringResult:
        return from_checked_dict(cls, data)
