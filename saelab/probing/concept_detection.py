"""AxBench concept detection: score each text by the max over its tokens of Ψ(h) = h·w, then AUROC.

Detectors (registry `DETECTORS`; the first four use `saelab.directions`, fitted on the training texts' tokens):
    diffmean  w = mean(H+) − mean(H−), unit norm
    pca       w = first principal component of H+, oriented towards H+
    lat       w = first principal component of normalised differences of random pairs of H+
    probe     w = logistic regression on every token labelled with its text's label
    sae-a     the SAE latent with the best training-set AUROC of its per-text max activation ("SAE-A")
    bow       CountVectorizer (1-grams) + logistic regression on the texts (no model at all)
Text score s(x) = max over x's tokens of h_t·w (position 0, the separator/attention sink, excluded); AxBench
min-max normalises s before AUROC, which does not change AUROC (a monotone map), so it is skipped here.
AUROC = P(s(x+) > s(x−)) + ½ P(tie) over positive/negative test texts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.errors import BadInputError
from saelab.typed_json import from_checked_dict

log = logging.getLogger(__name__)

FORMULA = "s(x) = max_t h_t·w over the text's tokens (separator excluded); AUROC of s on test texts"


@dataclass
class TokenData:
    """Per-text token activations for one split. `hidden[i]` is [t_i, d] (no separator row)."""

    texts: list[str]
    y: np.ndarray  # [n] 0/1 (1 = concept present)
    hidden: list[np.ndarray] | None = None
    latent_max: np.ndarray | None = None  # [n, d_sae] max over tokens of each SAE latent (for sae-a)


def _max_scores(hidden: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    return np.array([float((h @ w).max()) if len(h) else 0.0 for h in hidden])


def _tokens_of(data: TokenData, label: int) -> np.ndarray:
    rows = [h for h, y in zip(data.hidden, data.y, strict=True) if y == label and len(h)]
    if not rows:
        raise BadInputError(f"No {'positive' if label else 'negative'} training text has tokens.")
    return np.concatenate(rows).astype(np.float32)


def _direction_detector(method: str) -> Callable[[TokenData, TokenData, int], tuple[np.ndarray, dict]]:
    def detect(train: TokenData, test: TokenData, seed: int) -> tuple[np.ndarray, dict]:
        import torch

        from saelab.directions import compute_direction

        if train.hidden is None or test.hidden is None:
            raise BadInputError(f"The {method} detector needs token activations.")
        w = compute_direction(
            method, torch.from_numpy(_tokens_of(train, 1)), torch.from_numpy(_tokens_of(train, 0)), seed
        ).numpy()
        return _max_scores(test.hidden, w), {"direction": w}

    return detect


def rank_auroc(scores_NF: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """[f] AUROC of every column at once (Mann–Whitney U / (n+ · n−), ties counted half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(scores_NF, axis=0)
    u = ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _sae_a(train: TokenData, test: TokenData, seed: int) -> tuple[np.ndarray, dict]:
    if train.latent_max is None or test.latent_max is None:
        raise BadInputError("The SAE-A detector needs SAE latent activations (choose an SAE).")
    aurocs = rank_auroc(train.latent_max, train.y)
    best = int(np.argmax(aurocs))  # first maximum: the lowest latent id among ties
    return test.latent_max[:, best].astype(np.float64), {"latent": best, "train_auroc": float(aurocs[best])}


def _bow(train: TokenData, test: TokenData, seed: int) -> tuple[np.ndarray, dict]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer()
    X = vec.fit_transform(train.texts)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(X, train.y)
    return clf.predict_proba(vec.transform(test.texts))[:, 1], {"vocabulary": len(vec.vocabulary_)}


DETECTORS: dict[str, Callable[[TokenData, TokenData, int], tuple[np.ndarray, dict]]] = {
    "diffmean": _direction_detector("diffmean"),
    "pca": _direction_detector("pca"),
    "lat": _direction_detector("lat"),
    "probe": _direction_detector("probe"),
    "sae-a": _sae_a,
    "bow": _bow,
}

DETECTOR_FORMULAS: dict[str, str] = {
    "diffmean": "w = mean(H+) − mean(H−), unit norm; s = max_t h_t·w",
    "pca": "w = 1st principal component of H+, oriented to H+; s = max_t h_t·w",
    "lat": "w = 1st PC of (h_i − h_j)/‖h_i − h_j‖ over random pairs of H+; s = max_t h_t·w",
    "probe": "w = logistic regression on tokens labelled by their text; s = max_t h_t·w",
    "sae-a": "latent j* = argmax_j train AUROC of max_t f_j; s = max_t f_j*(x)",
    "bow": "CountVectorizer + logistic regression on the text; s = p(concept | words)",
}


@dataclass
class DetectionResult:
    """Test AUROC of each detector (with a bootstrap 95 % CI) and what it learned."""

    auroc: dict[str, float]
    ci: dict[str, tuple[float, float]]
    scores: dict[str, list[float]]  # per test text
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # detectors that could not run, and why
    formula: str = FORMULA

    @property
    def detector_formulas(self) -> dict[str, str]:
        return {m: DETECTOR_FORMULAS.get(m, "") for m in self.auroc}

    def to_dict(self) -> dict[str, Any]:
        info = {m: {k: v for k, v in d.items() if k != "direction"} for m, d in self.info.items()}
        return {
            "auroc": self.auroc,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "scores": self.scores,
            "info": info,
            "errors": self.errors,
            "formula": self.formula,
            "detector_formulas": self.detector_formulas,
        }

    @classmethod
    def from_dict(cls, data: Any) -> DetectionResult:
        """From `to_dict()`: the detectors' direction vectors are not saved, so `info` lacks them."""
        return from_checked_dict(cls, data)


def run_detection(
    methods: list[str], train: TokenData, test: TokenData, *, seed: int = 0, n_boot: int = 1000
) -> DetectionResult:
    """Fit each detector on `train`, score `test`, and report AUROC with bootstrap CIs."""
    from saelab.probing.metrics import bootstrap_ci

    unknown = [m for m in methods if m not in DETECTORS]
    if unknown:
        raise BadInputError(f"Unknown detector(s) {unknown}; choose from {sorted(DETECTORS)}.")
    for name, data in (("training", train), ("test", test)):
        if len(np.unique(data.y)) != 2:
            raise BadInputError(f"Detection needs positive and negative {name} texts (a binary target).")
    y = np.asarray(test.y).astype(bool)
    out = DetectionResult({}, {}, {})
    for m in methods:
        try:
            scores, info = DETECTORS[m](train, test, seed)
        except BadInputError as err:
            out.errors[m] = str(err)
            continue
        out.auroc[m] = float(rank_auroc(scores[:, None], y)[0])
        out.ci[m] = bootstrap_ci(
            lambda i, s=scores: float(rank_auroc(s[i][:, None], y[i])[0]) if 0 < y[i].sum() < len(i) else np.nan,
            len(y),
            n_boot=n_boot,
            seed=seed,
        )
        out.scores[m] = [float(v) for v in scores]
        out.info[m] = info
    return out


def collect_tokens(
    handle: Any,
    texts: list[str],
    y: np.ndarray,
    hook: str,
    *,
    loaded_sae: Any = None,
    max_tokens: int = 128,
    batch_size: int = 16,
) -> TokenData:
    """Token activations at `hook` for each text, plus each SAE latent's max over the text's tokens when an SAE
    reading `hook` is given. Tokenised and batched exactly as the feature sources do (`saelab.activations.text_batches`:
    separator in front and never scored, right padding with an attention mask, one forward per batch); latents by
    `saelab.sae.text_latents.encode`."""
    from saelab.activations.text_batches import encode_texts, run_batches
    from saelab.sae.text_latents import encode

    enc = encode_texts(handle.tokenizer, list(texts), max_tokens)
    hidden: list[np.ndarray | None] = [None] * len(texts)
    lat_max: list[np.ndarray | None] = [None] * len(texts)
    for batch, acts in run_batches(handle, enc, [hook], batch_size):
        a_BPD = acts[hook].float()
        for b, i in enumerate(batch.index):
            h_TD = a_BPD[b][batch.keep_BP[b]]
            hidden[i] = h_TD.cpu().numpy()
            if loaded_sae is not None:
                f_TS = encode(loaded_sae, h_TD)
                d_sae = int(loaded_sae.sae.cfg.d_sae)
                lat_max[i] = f_TS.max(dim=0).values.cpu().numpy() if len(f_TS) else np.zeros(d_sae, np.float32)
    return TokenData(list(texts), np.asarray(y), hidden, np.stack(lat_max) if loaded_sae is not None else None)
