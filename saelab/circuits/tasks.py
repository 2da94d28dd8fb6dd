"""Circuit tasks: pairs of (clean, corrupted) prompts, their answer tokens and the metric that scores them.

A task is a list of `PromptPair`s. The clean prompt is a *positive* (the model can predict the answer), the
corrupted prompt a *negative* (it cannot). Built-in tasks are adapted to the default tokenizer (SmolLM2: names
and argument words are single tokens with a leading space; digits are single tokens):
    ioi           "When Mary and John went to the store, John gave a drink to" → " Mary" (vs " John");
                  corrupted: three distinct names (ABC).
    greater-than  "The war lasted from the year 17YY to the year 17" → a digit > Y₁ (the tens digit of YY);
                  corrupted: YY = 01.
    docstring     a Python def with three arguments and a docstring listing two of them: "    :param" → the
                  third argument; corrupted: the def's arguments renamed (the docstring stays).
Users can upload their own pairs as CSV (`pairs_from_csv`). `tokenize_task` turns a task into `PairBatch`es
of equal-length prompts (methods that patch position by position need clean and corrupted to align).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from saelab.errors import BadInputError

if TYPE_CHECKING:  # torch is imported lazily: `saelab --help` lists tasks without it
    import torch

MAX_PAIRS = 500
MAX_PROMPT_TOKENS = 128  # per prompt: patching repeats the forward per layer/head, so one long prompt costs GBs
MAX_CELL_CHARS = 32 * MAX_PROMPT_TOKENS  # refused before tokenising: no 128-token prompt is this long
MAX_CSV_BYTES = 4 * 2**20
CSV_COLUMNS = ("clean", "corrupted", "correct", "wrong")


@dataclass(frozen=True)
class Metric:
    """How a task scores the last-position logits. `formula` is shown wherever the numbers are."""

    name: str
    formula: str
    solved: str


METRICS: dict[str, Metric] = {
    "logit_diff": Metric(
        "logit_diff",
        "m = mean logit over the correct answer tokens − mean logit over the wrong answer tokens (last position)",
        "solved when m > 0 (the correct answer outscores the wrong one)",
    ),
    "prob_diff": Metric(
        "prob_diff",
        "m = Σ p(correct tokens) − Σ p(wrong tokens), p = softmax of the last-position logits",
        "solved when m > 0 (more probability on valid answers than on invalid ones)",
    ),
}


@dataclass
class PromptPair:
    """One positive/negative pair. `correct`/`wrong` are answer strings, each exactly one token."""

    clean: str
    corrupted: str
    correct: list[str]
    wrong: list[str]


@dataclass
class CircuitTask:
    """A named set of prompt pairs with its metric."""

    name: str
    description: str
    metric: str
    pairs: list[PromptPair]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise BadInputError(f"Unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}.")
        if not self.pairs:
            raise BadInputError(f"Task {self.name!r} has no prompt pairs.")

    def subset(self, idx) -> CircuitTask:
        return CircuitTask(self.name, self.description, self.metric, [self.pairs[int(i)] for i in idx],
                           {**self.provenance, "subset": [int(i) for i in idx]})  # fmt: skip


@dataclass
class PairBatch:
    """Equal-length pairs, ready for the model.

    Attributes:
        idx: positions of these pairs in the task, [B].
        clean, corrupted: token ids [B, P] (same P for both: patching aligns positions).
        correct_mask, wrong_mask: bool [B, d_vocab], the answer tokens of each pair.
    """

    idx: np.ndarray
    clean: torch.Tensor
    corrupted: torch.Tensor
    correct_mask: torch.Tensor
    wrong_mask: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.idx)


@dataclass
class PairMetrics:
    """Per-pair metrics of the unpatched runs, in task order (NaN for pairs not run)."""

    clean: np.ndarray
    corrupted: np.ndarray

    @property
    def gap(self) -> float:
        return float(np.nanmean(self.clean) - np.nanmean(self.corrupted))


def metric_values(metric: str, logits, correct_mask, wrong_mask):
    """The task metric for each row of last-position `logits` [B, V] → [B] (see `METRICS` formulas)."""
    c, w = correct_mask.to(logits.dtype), wrong_mask.to(logits.dtype)
    if metric == "logit_diff":
        return (logits * c).sum(-1) / c.sum(-1) - (logits * w).sum(-1) / w.sum(-1)
    if metric == "prob_diff":
        p = logits.float().softmax(-1)
        return (p * c).sum(-1) - (p * w).sum(-1)
    raise BadInputError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")


# ---------------------------------------------------------------------------------------------- built-ins
NAMES = ["Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Kate", "Paul", "Lisa", "Anna", "Mike",
         "Sarah", "David", "Emma", "Jack", "Alice", "Bob", "Peter"]  # fmt: skip
IOI_TEMPLATES = [
    "When {A} and {B} went to the store, {C} gave a drink to",
    "Then, {A} and {B} had a long argument. Afterwards {C} said to",
    "After {A} and {B} went to the park, {C} gave a ball to",
]
ARG_WORDS = ["files", "port", "mode", "name", "path", "size", "data", "key", "value", "url", "user", "config",
             "text", "count", "index", "timeout", "host", "limit", "query", "source"]  # fmt: skip
DOC_FUNCS = [("load", "Load the data."), ("send", "Send the request."), ("parse", "Parse the input."),
             ("update", "Update the state.")]  # fmt: skip
DOC_TEMPLATE = (
    'def {f}(self, {a}, {b}, {c}):\n    """{doc}\n\n    :param {a}: the {a}\n    :param {b}: the {b}\n    :param'
)
YEAR_PROMPT = "The war lasted from the year 17{yy} to the year 17"


