"""The faithful (non-proxy) interpretation and annotation: an OpenAI-compatible LLM endpoint.

HypotheSAEs' own recipe, shortened: the LLM sees ~10 texts from the latent's top decile and ~10 where it
is zero and proposes three hypotheses, each "mentions …"; every candidate annotates texts yes/no (one call
per text) and is scored by F1 against the binarised latent on a validation sample; the best one is kept
and later annotates the held-out texts. Any `EndpointError` is the caller's to handle (it falls back to
the offline keyword proxy and says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from saelab.features.llm import EndpointError, LLMEndpoint

PROPOSER_SYSTEM = (
    "You are helping interpret a feature of text embeddings. You will see texts where the feature is strongly "
    "active (A) and texts where it is absent (B). Write 3 different candidate descriptions of what the A texts "
    "have in common and the B texts lack. Each must be a short phrase starting with 'mentions', checkable on a "
    "single text, e.g. 'mentions pizza or other Italian food'. Answer with exactly 3 lines, one per candidate."
)
ANNOTATOR_SYSTEM = (
    "Check one property of a text: does the text satisfy '{hypothesis}'? Answer with one word: yes or no."
)
MAX_CHARS = 600  # each text shown to the LLM is cut to this many characters


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "…"


def propose(endpoint: LLMEndpoint, positives: Sequence[str], negatives: Sequence[str]) -> list[str]:
    """Three "mentions …" candidates for a latent from its top-decile and zero texts."""
    a = "\n".join(f"A{i + 1}. {_clip(t)}" for i, t in enumerate(positives))
    b = "\n".join(f"B{i + 1}. {_clip(t)}" for i, t in enumerate(negatives))
    reply = endpoint.chat(
        [{"role": "system", "content": PROPOSER_SYSTEM}, {"role": "user", "content": f"{a}\n\n{b}"}], max_tokens=160
    )
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.):])\s*", "", ln).strip().strip("\"'") for ln in reply.splitlines()]
    out = [ln for ln in lines if ln][:3]
    if not out:
        raise EndpointError(f"{endpoint.url} proposed no hypotheses (empty answer).")
    return out


@dataclass
class LLMRule:
    """A hypothesis the LLM checks text by text (yes/no)."""

    endpoint: LLMEndpoint
    label: str

    def annotate(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        out = np.zeros(len(texts), dtype=bool)
        system = ANNOTATOR_SYSTEM.format(hypothesis=self.label)
        for i, text in enumerate(texts):
            reply = self.endpoint.chat(
                [{"role": "system", "content": system}, {"role": "user", "content": _clip(text)}], max_tokens=3
            )
            out[i] = reply.strip().strip(".!\"' ").lower().startswith("yes")
            if progress is not None:
                progress(i + 1, len(texts))
        return out

    def evidence(self, text: str) -> list[str]:
        return []  # an LLM judgement has no keyword evidence to highlight


class LLMInterpreter:
    """Interprets latents with the LLM until the endpoint fails; then callers fall back to keywords.

    A failure on the very first call means the endpoint is unusable: `usable` turns False and one note
    says the whole run used the offline PROXY. A later failure affects only that latent (noted).
    Validation-sample F1: up to `n_score` texts where the binarised latent holds and as many where it
    does not (a balanced sample, so the F1 is not the full-split F1; said in the formula).
    """

    def __init__(self, endpoint: LLMEndpoint, seed: int, notes: list[str], n_show: int = 10, n_score: int = 10):
        self.endpoint, self.seed, self.notes = endpoint, seed, notes
        self.n_show, self.n_score = n_show, n_score
        self.usable, self.reached = True, False

    def interpret(self, latent: int, a_train: np.ndarray, a_val: np.ndarray, texts: Sequence[str], parts):
        from saelab.hypotheses.interpret import Interpretation, binarise_threshold, f1

        rng = np.random.default_rng([self.seed, latent])
        tau = binarise_threshold(a_train)
        train_idx, val_idx = parts["train"], parts["val"]
        pos, neg = train_idx[a_train >= tau], train_idx[a_train <= 0]
        truth_val = a_val >= tau
        if len(pos) == 0 or len(neg) == 0 or truth_val.sum() == 0 or (a_val <= 0).sum() == 0:
            self.notes.append(
                f"Latent {latent}: no top-decile or no zero texts in the training or validation split to show or score "
                "LLM candidates with; its keyword PROXY rule was used."
            )
            return None, None
        show_pos = rng.choice(pos, size=min(self.n_show, len(pos)), replace=False)
        show_neg = rng.choice(neg, size=min(self.n_show, len(neg)), replace=False)
        v_pos = rng.permutation(np.flatnonzero(truth_val))[: self.n_score]
        v_neg = rng.permutation(np.flatnonzero(a_val <= 0))[: self.n_score]
        sample = np.concatenate([v_pos, v_neg])
        sample_texts = [texts[val_idx[i]] for i in sample]
        try:
            labels = propose(self.endpoint, [texts[i] for i in show_pos], [texts[i] for i in show_neg])
            self.reached = True
            scored = []
            for label in labels:
                rule = LLMRule(self.endpoint, label)
                scored.append((f1(rule.annotate(sample_texts), truth_val[sample]), label))
        except EndpointError as err:
            if not self.reached:
                self.usable = False
                self.notes.append(f"LLM endpoint unreachable, so every latent was interpreted offline (PROXY): {err}")
            else:
                self.notes.append(f"Latent {latent}: the LLM failed ({err}); its keyword PROXY rule was used.")
            return None, None
        best = max(range(len(scored)), key=lambda i: scored[i][0])
        interp = Interpretation(
            label=scored[best][1],
            source="llm",
            terms=[],
            fidelity_f1=scored[best][0],
            candidates=[{"label": lab, "val_f1": s} for s, lab in scored],
            threshold=tau,
            n_pos=len(pos),
            n_neg=len(neg),
        )
        return interp, LLMRule(self.endpoint, scored[best][1])
