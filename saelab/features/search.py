"""Find latents: by words in their labels, or by the token they fire hardest on.

`search_labels` ranks labels against a query (exact rule token > rule token prefix > substring > words).
`search_token` looks a token up in an inverted index of every latent's top contexts (the token at the
max-activating position), built once per store and cached.
"""

from __future__ import annotations

import ast
import re
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from saelab.errors import BadInputError
from saelab.features.labels import LabelSet, dashboard_arrays, dashboard_ctx_left, latents_file

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_WORD = re.compile(r"\w+")


class LabelHit(NamedTuple):
    latent: int
    label: str
    score: float


class TokenHit(NamedTuple):
    latent: int
    count: int  # top contexts whose max-activating token is the query
    mean_act: float  # mean activation at those positions


# ---------------------------------------------------------------- labels


def _label_rows(labels: LabelSet | Mapping[str, Any]) -> list[tuple[int, str, float]]:
    """(latent, label, detection balanced accuracy or 0) for offline and, if present, LLM labels."""
    data = labels.to_dict() if isinstance(labels, LabelSet) else labels
    if not isinstance(data, Mapping) or not isinstance(data.get("latents"), list):
        raise BadInputError("search_labels needs a LabelSet or a parsed labels.json (with a 'latents' list).")
    rows = [
        (i, str(x.get("label", "")), x.get("detection_balanced_accuracy") or 0.0) for i, x in enumerate(data["latents"])
    ]
    llm = data.get("llm") or {}
    for key, x in (llm.get("latents") or {}).items():
        if isinstance(x, Mapping) and x.get("label"):
            rows.append((int(key), str(x["label"]), x.get("detection_balanced_accuracy") or 0.0))
    return rows


def _rule_tokens(label: str) -> list[str]:
    out = []
    for lit in _QUOTED.findall(label):
        try:
            out.append(str(ast.literal_eval(lit)))
        except (ValueError, SyntaxError):
            out.append(lit[1:-1])
    return out


def _score(query: str, label: str) -> float:
    """3 = a rule token equals the query, 2 = one starts with it, 1 = substring, <1 = share of query words."""
    q = query.casefold()
    toks = [t.strip().casefold() for t in _rule_tokens(label)]
    if q in toks:
        return 3.0
    if any(t.startswith(q) for t in toks if t):
        return 2.0
    text = label.casefold()
    if q in text:
        return 1.0
    words = _WORD.findall(q)
    if not words:
        return 0.0
    found = set(_WORD.findall(text))
    return 0.9 * sum(w in found for w in words) / len(words)


def search_labels(labels: LabelSet | Mapping[str, Any], query: str, limit: int = 20) -> list[LabelHit]:
    """Latents whose label matches `query` (case-insensitive), best first.

    Score (see `_score`): 3 exact rule token, 2 rule-token prefix, 1 substring of the label, up to 0.9 for the
    share of query words in the label; a query that is a number also matches that latent id (score 4). Ties go
    to the label with the higher detection score, then the lower latent id. Each latent appears once.
    """
    if not isinstance(query, str) or not query.strip():
        raise BadInputError("Type a word or token to search the labels for.")
    q = query.strip()
    best: dict[int, tuple[float, float, str]] = {}
    for latent, label, det in _label_rows(labels):
        s = 4.0 if q.isdigit() and int(q) == latent else _score(q, label)
        if s > 0 and (latent not in best or (s, det) > best[latent][:2]):
            best[latent] = (s, float(det), label)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    return [LabelHit(latent, label, score) for latent, (score, _, label) in ranked[: max(0, int(limit))]]


# ---------------------------------------------------------------- tokens


class QualityRow(NamedTuple):
    latent: int
    label: str
    token_ba: float | None  # token-level balanced accuracy on the TEST half (None: not scored)
    sequence_ba: float | None
    family: str


QUALITY_LEVELS = ("token", "sequence")


def labels_by_quality(
    labels: LabelSet, *, level: str = "token", min_score: float = 0.0, best_first: bool = True, limit: int = 200
) -> tuple[list[QualityRow], int]:
    """Scored latents whose label score at `level` is ≥ `min_score`, best (or worst) first, and how many match.

    Latents without a score at that level are left out (dead, too rare, or firing almost everywhere)."""
    if level not in QUALITY_LEVELS:
        raise BadInputError(f"level must be one of {QUALITY_LEVELS}, got {level!r}")
    rows = []
    for i, lab in enumerate(labels.latents):
        score = lab.token_balanced_accuracy if level == "token" else lab.detection_balanced_accuracy
        if score is None or score < min_score:
            continue
        rows.append(QualityRow(i, lab.label, lab.token_balanced_accuracy, lab.detection_balanced_accuracy,
                               lab.rule_family or ""))  # fmt: skip
    key = (lambda r: (-(r.token_ba if level == "token" else r.sequence_ba), r.latent)) if best_first else (
        lambda r: ((r.token_ba if level == "token" else r.sequence_ba), r.latent))  # fmt: skip
    rows.sort(key=key)
    return rows[:limit], len(rows)