def ioi_task(n: int = 24, seed: int = 0) -> CircuitTask:
    """IOI: ABBA and BABA orders alternate; the corrupted prompt names a third person as the giver (ABC)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        a, b, c = (NAMES[j] for j in rng.choice(len(NAMES), 3, replace=False))  # a: indirect object, b: subject
        tpl = IOI_TEMPLATES[i % len(IOI_TEMPLATES)]
        first, second = (a, b) if (i // len(IOI_TEMPLATES)) % 2 == 0 else (b, a)  # ABBA / BABA
        clean = tpl.format(A=first, B=second, C=b)
        corrupted = tpl.format(A=first, B=second, C=c)
        pairs.append(PromptPair(clean, corrupted, [" " + a], [" " + b]))
    return CircuitTask("ioi", "Indirect object identification: predict the name that is not repeated "
                       "(ABBA/BABA) versus prompts with three distinct names.", "logit_diff", pairs,
                       {"builtin": "ioi", "n": n, "seed": seed, "templates": IOI_TEMPLATES})  # fmt: skip


def greater_than_task(n: int = 24, seed: int = 0) -> CircuitTask:
    """Greater-than on digit tokens: after "17" the next token is the end year's tens digit.

    Correct = digits > Y₁ (certainly a later year), wrong = digits < Y₁ (certainly earlier); the digit Y₁ itself
    is ambiguous (1745 → 1748 is valid, 1745 → 1741 is not) and counts on neither side.
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        tens, units = int(rng.integers(2, 9)), int(rng.integers(1, 10))
        correct = [str(d) for d in range(tens + 1, 10)]
        wrong = [str(d) for d in range(0, tens)]
        pairs.append(PromptPair(YEAR_PROMPT.format(yy=f"{tens}{units}"), YEAR_PROMPT.format(yy="01"), correct, wrong))
    return CircuitTask("greater-than", "Greater-than: the end year must exceed 17YY (YY tens digit 2–8) versus "
                       "YY = 01.", "prob_diff", pairs, {"builtin": "greater-than", "n": n, "seed": seed})  # fmt: skip


