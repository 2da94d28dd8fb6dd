"""Match the latents of two SAEs of one model by the cosine of their decoder directions.

    cos(i, j) = W_dec_a[i]·W_dec_b[j] / (‖W_dec_a[i]‖ ‖W_dec_b[j]‖)

For every latent of each side: its best match on the other side (max cosine). A one-to-one assignment of
min(d_a, d_b) pairs maximising the total cosine (Hungarian / Jonker–Volgenant, `linear_sum_assignment`, exact)
for matrices up to `MAX_EXACT_ENTRIES` entries (a 4,608 × 4,608 pair takes a few seconds, see bench/compare.py);
larger ones use a greedy assignment over each row's top-`TOP_K` candidates in descending cosine (not exact; the
result says so). Feature splits: for each latent of the narrower SAE, the latents of the wider one whose best
match is it with cosine ≥ threshold, when there are at least two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.errors import BadInputError, CorruptFileError
from saelab.typed_json import checked_fields

KIND = "saelab-sae-match"
DEFAULT_THRESHOLD = 0.7
CHUNK = 1024
MAX_EXACT_ENTRIES = 8192 * 8192  # float32 cosine matrix of 256 MiB; the solver copies it as float64
TOP_K = 16

FORMULAS = {
    "cosine": "cos(i,j) = W_dec_a[i]·W_dec_b[j] / (‖W_dec_a[i]‖ ‖W_dec_b[j]‖)  (float32; a zero row has cosine 0)",
    "best_match": "best_a[i] = max_j cos(i,j); best_b[j] = max_i cos(i,j)",
    "assignment": "one-to-one pairs (i, π(i)), min(d_a, d_b) of them, maximising Σ cos(i, π(i)) "
    "(linear_sum_assignment on −C: exact); above the size limit, greedy in descending cosine over each row's "
    f"top-{TOP_K} candidates (not exact)",
    "split": "for a latent j of the narrower SAE: {i in the wider SAE : argmax best match of i = j and "
    "cos(i,j) ≥ threshold}, listed when it holds ≥ 2 latents",
    "activation_correlation": "Pearson r of f_a[i] and f_b[π(i)] over the shared held-out tokens (position 0 "
    "excluded); NaN when either latent is constant on them",
}


def unit_rows(w: Any) -> np.ndarray:
    """Rows of `w` [d, d_in] scaled to unit length, float32 (zero rows stay zero)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise BadInputError(f"A decoder must be a [d_sae, d_in] matrix, got shape {w.shape}.")
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.where(norms > 0, norms, 1.0)


def _arr(a: np.ndarray | None) -> list | None:
    if a is None:
        return None
    a = np.round(np.asarray(a, dtype=np.float64), 6)
    return [None if not np.isfinite(v) else float(v) for v in a]


