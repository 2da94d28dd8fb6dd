"""A mixin giving config dataclasses `to_dict`/`from_dict`, with unknown keys refused by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from saelab.errors import BadInputError


class DictConfig:
    """For `@dataclass` configs: `to_dict()` is `asdict`; `from_dict()` rejects fields the class lacks."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"Unknown {cls.__name__} fields {unknown}; valid: {sorted(known)}")
        return cls(**data)
