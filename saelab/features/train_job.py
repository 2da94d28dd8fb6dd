"""Train an SAE from the app: harvest → train → evaluate → dashboards + proxy labels, as one resumable job.

`TrainRequest` holds every setting (it is also the job's key, so identical requests share one job).
`run_training(handle, request, root, progress, curves)` runs the four stages of `saelab harvest`, `saelab train`,
`saelab eval` and `saelab dashboards` one after the other, reporting `progress(phase, done, total)` with the
stage's name as the phase, and appending every training step's metrics to `curves` (a `CurveBuffer`, thread-safe
and bounded, which a page redraws while the job runs). `training_job(handle, request, root)` wraps it as a
`saelab.jobs` function: it publishes the buffer as `job.published["curves"]`.

Where things go, under the features root (`saelab.defaults.features_root()`):

    <root>/<name>/              the SAE (SAE-Lens folder, eval.json, dashboards/), listed by the SAE picker
    <root>/.runs/<name>/        request.json (the settings, "done" once finished) and acts/ (the harvest,
                                deleted when the run finishes); hidden, so the picker never lists it

Every stage resumes: the harvest keeps its finished shards, training its checkpoint (inside `<root>/<name>`),
the dashboard build its checkpoint; a trained SAE or an existing eval.json is not redone. So submitting the same
request again after a cancel (or a crash) continues where it stopped. Rows: the SAE trains on the first
`n_tokens` of the corpus's training split; dashboards read the training-split rows right after those; the
evaluation and the label scores read disjoint rows of the held-out split.

Training curves are SAE-Lens's per-step log (`saelab.sae.train._step_metrics`): loss, MSE loss, L0, dead
latents (as a fraction of d_sae), learning rate and explained variance, which SAE-Lens defines per batch as
    EV = 1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖²   (x̄: the batch's mean activation; on the normalised inputs)
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.models.handle import ModelHandle
from saelab.sae.registry import architecture_names, get_architecture
from saelab.storage import DASHBOARD_DIR, EVAL_FILE, HARVEST_MANIFEST, read_json, write_json

RUNS_DIR = ".runs"  # hidden folder under the features root: requests and harvests of app trainings
REQUEST_FILE = "request.json"
MAX_POINTS = 2_000  # curve points kept per run (downsampled by 2 each time the buffer fills)
MIN_TOKENS = 2_048
MAX_TOKENS = 500_000  # a few minutes of harvesting and training on a laptop CPU with the default model
CURVES = ("loss", "mse_loss", "l0", "dead_fraction", "explained_variance", "lr")
CURVE_TITLES = {
    "loss": "Loss",
    "mse_loss": "MSE loss",
    "l0": "L0 (active latents per token)",
    "dead_fraction": "Dead fraction",
    "explained_variance": "Explained variance",
    "lr": "Learning rate",
}
EV_FORMULA = "EV = 1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² per training batch (x̄: the batch mean; SAE-Lens's metric)"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Progress = Callable[[str, float, float], None]


@dataclass
class TrainRequest(DictConfig):
    """One training run started from the app. Every field is part of the job's key."""

    name: str
    hook: str
    architecture: str = "topk"
    d_sae: int = 4608
    k: int = 32
    coefficient: float | None = None
    n_tokens: int = 100_000
    lr: float = 3e-4
    seed: int = 0
    seq_len: int = 128
    batch_size: int = 1024  # lowered so a run has at least 16 steps (`train_config`)
    eval_tokens: int = 16_384
    dashboard_tokens: int = 65_536  # at most; fewer if the measured rate cannot finish them in dashboard_budget_s
    label_tokens: int = 16_384
    dashboard_budget_s: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise BadInputError(
                f"Output name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
            )
        get_architecture(self.architecture)  # BadInputError naming the choices
        for name in ("d_sae", "k", "n_tokens", "seq_len", "batch_size", "eval_tokens", "dashboard_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BadInputError(f"{name} must be a positive whole number, got {value!r}.")
        if not MIN_TOKENS <= self.n_tokens <= MAX_TOKENS:
            raise BadInputError(f"Tokens to harvest must lie in {MIN_TOKENS:,}..{MAX_TOKENS:,}, got {self.n_tokens:,}.")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and 0 < self.lr < 1):
            raise BadInputError(f"Learning rate must lie strictly between 0 and 1, got {self.lr!r}.")
        if self.coefficient is not None and not (math.isfinite(self.coefficient) and self.coefficient >= 0):
            raise BadInputError(f"The sparsity coefficient must be a number ≥ 0, got {self.coefficient!r}.")
        if get_architecture(self.architecture).sparsity == "k" and self.k > self.d_sae:
            raise BadInputError(f"k ({self.k}) cannot exceed the width d_sae ({self.d_sae}).")

    @property
    def key(self) -> str:
        """The job key: every setting, as canonical JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def train_config(self):
        from saelab.sae.train import TrainConfig, auto_dead_window

        batch = self.batch_size
        while batch > 32 and self.n_tokens // batch < 16:  # at least 16 steps, batches of 32 or more
            batch //= 2
        sparsity = get_architecture(self.architecture).sparsity
        window = auto_dead_window(max(1, self.n_tokens // batch))
        return TrainConfig(
            architecture=self.architecture,  # type: ignore[arg-type]
            d_sae=self.d_sae,
            k=self.k,
            sparsity_coefficient=self.coefficient if sparsity != "k" else None,
            lr=self.lr,
            batch_size=batch,
            total_samples=max(batch, self.n_tokens // batch * batch),
            seed=self.seed,
            n_batches_for_norm_estimate=min(50, max(1, self.n_tokens // batch)),
            checkpoint_every_steps=100,
            dead_feature_window=window,
            feature_sampling_window=window,
        )


def architectures() -> list[str]:
    """Names of the trainable architectures (`saelab.sae.registry`)."""
    return architecture_names()


def uses_k(architecture: str) -> bool:
    """True when `architecture` takes k (TopK kinds), False when it takes a sparsity coefficient."""
    return get_architecture(architecture).sparsity == "k"


def hook_choices(handle: ModelHandle) -> list[str]:
    """The model's residual-stream and MLP-output hooks, in module order."""
    return [h for h in handle.hook_names() if h.endswith(("hook_resid_post", "hook_mlp_out"))]


