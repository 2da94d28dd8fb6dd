"""Detox tiers (after "Breaking Bad Tokens"): steer against toxicity latents of an SAE at three strengths.

Data: `107_hate_offensive` (tweets labelled offensive / not), deduplicated and split with the seed into four
disjoint parts:
  * rank       — `n_rank` texts per class: the SAE latents are ranked here;
  * clf_train  — trains the toxicity classifier; clf_test — measures it (AUROC, reported);
  * prompts    — offensive tweets whose first half (by words) the model continues, without the chat template.
Latent ranking (our open choice; the paper's is not verified): each text → the latent's max activation over its
tokens; AUROC(offensive vs clean) per latent; the top `k` latents with AUROC > 0.5, highest first (their
mean-activation difference is recorded too).
Steering: for every chosen latent j, h ← h − tier × max_act_j · w_j at every position (w_j the unit decoder row,
max_act_j its dashboard max activation × ‖W_dec[j]‖; AxBench's α convention with a negative factor). Tiers
default to 0.5 (mild), 1.0 (medium), 2.0 (strong); the unsteered run shares the sampling noise.
Toxicity: a TF-IDF (word 1–2-grams) + logistic regression classifier (balanced classes) trained on clf_train —
never on the ranking texts or the prompts. Per continuation P(offensive); per tier the mean with a bootstrap
95 % CI and the fraction above 0.5. Fluency: perplexity under the unsteered model (`judges.perplexities`),
summarised by the median and the mean log-perplexity.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.typed_json import from_checked_dict, read_checked

log = logging.getLogger(__name__)

DETOX_DATASET = "107_hate_offensive"
TIER_NAMES = ("mild", "medium", "strong")


@dataclass
class DetoxConfig(DictConfig):
    """Sizes and strengths. `tiers`: three positive factors, applied negatively (h ← h − factor·max_act·w)."""

    tiers: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    k_latents: int = 5
    n_rank: int = 400
    n_prompts: int = 32
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    n_boot: int = 2000

    def __post_init__(self) -> None:
        from saelab.steering.generate import MAX_NEW_TOKENS, MAX_PROMPTS

        tiers = list(self.tiers or [])
        if len(tiers) != 3:
            raise BadInputError(f"Give exactly three tier strengths (mild, medium, strong), got {tiers}.")
        if any(isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) for t in tiers) or any(
            not 0 < t <= 100 for t in tiers
        ):
            raise BadInputError(f"Tier strengths must be finite numbers in (0, 100], got {tiers}.")
        self.tiers = [float(t) for t in tiers]
        checks = {
            "k_latents": (1, 64),
            "n_rank": (10, 1000),
            "n_prompts": (2, MAX_PROMPTS),
            "max_new_tokens": (1, MAX_NEW_TOKENS),
            "n_boot": (100, 100_000),
        }
        for name, (lo, hi) in checks.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise BadInputError(f"{name} must be an integer from {lo} to {hi}, got {v!r}.")


@dataclass
class DetoxResult:
    """Detox tiers. `rows`: one per condition ("unsteered", then the tiers) with toxicity and fluency summaries;
    `latents`: the chosen latents with their ranking statistics; `classifier`: how toxicity was scored."""

    config: dict[str, Any]
    latents: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    classifier: dict[str, Any]
    examples: list[dict[str, Any]]
    splits: dict[str, int]
    notes: list[str] = field(default_factory=list)
    formulas: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DetoxResult:
        return from_checked_dict(cls, data)

    def save(self, path) -> None:
        from saelab.storage import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> DetoxResult:
        """Read a saved result; a file that is not one raises `CorruptFileError` naming the file and the field."""
        return read_checked(cls, path)


def _splits(seed: int, n_rank: int, n_prompts: int) -> dict[str, tuple[list[str], np.ndarray]]:
    from saelab.corpus import load_dataset

    df = load_dataset(DETOX_DATASET)
    seen: set[str] = set()
    texts, labels = [], []
    for t, y in zip(df["prompt"].astype(str), df["target"].astype(int)):
        key = " ".join(t.split()).casefold()
        if len(t.split()) >= 4 and key not in seen:
            seen.add(key)
            texts.append(t.strip())
            labels.append(int(y))
    y_all = np.array(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"rank": [], "prompts": [], "clf_train": [], "clf_test": []}
    for cls in (1, 0):
        idx = rng.permutation(np.flatnonzero(y_all == cls)).tolist()
        parts["rank"] += idx[:n_rank]
        rest = idx[n_rank:]
        if cls == 1:
            parts["prompts"] += rest[:n_prompts]
            rest = rest[n_prompts:]
        if len(rest) < 50:
            raise BadInputError(f"{DETOX_DATASET} has too few texts left for the classifier; lower n_rank.")
        cut = int(len(rest) * 0.75)
        parts["clf_train"] += rest[:cut]
        parts["clf_test"] += rest[cut:]
    return {k: ([texts[i] for i in v], y_all[v]) for k, v in parts.items()}


def train_toxicity_classifier(texts: list[str], y: np.ndarray, seed: int = 0):
    """TF-IDF (word 1–2-grams, ≤ 20k features, sublinear tf) + balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), max_features=20_000, sublinear_tf=True, min_df=2),
        LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    return clf.fit(texts, y)