def docstring_task(n: int = 24, seed: int = 0) -> CircuitTask:
    """Code completion in the spirit of the docstring task: name the next argument in `:param` lines."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        a, b, c, x, y, z = (ARG_WORDS[j] for j in rng.choice(len(ARG_WORDS), 6, replace=False))
        f, doc = DOC_FUNCS[i % len(DOC_FUNCS)]
        clean = DOC_TEMPLATE.format(f=f, doc=doc, a=a, b=b, c=c)
        corrupted = clean.replace(f"(self, {a}, {b}, {c})", f"(self, {x}, {y}, {z})", 1)
        pairs.append(PromptPair(clean, corrupted, [" " + c], [" " + a, " " + b]))
    return CircuitTask("docstring", "Docstring completion: after ':param' predict the def's next unused argument "
                       "versus prompts whose def arguments were renamed.", "logit_diff", pairs,
                       {"builtin": "docstring", "n": n, "seed": seed, "template": DOC_TEMPLATE})  # fmt: skip


BUILTIN_TASKS: dict[str, Callable[..., CircuitTask]] = {
    "ioi": ioi_task,
    "greater-than": greater_than_task,
    "docstring": docstring_task,
}


def builtin_task(name: str, n: int = 24, seed: int = 0) -> CircuitTask:
    if name not in BUILTIN_TASKS:
        raise BadInputError(f"Unknown task {name!r}; built-in tasks: {', '.join(BUILTIN_TASKS)} (or upload a CSV).")
    if not 2 <= n <= MAX_PAIRS:
        raise BadInputError(f"Number of prompts must be between 2 and {MAX_PAIRS}, got {n}.")
    return BUILTIN_TASKS[name](n=n, seed=seed)


# ---------------------------------------------------------------------------------------------- CSV upload
def pairs_from_csv(data: bytes | str | Path, *, name: str = "upload", metric: str = "logit_diff") -> CircuitTask:
    """A task from CSV columns clean, corrupted, correct, wrong (one answer token each; several with '|').

    Refuses (BadInputError, saying what to fix): empty files, missing columns, empty cells, more than
    MAX_PAIRS rows. Token checks (single-token answers, equal lengths) happen in `tokenize_task`.
    """
    if isinstance(data, Path):
        data = data.read_bytes()
    if len(data) > MAX_CSV_BYTES:
        raise BadInputError(f"The CSV is {len(data) / 2**20:.1f} MiB; at most {MAX_CSV_BYTES // 2**20} MiB "
                            f"({MAX_PAIRS} prompt pairs) are accepted.")  # fmt: skip
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise BadInputError(f"The CSV is not UTF-8 text ({err}); save it as UTF-8 and upload again.") from err
    if not data.strip():
        raise BadInputError(f"The CSV is empty; it needs a header row with columns {', '.join(CSV_COLUMNS)}.")
    try:
        rows = list(csv.DictReader(io.StringIO(data)))
    except csv.Error as err:
        raise BadInputError(f"The CSV cannot be parsed ({err}).") from err
    header = [c.strip().lower() for c in (csv.DictReader(io.StringIO(data)).fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise BadInputError(f"The CSV lacks column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}. "
                            f"Needed: {', '.join(CSV_COLUMNS)} (answers: one token each, several joined by '|').")  # fmt: skip
    if not rows:
        raise BadInputError("The CSV has a header but no rows; add at least two prompt pairs.")
    if len(rows) > MAX_PAIRS:
        raise BadInputError(f"The CSV has {len(rows):,} rows; at most {MAX_PAIRS} pairs are allowed.")
    pairs = []
    for i, raw in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them (header = 1)
        row = {(k or "").strip().lower(): (v or "") for k, v in raw.items()}
        for col in CSV_COLUMNS:
            if not row[col].strip():
                raise BadInputError(f"Line {i}: column {col!r} is empty.")
            if len(row[col]) > MAX_CELL_CHARS:
                raise BadInputError(f"Line {i}: column {col!r} has {len(row[col]):,} characters; prompts are limited "
                                    f"to {MAX_PROMPT_TOKENS} tokens.")  # fmt: skip
        correct = [a for a in row["correct"].split("|") if a]
        wrong = [a for a in row["wrong"].split("|") if a]
        if set(correct) & set(wrong):
            raise BadInputError(f"Line {i}: answer(s) {sorted(set(correct) & set(wrong))} are both correct and wrong.")
        pairs.append(PromptPair(row["clean"], row["corrupted"], correct, wrong))
    if len(pairs) < 2:
        raise BadInputError("The CSV has one prompt pair; upload at least two.")
    return CircuitTask(name, f"Uploaded prompt pairs ({len(pairs)})", metric, pairs, {"csv": name, "rows": len(pairs)})


def _answer_id(tokenizer, answer: str, where: str) -> int:
    ids = tokenizer.encode(answer, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([t]) for t in ids]
        raise BadInputError(f"{where}: answer {answer!r} is {len(ids)} tokens {pieces}, not one. Use a single-token "
                            "answer (mind the leading space: ' Mary' and 'Mary' are different tokens).")  # fmt: skip
    return int(ids[0])


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids as the model reads a prompt: the tokenizer's own special tokens (SmolLM2 prepends <|im_start|>)."""
    return list(tokenizer.encode(text))