def default_hook(handle: ModelHandle) -> str:
    """`saelab.defaults.DEFAULT_HOOK` when the model has it, else the middle block's residual stream."""
    from saelab.defaults import DEFAULT_HOOK

    names = set(handle.hook_names())
    return DEFAULT_HOOK if DEFAULT_HOOK in names else f"blocks.{handle.n_layers // 2}.hook_resid_post"


def run_paths(root: str | Path, name: str) -> tuple[Path, Path]:
    """(SAE folder, hidden work folder) of run `name` under the features root."""
    root = Path(root)
    return root / name, root / RUNS_DIR / name


def check_output(root: str | Path, request: TrainRequest) -> str:
    """Raise `BadInputError` unless `request.name` is new or an unfinished run of these same settings.

    Returns "new" or "resume" (what the run will do)."""
    out, work = run_paths(root, request.name)
    saved = _read_request(work)
    if saved is not None and saved.get("request") == request.to_dict() and not saved.get("done"):
        return "resume"
    if out.exists() or work.exists():
        what = (
            "a finished run" if saved is not None and saved.get("done")
            else "an unfinished run of other settings" if saved is not None
            else "a folder that is not an app training run"
        )  # fmt: skip
        raise BadInputError(f"{out} is {what}; choose another output name.")
    return "new"


def finished(root: str | Path, request: TrainRequest) -> bool:
    """True when run `request.name` under `root` finished with exactly these settings."""
    saved = _read_request(run_paths(root, request.name)[1])
    return saved is not None and bool(saved.get("done")) and saved.get("request") == request.to_dict()


def _read_request(work: Path) -> dict[str, Any] | None:
    try:
        data = read_json(work / REQUEST_FILE)
    except Exception:
        return None
    return data if isinstance(data, dict) else None


