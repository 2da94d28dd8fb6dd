"""Offline labels for SAE latents: their config, data types and files (the algorithm is `autolabel`).

A label here is a *checkable rule*, not prose: "tokens: ' Paris', ' France'" means "this latent fires on
text containing ' Paris' or ' France'". It is a PROXY for an LLM explanation (no LLM is needed to make it;
`saelab.features.llm` makes the real thing when a user has an endpoint) and is marked `proxy: true`
wherever it is stored.

1. Rule (`autolabel.auto_label`): for each latent, the tokens at the max-activating position of its top contexts
   (and, tagged "after", the token just before it) are compared with how often they occur in the pooled
   context windows of all the other latents. Ranking is by the z-score of a smoothed log-odds ratio (see
   `formula_text`); up to `max_tokens` tokens that recur in the contexts and are over-represented make the
   rule. When the contexts share no such token the rule falls back to the latent's most promoted logit
   tokens ("promotes: …").
2. Detection (`saelab.features.label_detection`): on held-out rows the dashboards never saw, sequence level. Up to N rows
   where the latent fires and as many where it never fires; the rule predicts "fires" iff the row contains
   a rule token; balanced accuracy (TPR + TNR)/2 and F1, with the counts.

Everything is vectorised over latents: one forward over the held-out rows gives a [n_rows, d_sae] "fires in
row" matrix (`latent_activity`), a sparse [n_rows, vocab] token presence matrix (`token_presence`) times a
sparse [vocab, d_sae] rule matrix gives every rule's prediction on every row at once.

Position 0 of a row and every separator token are attention sinks (residual norm ~1e4): SAEs are trained
without them, so they count neither as "fires" nor as "contains" anywhere here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from saelab.errors import BadInputError, CorruptFileError
from saelab.features.store import LABELS_FILE, LATENTS_FILE, META_FILE, dashboards_dir
from saelab.storage import DASHBOARD_DIR, read_json, write_json

METHOD = "contrastive-tokens"
LabelKind = Literal["tokens", "promotes", "none", "dead"]
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- config


@dataclass(kw_only=True)
class LabelConfig:
    """Knobs of the offline labeller and of the detection score (all recorded in labels.json).

    Attributes:
        max_tokens: most tokens in one rule.
        min_count: a rule token must occur in at least this many top contexts ...
        min_share: ... and in at least this fraction of them.
        z_min: smallest z-score of the smoothed log-odds for a rule token.
        alpha: additive smoothing of every count in the log-odds.
        use_previous: also consider the token just before the max-activating one ("after: …").
        n_promoted: tokens in a "promotes: …" fallback rule.
        n_per_class: detection uses up to this many firing rows and as many non-firing rows.
        min_rows: fewer firing (or non-firing) held-out rows than this → no detection score.
        seed: seed of the row sampling (per latent: `default_rng((seed, latent))`).
        batch_size: held-out rows per forward pass.
        compute_dtype: dtype of the forward over held-out rows (bf16 is ~4x faster on CPU; the SAE
            itself encodes in its own dtype).
        token_rule_max: most members of a rule chosen at token level (`saelab.features.token_rules`). Broad
            latents need long lists: on the shipped SAE (1,188 held-out rows) the median token-level balanced
            accuracy on the TEST half is 0.746 with at most 40 members and 0.760 with 64; a sweep on 1,792 rows
            without the dashboard candidate gave 0.63 (5), 0.72 (20), 0.76 (40), 0.78 (100). The label text shows
            the first few members and "+N more"; `token_ids` holds them all.
    """

    max_tokens: int = 3
    min_count: int = 2
    min_share: float = 0.2
    z_min: float = 3.0
    alpha: float = 0.5
    use_previous: bool = True
    n_promoted: int = 3
    n_per_class: int = 100
    min_rows: int = 5
    seed: int = 0
    batch_size: int = 32
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    token_rule_max: int = 64  # members of a token-level rule (tokens, previous tokens or pairs); see the docstring

    def __post_init__(self) -> None:
        for name in ("max_tokens", "min_count", "n_promoted", "n_per_class", "min_rows", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"LabelConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.min_share <= 1.0:
            raise BadInputError(f"LabelConfig.min_share must lie in [0, 1], got {self.min_share!r}")
        if not self.alpha > 0:
            raise BadInputError(f"LabelConfig.alpha must be > 0, got {self.alpha!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise BadInputError(
                f"LabelConfig.compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def formula_text(cfg: LabelConfig) -> str:
    """The labelling rule and the detection score, in words and symbols (stored in labels.json)."""
    return (
        "PROXY label, made without an LLM: for latent i, y(t) = number of its n top contexts whose "
        "max-activating token is t"
        + (" (separately: whose token just before it is t, shown as 'after: …')" if cfg.use_previous else "")
        + "; b(t) = occurrences of t among the B tokens of all other latents' context windows. "
        f"Smoothed log-odds δ = log((y+α)/(n−y+α)) − log((b+α)/(B−b+α)), "
        f"z = δ / √(1/(y+α) + 1/(n−y+α) + 1/(b+α) + 1/(B−b+α)), α = {cfg.alpha:g}. "
        f"The rule keeps up to {cfg.max_tokens} tokens with y ≥ max({cfg.min_count}, ⌈{cfg.min_share:g}·n⌉) and "
        f"z ≥ {cfg.z_min:g}, highest z first; when none qualifies it is the latent's {cfg.n_promoted} most promoted "
        "logit tokens ('promotes: …'). "
        "Detection (sequence level, on held-out rows the dashboards never used): up to "
        f"N = {cfg.n_per_class} rows where the latent fires (activation > 0 at a position other than position 0 and "
        "separator tokens, the attention sinks) and as many rows where it never fires; the rule predicts 'fires' iff "
        "the row contains a rule token at an analysed position (an 'after' token: right before one). "
        "Balanced accuracy = (TPR + TNR)/2 = (TP/(TP+FN) + TN/(TN+FP))/2; F1 = 2TP/(2TP+FP+FN). No score when fewer than "
        f"{cfg.min_rows} rows fire or fewer than {cfg.min_rows} rows do not."
    )


def token_formula_text(cfg: LabelConfig) -> str:
    """How the token-level rule is chosen and scored (stored in labels.json beside `formula_text`)."""
    return (
        "PROXY label, chosen and scored at TOKEN level (saelab.features.token_rules): every held-out position "
        "other than position 0 and separators is one example (fires: activation > 0). The held-out rows are split "
        f"in two seeded random halves (seed {cfg.seed}): FIT chooses the rule, TEST scores it. Candidates: the best set of "
        f"at most {cfg.token_rule_max} current tokens ('tokens: …'), previous tokens ('after: …'), token pairs "
        "('pairs: …'), the union of the first two, and the dashboard rule above; a set's members are the values "
        "with the largest gains p_t − n_t > 0 (p_t, n_t: share of firing / non-firing FIT positions with value t, "
        f"t seen ≥ {cfg.min_count} times where the latent fires), since BA(S) = 1/2 + 1/2·Σ_(t∈S)(p_t − n_t). "
        "The candidate with the highest FIT balanced accuracy wins. Token-level score on TEST: BA = (TPR + TNR)/2 "
        "over ALL test positions where the latent fires (TPR) and does not (TNR). Sequence-level score on TEST: "
        f"the same rule 'fires somewhere in the row' vs 'latent fires in the row', up to {cfg.n_per_class} rows of "
        f"each (seeded). No token-level score when fewer than {cfg.min_rows} positions fire in either half."
    )


# ---------------------------------------------------------------- results


@dataclass
class LatentLabel:
    """One latent's label and its detection score.

    Attributes:
        label: the rule in words, e.g. "tokens: ' Paris', ' France'; after: ' in'".
        token_ids: the rule's token ids: a row "contains" the label iff it holds one of them at an analysed
            position or, for the ids also in `after_ids`, right before an analysed position.
        after_ids: the rule tokens that match the token just BEFORE the latent's peak ("after: …").
        kind: "tokens" (contrastive tokens), "promotes" (fallback: top promoted logit tokens), "none"
            (no rule could be made), "dead" (never fired in the dashboard sample).
        detection_balanced_accuracy, detection_f1: None when there were too few rows to score (see `note`).
        n_pos, n_neg: held-out rows scored where the latent fires / never fires.
        pair_ids: [previous token, token] pairs of the rule ("pairs: …"): it fires where the pair occurs.
        rule_family: which candidate won at token level ("tokens", "after", "pairs", "tokens+after",
            "dashboard"); None for labels made before token-level scoring.
        fit_balanced_accuracy: the rule's token-level balanced accuracy on the FIT half (it chose the rule).
        token_balanced_accuracy, token_tpr, token_tnr: token-level scores on the TEST half (all positions).
        token_n_pos, token_n_neg: TEST positions where the latent fires / does not.
        tp, fp, fn, tn: confusion counts of the rule over those rows.
        note: why there is no score, or anything else worth knowing.
    """

    label: str
    token_ids: list[int]
    kind: LabelKind
    after_ids: list[int] = field(default_factory=list)
    detection_balanced_accuracy: float | None = None
    detection_f1: float | None = None
    n_pos: int = 0
    n_neg: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    note: str | None = None
    pair_ids: list[list[int]] = field(default_factory=list)
    rule_family: str | None = None
    fit_balanced_accuracy: float | None = None
    token_balanced_accuracy: float | None = None
    token_tpr: float | None = None
    token_tnr: float | None = None
    token_n_pos: int = 0
    token_n_neg: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentLabel:
        if not isinstance(d, Mapping):
            raise CorruptFileError(f"a latent label must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class LabelSet:
    """Labels for every latent of one SAE (what labels.json holds).

    Attributes:
        latents: one `LatentLabel` per latent, index = latent id.
        method: "contrastive-tokens".
        proxy: True: offline labels stand in for LLM explanations.
        formula: the rule and the detection score in words (`formula_text`).
        detection: metric name, held-out rows used, sequence length, sampling.
        config: `LabelConfig.to_dict()`.
        provenance: model, hook, SAE folder, timings.
        llm: optional LLM explanations scored the same way (`saelab.features.llm.llm_labels`), or a note
            saying why none were made.
    """

    latents: list[LatentLabel]
    method: str = METHOD
    proxy: bool = True
    formula: str = ""
    detection: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, latent: int) -> LatentLabel:
        return self.latents[latent]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "proxy": self.proxy,
            "formula": self.formula,
            "detection": self.detection,
            "config": self.config,
            "provenance": self.provenance,
            "latents": [lab.to_dict() for lab in self.latents],
        }
        if self.llm is not None:
            out["llm"] = self.llm
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelSet:
        if not isinstance(d, Mapping) or not isinstance(d.get("latents"), list):
            raise CorruptFileError("labels data has no 'latents' list")
        return cls(
            latents=[LatentLabel.from_dict(x) for x in d["latents"]],
            method=d.get("method", METHOD),
            proxy=bool(d.get("proxy", True)),
            formula=d.get("formula", ""),
            detection=dict(d.get("detection", {})),
            config=dict(d.get("config", {})),
            provenance=dict(d.get("provenance", {})),
            llm=d.get("llm"),
        )


def labels_path(sae_dir: str | Path) -> Path:
    """`<sae_dir>/dashboards/labels.json` (or `labels.json` inside a dashboards folder given directly)."""
    return dashboards_dir(sae_dir) / LABELS_FILE


def write_labels(sae_dir: str | Path, labels: LabelSet) -> Path:
    """Write `<sae_dir>/dashboards/labels.json` atomically; returns its path."""
    path = labels_path(sae_dir)
    write_json(path, labels.to_dict())
    return path


def read_labels(sae_dir: str | Path) -> LabelSet | None:
    """The labels written by `write_labels`, or None when there are none."""
    path = labels_path(sae_dir)
    if not path.exists():
        return None
    try:
        return LabelSet.from_dict(read_json(path))
    except (TypeError, ValueError, AttributeError, CorruptFileError) as err:
        raise CorruptFileError(f"{path} is not a labels file ({err}); it was left untouched.") from err


# ---------------------------------------------------------------- dashboard arrays


def latents_file(source: Any) -> Path | None:
    """The latents.safetensors behind a path or a store object (None if there is none)."""
    candidates: list[Any] = [source] if isinstance(source, str | Path) else []
    candidates += [getattr(source, a, None) for a in ("sae_dir", "path", "root", "dir", "dashboard_dir")]
    for c in candidates:
        if not isinstance(c, str | Path):
            continue
        c = Path(c)
        for f in (c / DASHBOARD_DIR / LATENTS_FILE, c / LATENTS_FILE, c):
            if f.is_file() and f.name == LATENTS_FILE:
                return f
    return None


def dashboard_arrays(source: Any, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The dashboard arrays named `keys` for ALL latents, and the dashboard meta.

    `source` is an SAE folder (or its dashboards folder), a store object (anything with `.latent(i)`,
    `.meta` and `.d_sae`, e.g. `DashboardStore`), or a mapping of arrays with a "meta" entry. Keys the
    source lacks are left out of the result; callers decide which they need.
    """
    if isinstance(source, Mapping):
        meta = dict(source.get("meta", {}))
        return {k: np.asarray(source[k]) for k in keys if k in source}, meta
    path = latents_file(source)
    if path is not None:
        from safetensors import SafetensorError, safe_open

        meta = getattr(source, "meta", None)
        if not isinstance(meta, Mapping):
            meta_path = path.parent / META_FILE
            meta = read_json(meta_path) if meta_path.exists() else {}
        try:
            with safe_open(str(path), framework="np") as fh:
                names = set(fh.keys())
                return {k: fh.get_tensor(k) for k in keys if k in names}, dict(meta)
        except (SafetensorError, OSError, ValueError) as err:
            raise CorruptFileError(
                f"{path} is not a readable safetensors file ({err}); it was left untouched."
            ) from err
    if hasattr(source, "latent") and hasattr(source, "d_sae"):
        rows = [source.latent(i) for i in range(int(source.d_sae))]
        out = {k: np.stack([np.asarray(getattr(r, k)) for r in rows]) for k in keys if rows and hasattr(rows[0], k)}
        return out, dict(getattr(source, "meta", {}) or {})
    if isinstance(source, str | Path):
        raise BadInputError(
            f"No dashboards at {source}: expected {Path(source) / DASHBOARD_DIR / LATENTS_FILE}. Build them first."
        )
    raise BadInputError(f"Cannot read dashboard arrays from a {type(source).__name__}.")


def dashboard_ctx_left(meta: Mapping[str, Any], top_tokens: np.ndarray) -> int:
    if "ctx_left" not in meta:
        raise CorruptFileError("the dashboard meta lacks 'ctx_left' (where the max-activating token sits)")
    ctx_left = int(meta["ctx_left"])
    if not 0 <= ctx_left < top_tokens.shape[-1]:
        raise CorruptFileError(f"dashboard ctx_left={ctx_left} lies outside the {top_tokens.shape[-1]}-token window")
    return ctx_left


# ---------------------------------------------------------------- rules


def show_token(tokenizer, token_id: int, _cache: dict[int, str] | None = None) -> str:
    """A token as a quoted literal with whitespace visible: ' Paris', '\\n'."""
    if _cache is not None and token_id in _cache:
        return _cache[token_id]
    text = repr(tokenizer.decode([int(token_id)]))
    if _cache is not None:
        _cache[token_id] = text
    return text
