"""Pickle-free, resumable SAE training checkpoints (safetensors + JSON), for `saelab.sae.train`.

`<out_dir>/checkpoint/` is replaced atomically: `sae.safetensors` (training SAE state dict, buffers
included), `trainer.safetensors` (Adam tensors as "optimizer.<param>.<name>", dead-latent counters,
CPU RNG state) and `state.json` (counters, scheduler states, Adam's param_groups, the norm scaling
factor, the TrainConfig and d_in). A resume must use the same settings, except those in `_RESUME_FREE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens.training.sae_trainer import SAETrainer

from saelab.errors import BadInputError, CorruptFileError
from saelab.storage import atomic_dir, load_tensors, read_json, save_tensors, write_json

CHECKPOINT_FORMAT = 1
_CKPT_SAE, _CKPT_TRAINER, _CKPT_STATE = "sae.safetensors", "trainer.safetensors", "state.json"
# Settings that may change between an interrupted run and its resume without changing the result.
_RESUME_FREE = {"checkpoint_every_steps", "device"}


def write_checkpoint(ckpt_dir: Path, trainer: SAETrainer, cfg: Any, d_in: int, seconds: float) -> None:
    opt = trainer.optimizer.state_dict()
    tensors = {
        "act_freq_scores": trainer.act_freq_scores,
        "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
        "rng_state": torch.get_rng_state(),
    }
    opt_scalars: dict[str, dict[str, Any]] = {}
    for pid, param_state in opt["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                opt_scalars.setdefault(str(pid), {})[name] = value
    state = {
        "format": CHECKPOINT_FORMAT,
        "d_in": d_in,
        "train_config": cfg.to_dict(),
        "n_training_steps": trainer.n_training_steps,
        "n_training_samples": trainer.n_training_samples,
        "n_frac_active_samples": trainer.n_frac_active_samples,
        "started_fine_tuning": trainer.started_fine_tuning,
        "norm_scaling_factor": trainer.activation_scaler.scaling_factor,
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "coefficient_schedulers": {n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()},
        "optimizer": {"param_groups": opt["param_groups"], "param_ids": sorted(opt["state"]), "scalars": opt_scalars},
        "seconds": seconds,
    }
    with atomic_dir(ckpt_dir) as tmp:
        save_tensors(tmp / _CKPT_SAE, trainer.sae.state_dict())
        save_tensors(tmp / _CKPT_TRAINER, {k: v.detach().cpu() for k, v in tensors.items()})
        write_json(tmp / _CKPT_STATE, state)


@dataclass
class _Checkpoint:
    state: dict[str, Any]
    sae: dict[str, torch.Tensor]
    trainer: dict[str, torch.Tensor] = field(repr=False)


def read_checkpoint(ckpt_dir: Path, cfg: Any, d_in: int) -> _Checkpoint:
    hint = f"Delete {ckpt_dir} or train with resume=False to start over."
    try:
        state = read_json(ckpt_dir / _CKPT_STATE)
        ckpt = _Checkpoint(state, load_tensors(ckpt_dir / _CKPT_SAE), load_tensors(ckpt_dir / _CKPT_TRAINER))
    except (FileNotFoundError, CorruptFileError) as err:
        raise CorruptFileError(f"The training checkpoint is unreadable: {err} {hint}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{ckpt_dir / _CKPT_STATE} is not a checkpoint this version can read. {hint}")
    saved = {k: v for k, v in state.get("train_config", {}).items() if k not in _RESUME_FREE}
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    if state.get("d_in") != d_in:
        differ.insert(0, "d_in")
    if differ:
        raise BadInputError(f"{ckpt_dir} belongs to a run with different settings ({', '.join(differ)}). {hint}")
    return ckpt


def restore_checkpoint(trainer: SAETrainer, ckpt: _Checkpoint, ckpt_dir: Path) -> None:
    state, tensors, device = ckpt.state, ckpt.trainer, trainer.cfg.device
    try:
        trainer.n_training_steps = int(state["n_training_steps"])
        trainer.n_training_samples = int(state["n_training_samples"])
        trainer.n_frac_active_samples = int(state["n_frac_active_samples"])
        trainer.started_fine_tuning = bool(state["started_fine_tuning"])
        trainer.activation_scaler.scaling_factor = state["norm_scaling_factor"]
        trainer.act_freq_scores = tensors["act_freq_scores"].to(device)
        trainer.n_forward_passes_since_fired = tensors["n_forward_passes_since_fired"].to(device)
        opt = state["optimizer"]
        param_state = {pid: dict(opt["scalars"].get(str(pid), {})) for pid in opt["param_ids"]}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                param_state[int(pid)][name] = value
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in opt["param_groups"]]
        trainer.optimizer.load_state_dict({"state": param_state, "param_groups": groups})
        trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
        for name, sched_state in state["coefficient_schedulers"].items():
            trainer.coefficient_schedulers[name].load_state_dict(sched_state)
        torch.set_rng_state(tensors["rng_state"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CorruptFileError(
            f"The training checkpoint in {ckpt_dir} is inconsistent ({err!r}). Delete it or train with resume=False."
        ) from err
