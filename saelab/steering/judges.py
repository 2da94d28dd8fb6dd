"""Judges for steered text: offline PROXY judges, and an optional OpenAI-compatible LLM judge.

AxBench rates every steered continuation on three 0/1/2 scales — concept (is the concept there?), instruction
relevance (does it answer the instruction?) and fluency — and scores it by their harmonic mean, 0 if any is 0.
Its judge is an LLM. Offline we have none, so `ProxyJudge` stands in for it and is labelled a **proxy**
everywhere (result objects, reports, UI):

  * concept: all-MiniLM-L6-v2 sentence embeddings (`saelab.embeddings`, a model unrelated to the one steered).
    `sim(x, S)` = mean cosine of x to its k nearest texts of set S. The margin
        concept_margin = sim(output, concept examples) − sim(output, background texts)
    says how much closer the output is to held-out examples of the concept than to generic English (the
    default background: 200 sentences of `87_glue_cola`). The concept examples are texts labelled with the
    concept, never the steering vector, and the evaluation keeps them apart from the texts that made it.
  * relevance: cosine between the instruction's and the output's embeddings.
  * fluency: perplexity of the output under the UNSTEERED model (no hooks; through `saelab.hooks`), each text
    after one `<|endoftext|>` token, capped at the first 256 tokens; plus a repetition guard, since a loop such
    as "the the the" has a low perplexity: distinct_3gram = distinct word trigrams / all word trigrams.
Each continuous value maps to 0/1/2 by the thresholds in `ProxyThresholds` (rating 2 if value ≥ hi, 1 if ≥ lo,
else 0; perplexity the other way round; fluency = min(perplexity rating, repetition rating)). How the defaults
were calibrated on real outputs of the default model is written in docs/steering_eval.md.

`EndpointJudge` asks an OpenAI-compatible chat endpoint the three questions with AxBench-style rubrics and
parses "Rating: [[n]]". When the endpoint cannot be reached it falls back to the proxy and says so in `note`.
The `Rating` type and the harmonic score live in `saelab.steering.ratings` (re-exported here).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.steering.ratings import SCORE_FORMULA, Rating, harmonic_score  # re-exported: part of the judges' API

log = logging.getLogger(__name__)

PROXY_LABEL = "PROXY judge (offline stand-in for AxBench's LLM judge)"
BACKGROUND_DATASET = "87_glue_cola"
MAX_FLUENCY_TOKENS = 256


@dataclass
class ProxyThresholds(DictConfig):
    """Cut points mapping the proxy's continuous values to 0/1/2 (see the module docstring and the docs).

    Rating r(v) = 2 if v ≥ hi, 1 if v ≥ lo, else 0 (concept margin, relevance cosine, distinct-trigram ratio);
    perplexity: 2 if ppl ≤ ppl_hi, 1 if ppl ≤ ppl_lo, else 0.
    """

    concept_lo: float = 0.03
    concept_hi: float = 0.09
    relevance_lo: float = 0.26
    relevance_hi: float = 0.35
    ppl_hi: float = 100.0
    ppl_lo: float = 550.0
    repeat_lo: float = 0.5
    repeat_hi: float = 0.8
    k: int = 5

    def __post_init__(self) -> None:
        vals = [self.concept_lo, self.concept_hi, self.relevance_lo, self.relevance_hi, self.ppl_hi, self.ppl_lo]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals + [self.repeat_lo, self.repeat_hi]):
            raise BadInputError("Judge thresholds must be finite numbers.")
        if (
            self.concept_lo > self.concept_hi
            or self.relevance_lo > self.relevance_hi
            or self.repeat_lo > self.repeat_hi
        ):
            raise BadInputError("Each judge threshold pair needs lo ≤ hi.")
        if not 0 < self.ppl_hi <= self.ppl_lo:
            raise BadInputError("Perplexity thresholds need 0 < ppl_hi ≤ ppl_lo (lower perplexity is better).")
        if not isinstance(self.k, int) or self.k < 1:
            raise BadInputError(f"k (nearest examples) must be a positive integer, got {self.k!r}.")


def three_level(value: float, lo: float, hi: float) -> int:
    """2 if value ≥ hi, 1 if value ≥ lo, else 0 (NaN → 0)."""
    if not math.isfinite(value):
        return 0
    return 2 if value >= hi else 1 if value >= lo else 0


def distinct_trigram_ratio(text: str) -> float:
    """Distinct word trigrams / all word trigrams (1.0 for texts under three words)."""
    words = text.split()
    grams = list(zip(words, words[1:], words[2:]))
    return len(set(grams)) / len(grams) if grams else 1.0


@lru_cache(maxsize=1)
def background_texts(n: int = 200, seed: int = 0) -> tuple[str, ...]:
    """`n` generic English sentences from `87_glue_cola` (real text, no topic), sampled with `seed`."""
    from saelab.corpus import load_dataset

    prompts = load_dataset(BACKGROUND_DATASET)["prompt"].dropna().astype(str)
    prompts = prompts[prompts.str.split().str.len() >= 5]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(prompts), size=min(n, len(prompts)), replace=False)
    return tuple(prompts.iloc[np.sort(idx)].tolist())


@lru_cache(maxsize=1)
def _background_embeddings() -> np.ndarray:
    from saelab.embeddings import embed_texts

    emb = embed_texts(list(background_texts()))
    emb.setflags(write=False)
    return emb


def _topk_mean_cos(emb_ND: np.ndarray, ref_MD: np.ndarray, k: int) -> np.ndarray:
    sims_NM = emb_ND @ ref_MD.T
    k = min(k, sims_NM.shape[1])
    return np.sort(sims_NM, axis=1)[:, -k:].mean(axis=1)


def perplexities(
    handle, texts: Sequence[str], *, batch_size: int = 8, max_tokens: int = MAX_FLUENCY_TOKENS
) -> np.ndarray:
    """Perplexity of each text under the unsteered model: exp(mean NLL of its tokens after one separator token).

    Runs with no hooks through `saelab.hooks.run_with_hooks` (it holds the model lock). Empty texts get inf.
    """
    from saelab.corpus import separator_id
    from saelab.hooks import run_with_hooks

    tok = handle.tokenizer
    sep = separator_id(tok)
    ids = [[sep] + tok.encode(t, add_special_tokens=False)[:max_tokens] if t.strip() else [] for t in texts]
    out = np.full(len(texts), np.inf)
    order = [i for i in np.argsort([len(x) for x in ids]) if len(ids[i]) >= 2]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        tokens_BP = torch.zeros((len(chunk), width), dtype=torch.long)
        mask_BP = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            tokens_BP[row, : len(ids[i])] = torch.tensor(ids[i])
            mask_BP[row, : len(ids[i])] = 1
        logits_BPV = run_with_hooks(handle, tokens_BP, [], attention_mask=mask_BP).float()
        logp_BPV = torch.log_softmax(logits_BPV[:, :-1], dim=-1)
        nll_BP = -logp_BPV.gather(-1, tokens_BP[:, 1:, None])[..., 0]
        keep_BP = mask_BP[:, 1:].float()
        mean_nll_B = (nll_BP * keep_BP).sum(1) / keep_BP.sum(1)
        out[chunk] = torch.exp(mean_nll_B).numpy()
    return out


class ProxyJudge:
    """Offline PROXY for AxBench's LLM judge (see the module docstring for every formula).

    Args:
        handle: the model being steered; fluency is its perplexity with no steering.
        concept_examples: held-out texts labelled with the concept (not the texts the direction came from).
        background: generic texts the concept margin is measured against (default: `background_texts()`).
        thresholds: cut points to 0/1/2.
    """

    label = PROXY_LABEL
    proxy = True

    def __init__(
        self,
        handle,
        concept_examples: Sequence[str],
        *,
        background: Sequence[str] | None = None,
        thresholds: ProxyThresholds | None = None,
    ):
        from saelab.embeddings import embed_texts

        examples = [t for t in concept_examples if isinstance(t, str) and t.strip()]
        if not examples:
            raise BadInputError("The concept judge needs at least one non-empty example text of the concept.")
        self.handle = handle
        self.thresholds = thresholds or ProxyThresholds()
        self.concept_emb = embed_texts(examples)
        self.background_emb = embed_texts(list(background)) if background else _background_embeddings()
        self.n_examples = len(examples)

    def describe(self) -> dict[str, Any]:
        """The judge's formulas and thresholds, for result files and captions."""
        return {
            "judge": self.label,
            "proxy": True,
            "concept": "concept_margin = mean top-k cosine(output, concept examples) − mean top-k cosine(output, "
            "background) in all-MiniLM-L6-v2 space; rating 2 if ≥ concept_hi, 1 if ≥ concept_lo",
            "relevance": "relevance_cos = cosine(instruction, output) in all-MiniLM-L6-v2 space; rating 2 if ≥ "
            "relevance_hi, 1 if ≥ relevance_lo",
            "fluency": "min(perplexity rating: 2 if ppl ≤ ppl_hi, 1 if ≤ ppl_lo; repetition rating: 2 if distinct "
            "word-trigram ratio ≥ repeat_hi, 1 if ≥ repeat_lo); ppl under the unsteered model",
            "score": SCORE_FORMULA,
            "thresholds": self.thresholds.to_dict(),
            "n_concept_examples": self.n_examples,
            "n_background": int(self.background_emb.shape[0]),
        }

    def rate(self, instruction: str, output: str) -> Rating:
        return self.rate_many([instruction], [output])[0]

    def rate_many(
        self,
        instructions: Sequence[str],
        outputs: Sequence[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Rating]:
        """Ratings for (instruction, output) pairs, batched. Empty outputs get 0 on every scale."""
        from saelab.embeddings import embed_texts

        if len(instructions) != len(outputs):
            raise BadInputError(f"{len(instructions)} instructions but {len(outputs)} outputs to judge.")
        th = self.thresholds
        n = len(outputs)
        nonempty = [i for i, o in enumerate(outputs) if isinstance(o, str) and o.strip()]
        out_emb = np.zeros((n, self.concept_emb.shape[1]), dtype=np.float32)
        if nonempty:
            out_emb[nonempty] = embed_texts([outputs[i] for i in nonempty])
        ins_emb = embed_texts([i if i.strip() else "(empty)" for i in instructions])
        sim_c = _topk_mean_cos(out_emb, self.concept_emb, th.k)
        sim_b = _topk_mean_cos(out_emb, self.background_emb, th.k)
        rel = (out_emb * ins_emb).sum(1)
        ppl = perplexities(self.handle, [o if isinstance(o, str) else "" for o in outputs])
        ratings = []
        empty = set(range(n)) - set(nonempty)
        for i in range(n):
            rep = distinct_trigram_ratio(outputs[i] or "")
            raw = {
                "concept_margin": float(sim_c[i] - sim_b[i]),
                "concept_sim": float(sim_c[i]),
                "relevance_cos": float(rel[i]),
                "perplexity": float(ppl[i]) if math.isfinite(ppl[i]) else None,
                "distinct_3gram": float(rep),
            }
            if i in empty:
                ratings.append(Rating(0, 0, 0, {**raw, "note": "empty output"}))
            else:
                ppl_rating = 2 if ppl[i] <= th.ppl_hi else 1 if ppl[i] <= th.ppl_lo else 0
                ratings.append(
                    Rating(
                        concept=three_level(raw["concept_margin"], th.concept_lo, th.concept_hi),
                        relevance=three_level(raw["relevance_cos"], th.relevance_lo, th.relevance_hi),
                        fluency=min(ppl_rating, three_level(rep, th.repeat_lo, th.repeat_hi)),
                        raw=raw,
                    )
                )
            if progress is not None:
                progress(i + 1, n)
        return ratings


# ---------------------------------------------------------------- optional LLM judge

_RUBRICS = {
    "concept": (
        "You are an impartial judge. Decide whether the concept below appears in the text fragment. Judge only "
        "whether the concept is incorporated, not grammar or coherence. Explain briefly, pointing at the words "
        "that refer to the concept, then rate 0 if the concept is absent, 1 if it is present only minimally or "
        "awkwardly, 2 if it is clearly and naturally incorporated. End with exactly: Rating: [[score]]\n\n"
        "[Concept]\n{concept}\n\n[Text fragment]\n{output}"
    ),
    "relevance": (
        "You are an impartial judge. Decide how related the text fragment is to the instruction. Judge only "
        "relatedness, not grammar, coherence or informativeness. Explain briefly, then rate 0 if it is unrelated, "
        "1 if it is somewhat related, 2 if it clearly addresses the instruction. End with exactly: "
        "Rating: [[score]]\n\n[Instruction]\n{instruction}\n\n[Text fragment]\n{output}"
    ),
    "fluency": (
        "You are an impartial judge. Rate the fluency of the text fragment, ignoring completeness, relevance and "
        "informativeness. Note unnatural phrasing, grammatical errors or repetition, then rate 0 if it is not "
        "fluent (incomprehensible or repetitive), 1 if it is somewhat fluent with noticeable errors, 2 if it is "
        "fluent and almost perfect. End with exactly: Rating: [[score]]\n\n[Text fragment]\n{output}"
    ),
}
_RATING_RE = re.compile(r"Rating:\s*\[\[\s*([0-2])(?:\.0+)?\s*\]\]")


def parse_rating(reply: str) -> int | None:
    """The last "Rating: [[n]]" (n ∈ {0,1,2}) in a judge reply, else None."""
    found = _RATING_RE.findall(reply or "")
    return int(found[-1]) if found else None


class EndpointJudge:
    """AxBench-style LLM judge on an OpenAI-compatible endpoint (`saelab.features.llm.LLMEndpoint`).

    Not a proxy. If the first call fails (endpoint unreachable, HTTP error, not a chat completion) it switches to
    `fallback` (a ProxyJudge) for every later rating, sets `note` to say so, and marks itself `proxy = True`.
    A reply without a parsable rating counts as 0 and is recorded in `raw`.
    """

    def __init__(self, endpoint, concept: str, fallback: ProxyJudge):
        if not isinstance(concept, str) or not concept.strip():
            raise BadInputError("The LLM judge needs the concept described in words.")
        self.endpoint = endpoint
        self.concept = concept
        self.fallback = fallback
        self.note: str | None = None
        self.proxy = False
        self.label = f"LLM judge {endpoint.model} at {endpoint.base_url} (AxBench-style rubric)"

    def describe(self) -> dict[str, Any]:
        if self.proxy:
            return {**self.fallback.describe(), "note": self.note}
        return {"judge": self.label, "proxy": False, "rubrics": _RUBRICS, "score": SCORE_FORMULA, "note": self.note}

    def _ask(self, aspect: str, instruction: str, output: str) -> tuple[int, str]:
        prompt = _RUBRICS[aspect].format(concept=self.concept, instruction=instruction, output=output)
        reply = self.endpoint.chat([{"role": "user", "content": prompt}], max_tokens=256, temperature=0.0)
        rating = parse_rating(reply)
        return (0 if rating is None else rating), reply[-300:]

    def rate_many(
        self,
        instructions: Sequence[str],
        outputs: Sequence[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Rating]:
        from saelab.features.llm import EndpointError

        if self.proxy:
            return self.fallback.rate_many(instructions, outputs, progress=progress)
        ratings: list[Rating] = []
        for i, (ins, out) in enumerate(zip(instructions, outputs, strict=True)):
            try:
                got = {a: self._ask(a, ins, out) for a in ("concept", "relevance", "fluency")}
            except EndpointError as err:
                if ratings:  # it worked before: a transient failure for this one item
                    ratings.append(Rating(0, 0, 0, {"error": str(err)}))
                    continue
                self.note = f"LLM judge endpoint unusable ({err}); fell back to the offline PROXY judge"
                log.warning(self.note)
                self.proxy = True
                self.label = self.fallback.label
                return self.fallback.rate_many(instructions, outputs, progress=progress)
            ratings.append(
                Rating(got["concept"][0], got["relevance"][0], got["fluency"][0], {a: v[1] for a, v in got.items()})
            )
            if progress is not None:
                progress(i + 1, len(outputs))
        return ratings

    def rate(self, instruction: str, output: str) -> Rating:
        return self.rate_many([instruction], [output])[0]


__all__ = [
    "EndpointJudge",
    "PROXY_LABEL",
    "ProxyJudge",
    "ProxyThresholds",
    "Rating",
    "SCORE_FORMULA",
    "background_texts",
    "distinct_trigram_ratio",
    "harmonic_score",
    "parse_rating",
    "perplexities",
    "three_level",
]