@dataclass
class MatchResult:
    """Feature matching of SAE `name_a` ([d_a] latents) with `name_b` ([d_b]), both reading `d_in`-wide activations.

    best_a[i], best_a_index[i]: the max cosine of latent i of A over B, and which latent of B; best_b likewise.
    pairs_a[k], pairs_b[k], pairs_cos[k]: the one-to-one assignment (sorted by latent of A). `exact` says whether
    the assignment is the exact optimum (`method` names it). splits: {narrow latent (as a string): [wide latents]}
    with the narrower side named by `narrow` ("a" when the widths are equal). correlation[k]: Pearson r of the
    k-th pair's activations on `correlation_tokens` held-out tokens (None when not computed).
    """

    name_a: str
    name_b: str
    d_a: int
    d_b: int
    d_in: int
    threshold: float
    best_a: np.ndarray
    best_a_index: list[int]
    best_b: np.ndarray
    best_b_index: list[int]
    pairs_a: list[int]
    pairs_b: list[int]
    pairs_cos: np.ndarray
    splits: dict[str, list[int]]
    narrow: str
    method: str
    exact: bool
    seconds: float = 0.0
    correlation: np.ndarray | None = None
    correlation_tokens: int = 0
    formulas: dict[str, str] = field(default_factory=lambda: dict(FORMULAS))
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean best-match cosine each way, fraction ≥ threshold each way, assigned pairs, splits."""
        out: dict[str, Any] = {
            "mean best cos A→B": float(np.mean(self.best_a)) if self.d_a else float("nan"),
            "mean best cos B→A": float(np.mean(self.best_b)) if self.d_b else float("nan"),
            f"A with best ≥ {self.threshold:g}": float(np.mean(self.best_a >= self.threshold)) if self.d_a else 0.0,
            f"B with best ≥ {self.threshold:g}": float(np.mean(self.best_b >= self.threshold)) if self.d_b else 0.0,
            "assigned pairs": len(self.pairs_a),
            "mean assigned cos": float(np.mean(self.pairs_cos)) if len(self.pairs_cos) else float("nan"),
            "splits": len(self.splits),
        }
        if self.correlation is not None:
            out["mean pair activation r"] = (
                float(np.nanmean(self.correlation)) if np.isfinite(self.correlation).any() else float("nan")
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "name_a": self.name_a, "name_b": self.name_b, "d_a": self.d_a, "d_b": self.d_b, "d_in": self.d_in,
            "threshold": self.threshold,
            "best_a": _arr(self.best_a), "best_a_index": list(map(int, self.best_a_index)),
            "best_b": _arr(self.best_b), "best_b_index": list(map(int, self.best_b_index)),
            "pairs_a": list(map(int, self.pairs_a)), "pairs_b": list(map(int, self.pairs_b)),
            "pairs_cos": _arr(self.pairs_cos),
            "splits": {str(k): list(map(int, v)) for k, v in self.splits.items()},
            "narrow": self.narrow, "method": self.method, "exact": bool(self.exact), "seconds": float(self.seconds),
            "correlation": _arr(self.correlation), "correlation_tokens": int(self.correlation_tokens),
            "formulas": dict(self.formulas), "notes": list(self.notes),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> MatchResult:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            got = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise CorruptFileError(f"This is not an SAE matching result (kind {got!r}, expected {KIND!r}).")
        kw = checked_fields(cls, data, what="SAE matching result")
        for name, n in (("best_a", kw["d_a"]), ("best_a_index", kw["d_a"]), ("best_b", kw["d_b"]),
                        ("best_b_index", kw["d_b"]), ("pairs_b", len(kw["pairs_a"])), ("pairs_cos", len(kw["pairs_a"]))):  # fmt: skip
            if len(kw[name]) != n:
                raise CorruptFileError(f"SAE matching result.{name} holds {len(kw[name])} values, expected {n}.")
        return cls(**kw)


def cosine_matrix(u_a: np.ndarray, u_b: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """C = U_a @ U_b.T [d_a, d_b] float32, computed `chunk` rows at a time into one array."""
    out = np.empty((u_a.shape[0], u_b.shape[0]), dtype=np.float32)
    for s in range(0, u_a.shape[0], chunk):
        np.matmul(u_a[s : s + chunk], u_b.T, out=out[s : s + chunk])
    return out


def _best_matches(u_a: np.ndarray, u_b: np.ndarray, chunk: int, top_k: int = 0):
    """Best-match cosine/index both ways, without holding C; with top_k also each A row's top-k candidates."""
    d_a, d_b = u_a.shape[0], u_b.shape[0]
    best_a, idx_a = np.empty(d_a, np.float32), np.empty(d_a, np.int64)
    best_b, idx_b = np.full(d_b, -np.inf, np.float32), np.zeros(d_b, np.int64)
    cand: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s in range(0, d_a, chunk):
        c = u_a[s : s + chunk] @ u_b.T
        idx_a[s : s + len(c)] = c.argmax(1)
        best_a[s : s + len(c)] = c[np.arange(len(c)), idx_a[s : s + len(c)]]
        col = c.argmax(0)
        colmax = c[col, np.arange(d_b)]
        better = colmax > best_b
        best_b[better], idx_b[better] = colmax[better], col[better] + s
        if top_k:
            k = min(top_k, d_b)
            top = np.argpartition(-c, k - 1, axis=1)[:, :k]
            rows = np.repeat(np.arange(s, s + len(c)), k)
            cand.append((rows, top.ravel(), np.take_along_axis(c, top, 1).ravel()))
    return best_a, idx_a, best_b, idx_b, cand


