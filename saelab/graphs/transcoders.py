"""Per-layer skip-transcoders for attribution graphs (issue 19): what replaces each MLP.

A skip-transcoder for layer L reads the MLP's normalised input n = `blocks.L.ln2.hook_normalized` (the RMS/Layer
norm before its elementwise weight, which the encoder absorbs) and predicts the MLP's output
`blocks.L.hook_mlp_out`:
    a   = JumpReLU_θ(n·W_enc + b_enc)          (a_f = pre_f if pre_f > θ_f else 0; θ = 0 is a ReLU)
    out = a·W_dec + b_dec + n·W_skipᵀ
On disk each layer is an SAE-Lens folder (`jumprelu_skip_transcoder`, `hook_name` / `hook_name_out` in the
metadata) that `sae_lens.SAE.load_from_disk` and `saelab.sae.load_sae` read; a set is a folder of
`layer_<L>/` folders plus `transcoders.json` (the model, the layers, and how they were made).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saelab.errors import BadInputError, CorruptFileError, IncompatibleSAEError

SET_FILE = "transcoders.json"


def hook_in(layer: int) -> str:
    return f"blocks.{layer}.ln2.hook_normalized"


def hook_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


@dataclass
class Transcoder:
    """One layer's skip-transcoder as plain tensors (float32, CPU)."""

    layer: int
    W_enc: torch.Tensor  # [d_in, F]
    b_enc: torch.Tensor  # [F]
    W_dec: torch.Tensor  # [F, d_out]
    b_dec: torch.Tensor  # [d_out]
    W_skip: torch.Tensor | None  # [d_out, d_in]
    threshold: torch.Tensor  # [F]

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def pre(self, n: torch.Tensor) -> torch.Tensor:
        return n @ self.W_enc + self.b_enc

    def encode(self, n: torch.Tensor) -> torch.Tensor:
        pre = self.pre(n)
        return torch.where(pre > self.threshold.clamp(min=0), pre, torch.zeros((), dtype=pre.dtype))

    def decode(self, a: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        out = a @ self.W_dec + self.b_dec
        return out if self.W_skip is None else out + n @ self.W_skip.T

    def __call__(self, n: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(n), n)

    @classmethod
    def from_sae(cls, layer: int, sae: Any) -> Transcoder:
        """From a loaded SAE-Lens transcoder (skip or not, ReLU or JumpReLU)."""
        p = {k: v.detach().float().cpu() for k, v in sae.state_dict().items()}
        missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(p)
        if missing:
            raise IncompatibleSAEError(f"Layer {layer}: not a transcoder (no {sorted(missing)}).")
        thr = p.get("threshold", torch.zeros(p["W_enc"].shape[1]))
        return cls(layer, p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], p.get("W_skip"), thr)


@dataclass
class TranscoderSet:
    """One transcoder per layer of a model (`layers` lists which; an attribution graph needs all of them)."""

    model: str
    transcoders: dict[int, Transcoder]
    path: Path | None = None

    @property
    def layers(self) -> list[int]:
        return sorted(self.transcoders)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.transcoders[layer]

    def check(self, handle) -> None:
        """Every layer of the model has a transcoder whose widths fit its hooks."""
        missing = [layer for layer in range(handle.n_layers) if layer not in self.transcoders]
        if missing:
            raise IncompatibleSAEError(
                f"An attribution graph replaces every MLP: layers {missing} of {handle.name} have no transcoder."
            )
        d = handle.d_model
        for layer, tc in self.transcoders.items():
            if tc.W_enc.shape[0] != d or tc.W_dec.shape[1] != d:
                raise IncompatibleSAEError(
                    f"Layer {layer}: transcoder maps {tc.W_enc.shape[0]} → {tc.W_dec.shape[1]}, the model is {d} wide."
                )


def load_transcoder_set(path: str | Path) -> TranscoderSet:
    """Read a folder of `layer_<L>/` SAE-Lens transcoder folders (and its `transcoders.json`)."""
    from saelab.sae.files import load_sae
    from saelab.storage import read_json

    path = Path(path)
    folders = sorted(path.glob("layer_*"), key=lambda p: int(p.name.split("_")[1]) if p.name[6:].isdigit() else -1)
    if not folders:
        raise BadInputError(f"{path} holds no layer_<L>/ transcoder folders.")
    meta = read_json(path / SET_FILE) if (path / SET_FILE).is_file() else {}
    out: dict[int, Transcoder] = {}
    for folder in folders:
        if not folder.name[6:].isdigit():
            continue
        layer = int(folder.name[6:])
        loaded = load_sae(folder)
        if not loaded.is_transcoder:
            raise CorruptFileError(f"{folder} is not a transcoder ({loaded.sae.cfg.architecture()}).")
        out[layer] = Transcoder.from_sae(layer, loaded.sae)
    return TranscoderSet(str(meta.get("model", "")), out, path)


def save_transcoder(tc: Transcoder, folder: str | Path, model: str, extra: dict[str, Any] | None = None) -> Path:
    """Write one layer as an SAE-Lens `jumprelu_skip_transcoder` folder (atomically)."""
    from saelab.storage import SAE_CFG_FILE, SAE_WEIGHTS_FILE, atomic_dir, save_tensors, write_json

    d_in, d_sae, d_out = int(tc.W_enc.shape[0]), tc.d_sae, int(tc.W_dec.shape[1])
    cfg = {
        "architecture": "jumprelu_skip_transcoder",
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_out,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": _sae_lens_version(),  # SAE-Lens reads the metadata of 6.x files only
            "model_name": model,
            "hook_name": hook_in(tc.layer),
            "hook_name_out": hook_out(tc.layer),
            "hook_layer_out": tc.layer,
            **(extra or {}),
        },
    }
    skip = tc.W_skip if tc.W_skip is not None else torch.zeros(d_out, d_in)
    tensors = {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec, "W_skip": skip,
               "threshold": tc.threshold}  # fmt: skip
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_tensors(tmp / SAE_WEIGHTS_FILE, {k: v.detach().float().contiguous() for k, v in tensors.items()})
        write_json(tmp / SAE_CFG_FILE, cfg)
    return folder


def _sae_lens_version() -> str:
    from importlib.metadata import version

    return version("sae-lens")


def random_transcoder_set(handle, d_sae: int, seed: int = 0, density: float = 0.1) -> TranscoderSet:
    """Random skip-transcoders for every layer (tests and shape checks): about `density` of latents fire."""
    g = torch.Generator().manual_seed(seed)
    d = handle.d_model
    out = {}
    for layer in range(handle.n_layers):
        W_enc = torch.randn(d, d_sae, generator=g) / d**0.5
        b_enc = torch.full((d_sae,), -float(torch.distributions.Normal(0, 1).icdf(torch.tensor(1 - density))))
        W_dec = torch.randn(d_sae, d, generator=g) / d_sae**0.5
        W_skip = torch.randn(d, d, generator=g) * 0.02
        out[layer] = Transcoder(layer, W_enc, b_enc, W_dec, torch.zeros(d), W_skip, torch.zeros(d_sae))
    return TranscoderSet(handle.name, out)


__all__ = [
    "SET_FILE",
    "Transcoder",
    "TranscoderSet",
    "hook_in",
    "hook_out",
    "load_transcoder_set",
    "random_transcoder_set",
    "save_transcoder",
]
