"""The offline concept suite for steering evaluation, built from real labelled `sae-probes` data.

Each `Concept` names a dataset and the label(s) that mean "this concept"; the other rows of the same dataset are
its negatives. `concept_data` splits them, with a seed, into parts that never share a text:
  * `train_pos` / `train_neg` — for computing directions (DiffMean, PCA, probe) and choosing the SAE latent;
  * `judge_examples`          — held-out positives the PROXY concept judge compares outputs with.
AxBench uses 72 positive + 72 negative training texts per concept; that is the default `n_train`.

`INSTRUCTIONS` are general requests with no built-in topic (written for this project in the spirit of the
Alpaca-Eval prompts AxBench steers on); each has a stable id, and the evaluation splits them 50/50 by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from saelab.configs import DictConfig
from saelab.errors import BadInputError


@dataclass(frozen=True)
class Concept:
    """A concept: `description` is the words a prompt or an LLM judge uses; rows of `dataset` whose target is in
    `positive` show it. `max_chars` trims long texts (code files) to their first characters."""

    name: str
    description: str
    dataset: str
    positive: tuple[str, ...]
    max_chars: int = 400


CONCEPTS: dict[str, Concept] = {
    c.name: c
    for c in (
        Concept("sports_news", "sports: matches, teams, athletes and results", "97_news_class", ("Sport",)),
        Concept("politics_news", "politics: governments, elections and politicians", "97_news_class", ("Politics",)),
        Concept(
            "technology_news", "technology: computers, software and the internet", "97_news_class", ("Technology",)
        ),
        Concept("positive_sentiment", "enthusiastic praise and positive feelings", "113_movie_sent", ("1",)),
        Concept("python_code", "Python source code", "159_code_Python", ("1",)),
        Concept("html_code", "HTML markup and web page code", "160_code_HTML", ("1",)),
        Concept("high_school", "high school (the secondary school)", "65_high-school", ("bigram",)),
        Concept("mental_health", "mental health and its care", "85_mental-health", ("bigram",)),
        Concept("spam", "spam messages: prizes, offers and 'text now' calls to action", "96_spam_is", ("1",)),
        Concept("happiness", "happiness and joyful, cheerful feelings", "149_twt_emotion_happiness", ("1",)),
        Concept("social_media", "social media platforms and online posting", "71_social-media", ("bigram",)),
        Concept("offensive_language", "offensive, insulting language", "107_hate_offensive", ("1",)),
    )
}
DEFAULT_CONCEPTS: tuple[str, ...] = tuple(CONCEPTS)[:10]

INSTRUCTIONS: tuple[str, ...] = (
    "Give me three tips for staying focused while studying.",
    "Describe your ideal weekend.",
    "Explain how a bicycle works to a ten-year-old.",
    "Write a short note thanking a neighbour for their help.",
    "What should I pack for a three-day trip?",
    "Suggest a simple recipe for dinner tonight.",
    "How can I get better at remembering names?",
    "Write a few sentences about the ocean.",
    "What are some good habits for a healthy morning?",
    "Tell me a short story about a lost key.",
    "How do I keep a houseplant alive?",
    "Explain why the sky looks blue.",
    # 12-35: added for the powered run (issue 17 item 2); ids 0-11 keep their meaning
    "How do I start learning to draw?",
    "Write a short poem about autumn leaves.",
    "What is a good way to organise a small closet?",
    "Describe the smell of fresh bread.",
    "How can I make a long car journey more pleasant?",
    "Give me advice for writing a polite email to a landlord.",
    "Explain how rain forms.",
    "What are fun things to do on a rainy afternoon?",
    "Tell me a short story about a friendly dog.",
    "How should I prepare for a job interview?",
    "Describe a busy train station in the morning.",
    "What makes a good birthday present for a friend?",
    "Explain how a refrigerator keeps food cold.",
    "Suggest a plan for cleaning a kitchen quickly.",
    "Write a short note inviting a colleague to lunch.",
    "How do I choose a good pair of walking shoes?",
    "Describe a quiet evening at home.",
    "What are some tips for sleeping better?",
    "Explain how a compass works.",
    "Tell me a short story about a boat on a lake.",
    "How can I save money on groceries?",
    "Describe what a garden looks like in spring.",
    "Give me ideas for a picnic menu.",
    "How do I teach a child to tie their shoes?",
)

# Instructions used only to calibrate the proxy concept judge (unsteered outputs; never selected or reported on).
CALIBRATION_INSTRUCTIONS: tuple[str, ...] = (
    "Describe a walk through a city park.",
    "How do I fold a paper airplane?",
    "Write a few sentences about mountains.",
    "What should I do on a free Sunday morning?",
    "Explain how a light bulb works.",
    "Tell me a short story about a lost umbrella.",
    "Suggest a weekly routine for staying organised.",
    "How can I make new friends in a new town?",
    "Describe the sound of a thunderstorm.",
    "What are good ways to relax after work?",
    "Explain how bees make honey.",
    "Write a short thank-you note to a teacher.",
    "How do I plan a simple vegetable garden?",
    "Describe a visit to a farmers' market.",
    "What are tips for learning a new language?",
    "Tell me a short story about a cat on a roof.",
    "How do I keep a bicycle in good condition?",
    "Describe the view from a tall building.",
    "What should I bring to a beach day?",
    "Explain how a clock keeps time.",
    "Give me ideas for a rainy-day craft.",
    "How can I be more patient?",
    "Describe an old library.",
    "What are good questions to ask a new neighbour?",
)


@dataclass
class ConceptData:
    """The texts of one concept, split so that no text is in two parts (`provenance` records how)."""

    concept: Concept
    train_pos: list[str]
    train_neg: list[str]
    judge_examples: list[str]
    provenance: dict = field(default_factory=dict)


@dataclass
class SuiteConfig(DictConfig):
    """How much of each concept's data to use. AxBench: 72 + 72 training texts."""

    n_train: int = 72
    n_judge: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_train", "n_judge"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 2 <= value <= 2000:
                raise BadInputError(f"{name} must be an integer between 2 and 2000, got {value!r}.")


