"""Steered and unsteered generation, batched over prompts, with a KV cache and per-call sampling RNG.

`generate(handle, prompts, interventions, cfg)` runs each prompt twice in **one batch** — an unsteered row
and a steered row, the interventions' hooks acting on the steered rows only — with the **same** sampling
noise: both copies of a prompt take the same uniform from the request's own `torch.Generator(seed)` (never
the global RNG, so concurrent sessions cannot disturb each other), sampled by inverse CDF over the
(temperature-scaled, top-p-filtered) distribution. Identical logits therefore give identical tokens, so the
only difference between the two texts is the steering, and factor 0 reproduces the unsteered text exactly.
A strength sweep puts the unsteered rows and every factor's rows into one batch the same way.

The batch is a request to the model's decode engine (`saelab.decode`): requests from other sessions join
the same running batch instead of waiting for this one to finish, each with its hooks on its own rows;
every forward runs inside `saelab.hooks.gate`, so no hook outlives a step.

Prompting baseline: `cfg.system_prompt` (e.g. `prompting_system_prompt(concept)`) goes into the chat
template's system turn; AxBench's prompting baseline asks the model in the prompt to include the concept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saelab import decode
from saelab.configs import DictConfig
from saelab.decode import DecodeRequest, Phase, RowHook
from saelab.errors import BadInputError
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE
from saelab.steering.direction_sources import latent_activations  # re-exported: part of this module's API
from saelab.steering.interventions import FORMULAS, Intervention, build_hooks, validate
from saelab.steering.steering_result import SteeringResult  # re-exported: generate's result type

MAX_NEW_TOKENS = 256  # a request above this is refused with a message naming the cap
MAX_PROMPT_TOKENS = 1024
MAX_PROMPTS = 64
PROMPTING_TEMPLATE = (
    "You must include content related to {concept} in your response, while still following the instruction."
)

OnToken = Callable[[int, str, str], None]  # (prompt index, "unsteered" | "steered", text so far)


def prompting_system_prompt(concept: str) -> str:
    """The prompting baseline's system prompt asking for `concept` (a fixed template, not an LLM rewrite)."""
    if not isinstance(concept, str) or not concept.strip():
        raise BadInputError("Name the concept the prompting baseline should ask for.")
    return PROMPTING_TEMPLATE.format(concept=concept.strip())


@dataclass
class GenerationConfig(DictConfig):
    """Sampling settings, shared by the unsteered and the steered run.

    Attributes:
        max_new_tokens: tokens to generate per prompt, 1 to MAX_NEW_TOKENS (256).
        temperature: softmax temperature; 0 = greedy (argmax).
        top_p: nucleus sampling mass in (0, 1]; 1 = the full distribution.
        seed: seed of the per-call sampling generator (the same for both runs).
        chat_template: wrap each prompt as a user turn in the tokenizer's chat template.
        system_prompt: the system turn (chat template only); None = the template's default.
        stop_at_eos: end a prompt's text at its end token; False always makes max_new_tokens tokens (benchmarks
            use it so steered and unsteered runs do the same work).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    chat_template: bool = True
    system_prompt: str | None = None
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadInputError(f"max_new_tokens must be a positive integer, got {n!r}.")
        if n > MAX_NEW_TOKENS:
            raise BadInputError(
                f"{n:,} new tokens requested; the cap is {MAX_NEW_TOKENS} per generation. Ask for at most "
                f"{MAX_NEW_TOKENS}."
            )
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 <= t <= 10:
            raise BadInputError(f"temperature must be a number from 0 (greedy) to 10, got {t!r}.")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or not 0 < p <= 1:
            raise BadInputError(f"top_p must lie in (0, 1], got {p!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise BadInputError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise BadInputError("system_prompt must be text or None.")


# ---------------------------------------------------------------- prompts → token ids


def _check_prompts(prompts: object) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise BadInputError("Give a prompt: the prompt list is empty.")
    if len(prompts) > MAX_PROMPTS:
        raise BadInputError(f"{len(prompts)} prompts at once is too many; use at most {MAX_PROMPTS}.")
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise BadInputError(f"Prompts must be text, got {type(p).__name__}.")
        if not p.strip():
            raise BadInputError("Type a prompt: it is empty.")
        out.append(p)
    return out


def prompt_ids(handle: ModelHandle, prompt: str, cfg: GenerationConfig) -> list[int]:
    """The model input for `prompt`: the chat template (user turn + generation prompt), or the corpus
    separator followed by the raw text."""
    tok = handle.tokenizer
    if cfg.chat_template:
        messages = [{"role": "user", "content": prompt}]
        if cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        from saelab.corpus import separator_id

        ids = [separator_id(tok), *tok(prompt, add_special_tokens=False)["input_ids"]]
    n_ctx = int(handle.cfg.n_ctx)
    limit = min(MAX_PROMPT_TOKENS, n_ctx - cfg.max_new_tokens)
    if len(ids) > limit:
        raise BadInputError(
            f"The prompt is {len(ids):,} tokens; with {cfg.max_new_tokens} new tokens it must stay within "
            f"{limit:,} (model context {n_ctx:,}, prompt cap {MAX_PROMPT_TOKENS:,}). Shorten it."
        )
    return [int(i) for i in ids]


def stop_ids(handle: ModelHandle) -> set[int]:
    """Token ids that end a generation: the corpus separator and the tokenizer's end-of-sequence token."""
    from saelab.corpus import separator_id

    tok = handle.tokenizer
    ids = {separator_id(tok)}
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    return ids


