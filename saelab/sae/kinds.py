"""What differs between the SAE kinds SAE-Lens can load, in one place: normalisation, hook shapes, transcoders.

SAE Lab always calls an SAE through SAE-Lens's own `encode`/`decode`, so each architecture's maths (TopK,
JumpReLU thresholds, gating, decoder-norm rescaling...) is SAE-Lens's. What the callers must still get right:

* **Normalisation.** "constant_norm_rescale" and "layer_norm" are applied by SAE-Lens inside `encode` and undone
  inside `decode`, with the factor of the last `encode` kept on the SAE: a `decode` must follow its own `encode`
  (`decode_change` re-encodes between two decodes of the same input). "expected_average_only_in" and
  "covariance_whitening" are NOT applied by an inference SAE: SAE-Lens folds the factor (or affine whitening) into
  the weights when it knows it, from its pretrained directory or the `activation_scaler.json` its trainer writes
  beside a checkpoint. `fold_saved_normalisation` does the same from that file, and refuses a folder that lacks
  it (the SAE would read raw activations at the wrong scale).
* **Attention `hook_z`.** The activation is [batch, pos, n_heads, d_head]; an SAE there reads all heads
  concatenated (d_in = n_heads·d_head). With SAE-Lens's `reshape_activations="hook_z"` its `encode` flattens the
  heads and `decode` restores them; `enable_hook_z` switches that on for hook_z SAEs saved without it, so every
  caller hands an SAE the hook's own activation. Directions at such hooks are n_heads·d_head wide
  (`flat_heads`/`unflat_heads`).
* **Transcoders** (transcoder, skip_transcoder, jumprelu_transcoder, jumprelu_skip_transcoder) encode the
  activation at their input hook (`cfg.metadata.hook_name`) and decode into ANOTHER hook (`hook_name_out`,
  width `d_out`). SAE Lab loads them as SAEs of their input hook: latents, dashboards, probing and prompt
  analysis read `encode` of the input hook; anything that splices `decode` back where it read (evaluation, SAE
  clamps) refuses them (`check_not_transcoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, Transcoder
from sae_lens.constants import ACTIVATION_SCALER_CFG_FILENAME
from sae_lens.training.activation_scaler import ActivationScaler

from saelab.errors import IncompatibleSAEError

HEAD_HOOK_SUFFIXES = ("hook_z", "hook_q", "hook_k", "hook_v")  # activations [batch, pos, heads, d_head]
STATEFUL_NORMS = ("constant_norm_rescale", "layer_norm")  # applied in encode, undone in the next decode
FOLDED_NORMS = ("expected_average_only_in", "covariance_whitening")  # never applied by an inference SAE

# Inference architectures SAE-Lens registers that SAE Lab cannot run, and why.
UNSUPPORTED_ARCHITECTURES = {
    "temporal": "a temporal SAE encodes a whole [batch, pos, d_in] sequence at once (each token's latents depend "
    "on the tokens before it), while SAE Lab encodes the tokens it keeps one by one",
}


def is_transcoder(sae: SAE[Any]) -> bool:
    """True for SAE-Lens transcoders (plain, skip, JumpReLU), whose decoder writes another hook."""
    return isinstance(sae, Transcoder)


def output_hook(sae: SAE[Any], hook: str) -> str:
    """Where `decode` writes: a transcoder's `hook_name_out` (when recorded), else the hook the SAE reads."""
    if is_transcoder(sae):
        return sae.cfg.metadata.hook_name_out or hook
    return hook


def check_not_transcoder(sae: SAE[Any], what: str) -> None:
    """Raise `IncompatibleSAEError` for a transcoder: `what` splices decode(encode(x)) back where x was read."""
    if is_transcoder(sae):
        out = sae.cfg.metadata.hook_name_out or "another hook"
        raise IncompatibleSAEError(
            f"This is a {sae.cfg.architecture()} (a transcoder): it reads {sae.cfg.metadata.hook_name} but its "
            f"decoder predicts {out}, so {what} (which puts decode(encode(x)) back where x was read) does not "
            "apply. Its latents (encode) work everywhere else: dashboards, prompt analysis, probing."
        )


def is_head_hook(hook: str) -> bool:
    return hook.endswith(HEAD_HOOK_SUFFIXES)


