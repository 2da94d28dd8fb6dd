"""Steering presets as JSON: prompt, sampling settings and interventions (with their direction vectors).

A preset is plain JSON — never pickle, never code — so a user can share one and anyone can read it:

    {"format": "saelab.steering_preset", "version": 1, "model": "...", "prompt": "...",
     "generation": {GenerationConfig fields}, "interventions": [{kind, factor, positions, latent,
     direction: {name, source, hook, vector: [floats], max_act, meta}}]}

`load_preset` checks size, encoding, structure and every value (through the dataclasses' own checks);
whether the directions fit the running model is checked by `saelab.steering.interventions.validate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import BadInputError, SaelabError
from saelab.steering.generate import GenerationConfig
from saelab.steering.interventions import Intervention
from saelab.storage import write_json

FORMAT = "saelab.steering_preset"
VERSION = 1
MAX_PRESET_BYTES = 8 * 1024 * 1024
MAX_INTERVENTIONS = 16
# The ranges the Steering page's sampling widgets accept; a preset outside them is refused with their names
# (the widgets would otherwise raise when the preset's values are put into them). None: no bound.
GENERATION_LIMITS: dict[str, tuple[float, float | None]] = {
    "max_new_tokens": (1, None),
    "temperature": (0.0, 10.0),
    "top_p": (0.01, 1.0),
    "seed": (0, 2**31 - 1),
}


def _check_limits(generation: GenerationConfig) -> None:
    for name, (low, high) in GENERATION_LIMITS.items():
        value = getattr(generation, name)
        if value < low or (high is not None and value > high):
            upper = f"{high:g}" if high is not None else "∞"
            raise BadInputError(f"Invalid preset: {name} = {value!r} is outside {low:g} … {upper}.")


@dataclass
class Preset:
    """What the playground needs to reproduce a steering run."""

    prompt: str
    generation: GenerationConfig
    interventions: list[Intervention]
    model: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "prompt": self.prompt,
            "generation": self.generation.to_dict(),
            "interventions": [iv.to_dict() for iv in self.interventions],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Preset:
        """A `Preset` from decoded JSON (`to_dict()`), or BadInputError naming what is wrong."""
        if not isinstance(data, dict):
            raise BadInputError("A steering preset must be a JSON object.")
        if data.get("format") != FORMAT:
            raise BadInputError(
                f"This JSON is not a steering preset (format {data.get('format')!r}, expected {FORMAT!r})."
            )
        if data.get("version") != VERSION:
            raise BadInputError(
                f"Preset version {data.get('version')!r} is not supported (this SAE Lab reads {VERSION})."
            )
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            raise BadInputError("The preset's prompt must be text.")
        gen = data.get("generation") or {}
        if not isinstance(gen, dict):
            raise BadInputError("The preset's generation settings must be a JSON object.")
        ivs = data.get("interventions") or []
        if not isinstance(ivs, list):
            raise BadInputError("The preset's interventions must be a list.")
        if len(ivs) > MAX_INTERVENTIONS:
            raise BadInputError(f"The preset has {len(ivs)} interventions; at most {MAX_INTERVENTIONS} are allowed.")
        notes = data.get("notes") or []
        try:
            interventions = [Intervention.from_dict(iv) for iv in ivs]
            generation = GenerationConfig.from_dict(gen)
        except SaelabError as err:
            raise BadInputError(f"Invalid preset: {err}") from err
        except (TypeError, ValueError) as err:
            raise BadInputError(f"Invalid preset: {err}") from err
        _check_limits(generation)
        return cls(
            prompt=prompt,
            generation=generation,
            interventions=interventions,
            model=str(data.get("model", "")),
            notes=[str(n) for n in notes] if isinstance(notes, list) else [],
        )


def dumps_preset(preset: Preset) -> str:
    """The preset as a JSON string (for a download button)."""
    return json.dumps(preset.to_dict(), indent=1, allow_nan=False)


def save_preset(preset: Preset, path: str | Path) -> Path:
    """Write the preset atomically."""
    path = Path(path)
    write_json(path, preset.to_dict())
    return path


def parse_preset(data: Any) -> Preset:
    """A `Preset` from decoded JSON, or BadInputError naming what is wrong (`Preset.from_dict`)."""
    return Preset.from_dict(data)


def loads_preset(raw: bytes | str) -> Preset:
    """Parse an uploaded preset (bytes or text)."""
    if isinstance(raw, bytes | bytearray):
        if len(raw) > MAX_PRESET_BYTES:
            raise BadInputError(f"The preset is {len(raw):,} bytes; the limit is {MAX_PRESET_BYTES:,}.")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadInputError(f"The preset is not UTF-8 text ({err.reason}).") from err
    if len(raw) > MAX_PRESET_BYTES:
        raise BadInputError(f"The preset is {len(raw):,} characters; the limit is {MAX_PRESET_BYTES:,}.")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as err:
        raise BadInputError(f"The preset is not valid JSON: {err.msg} at line {err.lineno}.") from err
    return parse_preset(data)


def _no_constants(name: str) -> Any:
    raise BadInputError(f"The preset holds {name}, which is not a valid number; use finite values.")


def load_preset(path: str | Path) -> Preset:
    """Read a preset file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"No preset file at {path}.")
    if path.stat().st_size > MAX_PRESET_BYTES:
        raise BadInputError(f"{path} is larger than {MAX_PRESET_BYTES:,} bytes; it is not a steering preset.")
    return loads_preset(path.read_bytes())


__all__ = ["FORMAT", "Preset", "dumps_preset", "load_preset", "loads_preset", "parse_preset", "save_preset"]