# ---------------------------------------------------------------- batched runs through the decode engine


def _decode(handle: ModelHandle, ids: list[int]) -> str:
    return handle.tokenizer.decode(ids, skip_special_tokens=True)


def _batched(
    handle: ModelHandle,
    ids: list[list[int]],
    runs: Sequence[Sequence[Intervention]],
    cfg: GenerationConfig,
    loaded_sae: LoadedSAE | None,
    on_rows: Callable[[dict[int, list[int]]], None] | None = None,
) -> list[list[list[int]]]:
    """Generate every prompt once per run (a list of interventions; [] = unsteered) in one batched request.

    Rows are run-major (run k, prompt i → row k·n + i); each run's hooks act on its own rows only, and every
    copy of prompt i shares prompt i's sampling uniforms. Returns ids[run][prompt].
    """
    n = len(ids)
    phase = Phase()
    hooks = []
    for k, ivs in enumerate(runs):
        rows = list(range(k * n, (k + 1) * n))
        hooks += [RowHook(name, fn, rows) for name, fn in build_hooks(ivs, phase, loaded_sae)]
    request = DecodeRequest(
        rows=[list(r) for _ in runs for r in ids],
        max_new_tokens=cfg.max_new_tokens,
        hooks=hooks,
        temperature=float(cfg.temperature),
        top_p=float(cfg.top_p),
        seed=cfg.seed,
        noise_ids=[i for _ in runs for i in range(n)],
        n_noise=n,
        stop_ids=frozenset(stop_ids(handle)) if cfg.stop_at_eos else frozenset(),
        phase=phase,
    )
    out = decode.run(handle, request, on_rows)
    return [out[k * n : (k + 1) * n] for k in range(len(runs))]