def enable_hook_z(sae: SAE[Any], hook: str) -> bool:
    """Let an SAE at `...attn.hook_z` read [.., n_heads, d_head] activations itself; True if switched on here.

    SAE-Lens does this for configs older than 6.0 (`handle_pre_6_0_config`); a newer folder saved with
    `reshape_activations="none"` (e.g. by a training SAE, which turns reshaping off) would otherwise be handed
    d_head-wide vectors one head at a time.
    """
    if not hook.endswith("hook_z") or sae.cfg.reshape_activations == "hook_z" or is_transcoder(sae):
        return False
    recorded = sae.cfg.metadata.hook_name
    if recorded is not None and not recorded.endswith("_z"):
        return False  # SAE-Lens refuses to reshape an SAE recorded at another hook; read it as saved
    sae.cfg.reshape_activations = "hook_z"
    sae.turn_on_forward_pass_hook_z_reshaping()
    return True


def hook_z_width(sae: SAE[Any], hook_width: int, n_heads: int) -> int:
    """The width an SAE expects at a hook whose last dimension is `hook_width`: × n_heads for hook_z SAEs."""
    return hook_width * n_heads if getattr(sae.cfg, "reshape_activations", "none") == "hook_z" else hook_width


def flat_heads(act: torch.Tensor, width: int) -> torch.Tensor:
    """`act` as vectors of `width`: [.., heads, d_head] → [.., heads·d_head] when that is what fits."""
    if act.shape[-1] != width and act.ndim >= 2 and act.shape[-2] * act.shape[-1] == width:
        return act.flatten(-2)
    return act


def unflat_heads(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Undo `flat_heads`: `out` back to the shape of the activation it came from."""
    return out if out.shape == like.shape else out.reshape(like.shape)


def decode_change(sae: SAE[Any], x: torch.Tensor, z: torch.Tensor, z_new: torch.Tensor) -> torch.Tensor:
    """decode(z_new) − decode(z) for latents z = encode(x) (just computed), in the input's units.

    With a runtime normalisation (`STATEFUL_NORMS`) SAE-Lens keeps the norm of the last `encode` on the SAE and
    drops it in `decode`, so a second `decode` needs `x` encoded again.
    """
    new = sae.decode(z_new)
    if sae.cfg.normalize_activations in STATEFUL_NORMS:
        sae.encode(x)
    return new - sae.decode(z)


def fold_saved_normalisation(sae: SAE[Any], folder: str | Path) -> str | None:
    """Fold a normalisation SAE-Lens does not apply at inference into the weights; a note saying so, or None.

    "expected_average_only_in" (the SAE was trained on activations × a scaling factor) and
    "covariance_whitening" need the statistics SAE-Lens's trainer saves beside its checkpoints
    (`activation_scaler.json`, plus `activation_whitening.safetensors` for whitening); they are folded with
    SAE-Lens's own `fold_activation_norm_scaling_factor` / `fold_activation_whitening`, after which the SAE
    reads raw activations. Without that file the folder is refused (`IncompatibleSAEError`).
    """
    mode = sae.cfg.normalize_activations
    if mode not in FOLDED_NORMS:
        return None
    path = Path(folder) / ACTIVATION_SCALER_CFG_FILENAME
    scaler = ActivationScaler()
    if path.is_file():
        try:
            scaler.load(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise IncompatibleSAEError(f"{path} is not SAE-Lens's activation scaler file ({err}).") from err
    if mode == "expected_average_only_in" and scaler.scaling_factor is not None:
        factor = float(scaler.scaling_factor)
        sae.fold_activation_norm_scaling_factor(factor)
        return f"normalize_activations='expected_average_only_in': scaling factor {factor:.6g} from {path.name} folded"
    if mode == "covariance_whitening" and scaler.whitening is not None:
        w = scaler.whitening
        sae.fold_activation_whitening(w.mean, w.matrix, w.inverse_matrix)
        return f"normalize_activations='covariance_whitening': whitening from {path.name} folded into the weights"
    needs = '{"scaling_factor": F}' if mode == "expected_average_only_in" else "and the whitening statistics"
    raise IncompatibleSAEError(
        f"{folder} holds an SAE with normalize_activations={mode!r}: it expects activations transformed by "
        f"statistics that SAE-Lens does not apply at inference and that are not in the folder. Put SAE-Lens's "
        f"{ACTIVATION_SCALER_CFG_FILENAME} ({needs}) beside it, or fold them into the weights "
        "(sae.fold_activation_norm_scaling_factor / fold_activation_whitening) and save it again."
    )


__all__ = [
    "FOLDED_NORMS",
    "HEAD_HOOK_SUFFIXES",
    "STATEFUL_NORMS",
    "UNSUPPORTED_ARCHITECTURES",
    "check_not_transcoder",
    "decode_change",
    "enable_hook_z",
    "flat_heads",
    "fold_saved_normalisation",
    "hook_z_width",
    "is_head_hook",
    "is_transcoder",
    "output_hook",
    "unflat_heads",
]