def _greedy(cand, d_a: int, d_b: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([c[0] for c in cand])
    cols = np.concatenate([c[1] for c in cand])
    vals = np.concatenate([c[2] for c in cand])
    used_a, used_b = np.zeros(d_a, bool), np.zeros(d_b, bool)
    pa, pb = [], []
    for k in np.argsort(-vals, kind="stable"):
        i, j = rows[k], cols[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            pa.append(i)
            pb.append(j)
    order = np.argsort(pa)
    return np.asarray(pa, np.int64)[order], np.asarray(pb, np.int64)[order]


def find_splits(best_wide: np.ndarray, idx_wide: np.ndarray, threshold: float) -> dict[str, list[int]]:
    """{narrow latent: [wide latents whose best match it is, with cosine ≥ threshold]} for groups of ≥ 2."""
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(best_wide >= threshold):
        groups.setdefault(int(idx_wide[i]), []).append(int(i))
    return {str(j): v for j, v in sorted(groups.items()) if len(v) >= 2}


def match_decoders(
    w_a: Any,
    w_b: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    name_a: str = "A",
    name_b: str = "B",
    chunk: int = CHUNK,
    max_exact_entries: int = MAX_EXACT_ENTRIES,
) -> MatchResult:
    """Match decoder matrices `w_a` [d_a, d_in] and `w_b` [d_b, d_in] (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    if not -1.0 <= float(threshold) <= 1.0:
        raise BadInputError(f"The split threshold is a cosine in [-1, 1], got {threshold}.")
    t0 = time.perf_counter()
    u_a, u_b = unit_rows(w_a), unit_rows(w_b)
    if u_a.shape[1] != u_b.shape[1]:
        raise BadInputError(f"{name_a} reads {u_a.shape[1]}-wide activations and {name_b} {u_b.shape[1]}-wide; "
                            "only SAEs of the same model and hook width can be compared.")  # fmt: skip
    d_a, d_b = u_a.shape[0], u_b.shape[0]
    if d_a == 0 or d_b == 0:
        raise BadInputError("Both SAEs need at least one latent.")
    notes = []
    exact = d_a * d_b <= max_exact_entries
    if exact:
        c = cosine_matrix(u_a, u_b, chunk)
        idx_a = c.argmax(1)
        best_a = c[np.arange(d_a), idx_a]
        idx_b = c.argmax(0)
        best_b = c[idx_b, np.arange(d_b)]
        pa, pb = linear_sum_assignment(c, maximize=True)
        pairs_cos = c[pa, pb]
        method = "linear_sum_assignment (exact)"
        del c
    else:
        best_a, idx_a, best_b, idx_b, cand = _best_matches(u_a, u_b, chunk, TOP_K)
        pa, pb = _greedy(cand, d_a, d_b)
        pairs_cos = np.einsum("ij,ij->i", u_a[pa], u_b[pb])
        method = f"greedy over top-{TOP_K} candidates (approximate)"
        notes.append(f"{d_a}×{d_b} is above the exact-assignment limit ({max_exact_entries:,} entries): the "
                     f"assignment is greedy and not guaranteed optimal; {len(pa)} of {min(d_a, d_b)} latents paired.")  # fmt: skip
    narrow = "a" if d_a <= d_b else "b"
    splits = find_splits(best_b, idx_b, threshold) if narrow == "a" else find_splits(best_a, idx_a, threshold)
    return MatchResult(
        name_a=name_a, name_b=name_b, d_a=d_a, d_b=d_b, d_in=int(u_a.shape[1]), threshold=float(threshold),
        best_a=np.asarray(best_a, np.float64), best_a_index=[int(i) for i in idx_a],
        best_b=np.asarray(best_b, np.float64), best_b_index=[int(i) for i in idx_b],
        pairs_a=[int(i) for i in pa], pairs_b=[int(j) for j in pb], pairs_cos=np.asarray(pairs_cos, np.float64),
        splits=splits, narrow=narrow, method=method, exact=exact, seconds=time.perf_counter() - t0, notes=notes,
    )  # fmt: skip


def decoder_matrix(loaded) -> np.ndarray:
    """The decoder rows [d_sae, d_in] of a `LoadedSAE` as float32 numpy."""
    w = loaded.sae.W_dec.detach().float().cpu().numpy()
    return w.reshape(w.shape[0], -1)


def sae_model(loaded) -> str | None:
    """The model an SAE was trained on, from saelab.json or SAE-Lens metadata (None when unknown)."""
    if loaded.meta is not None:
        return loaded.meta.model
    meta = getattr(loaded.sae.cfg, "metadata", None)
    return getattr(meta, "model_name", None) if meta is not None else None


def check_comparable(loaded: list, names: list[str]) -> list[str]:
    """Refuse SAEs of different models or activation widths (`BadInputError`); notes for different hooks."""
    first, first_name = loaded[0], names[0]
    d0 = decoder_matrix(first).shape[1]
    m0 = sae_model(first)
    notes = []
    for other, name in zip(loaded[1:], names[1:], strict=True):
        d = decoder_matrix(other).shape[1]
        if d != d0:
            raise BadInputError(f"{first_name} reads {d0}-wide activations and {name} {d}-wide; only SAEs of the "
                                "same model and hook width can be compared.")  # fmt: skip
        m = sae_model(other)
        if m0 and m and m != m0:
            raise BadInputError(f"{first_name} is an SAE of {m0} and {name} of {m}; only SAEs of the same model "
                                "can be compared.")  # fmt: skip
        if other.decoder_hook != first.decoder_hook:
            notes.append(f"{name} writes to {other.decoder_hook}, {first_name} to {first.decoder_hook}: their decoder "
                         "directions live in different activation spaces, so cosines between them mean little.")  # fmt: skip
    return notes


def match_saes(
    loaded_a, loaded_b, *, threshold: float = DEFAULT_THRESHOLD, name_a: str = "A", name_b: str = "B"
) -> MatchResult:
    """`match_decoders` of two `LoadedSAE`s after `check_comparable`."""
    notes = check_comparable([loaded_a, loaded_b], [name_a, name_b])
    result = match_decoders(decoder_matrix(loaded_a), decoder_matrix(loaded_b), threshold=threshold,
                            name_a=name_a, name_b=name_b)  # fmt: skip
    result.notes[:0] = notes
    return result


def activation_correlation(handle, loaded_a, loaded_b, result: MatchResult, tokens, batch_size: int = 8) -> MatchResult:
    """Fill `result.correlation`: Pearson r of each assigned pair's activations over `tokens` [n_seq, seq_len]
    (position 0, the attention sink, excluded), exact sums in float64."""
    import torch

    from saelab.hooks import cache_activations
    from saelab.sae.text_latents import encode

    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise BadInputError("Correlation tokens must be a [n_seq, seq_len ≥ 2] tensor of token ids.")
    pa, pb = torch.tensor(result.pairs_a), torch.tensor(result.pairs_b)
    n = 0
    s_a = s_b = s_aa = s_bb = s_ab = torch.zeros(len(pa), dtype=torch.float64)
    hooks = list(dict.fromkeys([loaded_a.hook, loaded_b.hook]))
    for s in range(0, tokens.shape[0], batch_size):
        acts = cache_activations(handle, tokens[s : s + batch_size].to(handle.cfg.device), hooks)
        fa = encode(loaded_a, acts[loaded_a.hook][:, 1:]).reshape(-1, int(loaded_a.sae.cfg.d_sae))[:, pa].double().cpu()
        fb = encode(loaded_b, acts[loaded_b.hook][:, 1:]).reshape(-1, int(loaded_b.sae.cfg.d_sae))[:, pb].double().cpu()
        n += fa.shape[0]
        s_a, s_b = s_a + fa.sum(0), s_b + fb.sum(0)
        s_aa, s_bb, s_ab = s_aa + (fa * fa).sum(0), s_bb + (fb * fb).sum(0), s_ab + (fa * fb).sum(0)
    cov = s_ab / n - (s_a / n) * (s_b / n)
    var_a = (s_aa / n - (s_a / n) ** 2).clamp_min(0)
    var_b = (s_bb / n - (s_b / n) ** 2).clamp_min(0)
    denom = (var_a * var_b).sqrt()
    r = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))
    result.correlation = r.clamp(-1, 1).numpy()
    result.correlation_tokens = n
    return result
