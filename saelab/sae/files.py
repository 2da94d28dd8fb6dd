"""SAE folders on disk: SAE-Lens's own format plus SAE Lab's provenance file.

A folder holds `cfg.json` + `sae_weights.safetensors` exactly as SAE-Lens writes them (so
`sae_lens.SAE.load_from_disk(folder)` reads it) and, for SAEs trained here, `saelab.json`
(`SaeMeta`). A folder is written whole: built in a temporary folder beside it and renamed into
place, so readers never see new weights with an old config. Nothing here unpickles anything.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, TrainingSAE
from sae_lens.constants import SPARSITY_FILENAME
from sae_lens.loading.pretrained_sae_loaders import read_sae_components_from_disk
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from safetensors import SafetensorError

import saelab
from saelab.errors import BadInputError, CorruptFileError, IncompatibleSAEError
from saelab.models.handle import ModelHandle
from saelab.sae.catalog import list_saes  # noqa: F401  (re-exported: files.list_saes is public API)
from saelab.storage import (
    DASHBOARD_DIR,
    EVAL_FILE,
    SAE_CFG_FILE,
    SAE_WEIGHTS_FILE,
    SAELAB_META_FILE,
    TRAIN_STATE_DIR,
    atomic_dir,
    read_json,
    write_json,
)

log = logging.getLogger(__name__)

# What may sit in a folder that `save_sae` replaces whole; anything else means it is not ours.
_SAE_FOLDER_ENTRIES = {
    SAE_CFG_FILE,
    SAE_WEIGHTS_FILE,
    SAELAB_META_FILE,
    EVAL_FILE,
    TRAIN_STATE_DIR,
    SPARSITY_FILENAME,
    DASHBOARD_DIR,
}


@dataclass
class SaeMeta:
    """Provenance of an SAE trained by SAE Lab (`saelab.json`).

    Attributes:
        model: name of the model whose activations it was trained on (`ModelHandle.name`).
        hook: TransformerLens hook point it reads, e.g. "blocks.12.hook_resid_post".
        d_in, d_sae: activation width and number of latents.
        architecture: SAE Lab / SAE-Lens training architecture ("topk", ...).
        norm_scaling_factor: factor the raw activations were multiplied by during training; it is
            folded into the saved weights, so the SAE reads RAW activations (1.0 = no scaling).
        corpus: where the training text came from (free-form provenance).
        tokens_seen: activation vectors (one per token) the SAE was trained on.
        seed: training seed.
        train_config: `TrainConfig.to_dict()` of the run.
        created: ISO 8601 time the folder was written (UTC).
        saelab_version: SAE Lab version that wrote it.
        extra: any other provenance the caller supplied (e.g. context_size, prepend_bos).
    """

    model: str
    hook: str
    d_in: int
    d_sae: int
    architecture: str
    norm_scaling_factor: float = 1.0
    corpus: dict[str, Any] = field(default_factory=dict)
    tokens_seen: int = 0
    seed: int | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    saelab_version: str = saelab.__version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SaeMeta:
        """Build from a dict; unknown keys (from newer versions) are kept in `extra`."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = [k for k in ("model", "hook", "d_in", "d_sae", "architecture") if k not in data]
        if missing:
            raise ValueError(f"missing keys: {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in names}
        extra = {**known.pop("extra", {}), **{k: v for k, v in data.items() if k not in names}}
        return cls(**known, extra=extra)


@dataclass
class LoadedSAE:
    """An SAE read from disk.

    Attributes:
        sae: the SAE-Lens inference SAE (eval mode), reading raw activations of `hook`.
        meta: SAE Lab's provenance, or None for a plain SAE-Lens folder.
        path: the folder it came from.
        hook: the hook point it reads (explicit argument > saelab.json > cfg.metadata.hook_name).
    """

    sae: SAE[Any]
    meta: SaeMeta | None
    path: Path
    hook: str


def _is_sae_entry(name: str) -> bool:
    """An SAE file, or a leftover of an interrupted atomic write of one (".checkpoint.x1y2.tmp")."""
    return name in _SAE_FOLDER_ENTRIES or any(name.startswith(f".{e}.") for e in _SAE_FOLDER_ENTRIES)


def check_replaceable(out_dir: str | Path) -> Path:
    """Raise unless `out_dir` is absent, empty, or an SAE folder (which `save_sae` replaces whole).

    A guard against pointing the output at, say, a home folder: the final save swaps the whole
    folder, so anything in it that is not an SAE file would be lost.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir} is a file; an SAE is saved as a folder. Choose a folder path.")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if not _is_sae_entry(p.name))
        if foreign:
            raise BadInputError(
                f"{out_dir} holds files that are not part of an SAE ({', '.join(foreign[:5])}"
                f"{' …' if len(foreign) > 5 else ''}); saving would replace the whole folder. "
                "Choose a new or empty folder."
            )
    return out_dir


def save_sae(sae: SAE[Any], out_dir: str | Path, meta: SaeMeta) -> Path:
    """Write `sae` in SAE-Lens's inference format plus `saelab.json`, replacing `out_dir` atomically.

    A training SAE is written with `save_inference_model` (TopK folds its decoder norms, BatchTopK
    and Matryoshka become JumpReLU), an inference SAE with `save_model`. The SAE must read raw
    activations: a training SAE still normalising with "expected_average_only_in" is refused,
    since SAE-Lens ignores that mode at inference time and the saved SAE would silently expect
    scaled inputs (call `fold_activation_norm_scaling_factor` first, as training does).
    Anything else in the folder (an old `eval.json`, a training checkpoint) goes with it.
    """
    out_dir = check_replaceable(out_dir)
    if sae.cfg.normalize_activations != "none":
        raise BadInputError(
            f"This SAE still normalises its input ({sae.cfg.normalize_activations!r}); fold the scaling "
            "factor into the weights (sae.fold_activation_norm_scaling_factor) before saving."
        )
    if (meta.d_in, meta.d_sae) != (sae.cfg.d_in, sae.cfg.d_sae):
        raise BadInputError(
            f"Metadata says d_in={meta.d_in}, d_sae={meta.d_sae} but the SAE has "
            f"d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}."
        )
    # So SAE-Lens users (HookedSAETransformer, SAE-Dashboard) see where it attaches.
    sae.cfg.metadata.model_name = meta.model
    sae.cfg.metadata.hook_name = meta.hook
    with atomic_dir(out_dir) as tmp:
        if isinstance(sae, TrainingSAE):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)
        write_json(tmp / SAELAB_META_FILE, meta.to_dict())
    log.info("Saved %s SAE (%d -> %d) to %s", meta.architecture, meta.d_in, meta.d_sae, out_dir)
    return out_dir


def read_meta(path: str | Path) -> SaeMeta | None:
    """`saelab.json` of an SAE folder, None if absent; `CorruptFileError` if unreadable."""
    meta_path = Path(path) / SAELAB_META_FILE
    if not meta_path.exists():
        return None
    data = read_json(meta_path)
    try:
        return SaeMeta.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CorruptFileError(f"{meta_path} is not SAE Lab metadata ({err}); it was left untouched.") from err


def _checked_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAE-Lens's `sae_lens_disk_loader`, with unreadable files reported as `CorruptFileError`."""
    path = Path(path)
    cfg_path, weights_path = path / SAE_CFG_FILE, path / SAE_WEIGHTS_FILE
    cfg_dict = read_json(cfg_path)
    if not isinstance(cfg_dict, dict) or not {"d_in", "d_sae"} <= cfg_dict.keys():
        raise CorruptFileError(f"{cfg_path} is not an SAE-Lens config (no d_in/d_sae); it was left untouched.")
    cfg_dict["device"] = device
    cfg_dict.update(cfg_overrides or {})
    try:
        return read_sae_components_from_disk(cfg_dict=cfg_dict, weight_path=weights_path, device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(
            f"{weights_path} is not a readable safetensors file ({err}). It was left untouched; "
            "delete the folder or point to a good copy."
        ) from err


def _missing_files_error(path: Path) -> BadInputError:
    if not path.exists():
        return BadInputError(f"No SAE folder at {path}.")
    if not path.is_dir():
        return BadInputError(
            f"{path} is a file; point to the SAE's folder (with {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE})."
        )
    missing = [n for n in (SAE_CFG_FILE, SAE_WEIGHTS_FILE) if not (path / n).is_file()]
    inside = list_saes(path, max_depth=2, max_dirs=500)  # a hint only: never walk a whole disk
    hint = f" SAE folders inside it: {', '.join(str(p) for p in inside[:5])}." if inside else ""
    return BadInputError(f"{path} is not an SAE folder: {' and '.join(missing)} missing.{hint}")


def load_sae(
    path: str | Path, handle: ModelHandle | None = None, hook: str | None = None, device: str = "cpu"
) -> LoadedSAE:
    """Read any SAE-Lens SAE folder and, given a model, check that it fits.

    The hook is `hook` if given, else the one in `saelab.json`, else SAE-Lens's
    `cfg.metadata.hook_name`. With a `handle`, the hook must exist on that model (`BadInputError`
    listing valid hooks otherwise) and its width must equal the SAE's `d_in`
    (`IncompatibleSAEError` naming both). Unreadable files raise `CorruptFileError` and are left
    as they are.
    """
    path = Path(path).expanduser()
    if not (path / SAE_CFG_FILE).is_file() or not (path / SAE_WEIGHTS_FILE).is_file():
        raise _missing_files_error(path)
    meta = read_meta(path)
    cfg_dict = read_json(path / SAE_CFG_FILE)
    if not isinstance(cfg_dict, dict):
        raise CorruptFileError(f"{path / SAE_CFG_FILE} is not an SAE-Lens config; it was left untouched.")
    arch = cfg_dict.get("architecture", "standard")
    if arch not in SAE_CLASS_REGISTRY:
        kind = (
            "a training-only architecture"
            if arch in SAE_TRAINING_CLASS_REGISTRY
            else "not an architecture SAE-Lens knows"
        )
        raise IncompatibleSAEError(
            f"{path} holds a {arch!r} SAE, which is {kind}. Loadable architectures: "
            f"{', '.join(sorted(SAE_CLASS_REGISTRY))}. (A training checkpoint must be saved with "
            "save_inference_model first.)"
        )
    try:
        sae = SAE.load_from_disk(path, device=device, converter=_checked_disk_loader)
    except (CorruptFileError, BadInputError):
        raise
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE} do not fit together ({err}).") from err
    sae.eval()

    hook = hook or (meta.hook if meta else None) or sae.cfg.metadata.hook_name
    if not hook:
        raise BadInputError(f"{path} does not say which hook point it reads; pass the hook explicitly.")
    if handle is not None:
        check_fits(sae, handle, hook, path)
    return LoadedSAE(sae=sae, meta=meta, path=path, hook=hook)


def check_fits(sae: SAE[Any], handle: ModelHandle, hook: str, path: str | Path = "this SAE") -> None:
    """Raise unless `hook` exists on the model and is as wide as the SAE's input."""
    handle.check_hook(hook)
    width = handle.hook_width(hook)
    if sae.cfg.reshape_activations == "hook_z":
        width *= int(handle.cfg.n_heads)  # hook_z SAEs read all heads concatenated
    if int(sae.cfg.d_in) != width:
        raise IncompatibleSAEError(
            f"{path} reads {sae.cfg.d_in}-wide activations, but hook {hook} of model {handle.name} "
            f"is {width} wide. Pick the model and hook the SAE was trained on."
        )
    trained_on = sae.cfg.metadata.model_name
    if trained_on and trained_on != handle.name:
        log.warning("%s was trained on model %s, but is being used with %s", path, trained_on, handle.name)