def generate(
    handle: ModelHandle,
    prompts: str | list[str],
    interventions: Sequence[Intervention],
    cfg: GenerationConfig | None = None,
    *,
    loaded_sae: LoadedSAE | None = None,
    with_unsteered: bool = True,
    on_token: OnToken | None = None,
) -> SteeringResult:
    """Unsteered and steered continuations of `prompts` (see the module docstring).

    `on_token(prompt_index, which, text_so_far)` is called after every generated token of each
    still-running prompt, `which` in {"unsteered", "steered"}; the unsteered run goes first.
    An empty `interventions` list is the unsteered model (the steered texts then equal the unsteered).
    """
    cfg = cfg or GenerationConfig()
    if not isinstance(cfg, GenerationConfig):
        raise BadInputError("cfg must be a GenerationConfig.")
    prompts = _check_prompts(prompts)
    interventions = list(interventions or [])
    validate(interventions, handle, loaded_sae)
    ids = [prompt_ids(handle, p, cfg) for p in prompts]
    notes: list[str] = []

    runs: list[list[Intervention]] = []
    if with_unsteered or not interventions:
        runs.append([])
    if interventions:
        runs.append(interventions)
    else:
        notes.append("No intervention: the steered text is the unsteered text.")
    names = ["unsteered", "steered"] if len(runs) == 2 else ["unsteered" if not interventions else "steered"]
    on_rows = None
    if on_token is not None:
        n = len(prompts)

        def on_rows(grown: dict[int, list[int]]) -> None:
            for row, toks in sorted(grown.items()):
                on_token(row % n, names[row // n], _decode(handle, toks))

    t0 = time.perf_counter()
    outs = _batched(handle, ids, runs, cfg, loaded_sae, on_rows)
    elapsed = {"batched": time.perf_counter() - t0}
    unsteered_ids = outs[0] if (with_unsteered or not interventions) else [[] for _ in prompts]
    steered_ids = outs[-1]
    for i, row in enumerate(steered_ids):
        if len(row) == cfg.max_new_tokens:
            notes.append(f"Prompt {i + 1}: stopped at the {cfg.max_new_tokens}-token limit (cap {MAX_NEW_TOKENS}).")
    config = {
        **cfg.to_dict(),
        "interventions": [iv.describe() for iv in interventions],
        "formulas": {iv.kind: FORMULAS[iv.kind] for iv in interventions},
        "sampling": "inverse CDF with uniforms from torch.Generator(seed), shared by both runs",
        "batching": "unsteered and steered rows decode in one batch (saelab.decode), hooks on the steered rows only",
        "model": handle.name,
    }
    return SteeringResult(
        prompts=prompts,
        unsteered=[_decode(handle, r) for r in unsteered_ids]
        if with_unsteered or not interventions
        else [""] * len(prompts),
        steered=[_decode(handle, r) for r in steered_ids],
        steered_token_ids=steered_ids,
        config=config,
        notes=notes,
        unsteered_token_ids=unsteered_ids,
        prompt_token_ids=ids,
        elapsed_s={k: round(v, 4) for k, v in elapsed.items()},
    )


__all__ = [
    "MAX_NEW_TOKENS",
    "GenerationConfig",
    "SteeringResult",
    "generate",
    "latent_activations",
    "prompt_ids",
    "prompting_system_prompt",
    "SweepResult",
    "sweep",
]


# ---------------------------------------------------------------- strength sweep


@dataclass
class SweepResult:
    """Steered text per factor, and judge ratings when a judge was given.

    Attributes:
        prompts: the prompts (instructions).
        factors: the factors swept (each replaces the factor of every add/clamp intervention).
        texts: texts[f][p] = output for factor index f and prompt p.
        unsteered: the unsteered output per prompt (same seed).
        ratings: ratings[f][p] = judge `Rating.to_dict()` or None without a judge.
        means: per factor, mean over prompts of "concept", "relevance", "fluency", "score" (empty without judge).
        judge: the judge's `describe()` (formulas, thresholds, proxy flag), {} without a judge.
        notes: caveats.
    """

    prompts: list[str]
    factors: list[float]
    texts: list[list[str]]
    unsteered: list[str]
    ratings: list[list[dict[str, Any] | None]]
    means: dict[str, list[float]]
    judge: dict[str, Any]
    notes: list[str] = field(default_factory=list)


MAX_SWEEP_FACTORS = 16


def sweep(
    handle: ModelHandle,
    prompts: str | list[str],
    interventions: Sequence[Intervention],
    factors: Sequence[float],
    cfg: GenerationConfig | None = None,
    *,
    loaded_sae: LoadedSAE | None = None,
    judge: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Generate at each factor (every add/clamp intervention takes that factor) and rate with `judge`
    (anything with `rate_many(instructions, outputs)` and `describe()`, e.g. `judges.ProxyJudge`)."""
    import dataclasses

    cfg = cfg or GenerationConfig()
    factors = [float(f) for f in factors]
    if not factors or len(factors) > MAX_SWEEP_FACTORS:
        raise BadInputError(f"Give 1 to {MAX_SWEEP_FACTORS} factors to sweep, got {len(factors)}.")
    if not any(iv.kind != "ablate" for iv in interventions):
        raise BadInputError("A strength sweep needs an add or clamp intervention (ablate has no strength).")
    runs = [[dataclasses.replace(iv, factor=f) if iv.kind != "ablate" else iv for iv in interventions] for f in factors]
    for ivs in runs:
        validate(ivs, handle, loaded_sae)
    total = cfg.max_new_tokens + (1 if judge is not None else 0)  # progress counts decode steps
    prompts = _check_prompts(prompts)
    ids = [prompt_ids(handle, p, cfg) for p in prompts]

    def on_rows(grown: dict[int, list[int]]) -> None:
        if progress:
            progress(max(len(t) for t in grown.values()), total)

    outs = _batched(handle, ids, [[], *runs], cfg, loaded_sae, on_rows)  # unsteered + every factor, one batch
    base_unsteered = [_decode(handle, r) for r in outs[0]]
    texts = [[_decode(handle, r) for r in run] for run in outs[1:]]
    ratings: list[list[dict[str, Any] | None]] = [[None] * len(prompts) for _ in factors]
    means: dict[str, list[float]] = {}
    if judge is not None:
        flat = judge.rate_many([p for _ in factors for p in prompts], [t for row in texts for t in row])
        n = len(prompts)
        ratings = [[r.to_dict() for r in flat[k * n : (k + 1) * n]] for k in range(len(factors))]
        for key in ("concept", "relevance", "fluency", "score"):
            means[key] = [sum(r[key] for r in row) / n for row in ratings]  # type: ignore[index]
        if progress:
            progress(total, total)
    return SweepResult(
        prompts=prompts,
        factors=factors,
        texts=texts,
        unsteered=base_unsteered,
        ratings=ratings,
        means=means,
        judge=judge.describe() if judge is not None else {},
        notes=[] if judge is not None else ["No judge: texts only, no ratings."],
    )
