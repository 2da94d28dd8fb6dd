"""AxBench's steering protocol on the offline concept suite, judged by the PROXY judges (or an LLM endpoint).

For every concept (`saelab.steering.concepts`) and method:
  * directions come from the concept's TRAINING texts only (activations of every token but position 0 at the
    hook, each text cut to `max_text_tokens`):
      sae        the default SAE's latent with the best AUROC between positive and negative training texts, a
                 text scored by the latent's max over its tokens (AxBench's SAE-A choice); w = its decoder row;
      diffmean / pca / probe / lat   `saelab.directions` (AxBench definitions, unit norm);
    max_act (α = factor × max_act): for text methods the largest h·w over positive training tokens (as
    `text_direction`), for the SAE latent its dashboard max activation × ‖W_dec[j]‖ (as `sae_latent_direction`);
  * each steering method adds α·w at every position for every factor (AxBench: 14 factors 0.2 … 5);
  * prompting: no steering, the system prompt asks for the concept (`prompting_system_prompt`);
  * unsteered: the same instructions with no steering and no concept prompt (a floor).
Instruction ids are split 50/50 with the seed: the factor with the best mean score on the SELECT half is chosen
per (concept, method) (ties → the smaller factor), and only the REPORT half's items at that factor are reported.
Score per item = harmonic mean of the three ratings (0 if any is 0). Per method: mean over (concept, report
instruction) items with a 95 % CI from a bootstrap clustered by concept (concepts resampled, each with all its
items; the item-level interval beside it); between methods: paired differences on the same items, a t-test over
the per-concept mean differences (the clustered test) plus Wilcoxon signed-rank and paired t-test over items
(two-sided, uncorrected; there are m(m−1)/2 pairs).
Proxy calibration (`eval_power.calibrate`): `n_calibration` unsteered outputs of instructions never selected or
reported on set each concept's concept-rating thresholds so that at most `calibration_fpr` of them would be
rated as showing the concept; the rate on the evaluation's own unsteered outputs is reported (issue 17 item 2).
max_act differs from the METHODS protocol (the method's largest detection score on the concept's evaluation set):
here it is the largest h·w over positive TRAINING tokens (text methods) or the SAE latent's dashboard maximum ×
‖W_dec[j]‖, so that the evaluation texts stay unseen until judging.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.steering.concepts import (
    CALIBRATION_INSTRUCTIONS,
    CONCEPTS,
    DEFAULT_CONCEPTS,
    ConceptData,
    SuiteConfig,
    concept_data,
    get_concepts,
    get_instructions,
    split_instructions,
)
from saelab.steering.eval_directions import METHOD_BUILDERS, ConceptActs, auroc_per_column, pick_sae_latent
from saelab.steering.eval_power import CALIBRATION, CALIBRATION_FORMULA, CALIBRATION_ID0, calibrate
from saelab.steering.eval_result import EvalResult  # re-exported: run_eval's result type
from saelab.steering.eval_stats import CI_FORMULA, PAIRED_FORMULA, paired_tests, summarise
from saelab.steering.interventions import hook_widths
from saelab.steering.judges import SCORE_FORMULA, EndpointJudge, ProxyJudge

log = logging.getLogger(__name__)

AXBENCH_FACTORS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
STEER_METHODS: tuple[str, ...] = ("sae", "diffmean", "probe", "pca", "lat")
BASELINES: tuple[str, ...] = ("prompting", "unsteered")
DEFAULT_METHODS: tuple[str, ...] = ("sae", "diffmean", "probe", "pca", "prompting")
MAX_GENERATED_TOKENS = 3_000_000  # a configuration that would generate more is refused (days on a CPU)
Progress = Callable[[int, int], None]


@dataclass
class EvalConfig(DictConfig):
    """What to evaluate. Defaults are AxBench's protocol sizes except 12 instructions instead of 10 per concept
    (AxBench: 10 instructions, 128 new tokens, temperature 1, 14 factors, 72 + 72 training texts)."""

    concepts: list[str] = field(default_factory=lambda: list(DEFAULT_CONCEPTS))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    factors: list[float] = field(default_factory=lambda: list(AXBENCH_FACTORS))
    n_instructions: int = 10
    max_new_tokens: int = 128
    temperature: float = 1.0
    n_train: int = 72
    n_judge: int = 50
    max_text_tokens: int = 64
    seed: int = 0
    n_boot: int = 2000
    include_unsteered: bool = True
    batch_rows: int = 48
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    n_calibration: int = 24  # unsteered outputs of CALIBRATION_INSTRUCTIONS for the proxy concept judge (0: off)
    calibration_fpr: float = 0.05  # target share of unsteered outputs rated as showing a concept (proxy judge)

    def __post_init__(self) -> None:
        from saelab.steering.generate import MAX_NEW_TOKENS

        self.concepts = [c.name for c in get_concepts(list(self.concepts or []) or [""])]
        methods = [m for m in dict.fromkeys(self.methods or []) if m]
        if not methods:
            raise BadInputError(f"Pick at least one method: {', '.join(STEER_METHODS + BASELINES[:1])}.")
        unknown = [m for m in methods if m not in STEER_METHODS + BASELINES]
        if unknown:
            raise BadInputError(f"Unknown method(s) {unknown}; choose from {list(STEER_METHODS + BASELINES)}.")
        self.methods = [m for m in methods if m != "unsteered"]
        if "unsteered" in methods:
            self.include_unsteered = True
        factors = list(self.factors or [])
        if any(m in STEER_METHODS for m in self.methods):
            if not factors:
                raise BadInputError("Give at least one steering factor (AxBench: 0.2 … 5).")
            bad = [f for f in factors if isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f)]
            if bad or any(not 0 < abs(f) <= 100 for f in factors):
                raise BadInputError(f"Factors must be finite numbers with 0 < |factor| ≤ 100, got {factors}.")
        self.factors = sorted({float(f) for f in factors})
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise BadInputError(
                f"max_new_tokens must be 1 … {MAX_NEW_TOKENS} (AxBench: 128), got {self.max_new_tokens!r}."
            )
        if not isinstance(self.n_boot, int) or not 100 <= self.n_boot <= 100_000:
            raise BadInputError(f"n_boot must be 100 … 100,000 bootstrap resamples, got {self.n_boot!r}.")
        if not isinstance(self.batch_rows, int) or not 1 <= self.batch_rows <= 256:
            raise BadInputError(f"batch_rows must be 1 … 256, got {self.batch_rows!r}.")
        if not isinstance(self.max_text_tokens, int) or not 4 <= self.max_text_tokens <= 512:
            raise BadInputError(f"max_text_tokens must be 4 … 512, got {self.max_text_tokens!r}.")
        if self.endpoint_url:  # checked now, not minutes into the run
            from saelab.trust import check_endpoint_url

            check_endpoint_url(self.endpoint_url)
        get_instructions(self.n_instructions)  # validates the count
        if not isinstance(self.n_calibration, int) or not 0 <= self.n_calibration <= len(CALIBRATION_INSTRUCTIONS):
            raise BadInputError(
                f"n_calibration must be 0 … {len(CALIBRATION_INSTRUCTIONS)}, got {self.n_calibration!r}."
            )
        if not 0 < float(self.calibration_fpr) < 0.5:
            raise BadInputError(f"calibration_fpr must be in (0, 0.5), got {self.calibration_fpr!r}.")
        SuiteConfig(n_train=self.n_train, n_judge=self.n_judge, seed=self.seed)
        if self.generated_tokens() > MAX_GENERATED_TOKENS:
            raise BadInputError(
                f"This configuration would generate {self.generated_tokens():,} tokens (limit "
                f"{MAX_GENERATED_TOKENS:,}); use fewer concepts, factors, instructions or new tokens."
            )

    def n_rows(self) -> int:
        """Generated continuations: (concept, steering method, factor) + prompting per concept, × instructions;
        plus the unsteered outputs once."""
        steer = sum(m in STEER_METHODS for m in self.methods)
        per_concept = steer * len(self.factors) + ("prompting" in self.methods)
        return (len(self.concepts) * per_concept + int(self.include_unsteered)) * self.n_instructions + self._once()

    def _once(self) -> int:
        """Rows generated once, with the first concept: the calibration outputs (unsteered ones are counted
        in n_rows' formula)."""
        return self.n_calibration

    def n_batches(self) -> int:
        """Row-batched generations `run_eval` runs (its progress total)."""
        once = int(self.include_unsteered) * self.n_instructions + self._once()
        per = (self.n_rows() - once) // len(self.concepts)
        first = per + once
        return math.ceil(first / self.batch_rows) + (len(self.concepts) - 1) * math.ceil(per / self.batch_rows)

    def generated_tokens(self) -> int:
        return self.n_rows() * self.max_new_tokens


# ---------------------------------------------------------------- the protocol


def _make_judge(handle, data: ConceptData, cfg: EvalConfig, state: dict[str, Any]):
    proxy = ProxyJudge(handle, data.judge_examples)
    if not cfg.endpoint_url or state.get("endpoint_failed"):
        return proxy
    from saelab.features.llm import LLMEndpoint

    endpoint = LLMEndpoint(cfg.endpoint_url, cfg.endpoint_model or "")
    return EndpointJudge(endpoint, data.concept.description, proxy)


def generate_rows(
    handle,
    prompts: list[list[int]],
    deltas_BD: torch.Tensor,
    hook: str,
    cfg: EvalConfig,
    noise_ids: list[int],
    n_noise: int | None = None,
) -> list[str]:
    """Generate for many rows at once, row b steered by h ← h + deltas_BD[b] at every position of `hook`.

    One batched generation covers every (method, factor, instruction) of a concept: a zero row is unsteered
    (or the prompting baseline, whose prompt carries the system turn). Rows with the same `noise_ids` entry
    share their sampling uniforms (common random numbers: the same instruction under different methods and
    factors differs only by the steering). One request to the model's decode engine (`saelab.decode`), the
    sampler and KV cache `saelab.steering.generate` uses.
    """
    from saelab.decode import DecodeRequest, RowHook, run
    from saelab.steering.generate import stop_ids

    n_noise = max(noise_ids) + 1 if n_noise is None else n_noise  # the same draws in every chunk of a concept

    def steer(act: torch.Tensor, hook=None) -> torch.Tensor:
        delta = deltas_BD.to(dtype=act.dtype)[:, None, :]
        if act.ndim == 4:  # attn.hook_z [batch, pos, heads, d_head]: the delta spans every head, concatenated
            return act + delta.view(*delta.shape[:2], *act.shape[2:])
        return act + delta

    request = DecodeRequest(
        rows=[list(p) for p in prompts],
        max_new_tokens=cfg.max_new_tokens,
        hooks=[RowHook(hook, steer)],
        temperature=float(cfg.temperature),
        seed=cfg.seed,
        noise_ids=list(noise_ids),
        n_noise=n_noise,
        stop_ids=frozenset(stop_ids(handle)),
    )
    out = run(handle, request)
    return [handle.tokenizer.decode(r, skip_special_tokens=True) for r in out]


def run_eval(handle, loaded_sae, cfg: EvalConfig, *, progress: Progress | None = None) -> EvalResult:
    """Run the protocol (module docstring) and return every item plus the summary tables.

    Each concept's generations (every method × factor × instruction, the prompting baseline, and — once — the
    unsteered outputs) run as row-batched generations of at most `cfg.batch_rows` rows (`generate_rows`).
    `progress(done, total)` counts batches.
    """
    from saelab.activations.text_batches import text_hook_acts
    from saelab.steering.generate import GenerationConfig, prompt_ids, prompting_system_prompt

    t0 = time.perf_counter()
    hook = loaded_sae.hook if loaded_sae is not None else None
    if hook is None:
        if "sae" in cfg.methods:
            raise BadInputError("The 'sae' method needs an SAE; load one or drop the method.")
        hook = f"blocks.{handle.n_layers // 2}.hook_resid_post"
    pairs = get_instructions(cfg.n_instructions)
    ids = [i for i, _ in pairs]
    texts = [t for _, t in pairs]
    select_ids, report_ids = split_instructions(ids, cfg.seed)
    halves = {i: ("select" if i in select_ids else "report") for i in ids}
    gcfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    plain_ids = [prompt_ids(handle, t, gcfg) for t in texts]
    width = hook_widths(handle, hook)[-1]  # at attn.hook_z: every head's d_head, concatenated
    total, done = cfg.n_batches(), 0
    state: dict[str, Any] = {}
    items: list[dict] = []
    directions: dict[str, dict[str, Any]] = {}
    judge_desc: dict[str, Any] = {}
    unsteered: list[str] | None = None
    calib_texts = list(CALIBRATION_INSTRUCTIONS[: cfg.n_calibration])
    calib_ids = [CALIBRATION_ID0 + j for j in range(len(calib_texts))]
    calibration: list[str] | None = None if calib_texts else []
    suite = SuiteConfig(n_train=cfg.n_train, n_judge=cfg.n_judge, seed=cfg.seed)
    for name in cfg.concepts:
        data = concept_data(name, suite)
        directions[name] = {"data": data.provenance}
        # rows: (method, factor, prompt ids, delta) per instruction
        plan: list[tuple[str, float | None, int, list[int], torch.Tensor]] = []
        zero = torch.zeros(width)
        if cfg.include_unsteered and unsteered is None:
            plan += [("unsteered", None, i, plain_ids[k], zero) for k, i in enumerate(ids)]
        if calibration is None:
            plan += [(CALIBRATION, None, i, prompt_ids(handle, t, gcfg), zero) for i, t in zip(calib_ids, calib_texts)]
        if "prompting" in cfg.methods:
            sys_cfg = GenerationConfig(
                **{**gcfg.to_dict(), "system_prompt": prompting_system_prompt(data.concept.description)}
            )
            plan += [("prompting", None, i, prompt_ids(handle, t, sys_cfg), zero) for i, t in pairs]
        steer = [m for m in cfg.methods if m in STEER_METHODS]
        if steer:
            acts = ConceptActs(
                data,
                hook,
                text_hook_acts(handle, data.train_pos, hook, max_tokens=cfg.max_text_tokens),
                text_hook_acts(handle, data.train_neg, hook, max_tokens=cfg.max_text_tokens),
            )
        for method in steer:
            d = METHOD_BUILDERS[method](handle, loaded_sae, acts, method, cfg.seed)
            directions[name][method] = {"name": d.name, "max_act": d.max_act, **d.meta}
            for factor in cfg.factors:
                delta = d.vector * (factor * d.max_act)
                plan += [(method, factor, i, plain_ids[k], delta) for k, i in enumerate(ids)]
        outputs: list[str] = []
        for start in range(0, len(plan), cfg.batch_rows):
            chunk = plan[start : start + cfg.batch_rows]
            outputs += generate_rows(
                handle,
                [r[3] for r in chunk],
                torch.stack([r[4] for r in chunk]),
                hook,
                cfg,
                [r[2] if r[2] < CALIBRATION_ID0 else len(ids) + r[2] - CALIBRATION_ID0 for r in chunk],
                len(ids) + len(calib_ids),  # noise streams: instructions, then calibration instructions
            )
            done += 1
            if progress is not None:
                progress(done, total)
        by_method: dict[tuple[str, float | None], dict[int, str]] = {}
        for (method, factor, i, _, _), out in zip(plan, outputs):
            by_method.setdefault((method, factor), {})[i] = out
        if ("unsteered", None) in by_method:
            first = by_method.pop(("unsteered", None))
            unsteered = [first[i] for i in ids]
        if unsteered is not None:
            by_method = {("unsteered", None): dict(zip(ids, unsteered)), **by_method}
        if (CALIBRATION, None) in by_method:
            first = by_method.pop((CALIBRATION, None))
            calibration = [first[i] for i in calib_ids]
        judge = _make_judge(handle, data, cfg, state)
        keys = list(by_method)
        flat_outs = [by_method[k][i] for k in keys for i in ids] + list(calibration or [])
        flat_ins = [texts[k2] for _ in keys for k2 in range(len(ids))] + calib_texts[: len(calibration or [])]
        ratings = judge.rate_many(flat_ins, flat_outs)
        if isinstance(judge, EndpointJudge) and judge.proxy:
            state["endpoint_failed"] = judge.note
        n = 0
        for method, factor in keys:
            for i in ids:
                r = ratings[n]
                items.append(
                    {
                        "concept": name,
                        "method": method,
                        "factor": factor,
                        "instruction_id": i,
                        "half": halves[i],
                        "output": flat_outs[n],
                        "concept_rating": r.concept,
                        "relevance": r.relevance,
                        "fluency": r.fluency,
                        "score": r.score,
                        "raw": r.raw,
                    }
                )
                n += 1
        for i, text in zip(calib_ids, calibration or []):
            r = ratings[n]
            items.append({"concept": name, "method": CALIBRATION, "factor": None, "instruction_id": i,
                          "half": CALIBRATION, "output": text, "concept_rating": r.concept, "relevance": r.relevance,
                          "fluency": r.fluency, "score": r.score, "raw": r.raw})  # fmt: skip
            n += 1
        judge_desc = judge.describe()
    notes = [
        "Ratings come from the offline PROXY judge (sentence-embedding concept and relevance scores, perplexity "
        "under the unsteered model), not from AxBench's LLM judge; absolute scores are not comparable to AxBench's."
        if judge_desc.get("proxy", True)
        else f"Ratings from the LLM judge {judge_desc.get('judge')}.",
    ]
    if state.get("endpoint_failed"):
        notes.append(str(state["endpoint_failed"]))
    calib_report = None
    if calibration and judge_desc.get("proxy", True):
        items, calib_report = calibrate(items, cfg.calibration_fpr, judge_desc.get("thresholds", {}))
        judge_desc = {**judge_desc, "calibration": calib_report}
        notes.append(
            f"Proxy concept judge calibrated per concept on {len(calibration)} unsteered outputs of separate "
            f"instructions (target false-positive rate {cfg.calibration_fpr:g}); measured on the evaluation's "
            f"unsteered outputs: {calib_report['fpr_after']['rate']:.3f} (was {calib_report['fpr_before']['rate']:.3f}"
            " with the fixed thresholds)."
        )
    result = summarise(items, cfg, select_ids, report_ids)
    return EvalResult(
        config=cfg.to_dict(),
        judge=judge_desc,
        select_ids=select_ids,
        report_ids=report_ids,
        items=items,
        directions=directions,
        notes=notes,
        formulas={
            "score": SCORE_FORMULA,
            "alpha": "α = factor × max_act; h ← h + α·w at every position of the hook",
            "selection": "factor = argmax over factors of the mean score on the select-half instructions "
            "(ties → smaller factor), per concept and method; reported on the report half",
            "ci": CI_FORMULA.format(n_boot=cfg.n_boot, seed=cfg.seed),
            "paired": PAIRED_FORMULA,
            **({"calibration": CALIBRATION_FORMULA} if calib_report else {}),
        },
        elapsed_s=round(time.perf_counter() - t0, 1),
        **result,
    )


__all__ = [
    "AXBENCH_FACTORS",
    "CONCEPTS",
    "DEFAULT_METHODS",
    "EvalConfig",
    "EvalResult",
    "METHOD_BUILDERS",
    "STEER_METHODS",
    "auroc_per_column",
    "paired_tests",
    "pick_sae_latent",
    "run_eval",
    "summarise",
]
