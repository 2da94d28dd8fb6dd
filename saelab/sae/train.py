"""Training an SAE on activation batches with SAE-Lens's own trainer, resumable from checkpoints.

The SAE math (losses, aux losses, dead-latent tracking, Adam, LR and coefficient schedules, the
activation-norm estimate and its fold) is SAE-Lens's `SAETrainer`. We do not call `fit()`: it runs
the whole job in one call, reports only to its own tqdm bar and wandb, and checkpoints with
`torch.save` (pickle). A short loop of ours drives the public seams `fit()` uses, in its order
(`maybe_reset_sparsity`, `step`, `set_final_sae_metadata`, fold), so it can report progress after
every step and write pickle-free checkpoints.

Data comes from `data(start_sample)`: an endless iterator of [batch, d_in] tensors, the fresh
stream minus its first `start_sample` samples. The norm estimate reads the first batches of
`data(0)` and training reads `data(0)` again from the start, so a resume needs only `data(done)`.

Checkpoints (`saelab.sae.checkpoint`) are replaced atomically every `checkpoint_every_steps` steps:
`sae.safetensors` (training SAE state dict, buffers included), `trainer.safetensors` (Adam
tensors as "optimizer.<param>.<name>", dead-latent counters, CPU RNG state) and `state.json`
(counters, scheduler states, Adam's param_groups, scaling factor, TrainConfig, d_in).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from tqdm.auto import tqdm

from saelab.configs import DictConfig
from saelab.errors import BadInputError, CorruptFileError
from saelab.sae.checkpoint import read_checkpoint, restore_checkpoint, write_checkpoint
from saelab.sae.files import SAE_LENS_METADATA_KEYS, SaeMeta, check_replaceable, save_sae
from saelab.sae.registry import ArchitectureName, SaeKnobs, get_architecture
from saelab.storage import TRAIN_STATE_DIR

log = logging.getLogger(__name__)

NormMode = Literal["expected_average_only_in", "none"]
LrSchedule = Literal["constant", "cosineannealing"]
ProgressFn = Callable[[int, int, dict[str, float]], None]
DataFactory = Callable[[int], Iterator[torch.Tensor]]


@dataclass
class TrainConfig(DictConfig):
    """How to train one SAE. Steps = total_samples // batch_size; windows are counted in steps.

    `sparsity_coefficient` is the L1 weight (standard, gated) or L0 weight (jumprelu); None picks
    the architecture's default. `k` serves topk, batchtopk and matryoshka_batchtopk.
    `normalize_activations="expected_average_only_in"` scales inputs to mean norm sqrt(d_in)
    during training (SAE-Lens's estimate; residual norms of ~150 otherwise swamp the optimiser)
    and folds the factor into the saved weights, so the saved SAE reads raw activations.
    """

    architecture: ArchitectureName = "topk"
    d_sae: int = 4608
    k: int = 32
    sparsity_coefficient: float | None = None
    coefficient_warmup_steps: int = 0
    matryoshka_widths: list[int] | None = None
    lr: float = 3e-4
    lr_schedule: LrSchedule = "constant"
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0
    batch_size: int = 1024
    total_samples: int = 2_048_000
    seed: int = 0
    normalize_activations: NormMode = "expected_average_only_in"
    n_batches_for_norm_estimate: int = 50
    dead_feature_window: int = 1000
    feature_sampling_window: int = 1000
    checkpoint_every_steps: int = 500
    autocast_bf16: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        arch = get_architecture(self.architecture)
        for name in ("d_sae", "k", "batch_size", "total_samples", "n_batches_for_norm_estimate",
                     "dead_feature_window", "feature_sampling_window", "checkpoint_every_steps"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BadInputError(f"{name} must be a positive whole number, got {value!r}.")
        for name, literal in (("normalize_activations", NormMode), ("lr_schedule", LrSchedule)):
            if getattr(self, name) not in get_args(literal):
                raise BadInputError(
                    f"{name} must be one of {', '.join(get_args(literal))}, got {getattr(self, name)!r}."
                )
        if self.total_samples < self.batch_size:
            raise BadInputError(f"total_samples ({self.total_samples}) is less than one batch ({self.batch_size}).")
        if arch.sparsity == "k" and self.k > self.d_sae:
            raise BadInputError(f"k ({self.k}) cannot exceed d_sae ({self.d_sae}).")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(f"lr must be a positive number, got {self.lr!r}.")
        if min(self.lr_warmup_steps, self.lr_decay_steps, self.coefficient_warmup_steps) < 0:
            raise BadInputError("Warm-up and decay step counts cannot be negative.")
        main_steps = self.total_steps - self.lr_warmup_steps - self.lr_decay_steps
        if main_steps < (1 if self.lr_schedule == "cosineannealing" else 0):
            raise BadInputError(
                f"lr_warmup_steps + lr_decay_steps ({self.lr_warmup_steps} + {self.lr_decay_steps}) "
                f"leave no room in {self.total_steps} training steps."
            )
        if self.sparsity_coefficient is not None and not (self.sparsity_coefficient >= 0):
            raise BadInputError(f"sparsity_coefficient must be >= 0, got {self.sparsity_coefficient!r}.")
        if self.matryoshka_widths is not None:
            widths = list(self.matryoshka_widths)
            if not widths or widths != sorted(set(widths)) or widths[0] <= 0 or widths[-1] > self.d_sae:
                raise BadInputError(f"matryoshka_widths must increase strictly within 1..d_sae, got {widths}.")
            self.matryoshka_widths = widths

    @property
    def total_steps(self) -> int:
        return self.total_samples // self.batch_size

    def knobs(self, d_in: int, metadata: dict[str, Any]) -> SaeKnobs:
        """The registry's architecture-independent SAE settings (built on CPU; moved later)."""
        shared = ("d_sae", "k", "sparsity_coefficient", "coefficient_warmup_steps", "normalize_activations")
        return SaeKnobs(
            d_in=d_in,
            matryoshka_widths=self.matryoshka_widths,
            metadata=metadata,
            **{k: getattr(self, k) for k in shared},
        )

    def trainer_config(self) -> SAETrainerConfig:
        return SAETrainerConfig(
            total_training_samples=self.total_steps * self.batch_size,
            train_batch_size_samples=self.batch_size,
            lr=self.lr,
            lr_end=self.lr / 10,  # SAE-Lens's runner default; SAETrainerConfig itself leaves it None
            lr_scheduler_name=self.lr_schedule,
            lr_warm_up_steps=self.lr_warmup_steps,
            lr_decay_steps=self.lr_decay_steps,
            device=self.device,
            autocast=self.autocast_bf16,
            dead_feature_window=self.dead_feature_window,
            feature_sampling_window=self.feature_sampling_window,
            n_checkpoints=0,
            logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=self.n_batches_for_norm_estimate,
        )


@dataclass
class TrainResult:
    """What a finished training run produced.

    Attributes:
        out_dir: the saved SAE folder (SAE-Lens format + saelab.json).
        steps, samples: training steps and activation vectors over the whole run (all resumes).
        seconds: wall time of this call (norm estimate, training, saving).
        metrics: at the end: "l0" (mean active latents over the last sparsity window),
            "dead_fraction" (latents silent for dead_feature_window steps), and the last step's
            "loss", "mse_loss", "explained_variance".
        norm_scaling_factor: factor folded into the weights (1.0 if none).
        resumed_from_step: step the run resumed from (0 for a fresh run).
        resumed_from_sample: samples done at that step.
    """

    out_dir: Path
    steps: int
    samples: int
    seconds: float
    metrics: dict[str, float]
    norm_scaling_factor: float
    resumed_from_step: int = 0
    resumed_from_sample: int = 0

    @property
    def samples_per_second(self) -> float:
        """Samples trained in this call per second of this call (norm estimate and save included)."""
        return (self.samples - self.resumed_from_sample) / self.seconds if self.seconds > 0 else 0.0


class TqdmProgress:
    """A progress callback that drives a tqdm bar (the CLI's default)."""

    def __init__(self, desc: str = "Training SAE", postfix_every: int = 10):
        self.desc, self.postfix_every = desc, postfix_every
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit="step")
        else:
            self.bar.update(done - self.bar.n)
        if metrics and (done % self.postfix_every == 0 or done == total):
            self.bar.set_postfix(
                loss=f"{metrics['loss']:.4g}", l0=f"{metrics['l0']:.1f}", ev=f"{metrics['explained_variance']:.3f}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Batches:
    """Checks each batch from the data iterator: shape, finiteness, and that it never ends."""

    def __init__(self, it: Iterator[torch.Tensor], batch_size: int, d_in: int, start_sample: int):
        self.it, self.shape, self.sample = it, (batch_size, d_in), start_sample

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> torch.Tensor:
        try:
            batch = next(self.it)
        except StopIteration:
            raise BadInputError(
                f"The activation data ran out after sample {self.sample}; it must be endless."
            ) from None
        if not isinstance(batch, torch.Tensor) or tuple(batch.shape) != self.shape:
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise BadInputError(f"Expected activation batches of shape {self.shape}, got {got}.")
        if not torch.isfinite(batch).all():
            raise BadInputError(f"Non-finite activations in the batch starting at sample {self.sample}.")
        self.sample += self.shape[0]
        return batch

    def close(self) -> None:
        close = getattr(self.it, "close", None)
        if close is not None:
            close()


def auto_dead_window(total_steps: int, cap: int = 1000) -> int:
    """A dead-feature window that fits the run: min(cap, max(10, total_steps // 8)) steps.

    SAE-Lens counts a latent dead (and, for TopK kinds, revives it through the AuxK loss) only once it has been
    silent for `dead_feature_window` steps; with the default 1,000 a run of ~1,000 steps never revives anything
    (measured: a 1,123-step TopK run at d_sae 2304 ended with 60 % dead latents)."""
    return int(min(cap, max(10, int(total_steps) // 8)))


def _split_meta(meta: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    if not isinstance(meta, Mapping) or not meta.get("model") or not meta.get("hook"):
        raise BadInputError("meta must name the 'model' and the 'hook' the activations came from.")
    try:
        json.dumps(dict(meta), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BadInputError(f"meta must be plain JSON data ({err}).") from err
    extra = {k: v for k, v in meta.items() if k not in ("model", "hook", "corpus")}
    return str(meta["model"]), str(meta["hook"]), dict(meta.get("corpus") or {}), extra


def _step_metrics(trainer: SAETrainer, output: Any) -> dict[str, float]:
    logged = trainer.build_train_step_log_dict(output=output, n_training_samples=trainer.n_training_samples)
    return {
        "loss": float(logged["losses/overall_loss"]),
        "mse_loss": float(logged.get("losses/mse_loss", float("nan"))),
        "l0": float(logged["metrics/l0"]),
        "explained_variance": float(logged["metrics/explained_variance"]),
        "dead_features": float(logged["sparsity/dead_features"]),
        "lr": float(logged["details/current_learning_rate"]),
        "samples": float(trainer.n_training_samples),
    }


def train_sae(
    cfg: TrainConfig,
    data: DataFactory,
    d_in: int,
    out_dir: str | Path,
    meta: Mapping[str, Any],
    progress: ProgressFn | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train an SAE with SAE-Lens and save it to `out_dir` (SAE-Lens format + `saelab.json`).

    `data(start_sample)` yields float [cfg.batch_size, d_in] batches (see the module docstring).
    `out_dir` must be new, empty, or an SAE folder: the final save replaces it whole, checkpoint
    included. `meta` needs "model" and "hook"; "corpus" (dict) and other JSON keys are kept.
    `progress(steps_done, total_steps, metrics)` is called once at the start (empty metrics) and
    after every step (loss, mse_loss, l0, explained_variance, dead_features, lr, samples); None
    shows a tqdm bar. An exception it raises (KeyboardInterrupt to stop) ends training and
    leaves the last checkpoint intact. `resume=True` continues from a checkpoint of the same
    settings (`BadInputError` if they differ); `resume=False` deletes any checkpoint first.
    The saved SAE reads RAW activations: the normalisation factor is folded into its weights.
    """
    started = time.perf_counter()
    out_dir = check_replaceable(out_dir)
    model, hook, corpus, extra = _split_meta(meta)
    if not isinstance(d_in, int) or d_in <= 0:
        raise BadInputError(f"d_in must be a positive whole number, got {d_in!r}.")
    arch = get_architecture(cfg.architecture)
    ckpt_dir = out_dir / TRAIN_STATE_DIR
    ckpt = None
    if ckpt_dir.exists():
        if resume:
            ckpt = read_checkpoint(ckpt_dir, cfg, d_in)
        else:
            shutil.rmtree(ckpt_dir)
    total = cfg.total_steps
    start_sample = int(ckpt.state["n_training_samples"]) if ckpt else 0
    seconds_before = float(ckpt.state.get("seconds", 0.0)) if ckpt else 0.0
    # The rest of SAE-Lens's metadata (context size, BOS, special tokens, dataset) is written by save_sae.
    sae_lens_meta = {
        "model_name": model,
        "hook_name": hook,
        **{k: extra[k] for k in SAE_LENS_METADATA_KEYS if k in extra},
    }
    own_bar = TqdmProgress() if progress is None else None
    report = progress or own_bar
    assert report is not None
    batches = None
    # The whole run uses its own CPU RNG stream (seeded, restored on resume), leaving the caller's alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sae = arch.build(cfg.knobs(d_in, sae_lens_meta))  # initialised on CPU: same weights on any device
        try:
            if ckpt:
                sae.load_state_dict(ckpt.sae)
        except RuntimeError as err:
            raise CorruptFileError(f"The SAE weights in {ckpt_dir} do not fit the settings ({err}).") from err
        sae.to(cfg.device)
        try:
            batches = _Batches(data(start_sample), cfg.batch_size, d_in, start_sample)
            trainer = SAETrainer(cfg=cfg.trainer_config(), sae=sae, data_provider=batches)
            if ckpt:
                restore_checkpoint(trainer, ckpt, ckpt_dir)
                log.info("Resuming SAE training at step %d of %d from %s", trainer.n_training_steps, total, ckpt_dir)
            elif cfg.normalize_activations == "expected_average_only_in":
                norm_batches = _Batches(data(0), cfg.batch_size, d_in, 0)
                try:
                    trainer.activation_scaler.estimate_scaling_factor(
                        d_in=d_in,
                        data_provider=norm_batches,
                        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
                    )
                finally:
                    norm_batches.close()
                log.info("Activation scaling factor %.6g", trainer.activation_scaler.scaling_factor)
            resumed_from = trainer.n_training_steps
            report(resumed_from, total, {})
            metrics: dict[str, float] = {}
            # The same order as SAETrainer.fit(): reset window, step, count the step.
            while trainer.n_training_steps < total:
                trainer.maybe_reset_sparsity()
                output = trainer.step(next(batches))
                trainer.n_training_steps += 1
                metrics = _step_metrics(trainer, output)
                done = trainer.n_training_steps
                if done % cfg.checkpoint_every_steps == 0 or done == total:
                    write_checkpoint(ckpt_dir, trainer, cfg, d_in, seconds_before + time.perf_counter() - started)
                report(done, total, metrics)
        finally:
            if batches is not None:
                batches.close()
            if own_bar is not None:
                own_bar.close()

        trainer.set_final_sae_metadata()
        factor = trainer.activation_scaler.scaling_factor
        if factor is not None:
            sae.fold_activation_norm_scaling_factor(factor)
            trainer.activation_scaler.scaling_factor = None
        final = {
            "l0": float(sae.cfg.metadata.get("l0", float("nan"))),
            "dead_fraction": float(trainer.dead_neurons.float().mean().item()),
            **{k: metrics[k] for k in ("loss", "mse_loss", "explained_variance") if k in metrics},
        }
        sae_meta = SaeMeta(
            model, hook, d_in, cfg.d_sae, cfg.architecture, float(factor) if factor is not None else 1.0,
            corpus=corpus, tokens_seen=trainer.n_training_samples, seed=cfg.seed, train_config=cfg.to_dict(), extra=extra,
        )  # fmt: skip
        save_sae(sae, out_dir, sae_meta)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # normally already gone with the folder swap
    return TrainResult(
        out_dir=out_dir,
        steps=trainer.n_training_steps,
        samples=trainer.n_training_samples,
        seconds=time.perf_counter() - started,
        metrics=final,
        norm_scaling_factor=sae_meta.norm_scaling_factor,
        resumed_from_step=resumed_from,
        resumed_from_sample=start_sample,
    )