class CurveBuffer:
    """Training curves shared between the job's thread and the pages: thread-safe, at most `max_points` points.

    Each point is the step plus every metric in `CURVES`. When the buffer is full every other point is
    dropped and from then on only every `stride`-th step is kept (the stride doubles), so a run of any length
    keeps between max_points/2 and max_points evenly spaced points, always including the latest step.
    """

    def __init__(self, d_sae: int, max_points: int = MAX_POINTS) -> None:
        self.d_sae, self.max_points = int(d_sae), max(4, int(max_points))
        self._lock = threading.Lock()
        self._points: list[dict[str, float]] = []
        self._latest: dict[str, float] | None = None
        self._stride = 1
        self.total_steps = 0
        self.first: tuple[int, float] | None = None  # (step, time) of the first step this job trained
        self.last: tuple[int, float] | None = None

    def add(self, step: int, total: int, metrics: dict[str, float]) -> None:
        point = {"step": float(step), **{k: float(metrics.get(k, math.nan)) for k in CURVES if k != "dead_fraction"}}
        point["dead_fraction"] = float(metrics.get("dead_features", math.nan)) / self.d_sae
        now = time.monotonic()
        with self._lock:
            self.total_steps = int(total)
            if self.first is None:
                self.first = (int(step) - 1, now)
            self.last = (int(step), now)
            self._latest = point
            if step % self._stride == 0:
                self._points.append(point)
                if len(self._points) > self.max_points:
                    self._stride *= 2
                    self._points = [p for p in self._points if int(p["step"]) % self._stride == 0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._points) + (self._latest is not None and self._latest not in self._points[-1:])

    def snapshot(self) -> dict[str, list[float]]:
        """{"step": [...], metric: [...]} for every metric in CURVES (a copy; the latest step always last)."""
        with self._lock:
            points = list(self._points)
            if self._latest is not None and (not points or points[-1] is not self._latest):
                points.append(self._latest)
        return {k: [p[k] for p in points] for k in ("step", *CURVES)}

    def eta_s(self) -> float | None:
        """Seconds left in training: elapsed / steps done × steps remaining (this job's steps only)."""
        with self._lock:
            if self.first is None or self.last is None or self.last[0] <= self.first[0]:
                return None
            per_step = (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])
            return max(0.0, per_step * (self.total_steps - self.last[0]))


def _holds(acts: Path, hook: str) -> bool:
    """True when `acts` is a complete harvest that includes `hook`."""
    try:
        manifest = read_json(acts / HARVEST_MANIFEST)
    except Exception:
        return False
    return isinstance(manifest, dict) and bool(manifest.get("complete")) and hook in manifest.get("hooks", [])


def _stage_done(out: Path, request: TrainRequest) -> bool:
    """True when `out` holds the SAE this request trains (an earlier attempt got past training)."""
    try:
        meta = read_json(out / "saelab.json")
    except Exception:
        return False
    return isinstance(meta, dict) and meta.get("train_config") == request.train_config().to_dict()


