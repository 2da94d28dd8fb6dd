"""Turn a selected latent into a checkable hypothesis: offline keyword rules (PROXY), or an LLM.

HypotheSAEs step 4 asks an LLM to describe a latent from texts in its top decile versus texts where it
is zero, writes three candidate descriptions, annotates texts with each, and keeps the one whose
annotations best match the binarised latent (F1). Offline, SAE Lab replaces the LLM by a **proxy**:
  * contrast: terms (words and two-word phrases, stop words removed, negations kept) are counted per text
    in the latent's top-decile training texts (positives) and in training texts where it is zero
    (negatives); each term gets a smoothed log-odds ratio
    log((d₊+½)/(N₊−d₊+½)) − log((d₋+½)/(N₋−d₋+½)).
  * candidates, each a rule "mentions any of: A, B, C" (a text satisfies it iff it contains one of the
    terms): the top-1/3/5 terms by log-odds, and greedy rules that add the term raising training F1 most
    (up to `max_terms`);
  * choice: each candidate's F1 against the binarised latent on the **validation** split; the best is kept.
    Its φ (Pearson correlation of two 0/1 vectors) with "the latent fires" (a > 0) over all validation texts
    is reported beside it. Choosing by φ instead was tried: more held-out R² on Yelp (0.28 vs 0.18) but
    broader, overlapping rules (several latents described by sub-phrases of one word), fewer significant
    hypotheses on the front-page set, and a planted "pizza" effect lost to that collinearity; F1 stays.
Rules hold up to 10 terms (was 5): on the bench sets that gave 4 / 3 / 4 significant descriptions (front page,
year, Yelp; the latents themselves 3 / 2 / 5) against 3 / 3 / 3 with 5 terms (seed 0).
The binarised latent is 1 where a ≥ τ (τ = the training 90th percentile of the latent when that is positive,
else any positive activation: a sparse TopK latent is zero on most texts) and 0 where a = 0; F1 is computed
on those texts only (texts with 0 < a < τ are neither, as in the paper's top-decile-vs-zero contrast). With an `LLMEndpoint`, the LLM writes
three "mentions …" candidates from 10 positive and 10 negative texts and annotates texts yes/no; if the
endpoint cannot be reached, the offline proxy is used and the note says so.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from saelab.errors import BadInputError

log = logging.getLogger(__name__)

NEGATIONS = {"not", "no", "nor", "never", "nothing", "none", "cannot", "without"}
TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z0-9']+\b|\b\d+\b"
PROXY_TAG = "PROXY"


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS - NEGATIONS)


@lru_cache(maxsize=1)
def analyzer():
    """The text → terms function shared by rules, contrast counts and the bag-of-words baseline."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(
        ngram_range=(1, 2), stop_words=list(stop_words()), token_pattern=TOKEN_PATTERN, preprocessor=_preprocess
    ).build_analyzer()


def _preprocess(text: str) -> str:
    # Some sets (Yelp) store line breaks as a literal backslash-n; "\nfood" must read as "food".
    return text.replace("\\n", " ").replace("\\r", " ").lower()


def text_terms(text: str) -> set[str]:
    return set(analyzer()(text))


def term_matrix(texts: Sequence[str], *, min_df: int = 3, max_features: int = 20_000, vocabulary=None):
    """Binary texts × terms matrix (scipy CSR) and its vocabulary (fitted on `texts` unless given)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(
        analyzer=analyzer(),
        binary=True,
        min_df=1 if vocabulary is not None else min_df,
        max_features=None if vocabulary is not None else max_features,
        vocabulary=vocabulary,
    )
    try:
        X = vec.fit_transform(texts) if vocabulary is None else vec.transform(texts)
    except ValueError as err:  # empty vocabulary
        raise BadInputError(f"No usable words in the training texts ({err}); are they all stop words?") from err
    return X.tocsr().astype(np.int8), [str(t) for t in vec.get_feature_names_out()]


@dataclass
class KeywordRule:
    """A checkable hypothesis: the text mentions any of `terms` (words or two-word phrases)."""

    terms: list[str]

    @property
    def label(self) -> str:
        quoted = ", ".join(f'"{t}"' for t in self.terms)
        return f"mentions any of: {quoted}"

    def annotate(self, texts: Sequence[str]) -> np.ndarray:
        wanted = set(self.terms)
        return np.array([bool(wanted & text_terms(t)) for t in texts], dtype=bool)

    def evidence(self, text: str) -> list[str]:
        """The rule's terms that occur in `text` (what a page highlights)."""
        return sorted(set(self.terms) & text_terms(text))


