"""Interventions on activations while the model generates: add, clamp, ablate — as scoped hook closures.

With h the activation at the direction's hook (one vector per position), w the unit direction and
α = factor × max_act (AxBench):

    add     h ← h + α·w
    clamp   with an SAE latent j (SAE-Lens SAE at that hook): z = encode(h); z_j ← α;
            h ← decode(z') + (h − decode(z))   — the latent is set and the reconstruction error is added back.
            Without an SAE (a text or neuron direction): h ← h + (α − h·w)·w, i.e. the projection on w is set
            to α (for a neuron's one-hot direction, the neuron's value is set to α).
    ablate  h ← h − (h·w)·w   — w projected out (factor unused).

At an attention hook whose activation is [batch, pos, n_heads, d_head] (`attn.hook_z`, q, k, v) a direction is
n_heads·d_head wide — all heads concatenated, as an SAE there reads them (an SAE latent's decoder row) — and h is
that concatenation; a d_head-wide direction acts on every head alike.

Positions: "all" every position, "prompt" only the prompt's positions (the first forward pass), "generated"
only the positions of generated tokens (later passes with the KV cache). Note the first new token is
predicted from the last prompt position, so "generated" steering first shows in the second new token.

Hooks are closures over per-call data and a `Phase` object the generation loop flips; they are attached only
inside `saelab.hooks.gate`, never permanently. `INTERVENTION_KINDS` maps a kind to its hook builder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from saelab.decode import Phase
from saelab.errors import BadInputError
from saelab.models.handle import ModelHandle
from saelab.sae import kinds
from saelab.sae.files import LoadedSAE
from saelab.steering.direction_sources import Direction

MAX_FACTOR = 100.0  # |factor| above this is refused: AxBench's largest is 5, 100 × max_act destroys any model
KINDS = ("add", "clamp", "ablate")
POSITIONS = ("all", "prompt", "generated")

FORMULAS = {
    "add": "h ← h + α·w, α = factor × max_act",
    "clamp": "SAE: z_j ← α, h ← decode(z′) + (h − decode(z)); otherwise h ← h + (α − h·w)·w",
    "ablate": "h ← h − (h·w)·w",
}


@dataclass
class Intervention:
    """One direction applied one way.

    Attributes:
        kind: "add", "clamp" or "ablate" (see the module docstring).
        direction: the `Direction` (its hook is where the intervention acts).
        factor: α = factor × direction.max_act (unused by "ablate").
        positions: "all", "prompt" or "generated".
        latent: for an SAE clamp, the latent to set (default: the direction's own latent when it came
            from an SAE); needs the LoadedSAE passed to `generate(..., loaded_sae=...)`.
    """

    kind: Literal["add", "clamp", "ablate"]
    direction: Direction
    factor: float = 1.0
    positions: Literal["all", "prompt", "generated"] = "all"
    latent: int | None = None

    @property
    def alpha(self) -> float:
        return float(self.factor) * float(self.direction.max_act)

    def sae_latent(self) -> int | None:
        """The SAE latent a clamp sets: `latent`, else the direction's own latent (SAE sources only)."""
        if self.latent is not None:
            return self.latent
        return self.direction.meta.get("latent") if self.direction.source == "sae" else None

    def describe(self) -> str:
        where = "" if self.positions == "all" else f" ({self.positions} positions)"
        if self.kind == "ablate":
            return f"ablate {self.direction.name}{where}"
        return f"{self.kind} {self.direction.name} × {self.factor:g} (α = {self.alpha:.4g}){where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "direction": self.direction.to_dict(),
            "factor": float(self.factor),
            "positions": self.positions,
            "latent": self.latent,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Intervention:
        if not isinstance(data, dict):
            raise BadInputError(f"An intervention must be a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - {"kind", "direction", "factor", "positions", "latent"})
        if unknown:
            raise BadInputError(f"Unknown intervention fields {unknown}.")
        factor = data.get("factor", 1.0)
        latent = data.get("latent")
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise BadInputError(f"factor must be a number, got {factor!r}.")
        if latent is not None and (isinstance(latent, bool) or not isinstance(latent, int)):
            raise BadInputError(f"latent must be an integer or null, got {latent!r}.")
        return cls(
            kind=data.get("kind", "add"),
            direction=Direction.from_dict(data.get("direction")),
            factor=float(factor),
            positions=data.get("positions", "all"),
            latent=latent,
        )


def validate(interventions: Sequence[Intervention], handle: ModelHandle, loaded_sae: LoadedSAE | None = None) -> None:
    """Raise BadInputError for anything that cannot steer `handle` as asked; return None when all is well."""
    if not isinstance(interventions, Sequence) or isinstance(interventions, str | bytes):
        raise BadInputError("Interventions must be a list of Intervention objects.")
    for i, iv in enumerate(interventions):
        what = f"Intervention {i + 1}"
        if not isinstance(iv, Intervention):
            raise BadInputError(f"{what} is a {type(iv).__name__}, not an Intervention.")
        if iv.kind not in INTERVENTION_KINDS:
            raise BadInputError(f"{what}: unknown kind {iv.kind!r}; choose one of {list(INTERVENTION_KINDS)}.")
        if iv.positions not in POSITIONS:
            raise BadInputError(f"{what}: positions {iv.positions!r} is not one of {list(POSITIONS)}.")
        factor = iv.factor
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(float(factor)):
            raise BadInputError(f"{what}: the strength (factor) {factor!r} is not a finite number.")
        if abs(float(factor)) > MAX_FACTOR:
            raise BadInputError(
                f"{what}: factor {float(factor):g} is absurd; use |factor| ≤ {MAX_FACTOR:g} "
                "(AxBench sweeps 0.2 to 5; α = factor × max_act)."
            )
        if not isinstance(iv.direction, Direction):
            raise BadInputError(f"{what}: the direction is a {type(iv.direction).__name__}, not a Direction.")
        widths = hook_widths(handle, iv.direction.hook)  # also raises for an unknown hook
        if iv.direction.width not in widths:
            raise BadInputError(
                f"{what}: direction {iv.direction.name!r} has width {iv.direction.width}, but {iv.direction.hook} "
                f"of model {handle.name} has width {' or '.join(map(str, widths))}. Build the direction on this "
                "model and hook."
            )
        _check_transcoder(iv, loaded_sae, what)
        if not math.isfinite(iv.alpha):
            raise BadInputError(f"{what}: α = factor × max_act is not finite (max_act {iv.direction.max_act!r}).")
        if iv.kind == "clamp" and iv.sae_latent() is not None:
            _check_clamp(iv, loaded_sae, what)


def hook_widths(handle: ModelHandle, hook: str) -> tuple[int, ...]:
    """The widths a direction at `hook` may have: the hook's last dimension, and at an attention hook with a
    head dimension also n_heads·d_head (all heads concatenated)."""
    width = handle.hook_width(hook)
    if not kinds.is_head_hook(hook):
        return (width,)
    cfg = handle.cfg
    heads = (getattr(cfg, "n_key_value_heads", None) if hook.endswith(("hook_k", "hook_v")) else None) or cfg.n_heads
    return (width, width * int(heads))


def _check_transcoder(iv: Intervention, loaded_sae: LoadedSAE | None, what: str) -> None:
    """A transcoder's decoder rows live at its output hook, not at the hook its encoder reads."""
    if loaded_sae is None or not loaded_sae.is_transcoder or iv.direction.source != "sae":
        return
    if iv.direction.meta.get("sae_path") == str(loaded_sae.path) and iv.direction.hook != loaded_sae.decoder_hook:
        raise BadInputError(
            f"{what}: {iv.direction.name!r} is a decoder row of a transcoder, which writes to "
            f"{loaded_sae.decoder_hook}, not to {iv.direction.hook} where its encoder reads; it cannot steer there."
        )


def _check_clamp(iv: Intervention, loaded_sae: LoadedSAE | None, what: str) -> None:
    latent = iv.sae_latent()
    if loaded_sae is None:
        raise BadInputError(f"{what}: clamping SAE latent {latent} needs the SAE; pass loaded_sae.")
    d_sae = int(loaded_sae.sae.cfg.d_sae)
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < d_sae:
        raise BadInputError(f"{what}: there is no latent {latent!r}; this SAE has latents 0 to {d_sae - 1}.")
    if loaded_sae.hook != iv.direction.hook:
        raise BadInputError(f"{what}: the SAE reads {loaded_sae.hook} but the direction lives at {iv.direction.hook}.")
    if loaded_sae.is_transcoder:
        raise BadInputError(
            f"{what}: a clamp sets a latent and puts the SAE's decode back where it read; a transcoder decodes "
            f"into {loaded_sae.decoder_hook} instead. Use 'add' with a direction at that hook."
        )


# ---------------------------------------------------------------- hook builders

HookFn = Callable[..., torch.Tensor | None]


def _vec(iv: Intervention, act: torch.Tensor) -> torch.Tensor:
    return iv.direction.vector.to(device=act.device, dtype=act.dtype)


def _add(iv: Intervention, phase: Phase, loaded_sae: LoadedSAE | None) -> HookFn:
    cache: dict[str, torch.Tensor] = {}

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor | None:
        if not phase.active(iv.positions):
            return None
        if "delta" not in cache:  # built once per call, in the activation's dtype and shape ([heads, d_head] at hook_z)
            delta = _vec(iv, act) * iv.alpha
            cache["delta"] = delta if delta.numel() == act.shape[-1] else delta.view(act.shape[-2:])
        return act + cache["delta"]

    return hook


def _on_vectors(act: torch.Tensor, width: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`fn` applied to `act` seen as `width`-wide vectors (heads concatenated at hook_z), in `act`'s shape."""
    return kinds.unflat_heads(fn(kinds.flat_heads(act, width)), act)


def _clamp(iv: Intervention, phase: Phase, loaded_sae: LoadedSAE | None) -> HookFn:
    latent = iv.sae_latent()
    alpha = iv.alpha

    if latent is None or loaded_sae is None:

        def project_hook(act: torch.Tensor, hook=None) -> torch.Tensor | None:
            if not phase.active(iv.positions):
                return None
            w = _vec(iv, act)
            return _on_vectors(act, len(w), lambda h: h + (alpha - h @ w).unsqueeze(-1) * w)

        return project_hook

    sae = loaded_sae.sae
    d_in = int(sae.cfg.d_in)

    def sae_hook(act: torch.Tensor, hook=None) -> torch.Tensor | None:
        if not phase.active(iv.positions):
            return None
        x = act.to(dtype=sae.dtype, device=sae.device)
        if not getattr(sae, "hook_z_reshaping_mode", False):  # a hook_z SAE takes [.., heads, d_head] itself
            x = kinds.flat_heads(x, d_in)
        z = sae.encode(x)
        z_set = z.clone()
        z_set[..., latent] = alpha
        # decode(z') + (x − decode(z)): the SAE's error term is kept, only latent j changes.
        out = x + kinds.decode_change(sae, x, z, z_set)
        return kinds.unflat_heads(out, act).to(dtype=act.dtype, device=act.device)

    return sae_hook


def _ablate(iv: Intervention, phase: Phase, loaded_sae: LoadedSAE | None) -> HookFn:
    def hook(act: torch.Tensor, hook=None) -> torch.Tensor | None:
        if not phase.active(iv.positions):
            return None
        w = _vec(iv, act)
        return _on_vectors(act, len(w), lambda h: h - (h @ w).unsqueeze(-1) * w)

    return hook


INTERVENTION_KINDS: dict[str, Callable[[Intervention, Phase, LoadedSAE | None], HookFn]] = {
    "add": _add,
    "clamp": _clamp,
    "ablate": _ablate,
}


def build_hooks(
    interventions: Sequence[Intervention], phase: Phase, loaded_sae: LoadedSAE | None = None
) -> list[tuple[str, HookFn]]:
    """(hook name, closure) pairs for `saelab.hooks.gate`, in the order given (they compose in that order)."""
    return [(iv.direction.hook, INTERVENTION_KINDS[iv.kind](iv, phase, loaded_sae)) for iv in interventions]


__all__ = [
    "FORMULAS",
    "INTERVENTION_KINDS",
    "Intervention",
    "MAX_FACTOR",
    "Phase",
    "build_hooks",
    "hook_widths",
    "validate",
]
