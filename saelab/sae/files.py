"""SAE folders on disk: SAE-Lens's own format plus SAE Lab's provenance file.

A folder holds `cfg.json` + `sae_weights.safetensors` exactly as SAE-Lens writes them (so
`sae_lens.SAE.load_from_disk(folder)` reads it) and, for SAEs trained here, `saelab.json`
(`SaeMeta`). A folder is written whole: built in a temporary folder beside it and renamed into
place, so readers never see new weights with an old config. Nothing here unpickles anything.

Every SAE written here carries the metadata SAE-Lens's own tools need in `cfg.json`
(`sae_lens_metadata`: model, hook, context size, BOS and special-token handling, dataset), so
`ActivationsStore.from_sae` and `sae_lens.evals.run_evals` accept it. `load_sae` reads any folder
SAE-Lens can load, whatever its architecture, hook or normalisation (`saelab.sae.kinds`).
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
from saelab.sae import kinds
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

# The row length of SAE Lab's corpora when a folder does not say (`saelab.corpus.CorpusConfig.seq_len`).
DEFAULT_CONTEXT_SIZE = 128


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


# Keys of SAE-Lens's `cfg.metadata` (its training runner writes them) that `extra` may set directly.
SAE_LENS_METADATA_KEYS = (
    "model_name", "hook_name", "model_class_name", "hook_head_index", "context_size", "seqpos_slice",
    "prepend_bos", "exclude_special_tokens", "sequence_separator_token", "disable_concat_sequences",
    "dataset_path", "model_from_pretrained_kwargs",
)  # fmt: skip


def _corpus_field(corpus: dict[str, Any], *path: str) -> Any:
    for key in path[:-1]:
        corpus = corpus.get(key) if isinstance(corpus.get(key), dict) else {}
    return corpus.get(path[-1])


def sae_lens_metadata(meta: SaeMeta) -> dict[str, Any]:
    """The `cfg.metadata` SAE-Lens's tools read, as SAE Lab's data pipeline produced the SAE's activations.

    - model_name, hook_name: `meta.model`, `meta.hook`; hook_head_index None (all heads); model_class_name
      "HookedTransformer" (SAE Lab runs models through TransformerLens).
    - context_size: the corpus row length (`corpus.config.seq_len`), else `DEFAULT_CONTEXT_SIZE`.
    - prepend_bos False: SAE Lab's rows are packed documents cut at any point, with no BOS; position 0 of
      each row is the attention sink instead. seqpos_slice (1, None) says position 0 is left out of training.
    - exclude_special_tokens [separator], sequence_separator_token separator: documents are joined by the
      corpus separator (`corpus.separator_id`, `<|endoftext|>` for SmolLM2), whose positions are sinks and
      left out too; disable_concat_sequences False. When the corpus is unknown: False and None.
      A harvest that kept position 0 or the separators says so in `corpus` ("first_position_skipped",
      "separator_skipped" False, as in its manifest), and the two settings follow.
    - dataset_path: SAE Lab's corpus is built from the `sae-probes` wheel's texts, not a Hugging Face
      dataset, so this names it (version, split, token fingerprint) for people; "" when unknown. Pass the
      tokens to `ActivationsStore.from_sae(..., dataset=...)` yourself.
    A value in `meta.extra` under one of `SAE_LENS_METADATA_KEYS` wins over the above.
    """
    corpus = meta.corpus or {}
    seq_len = _corpus_field(corpus, "config", "seq_len") or corpus.get("seq_len")
    sep = corpus.get("separator_id")
    sep = int(sep) if isinstance(sep, int) and not isinstance(sep, bool) else None
    dataset = ""
    if corpus.get("data_version"):
        split = _corpus_field(corpus, "config", "split") or "train"
        dataset = f"SAE Lab corpus: sae-probes=={corpus['data_version']} texts, {split} split"
        if corpus.get("fingerprint"):
            dataset += f", tokens sha256[:16] {corpus['fingerprint']}"
    out: dict[str, Any] = {
        "model_name": meta.model,
        "hook_name": meta.hook,
        "model_class_name": "HookedTransformer",
        "hook_head_index": None,
        "context_size": int(seq_len) if isinstance(seq_len, int) and seq_len > 0 else DEFAULT_CONTEXT_SIZE,
        "seqpos_slice": [1, None] if corpus.get("first_position_skipped", True) else [None],
        "prepend_bos": False,
        "exclude_special_tokens": [sep] if sep is not None and corpus.get("separator_skipped", True) else False,
        "sequence_separator_token": sep,
        "disable_concat_sequences": False,
        "dataset_path": dataset,
        "model_from_pretrained_kwargs": {},
    }
    out.update({k: meta.extra[k] for k in SAE_LENS_METADATA_KEYS if k in meta.extra})
    return out


@dataclass
class LoadedSAE:
    """An SAE read from disk.

    Attributes:
        sae: the SAE-Lens inference SAE (eval mode), reading raw activations of `hook` as the model
            produces them (for `attn.hook_z`: [.., n_heads, d_head]; see `saelab.sae.kinds`).
        meta: SAE Lab's provenance, or None for a plain SAE-Lens folder.
        path: the folder it came from.
        hook: the hook point it reads (explicit argument > saelab.json > cfg.metadata.hook_name).
        notes: what loading changed (a normalisation folded, hook_z reshaping switched on).
    """

    sae: SAE[Any]
    meta: SaeMeta | None
    path: Path
    hook: str
    notes: list[str] = field(default_factory=list)

    @property
    def is_transcoder(self) -> bool:
        """A transcoder: `encode` reads `hook`, `decode` predicts `decoder_hook` (see `saelab.sae.kinds`)."""
        return kinds.is_transcoder(self.sae)

    @property
    def decoder_hook(self) -> str:
        """Where the decoder's rows live: `hook`, or a transcoder's output hook."""
        return kinds.output_hook(self.sae, self.hook)


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

    `cfg.json`'s metadata is `sae_lens_metadata(meta)` (on top of what the SAE already carries).

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
    # So SAE-Lens's tools (ActivationsStore.from_sae, run_evals, HookedSAETransformer) know where it
    # attaches and what data it saw.
    for key, value in sae_lens_metadata(meta).items():
        sae.cfg.metadata[key] = value
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
    """Read any SAE-Lens SAE folder (or `sae-lens:<release>:<sae_id>`, see `saelab.sae.releases`) and, given a
    model, check that it fits.

    The hook is `hook` if given, else the one in `saelab.json`, else SAE-Lens's
    `cfg.metadata.hook_name`. With a `handle`, the hook must exist on that model (`BadInputError`
    listing valid hooks otherwise) and its width must equal the SAE's `d_in`
    (`IncompatibleSAEError` naming both). Unreadable files raise `CorruptFileError` and are left
    as they are.

    Every architecture SAE-Lens registers for inference loads (standard, topk, abstopk, jumprelu —
    which is how BatchTopK and Matryoshka SAEs are saved —, gated, matching_pursuit, and the
    transcoders, read as SAEs of their input hook). A normalisation SAE-Lens does not apply at
    inference is folded into the weights from the folder's `activation_scaler.json`, and an SAE at
    `attn.hook_z` reads the hook's [.., n_heads, d_head] activation (`saelab.sae.kinds`; `notes` says
    what was done). SAEs of one head (`hook_head_index`) and temporal SAEs are refused.
    """
    from saelab.sae import releases

    if releases.is_release_spec(path):  # sae-lens:<release>:<sae_id>, cached or (online only) fetched
        path = releases.resolve(str(path))
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
    if arch in kinds.UNSUPPORTED_ARCHITECTURES:
        raise IncompatibleSAEError(f"{path} holds a {arch!r} SAE: {kinds.UNSUPPORTED_ARCHITECTURES[arch]}.")
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
    head = sae.cfg.metadata.hook_head_index
    if head is not None:
        raise IncompatibleSAEError(
            f"{path} reads only head {head} of {hook} (hook_head_index); SAE Lab runs SAEs on a hook's whole "
            "activation. Use an SAE trained on all heads (hook_z with reshape_activations='hook_z')."
        )
    notes = [n for n in (kinds.fold_saved_normalisation(sae, path),) if n]
    if kinds.enable_hook_z(sae, hook):
        notes.append("reshape_activations='hook_z' switched on: the SAE reads all heads of hook_z concatenated")
    for note in notes:
        log.info("%s: %s", path, note)
    if handle is not None:
        check_fits(sae, handle, hook, path)
    return LoadedSAE(sae=sae, meta=meta, path=path, hook=hook, notes=notes)


def check_fits(sae: SAE[Any], handle: ModelHandle, hook: str, path: str | Path = "this SAE") -> None:
    """Raise unless `hook` exists on the model and is as wide as the SAE's input (and, for a transcoder,
    its output hook, when recorded, exists and is as wide as its output)."""
    trained_on = sae.cfg.metadata.model_name
    made_for = f" It was made for model {trained_on}, hook {hook}." if trained_on else ""
    handle.check_hook(hook)  # BadInputError listing the model's hooks
    width = kinds.hook_z_width(sae, handle.hook_width(hook), int(handle.cfg.n_heads))
    if int(sae.cfg.d_in) != width:
        raise IncompatibleSAEError(
            f"{path} reads {sae.cfg.d_in}-wide activations, but hook {hook} of model {handle.name} "
            f"is {width} wide.{made_for} Pick that model in the sidebar (Overview), or another SAE."
        )
    out = kinds.output_hook(sae, hook)
    if out != hook:
        handle.check_hook(out)
        d_out = int(getattr(sae.cfg, "d_out", sae.cfg.d_in))
        if d_out != handle.hook_width(out):
            raise IncompatibleSAEError(
                f"{path} is a transcoder writing {d_out}-wide vectors to {out}, which is "
                f"{handle.hook_width(out)} wide on model {handle.name}."
            )
    if trained_on and trained_on != handle.name:
        log.warning("%s was trained on model %s, but is being used with %s", path, trained_on, handle.name)