def run_training(
    handle: ModelHandle,
    request: TrainRequest,
    root: str | Path,
    progress: Progress,
    curves: CurveBuffer | None = None,
    acts: Path | None = None,
    pool: Any = None,
) -> Path:
    """Harvest, train, evaluate and build dashboards + labels for `request`; returns the SAE folder.

    `acts`: a harvest folder shared with other runs of the same hook, tokens and seed (a sweep): it is reused
    when complete and kept at the end; by default the run harvests into its own work folder and deletes it.

    `progress(phase, done, total)` names the stage ("harvest", "train", "evaluate", then the dashboard build's
    own phases and "labels"); an exception it raises stops the run where it is, resumable.

    `pool` (a `saelab.distributed.ray_harvest.RayShardRunner`, the Train page's Ray choice) computes the harvest's
    shards and the dashboards' activations on Ray actors: the same files as without it (tests/test_ray.py).
    """
    from saelab.activations import ActivationStore, HarvestConfig, harvest
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.autolabel import label_all
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.features.labels import write_labels
    from saelab.sae.evaluate import evaluate_sae
    from saelab.sae.files import load_sae
    from saelab.sae.train import train_sae

    hook = handle.check_hook(request.hook)
    check_output(root, request)
    out, work = run_paths(root, request.name)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / REQUEST_FILE, {"request": request.to_dict(), "model": handle.name, "done": False})
    shared, acts = acts is not None, acts if acts is not None else work / "acts"
    seq = request.seq_len
    cfg = request.train_config()
    curves = curves if curves is not None else CurveBuffer(request.d_sae)

    if not _stage_done(out, request):
        if not (shared and _holds(acts, hook)):  # a sweep over hooks harvested them all in one pass
            progress("harvest", 0, request.n_tokens)
            corpus = build_corpus(handle.tokenizer, CorpusConfig(seq_len=seq, n_tokens=request.n_tokens,
                                                                 seed=request.seed))  # fmt: skip
            harvest(handle, corpus, HarvestConfig(hooks=[hook]), acts, progress=lambda d, t: progress("harvest", d, t),
                    runner=pool)  # fmt: skip
        store = ActivationStore(acts)
        meta = {
            "model": handle.name,
            "hook": hook,
            "corpus": {"harvest": str(acts.resolve()), **store.manifest.get("corpus", {})},
        }

        def on_step(done: int, total: int, metrics: dict[str, float]) -> None:
            progress("train", done, total)
            if metrics:
                curves.add(done, total, metrics)

        def data(start: int):
            return store.iter_batches(hook, cfg.batch_size, seed=cfg.seed, start_sample=start)

        train_sae(cfg, data, store.d_in(hook), out, meta, progress=on_step)

    loaded = load_sae(out, handle=handle)
    heldout = build_corpus(
        handle.tokenizer,
        CorpusConfig(
            seq_len=seq, n_tokens=request.eval_tokens + request.label_tokens, seed=request.seed, split="heldout"
        ),
    )
    n_eval = max(1, min(request.eval_tokens // seq, int(heldout.tokens.shape[0]) // 2))
    if not (out / EVAL_FILE).exists():
        progress("evaluate", 0, 1)
        result = evaluate_sae(
            handle, loaded.sae, loaded.hook, heldout.tokens[:n_eval], progress=lambda d, t: progress("evaluate", d, t)
        )
        result.notes.append(f"held-out corpus rows 0..{n_eval}: {json.dumps(heldout.provenance())}")
        result.save(out / EVAL_FILE)

    if not (out / DASHBOARD_DIR / "meta.json").exists():
        n_dash = request.dashboard_tokens
        if n_dash > 16_384:  # sized to the machine: at most n_dash, what the budget allows
            from saelab.features.sizing import dashboard_tokens

            progress("sizing the dashboards", 0, 1)
            n_dash = min(
                n_dash, dashboard_tokens(handle, loaded, seq_len=seq, budget_s=request.dashboard_budget_s).n_tokens
            )
        trained = -(-request.n_tokens // seq)  # rows after the ones the harvest read
        progress("corpus", 0, 1)
        corpus = build_corpus(
            handle.tokenizer,
            CorpusConfig(seq_len=seq, n_tokens=trained * seq + n_dash, seed=request.seed),
        )
        first = min(trained, max(0, int(corpus.tokens.shape[0]) - 1))
        tokens = corpus.tokens[first:]
        where = {"rows": [first, int(corpus.tokens.shape[0])], "note": "after the SAE's training rows"}
        build_dashboards(
            handle,
            loaded,
            tokens,
            DashboardConfig(),
            progress=progress,
            corpus_provenance={**corpus.provenance(), **where},
            pool=pool,
        )
        label_rows = heldout.tokens[n_eval:]
        if int(label_rows.shape[0]):
            progress("labels", 0, 1)
            write_labels(
                out, label_all(handle, loaded, out, label_rows, progress=lambda d, t: progress("labels", d, t))
            )

    write_json(work / REQUEST_FILE, {"request": request.to_dict(), "model": handle.name, "done": True})
    if not shared:
        shutil.rmtree(acts, ignore_errors=True)  # the harvest is only needed to resume training
    return out


def training_job(
    handle: ModelHandle, request: TrainRequest, root: str | Path, pool: Any = None
) -> Callable[[Any], Path]:
    """`run_training` as a `saelab.jobs` function: it publishes its `CurveBuffer` as `job.published["curves"]`
    (a Ray `pool` is shut down when the run ends)."""

    def fn(ctx) -> Path:
        curves = CurveBuffer(request.d_sae)
        ctx.publish("curves", curves)
        try:
            return run_training(handle, request, root, ctx.phase_progress, curves, pool=pool)
        finally:
            if pool is not None:
                pool.shutdown()

    return fn


__all__ = [
    "CURVES",
    "CURVE_TITLES",
    "EV_FORMULA",
    "MAX_TOKENS",
    "MIN_TOKENS",
    "CurveBuffer",
    "TrainRequest",
    "architectures",
    "check_output",
    "default_hook",
    "finished",
    "hook_choices",
    "run_paths",
    "run_training",
    "training_job",
    "uses_k",
]