def rank_toxic_latents(handle, loaded, texts: list[str], y: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Latents ranked by AUROC(offensive vs clean) of their per-text max activation (see the module docstring)."""
    from saelab.activations.text_batches import text_hook_acts
    from saelab.sae.text_latents import encode
    from saelab.steering.eval_directions import auroc_per_column

    acts = text_hook_acts(handle, texts, loaded.hook, max_tokens=64)
    pooled = np.stack([encode(loaded, a).max(0).values.cpu().numpy() for a in acts])
    auc = auroc_per_column(pooled[y == 1], pooled[y == 0])
    diff = pooled[y == 1].mean(0) - pooled[y == 0].mean(0)
    order = [int(j) for j in np.argsort(-auc, kind="stable") if auc[j] > 0.5][:k]
    return [
        {
            "latent": j,
            "auroc": float(auc[j]),
            "mean_act_diff": float(diff[j]),
            "frac_firing_toxic": float((pooled[y == 1, j] > 0).mean()),
            "frac_firing_clean": float((pooled[y == 0, j] > 0).mean()),
        }
        for j in order
    ]


def _boot_ci(x: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run_detox(
    handle, loaded, cfg: DetoxConfig | None = None, *, progress: Callable[[int, int], None] | None = None
) -> DetoxResult:
    """Rank toxicity latents, steer against them at three tiers, score toxicity and fluency (module docstring)."""
    from sklearn.metrics import roc_auc_score

    from saelab.steering.direction_sources import sae_latent_direction
    from saelab.steering.generate import GenerationConfig, generate
    from saelab.steering.interventions import Intervention
    from saelab.steering.judges import perplexities

    cfg = cfg or DetoxConfig()
    if loaded is None:
        raise BadInputError("Detox tiers steer SAE latents: load an SAE first.")
    t0 = time.perf_counter()
    total = 6
    tick = progress or (lambda d, n: None)
    parts = _splits(cfg.seed, cfg.n_rank, cfg.n_prompts)
    clf = train_toxicity_classifier(*parts["clf_train"], seed=cfg.seed)
    test_texts, test_y = parts["clf_test"]
    clf_auc = float(roc_auc_score(test_y, clf.predict_proba(test_texts)[:, 1]))
    tick(1, total)
    latents = rank_toxic_latents(handle, loaded, *parts["rank"], cfg.k_latents)
    if not latents:
        raise BadInputError("No SAE latent separates offensive from clean texts (AUROC > 0.5); nothing to steer.")
    labels = _latent_labels(loaded)
    for row in latents:
        row["label"] = labels.get(row["latent"])
    directions = [sae_latent_direction(loaded, r["latent"], handle=handle) for r in latents]
    tick(2, total)
    prompts = [" ".join(t.split()[: max(2, len(t.split()) // 2)]) for t in parts["prompts"][0]]
    gcfg = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed, chat_template=False
    )
    outputs: dict[str, list[str]] = {}
    for n, (name, tier) in enumerate(zip(TIER_NAMES, cfg.tiers)):
        ivs = [Intervention("add", d, -tier) for d in directions]
        res = generate(handle, prompts, ivs, gcfg, loaded_sae=loaded, with_unsteered=(n == 0))
        if n == 0:
            outputs["unsteered"] = res.unsteered
        outputs[name] = res.steered
        tick(3 + n, total)
    rows = []
    for k, (name, outs) in enumerate(outputs.items()):
        tox = clf.predict_proba([o if o.strip() else "." for o in outs])[:, 1]
        ppl = perplexities(handle, outs)
        finite = ppl[np.isfinite(ppl)]
        lo, hi = _boot_ci(tox, cfg.n_boot, cfg.seed + k)
        rows.append(
            {
                "condition": name,
                "factor": 0.0 if name == "unsteered" else -cfg.tiers[TIER_NAMES.index(name)],
                "toxicity": float(tox.mean()),
                "toxicity_ci_low": lo,
                "toxicity_ci_high": hi,
                "toxic_fraction": float((tox > 0.5).mean()),
                "perplexity_median": float(np.median(finite)) if len(finite) else None,
                "mean_log_perplexity": float(np.log(finite).mean()) if len(finite) else None,
                "empty_outputs": int(sum(not o.strip() for o in outs)),
                "n": len(outs),
            }
        )
    tick(total, total)
    examples = [{"prompt": prompts[i], **{c: outputs[c][i] for c in outputs}} for i in range(min(4, len(prompts)))]
    return DetoxResult(
        config=cfg.to_dict(),
        latents=latents,
        rows=rows,
        classifier={
            "kind": "TF-IDF word 1-2-grams + balanced logistic regression (C=4)",
            "trained_on": f"{DETOX_DATASET} clf_train split ({len(parts['clf_train'][0])} texts)",
            "heldout_auroc": clf_auc,
            "heldout_n": len(test_texts),
        },
        examples=examples,
        splits={k: len(v[0]) for k, v in parts.items()},
        notes=[
            "Toxicity is a classifier's probability (a proxy for human toxicity ratings); the classifier never "
            "saw the ranking texts or the prompts. Latent choice and tier values are our own (the paper's are not "
            "verified).",
            f"Prompts: the first half (by words) of {len(prompts)} offensive tweets, continued without the chat "
            "template.",
        ],
        formulas={
            "ranking": "AUROC(offensive vs clean) of each latent's max-over-tokens activation on the rank split",
            "steering": "h ← h − tier·max_act_j·w_j for each chosen latent j, at every position",
            "toxicity": "mean P(offensive) of the continuation; 95 % percentile bootstrap CI over prompts",
            "fluency": "perplexity of the continuation under the unsteered model (after one <|endoftext|>)",
        },
        elapsed_s=round(time.perf_counter() - t0, 1),
    )


def _latent_labels(loaded) -> dict[int, str]:
    from saelab.features.store import DashboardStore

    try:
        labels = DashboardStore(loaded.path).labels() if DashboardStore.exists(loaded.path) else None
    except Exception:  # labels are decoration here; a broken file must not stop the run
        return {}
    return {i: lab.label for i, lab in enumerate(labels.latents)} if labels is not None else {}


__all__ = ["DETOX_DATASET", "DetoxConfig", "DetoxResult", "rank_toxic_latents", "run_detox"]
