"""SAE architectures SAE Lab can train, as a registry over SAE-Lens's own training classes.

Each entry names an SAE-Lens training SAE class and its config class, and maps SAE Lab's generic
knobs (`SaeKnobs`: widths, `k` or a sparsity coefficient, normalisation, dtype, device, metadata)
onto that config's own field names, which differ per architecture (`k`, `l1_coefficient`,
`l0_coefficient`, `matryoshka_widths`...). Adding an architecture is one `register()` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    GatedTrainingSAE,
    GatedTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    TrainingSAE,
    TrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata

from saelab.errors import BadInputError

ArchitectureName = Literal["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk"]


@dataclass
class SaeKnobs:
    """The architecture-independent settings of a training SAE.

    Attributes:
        d_in: width of the activations the SAE reads.
        d_sae: number of latents.
        k: active latents per sample (TopK) or on average per batch (BatchTopK, Matryoshka).
        sparsity_coefficient: weight of the sparsity penalty (L1 for standard/gated, L0 for
            JumpReLU); None picks the architecture's default.
        coefficient_warmup_steps: steps over which that coefficient ramps up from 0.
        normalize_activations: SAE-Lens's normalisation mode ("expected_average_only_in" or "none").
        matryoshka_widths: nested prefix widths for Matryoshka (None: d_sae/8, /4, /2, d_sae).
        dtype, device: where the SAE's parameters live.
        metadata: SAE-Lens `cfg.metadata` entries (model_name, hook_name, ...).
    """

    d_in: int
    d_sae: int
    k: int = 32
    sparsity_coefficient: float | None = None
    coefficient_warmup_steps: int = 0
    normalize_activations: str = "expected_average_only_in"
    matryoshka_widths: list[int] | None = None
    dtype: str = "float32"
    device: str = "cpu"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Architecture:
    """One trainable architecture.

    Attributes:
        name: SAE-Lens's architecture name (also what `cfg.json` records for training).
        summary: one line for menus and `--help`.
        sae_class, config_class: SAE-Lens's training SAE and its config dataclass.
        sparsity: which generic knob controls sparsity: "k" or "coefficient".
        default_coefficient: the coefficient used when none is given (None for "k" kinds).
        fields: maps `SaeKnobs` and the resolved coefficient (None for "k" kinds) to the config
            class's architecture-specific fields.
    """

    name: str
    summary: str
    sae_class: type[TrainingSAE[Any]]
    config_class: type[TrainingSAEConfig]
    sparsity: Literal["k", "coefficient"]
    default_coefficient: float | None
    fields: Callable[[SaeKnobs, float | None], dict[str, Any]]

    def coefficient(self, knobs: SaeKnobs) -> float | None:
        """The sparsity coefficient to use: the given one, else the default; None for "k" kinds."""
        if self.sparsity != "coefficient":
            return None
        if knobs.sparsity_coefficient is not None:
            return float(knobs.sparsity_coefficient)
        return self.default_coefficient

    def build_config(self, knobs: SaeKnobs) -> TrainingSAEConfig:
        """The SAE-Lens training config for `knobs`."""
        return self.config_class(
            d_in=knobs.d_in,
            d_sae=knobs.d_sae,
            dtype=knobs.dtype,
            device=knobs.device,
            normalize_activations=knobs.normalize_activations,  # type: ignore[arg-type]
            metadata=SAEMetadata(**knobs.metadata),
            **self.fields(knobs, self.coefficient(knobs)),
        )

    def build(self, knobs: SaeKnobs) -> TrainingSAE[Any]:
        """A freshly initialised SAE-Lens training SAE (uses torch's global RNG for the init)."""
        return self.sae_class(self.build_config(knobs))


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture to the registry (names are unique)."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"SAE architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture_names() -> list[str]:
    return list(ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The registry entry for `name`, or a `BadInputError` listing the valid names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise BadInputError(f"Unknown SAE architecture {name!r}. Choose one of: {', '.join(ARCHITECTURES)}.") from None


def default_matryoshka_widths(d_sae: int) -> list[int]:
    """Nested widths d_sae/8, d_sae/4, d_sae/2, d_sae (duplicates and zeros dropped)."""
    return sorted({w for w in (d_sae // 8, d_sae // 4, d_sae // 2, d_sae) if w > 0})


def _matryoshka_fields(knobs: SaeKnobs, _coefficient: float | None) -> dict[str, Any]:
    widths = list(knobs.matryoshka_widths or default_matryoshka_widths(knobs.d_sae))
    # SAE-Lens appends d_sae itself (with a warning) when the last level is narrower; do it quietly.
    if widths[-1] != knobs.d_sae:
        widths.append(knobs.d_sae)
    return {"k": knobs.k, "matryoshka_widths": widths}


register(
    Architecture(
        name="standard",
        summary="ReLU SAE with an L1 penalty (weighted by decoder norms)",
        sae_class=StandardTrainingSAE,
        config_class=StandardTrainingSAEConfig,
        sparsity="coefficient",
        default_coefficient=5.0,
        fields=lambda kn, coef: {"l1_coefficient": coef, "l1_warm_up_steps": kn.coefficient_warmup_steps},
    )
)
register(
    Architecture(
        name="topk",
        summary="TopK: exactly k active latents per sample, no penalty to tune",
        sae_class=TopKTrainingSAE,
        config_class=TopKTrainingSAEConfig,
        sparsity="k",
        default_coefficient=None,
        fields=lambda kn, _coef: {"k": kn.k},
    )
)
register(
    Architecture(
        name="batchtopk",
        summary="BatchTopK: k active latents on average over a batch (saved as JumpReLU)",
        sae_class=BatchTopKTrainingSAE,
        config_class=BatchTopKTrainingSAEConfig,
        sparsity="k",
        default_coefficient=None,
        fields=lambda kn, _coef: {"k": kn.k},
    )
)
register(
    Architecture(
        name="jumprelu",
        summary="JumpReLU with a learned threshold per latent and an L0 penalty",
        sae_class=JumpReLUTrainingSAE,
        config_class=JumpReLUTrainingSAEConfig,
        sparsity="coefficient",
        default_coefficient=1.0,
        fields=lambda kn, coef: {"l0_coefficient": coef, "l0_warm_up_steps": kn.coefficient_warmup_steps},
    )
)
register(
    Architecture(
        name="gated",
        summary="Gated SAE: separate gate and magnitude paths, L1 on the gate",
        sae_class=GatedTrainingSAE,
        config_class=GatedTrainingSAEConfig,
        sparsity="coefficient",
        default_coefficient=1.0,
        fields=lambda kn, coef: {"l1_coefficient": coef, "l1_warm_up_steps": kn.coefficient_warmup_steps},
    )
)
register(
    Architecture(
        name="matryoshka_batchtopk",
        summary="Matryoshka BatchTopK: nested prefixes each reconstruct (saved as JumpReLU)",
        sae_class=MatryoshkaBatchTopKTrainingSAE,
        config_class=MatryoshkaBatchTopKTrainingSAEConfig,
        sparsity="k",
        default_coefficient=None,
        fields=_matryoshka_fields,
    )
)

assert set(ARCHITECTURES) == set(ArchitectureName.__args__), "ArchitectureName and the registry disagree"
