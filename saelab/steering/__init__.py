"""Steering: directions from several sources, interventions as scoped hooks, steered vs unsteered generation.

Modules: `sources` (Direction and where it comes from), `interventions` (add / clamp / ablate hooks),
`generate` (batched KV-cached generation with shared sampling noise), `presets` (JSON save/load),
`cli` (`saelab steer`). Direction methods from texts live in `saelab.directions`.
"""

from saelab.steering.direction_sources import (
    DIRECTION_SOURCES,
    Direction,
    neuron_direction,
    sae_latent_direction,
    text_direction,
)
from saelab.steering.generate import (
    MAX_NEW_TOKENS,
    GenerationConfig,
    SteeringResult,
    generate,
    latent_activations,
    prompting_system_prompt,
)
from saelab.steering.interventions import MAX_FACTOR, Intervention, validate

__all__ = [
    "DIRECTION_SOURCES",
    "MAX_FACTOR",
    "MAX_NEW_TOKENS",
    "Direction",
    "GenerationConfig",
    "Intervention",
    "SteeringResult",
    "generate",
    "latent_activations",
    "neuron_direction",
    "prompting_system_prompt",
    "sae_latent_direction",
    "text_direction",
    "validate",
]