def get_concepts(names: list[str] | tuple[str, ...] | None = None) -> list[Concept]:
    """The named concepts (all defaults when None); unknown or no names → a clear error."""
    if names is None:
        names = DEFAULT_CONCEPTS
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise BadInputError(f"Pick at least one concept; available: {', '.join(CONCEPTS)}.")
    unknown = [n for n in names if n not in CONCEPTS]
    if unknown:
        raise BadInputError(f"Unknown concept(s) {unknown}; available: {', '.join(CONCEPTS)}.")
    return [CONCEPTS[n] for n in dict.fromkeys(names)]


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _clean(texts, max_chars: int) -> list[str]:
    out, seen = [], set()
    for t in texts:
        if not isinstance(t, str):
            continue
        t = t.strip()[:max_chars].strip()
        key = _key(t)
        if len(t) >= 10 and key not in seen:
            seen.add(key)
            out.append(t)
    return out


@lru_cache(maxsize=32)
def _concept_data(name: str, n_train: int, n_judge: int, seed: int) -> ConceptData:
    from saelab.corpus import load_dataset

    concept = CONCEPTS[name]
    df = load_dataset(concept.dataset)
    is_pos = df["target"].astype(str).isin(concept.positive).to_numpy()
    pos = _clean(df["prompt"][is_pos], concept.max_chars)
    neg = _clean(df["prompt"][~is_pos], concept.max_chars)
    pos_keys = {_key(t) for t in pos}
    neg_keys = {_key(t) for t in neg}
    pos = [t for t in pos if _key(t) not in neg_keys]  # a text labelled both ways is dropped from both
    neg = [t for t in neg if _key(t) not in pos_keys]
    need = n_train + n_judge
    if len(pos) < need or len(neg) < n_train:
        raise BadInputError(
            f"{concept.dataset} has {len(pos)} usable positive and {len(neg)} negative texts for {name!r}; "
            f"{need} positives and {n_train} negatives are needed. Lower n_train / n_judge."
        )
    rng = np.random.default_rng(seed)
    pos_order = rng.permutation(len(pos))
    neg_order = rng.permutation(len(neg))
    return ConceptData(
        concept=concept,
        train_pos=[pos[i] for i in pos_order[:n_train]],
        train_neg=[neg[i] for i in neg_order[:n_train]],
        judge_examples=[pos[i] for i in pos_order[n_train:need]],
        provenance={
            "dataset": concept.dataset,
            "positive_labels": list(concept.positive),
            "seed": seed,
            "n_train_per_class": n_train,
            "n_judge_examples": n_judge,
            "split": "rows deduplicated (whitespace/case), shuffled with the seed; positives [0, n_train) train, "
            "[n_train, n_train + n_judge) judge examples; negatives [0, n_train) train",
            "max_chars": concept.max_chars,
        },
    )


def concept_data(name: str, cfg: SuiteConfig | None = None) -> ConceptData:
    """Split one concept's texts (cached). See the module docstring."""
    cfg = cfg or SuiteConfig()
    get_concepts([name])
    return _concept_data(name, cfg.n_train, cfg.n_judge, cfg.seed)


def get_instructions(n: int | None = None) -> list[tuple[int, str]]:
    """(id, instruction) pairs: the first `n` (all when None)."""
    if n is None:
        n = len(INSTRUCTIONS)
    if not isinstance(n, int) or not 2 <= n <= len(INSTRUCTIONS):
        raise BadInputError(f"Use between 2 and {len(INSTRUCTIONS)} instructions (need two halves), got {n!r}.")
    return list(enumerate(INSTRUCTIONS[:n]))


def split_instructions(ids: list[int], seed: int = 0) -> tuple[list[int], list[int]]:
    """Split instruction ids 50/50 (seeded): the first half picks the factor, the second half is reported."""
    if len(ids) < 2:
        raise BadInputError("At least two instructions are needed: one half picks the factor, the other reports.")
    order = np.random.default_rng(seed).permutation(sorted(ids)).tolist()
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])