def tokenize_task(task: CircuitTask, tokenizer, d_vocab: int, *, max_batch: int = 32) -> list[PairBatch]:
    """Equal-length `PairBatch`es (pairs grouped by prompt length, at most `max_batch` pairs each).

    Raises BadInputError when a pair's clean and corrupted prompts tokenize to different lengths (patching
    swaps activations position by position) or when an answer is not exactly one token.
    """
    import torch

    groups: dict[int, list[tuple[int, list[int], list[int], list[int], list[int]]]] = {}
    for i, pair in enumerate(task.pairs):
        where = f"Pair {i + 1}"
        clean, corrupted = encode_prompt(tokenizer, pair.clean), encode_prompt(tokenizer, pair.corrupted)
        if max(len(clean), len(corrupted)) > MAX_PROMPT_TOKENS:
            raise BadInputError(
                f"{where}: the prompt is {max(len(clean), len(corrupted))} tokens; circuit prompts are limited to "
                f"{MAX_PROMPT_TOKENS} tokens (patching reruns the model once per layer and head). Shorten it."
            )
        if len(clean) != len(corrupted):
            raise BadInputError(
                f"{where}: the clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)}; patching "
                "swaps activations position by position, so each pair must have the same number of tokens. "
                "Change words so both sides tokenize alike (e.g. names that are one token each)."
            )
        if not pair.correct or not pair.wrong:
            raise BadInputError(f"{where}: needs at least one correct and one wrong answer token.")
        correct = [_answer_id(tokenizer, a, where) for a in pair.correct]
        wrong = [_answer_id(tokenizer, a, where) for a in pair.wrong]
        if set(correct) & set(wrong):
            raise BadInputError(f"{where}: the same token is listed as correct and as wrong.")
        if max(correct + wrong) >= d_vocab:
            raise BadInputError(f"{where}: an answer token id is outside the model's vocabulary ({d_vocab}).")
        groups.setdefault(len(clean), []).append((i, clean, corrupted, correct, wrong))
    batches = []
    for _length, items in sorted(groups.items()):
        for start in range(0, len(items), max_batch):
            chunk = items[start : start + max_batch]
            cm = torch.zeros(len(chunk), d_vocab, dtype=torch.bool)
            wm = torch.zeros(len(chunk), d_vocab, dtype=torch.bool)
            for r, (_, _, _, correct, wrong) in enumerate(chunk):
                cm[r, correct] = True
                wm[r, wrong] = True
            batches.append(PairBatch(
                idx=np.array([c[0] for c in chunk]),
                clean=torch.tensor([c[1] for c in chunk]),
                corrupted=torch.tensor([c[2] for c in chunk]),
                correct_mask=cm,
                wrong_mask=wm,
            ))  # fmt: skip
    return batches