class _TokenIndex:
    """Max-activating tokens of all top contexts, sorted by token id: a token's hits are one slice."""

    def __init__(self, top_tokens: np.ndarray, top_acts: np.ndarray, ctx_left: int):
        tok = np.asarray(top_tokens[:, :, ctx_left]).astype(np.int64)
        act = np.asarray(top_acts[:, :, ctx_left]).astype(np.float32)
        lat = np.broadcast_to(np.arange(tok.shape[0])[:, None], tok.shape)
        ok = (tok >= 0) & (act > 0)
        order = np.argsort(tok[ok], kind="stable")
        self.tokens = tok[ok][order]
        self.latents = lat[ok][order]
        self.acts = act[ok][order]

    def hits(self, token_ids: list[int]) -> list[TokenHit]:
        sel = [slice(*np.searchsorted(self.tokens, [t, t + 1])) for t in token_ids]
        lat = np.concatenate([self.latents[s] for s in sel]) if sel else np.zeros(0, np.int64)
        act = np.concatenate([self.acts[s] for s in sel]) if sel else np.zeros(0, np.float32)
        if lat.size == 0:
            return []
        ids, inv, counts = np.unique(lat, return_inverse=True, return_counts=True)
        means = np.bincount(inv, weights=act) / counts
        return [TokenHit(int(i), int(c), float(m)) for i, c, m in zip(ids, counts, means)]


_INDEX_BY_OBJECT: weakref.WeakKeyDictionary[Any, _TokenIndex] = weakref.WeakKeyDictionary()
_INDEX_BY_FILE: dict[tuple[str, int], _TokenIndex] = {}
_INDEX_LOCK = threading.Lock()  # Streamlit sessions share the cache


def _token_index(store: Any) -> _TokenIndex:
    path = latents_file(store)
    file_key = (str(Path(path).resolve()), path.stat().st_mtime_ns) if path is not None else None
    with _INDEX_LOCK:
        if file_key is not None and file_key in _INDEX_BY_FILE:
            return _INDEX_BY_FILE[file_key]
        try:
            if store in _INDEX_BY_OBJECT:
                return _INDEX_BY_OBJECT[store]
        except TypeError:  # not weak-referenceable or not hashable (a dict of arrays): no object cache
            pass
    arrays, meta = dashboard_arrays(store, ("top_tokens", "top_acts"))
    if "top_tokens" not in arrays or "top_acts" not in arrays:
        raise BadInputError("The dashboard data has no top contexts (top_tokens/top_acts) to search.")
    index = _TokenIndex(arrays["top_tokens"], arrays["top_acts"], dashboard_ctx_left(meta, arrays["top_tokens"]))
    with _INDEX_LOCK:
        if file_key is not None:
            _INDEX_BY_FILE.clear()  # one file at a time: the index of a 6k-latent SAE is a few MB
            _INDEX_BY_FILE[file_key] = index
        else:
            try:
                _INDEX_BY_OBJECT[store] = index
            except TypeError:
                pass
    return index


def query_token_ids(tokenizer, token_text: str) -> list[int]:
    """The single-token ids `token_text` names, with and without a leading space."""
    if not isinstance(token_text, str) or not token_text.strip():
        raise BadInputError("Type a token to search for, e.g. Paris.")
    core = token_text.lstrip(" ") or token_text
    variants = list(dict.fromkeys([token_text, core, " " + core]))
    ids: list[int] = []
    pieces: dict[str, list[str]] = {}
    for v in variants:
        enc = tokenizer(v, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.append(int(enc[0]))
        else:
            pieces[v] = [tokenizer.decode([t]) for t in enc]
    if not ids:
        shown = "; ".join(f"{v!r} → {p}" for v, p in pieces.items())
        raise BadInputError(f"{token_text!r} is not a single token ({shown}); search for one of its pieces.")
    return list(dict.fromkeys(ids))


def search_token(store: Any, tokenizer, token_text: str, limit: int = 20) -> list[TokenHit]:
    """Latents whose top contexts peak on `token_text` (with or without a leading space), best first.

    Ranked by how many of the latent's top contexts peak on the token, then by the mean activation there.
    `store`: a `DashboardStore`, an SAE folder, or a mapping of dashboard arrays with "meta".
    """
    ids = query_token_ids(tokenizer, token_text)
    hits = _token_index(store).hits(ids)
    hits.sort(key=lambda h: (-h.count, -h.mean_act, h.latent))
    return hits[: max(0, int(limit))]


__all__ = ["LabelHit", "TokenHit", "query_token_ids", "search_labels", "search_token"]