def evidence_words(terms: Sequence[str]) -> list[str]:
    """Single words to highlight for a list of terms (two-word phrases split into words)."""
    return sorted({w for t in terms for w in t.split()})


def highlight_spans(text: str, words: Sequence[str]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is_evidence) runs, matching whole words case-insensitively."""
    if not words:
        return [(text, False)]
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.I)
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 = 2·TP / (2·TP + FP + FN); 0 when there are no positives at all."""
    tp = int((pred & truth).sum())
    denom = 2 * tp + int((pred & ~truth).sum()) + int((~pred & truth).sum())
    return 2 * tp / denom if denom else 0.0


def binarise_threshold(acts_train: np.ndarray) -> float:
    """τ: the training 90th percentile when positive, else the smallest positive activation (see module doc)."""
    q = float(np.quantile(acts_train, 0.9))
    if q > 0:
        return q
    pos = acts_train[acts_train > 0]
    return float(pos.min()) if pos.size else float("inf")


@dataclass
class Interpretation:
    """The chosen hypothesis for one latent and how it was found.

    Attributes:
        label: the hypothesis text ("mentions any of: …" offline, or the LLM's sentence).
        source: "keywords" (offline PROXY) or "llm".
        terms: the keyword rule's terms ([] for an LLM hypothesis).
        fidelity_f1: F1 of the rule's annotations against the binarised latent on the validation split
            (top-decile texts = 1, zero texts = 0, the rest not scored).
        candidates: every candidate tried, with its validation φ and F1.
        fidelity_phi: φ of the rule's annotations with "the latent fires" (a > 0) over all validation texts
            (reported beside F1; NaN for an LLM hypothesis).
        threshold: τ used to binarise the latent.
        n_pos, n_neg: training texts in the top decile / where the latent is zero.
    """

    label: str
    source: str
    terms: list[str]
    fidelity_f1: float
    candidates: list[dict] = field(default_factory=list)
    threshold: float = float("nan")
    fidelity_phi: float = float("nan")
    n_pos: int = 0
    n_neg: int = 0

    @property
    def proxy(self) -> bool:
        return self.source == "keywords"


def contrast_scores(X_pos, X_neg) -> np.ndarray:
    """Smoothed log-odds ratio of each term's document frequency, positives vs negatives."""
    n_pos, n_neg = X_pos.shape[0], X_neg.shape[0]
    d_pos = np.asarray(X_pos.sum(0)).ravel().astype(np.float64)
    d_neg = np.asarray(X_neg.sum(0)).ravel().astype(np.float64)
    return np.log((d_pos + 0.5) / (n_pos - d_pos + 0.5)) - np.log((d_neg + 0.5) / (n_neg - d_neg + 0.5))


def _greedy(Xc: np.ndarray, truth: np.ndarray, max_terms: int) -> list[list[int]]:
    """Prefixes of a greedy rule: each step adds the column that raises F1 most (stops when none does)."""
    covered = np.zeros(Xc.shape[0], dtype=bool)
    chosen: list[int] = []
    prefixes: list[list[int]] = []
    best = 0.0
    n_true = int(truth.sum())
    for _ in range(max_terms):
        new = Xc & ~covered[:, None]
        tp = (covered & truth).sum() + (new & truth[:, None]).sum(0)
        pred_pos = covered.sum() + new.sum(0)
        scores = 2 * tp / np.maximum(pred_pos + n_true, 1)
        scores[chosen] = -1
        j = int(np.argmax(scores))
        if scores[j] <= best + 1e-9:
            break
        best = float(scores[j])
        chosen.append(j)
        covered |= Xc[:, j]
        prefixes.append(list(chosen))
    return prefixes


