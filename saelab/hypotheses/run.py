"""The HypotheSAEs pipeline end to end: texts + target → validated hypotheses, with a baseline beside them.

    split (train / val / test, seeded) → embed → Top-K SAE on train → select n latents on train (LASSO)
    → interpret each latent (keyword PROXY rule, or an LLM) choosing among candidates on val
    → annotate test texts → one OLS/Logit of y on all hypotheses → Bonferroni significance
    and the bag-of-words baseline through the same selection and validation.
The test split is touched only by the final annotation and regression.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.features.llm import EndpointError
from saelab.hypotheses.baseline import bag_of_words, examples_for
from saelab.hypotheses.embed import EmbedSpec, embed
from saelab.hypotheses.embedding_sae import min_train_texts, train_embedding_sae
from saelab.hypotheses.interpret import Interpretation, KeywordRule, interpret_keywords, term_matrix
from saelab.hypotheses.results import PROXY_NOTE, MethodResult, build_method
from saelab.hypotheses.select import select_features
from saelab.hypotheses.target import prepare
from saelab.hypotheses.validate import FORMULAS, validate
from saelab.storage import jsonable
from saelab.textsets import TextSet, split
from saelab.typed_json import from_checked_dict

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None] | None
MIN_TEST_TEXTS = 30
# Share of the progress bar per stage (sums to 100).
_STAGES = {"embed": 40, "sae": 30, "interpret": 15, "validate": 5, "baseline": 10}


@dataclass
class HypothesisConfig(DictConfig):
    """How to generate and test hypotheses.

    Attributes:
        n_hypotheses: latents to select (the paper's 20).
        selection: "lasso" (α bisected to exactly n; L1-logistic for binary targets) or "correlation".
        embedding: "minilm" (sentence embeddings) or "lm" (default LM residual, mean-pooled at `lm_layer`).
        m, k: SAE latents and active latents (None: the paper's rules of thumb for the training size).
        epochs: SAE training epochs (fixed; the paper stops early).
        seed: for the split, subsampling, SAE training and LLM samples.
        fractions: train / val / test shares.
        max_texts: subsample the set to this many texts first (None: all).
        positive_class: for a class target with more than two non-numeric classes, the class coded 1.
        baseline: also run the bag-of-words LASSO baseline.
        max_terms: most words in one keyword rule.
        n_examples: example held-out texts kept per hypothesis.
        llm_max_texts: with an LLM endpoint, held-out texts it annotates (the test split is cut to this).
    """

    n_hypotheses: int = 20
    selection: Literal["lasso", "correlation"] = "lasso"
    embedding: Literal["minilm", "lm"] = "minilm"
    lm_layer: int = 12
    lm_model: str | None = None
    m: int | None = None
    k: int | None = None
    epochs: int = 100
    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    max_texts: int | None = None
    positive_class: str | None = None
    baseline: bool = True
    max_terms: int = 10
    n_examples: int = 3
    llm_max_texts: int = 200

    def __post_init__(self) -> None:
        for name in ("n_hypotheses", "epochs", "max_terms", "n_examples", "llm_max_texts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"{name} must be a positive whole number, got {value!r}.")
        if self.selection not in ("lasso", "correlation"):
            raise BadInputError(f"selection must be 'lasso' or 'correlation', got {self.selection!r}.")
        if self.embedding not in ("minilm", "lm"):
            raise BadInputError(f"embedding must be 'minilm' or 'lm', got {self.embedding!r}.")
        if len(self.fractions) != 3 or any(not (f > 0) for f in self.fractions):
            raise BadInputError(f"fractions must be three positive shares (train, val, test), got {self.fractions}.")
        self.fractions = [float(f) for f in self.fractions]
        if self.m is not None and (self.m < 2 or (self.k is not None and self.k > self.m)):
            raise BadInputError(f"Need 2 ≤ M and K ≤ M, got M={self.m}, K={self.k}.")
        if self.max_texts is not None and self.max_texts < 1:
            raise BadInputError(f"max_texts must be positive, got {self.max_texts}.")


@dataclass
class HypothesisResult:
    """Everything a run produced (see `MethodResult` for each method's table).

    Attributes:
        config: the HypothesisConfig as a dict.
        data: source/provenance, target description, kind ("binary"/"numeric"), texts used, split sizes+seed.
        embedding: what embedded the texts. sae: {"m", "k", "path", metrics (val_nmse, dead_fraction, …)}.
        sae_method: the HypotheSAEs hypotheses; baseline: bag-of-words (None if not run).
        interpretation: "keywords (PROXY)" or "llm" (or "llm, some latents by keywords (PROXY)").
        notes: what changed on the way (cleaning, subsampling, fallbacks). formulas: every score's formula.
        seconds: wall time per stage.
        latent_reference: the same validation with 'the latent fires' (a > 0) as hypotheses (see `latent_reference`).
    """

    config: dict[str, Any]
    data: dict[str, Any]
    embedding: str
    sae: dict[str, Any]
    sae_method: MethodResult
    baseline: MethodResult | None
    interpretation: str
    notes: list[str]
    formulas: dict[str, str]
    seconds: dict[str, float]
    latent_reference: dict[str, Any] = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        return self.data["kind"] == "binary"

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> HypothesisResult:
        """From `to_dict()` (an export's result.json): the methods and their hypotheses as their types again."""
        return from_checked_dict(cls, data)


class _Bar:
    """Maps each stage's own (done, total) onto one 0..100 bar."""

    def __init__(self, progress: Progress):
        self.progress, self.base = progress, 0

    def stage(self, name: str) -> Callable[[int, int], None]:
        base, width = self.base, _STAGES[name]
        self.base += width

        def report(done: int, total: int) -> None:
            if self.progress is not None and total > 0:
                self.progress(base + int(width * min(done, total) / total), 100)

        report(0, 1)
        return report


def standardise_residuals(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Residual means are dominated by a few huge, nearly constant dimensions: z-score each dimension with the
    training texts' mean and std, then scale each text to unit norm (like sentence embeddings)."""
    mu, sd = X[train].mean(0), X[train].std(0)
    Z = (X - mu) / np.where(sd > 1e-6, sd, 1.0)
    return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def latent_reference(Z_test: np.ndarray, chosen: list, y_test: np.ndarray, binary: bool) -> dict[str, Any]:
    """The same validation with "the latent fires" (a > 0) in place of each hypothesis: what the selected latents
    carry about y as indicators, to compare with what their descriptions carry (not a strict upper bound)."""
    H = np.column_stack([Z_test[:, c.latent] > 0 for c in chosen])
    val = validate(H, y_test, binary=binary)
    fid = [c.interp.fidelity_f1 for c in chosen]
    phis = [c.interp.fidelity_phi for c in chosen if np.isfinite(c.interp.fidelity_phi)]
    return {
        "regression": val.model, "r2": val.r2, "auc": val.auc, "n_significant": val.n_significant,
        "n": len(chosen), "threshold": val.threshold, "mean_fidelity_f1": float(np.mean(fid)) if fid else None,
        "mean_fidelity_phi": float(np.mean(phis)) if phis else None,
    }  # fmt: skip


def required_texts(cfg: HypothesisConfig) -> int:
    """Fewest texts (after cleaning) for the SAE's training split and a usable held-out split."""
    m = cfg.m or 64
    share = cfg.fractions[0] / sum(cfg.fractions)
    test_share = cfg.fractions[2] / sum(cfg.fractions)
    return max(math.ceil(min_train_texts(m) / share), math.ceil(MIN_TEST_TEXTS / test_share))


@dataclass
class _Chosen:
    """A selected latent with its hypothesis (and, for an LLM hypothesis, the keyword PROXY to fall back on)."""

    latent: int
    coef: float
    interp: Interpretation
    rule: Any
    fallback: tuple[Interpretation, KeywordRule] | None = None

    def use_fallback(self) -> bool:
        if self.fallback is None:
            return False
        self.interp, self.rule = self.fallback
        self.fallback = None
        return True


def _interpret_all(latents, coefs, Z_train, Z_val, texts, parts, cfg, endpoint, notes, report) -> list[_Chosen]:
    """Interpretations per selected latent (LLM when it works, else keyword PROXY)."""
    from saelab.hypotheses.llm import LLMInterpreter

    X_train, vocab = term_matrix([texts[i] for i in parts["train"]])
    val_texts = [texts[i] for i in parts["val"]]
    llm = LLMInterpreter(endpoint, cfg.seed, notes) if endpoint is not None else None
    out = []
    for done, (j, coef) in enumerate(zip(latents, coefs), start=1):
        j = int(j)
        kw = interpret_keywords(X_train, vocab, Z_train[:, j], val_texts, Z_val[:, j], max_terms=cfg.max_terms)
        keyword = (kw, KeywordRule(kw.terms)) if kw is not None else None
        interp, rule = (
            llm.interpret(j, Z_train[:, j], Z_val[:, j], texts, parts) if llm and llm.usable else (None, None)
        )
        if interp is not None:
            out.append(_Chosen(j, float(coef), interp, rule, keyword))
        elif keyword is not None:
            out.append(_Chosen(j, float(coef), *keyword))
        else:
            notes.append(f"Latent {j}: no word or phrase is more common where it fires; it was left out.")
        report(done, len(latents))
    return out


def run_hypotheses(
    cfg: HypothesisConfig, textset: TextSet, *, progress: Progress = None, endpoint=None, handle=None
) -> HypothesisResult:
    """Generate hypotheses about what predicts `textset.target` and test them on held-out texts.

    `endpoint` (a `saelab.features.llm.LLMEndpoint`) switches interpretation and annotation to an LLM; when it
    cannot be reached the run continues offline with keyword PROXY rules and says so in `notes`.
    `handle` is the model for the "lm" embedding (loaded when None). `progress(done, 100)`.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    prep = prepare(textset, cfg)
    need = required_texts(cfg)
    if len(prep.texts) < need:
        raise BadInputError(
            f"Too few texts: {len(prep.texts)} after cleaning, but the SAE needs at least {need} "
            f"({min_train_texts(cfg.m or 64)} training texts, 2 per latent of a {cfg.m or 64}-latent SAE, at a "
            f"{'/'.join(f'{f:g}' for f in cfg.fractions)} split, and {MIN_TEST_TEXTS}+ held-out texts)."
        )
    notes = list(prep.notes)
    texts, y, binary = prep.texts, prep.y, prep.binary
    parts = split(prep.for_split, fractions=tuple(cfg.fractions), seed=cfg.seed)
    for name in ("train", "test"):
        if np.ptp(y[parts[name]]) == 0:
            raise BadInputError(f"The target is constant on the {name} split; there is nothing to predict or test.")
    bar = _Bar(progress)

    spec = EmbedSpec(cfg.embedding, cfg.lm_model or getattr(handle, "name", None), cfg.lm_layer)
    X = embed(texts, spec, progress=bar.stage("embed"), handle=handle)
    if cfg.embedding == "lm":
        X = standardise_residuals(X, parts["train"])
    seconds["embed"] = time.perf_counter() - t0

    t = time.perf_counter()
    sae = train_embedding_sae(
        X[parts["train"]], X[parts["val"]], m=cfg.m, k=cfg.k, epochs=cfg.epochs, seed=cfg.seed,
        source=spec.describe(), progress=bar.stage("sae"),
    )  # fmt: skip
    Z = sae.encode(X)
    Z_train, Z_val, Z_test = Z[parts["train"]], Z[parts["val"]], Z[parts["test"]]
    seconds["sae"] = time.perf_counter() - t

    t = time.perf_counter()
    n = min(cfg.n_hypotheses, sae.m)
    if n < cfg.n_hypotheses:
        notes.append(f"The SAE has {sae.m} latents, so at most {n} hypotheses (not {cfg.n_hypotheses}).")
    sel = select_features(Z_train, y[parts["train"]], n=n, method=cfg.selection, kind="binary" if binary else "numeric")
    report = bar.stage("interpret")
    chosen = _interpret_all(sel.indices, sel.coefficients, Z_train, Z_val, texts, parts, cfg, endpoint, notes, report)
    if not chosen:
        raise BadInputError("None of the selected latents could be described by a rule; try more texts.")
    seconds["interpret"] = time.perf_counter() - t

    t = time.perf_counter()
    test_idx = parts["test"]
    uses_llm = any(c.interp.source == "llm" for c in chosen)
    if uses_llm and len(test_idx) > cfg.llm_max_texts:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(test_idx))[: cfg.llm_max_texts])
        notes.append(f"The LLM annotated {cfg.llm_max_texts} of the {len(test_idx)} held-out texts (seed {cfg.seed}).")
        test_idx, Z_test = test_idx[keep], Z_test[keep]
    test_texts, y_test = [texts[i] for i in test_idx], y[test_idx]
    report = bar.stage("validate")
    H = np.zeros((len(test_idx), len(chosen)), dtype=bool)
    rows = []
    for c, ch in enumerate(chosen):
        try:
            H[:, c] = ch.rule.annotate(test_texts)
        except EndpointError as err:
            fell_back = ch.use_fallback()
            notes.append(
                f"Latent {ch.latent}: the LLM failed while annotating held-out texts ({err}); "
                + ("its keyword PROXY rule was used." if fell_back else "it has no annotations (left out).")
            )
            if fell_back:
                H[:, c] = ch.rule.annotate(test_texts)
        order = np.argsort(-Z_test[:, ch.latent], kind="stable")
        interp = ch.interp
        rows.append(
            {
                "rank": c + 1, "label": interp.label, "source": interp.source, "proxy": interp.proxy,
                "feature": ch.latent, "feature_name": f"latent {ch.latent}", "selection_coef": ch.coef,
                "terms": interp.terms, "fidelity_f1": interp.fidelity_f1,
                "examples": examples_for(test_texts, y_test, H[:, c], ch.rule, cfg.n_examples, order),
            }
        )  # fmt: skip
        report(c + 1, len(chosen))
    val = validate(H, y_test, binary=binary)
    selection = {"method": sel.method, "alpha": sel.alpha, "n_nonzero": sel.n_nonzero}
    sae_method = build_method("sae", rows, H, val, selection, list(sel.notes))
    reference = latent_reference(Z_test, chosen, y_test, binary)
    seconds["validate"] = time.perf_counter() - t

    baseline = None
    if cfg.baseline:
        t = time.perf_counter()
        report = bar.stage("baseline")
        baseline = bag_of_words(
            [texts[i] for i in parts["train"]], y[parts["train"]], test_texts, y_test,
            binary=binary, n=cfg.n_hypotheses, method=cfg.selection, n_examples=cfg.n_examples,
        )  # fmt: skip
        report(1, 1)
        seconds["baseline"] = time.perf_counter() - t
    if progress is not None:
        progress(100, 100)
    seconds["total"] = time.perf_counter() - t0
    n_llm = sum(c.interp.source == "llm" for c in chosen)
    interpretation = (
        "llm" if n_llm == len(chosen) else "keywords (PROXY)" if n_llm == 0 else "llm, some latents by keywords (PROXY)"
    )
    return HypothesisResult(
        config=cfg.to_dict(),
        data={
            **prep.describe(),
            "split_seed": cfg.seed,
            "split_sizes": {k: int(len(v)) for k, v in parts.items()},
            "n_test_used": int(len(test_idx)),
        },
        embedding=spec.describe(),
        sae={"m": sae.m, "k": sae.k, "path": str(sae.path), **sae.metrics},
        sae_method=sae_method,
        latent_reference=reference,
        baseline=baseline,
        interpretation=interpretation,
        notes=notes + ([PROXY_NOTE] if n_llm < len(chosen) else []),
        formulas={**FORMULAS, **_PIPELINE_FORMULAS},
        seconds=seconds,
    )


_PIPELINE_FORMULAS = {
    "selection": "LASSO (numeric) / L1-logistic (binary) on standardised latents of the training split, α bisected "
    "on a log scale until exactly n coefficients are non-zero",
    "fidelity_f1": "F1 = 2TP/(2TP+FP+FN) of the hypothesis's annotations vs the binarised latent on the validation "
    "split: 1 where a ≥ τ (τ = train 90th percentile if > 0, else any activation), 0 where a = 0, others unscored "
    "(with an LLM: a sample of up to 10 + 10 such texts)",
    "latent_reference": "the same regression with 'the latent fires' (a > 0) for each selected latent in place of its "
    "hypothesis (what the latents carry, as a reference for what their descriptions carry)",
    "redundancy": "mean |φ| over pairs of hypothesis indicators on the held-out texts",
    "sae_val_nmse": "Σ‖x − x̂‖² / Σ‖x − x̄‖² on validation embeddings",
}