def keyword_candidates(
    X_train, vocab: list[str], acts_train: np.ndarray, *, max_terms: int = 5, pool: int = 200, min_support: int = 2
) -> tuple[list[KeywordRule], float, int, int]:
    """Candidate rules for one latent from the training term matrix; also τ, N₊, N₋."""
    tau = binarise_threshold(acts_train)
    truth = acts_train >= tau
    neg = acts_train <= 0
    n_pos, n_neg = int(truth.sum()), int(neg.sum())
    if n_pos == 0:
        return [], tau, 0, n_neg
    X_train = X_train.tocsr()
    X_pos, X_neg = X_train[truth], (X_train[neg] if n_neg else X_train[~truth])
    scores = contrast_scores(X_pos, X_neg)
    support = np.asarray(X_pos.sum(0)).ravel()
    # A term must occur in at least min_support (and 5 %) of the positives: rarer ones rarely generalise.
    scores[support < min(max(min_support, math.ceil(0.05 * n_pos)), n_pos)] = -np.inf
    order = [j for j in np.argsort(-scores)[:pool] if np.isfinite(scores[j]) and scores[j] > 0]
    if not order:
        return [], tau, n_pos, n_neg
    # Second ranking: difference in document frequency (favours common, broad terms over rare, sharp ones).
    diff = support / n_pos - np.asarray(X_neg.sum(0)).ravel() / max(X_neg.shape[0], 1)
    broad = [j for j in sorted(order, key=lambda j: -diff[j]) if diff[j] > 0]
    rules: list[list[int]] = [r[:k] for r in (order, broad) for k in (1, 3, 5) if k <= len(r) and k <= max_terms]
    rows = truth | neg  # the greedy rule, like the F1 score, contrasts the top decile with zeros
    Xc = X_train[rows][:, order].toarray().astype(bool)
    rules += [[order[i] for i in prefix] for prefix in _greedy(Xc, truth[rows], max_terms)]
    seen, out = set(), []
    for cols in rules:
        key = tuple(sorted(cols))
        if key not in seen:
            seen.add(key)
            out.append(KeywordRule([vocab[j] for j in cols]))
    return out, tau, n_pos, n_neg


def phi(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 0/1 vectors (φ coefficient); 0 when either is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def choose(candidates: Sequence, annotations: Sequence[np.ndarray], truth_val: np.ndarray) -> tuple[int, list[float]]:
    """Index of the candidate whose validation annotations have the best F1 (first one on ties)."""
    scores = [f1(np.asarray(a, dtype=bool), truth_val) for a in annotations]
    return int(np.argmax(scores)), scores


def interpret_keywords(
    X_train, vocab: list[str], acts_train: np.ndarray, val_texts: Sequence[str], acts_val: np.ndarray, *, max_terms=10
) -> Interpretation | None:
    """The best offline keyword rule for one latent, or None when no term separates it at all."""
    rules, tau, n_pos, n_neg = keyword_candidates(X_train, vocab, acts_train, max_terms=max_terms)
    if not rules:
        return None
    annotations = [r.annotate(val_texts) for r in rules]
    phis = [phi(a, acts_val > 0) for a in annotations]
    scored = (acts_val >= tau) | (acts_val <= 0)  # top decile vs zero; texts in between are not scored
    best, f1s = choose(rules, [a[scored] for a in annotations], acts_val[scored] >= tau)
    return Interpretation(
        label=rules[best].label,
        source="keywords",
        terms=rules[best].terms,
        fidelity_f1=f1s[best],
        fidelity_phi=phis[best],
        candidates=[{"label": r.label, "val_phi": p, "val_f1": s} for r, p, s in zip(rules, phis, f1s)],
        threshold=tau,
        n_pos=n_pos,
        n_neg=n_neg,
    )
