"""One probing run: `ProbeConfig` in, `ProbeReport` out (data → split → features → probe → metrics).

Everything random is seeded from `cfg.seed` (row sampling, the train/test split, CV folds, bootstrap,
learning-curve subsamples, the classifier), so `run_probe(ProbeConfig.from_dict(report.config))` on the same
data, model and SAE reproduces every metric exactly. The test split is never used for fitting or selection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.probing import classify, metrics
from saelab.probing.report import ProbeReport  # re-exported: run_probe's result type
from saelab.storage import jsonable

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class ProbeConfig(DictConfig):
    """What to probe and how. Data: `dataset` (built-in sae-probes name) or `csv_path` + columns."""

    dataset: str | None = "92_glue_sst2"
    csv_path: str | None = None
    text_col: str = "text"
    target_col: str = "label"
    kind: str = "auto"  # auto | binary | multiclass | numeric
    numeric_mode: str = (
        "regress"  # numeric targets: "regress" (ridge/linear, R²) or "median" (binarise at train median)
    )
    max_rows: int | None = 20_000  # rows read (seeded sample beyond)
    test_fraction: float = 0.2
    n_train: int | None = None  # optional stratified subsample of the training split (seeded)
    n_test: int | None = None  # optional stratified subsample of the test split (seeded)
    seed: int = 0
    # feature source (saelab.probing.feature_sources.SourceParams)
    source: str = "sae"
    pooling: str = "topn-sum"
    topn: int = 20
    binarise: float | None = None
    layer: int = 12
    hook: str | None = None
    max_tokens: int = 128
    batch_size: int = 16
    top_k_neurons: int = 50
    top_heads: int = 20  # SAV: heads kept by nearest-centroid accuracy
    model: str | None = None  # None: the default model
    sae_path: str | None = None  # None: the shipped default SAE
    # probe
    classifier: str = "logistic-l2"
    C: float = 1.0
    tune_C: bool = False  # choose C from C_grid by cross-validation on the training split
    C_grid: list[float] = field(default_factory=lambda: list(classify.C_GRID))
    k: int = 5
    sparse_ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    cv_folds: int = 5
    n_boot: int = 1000
    learning_curve: bool = True
    ood_dataset: str | None = None
    n_ood: int = 500
    detection: list[str] = field(default_factory=list)  # AxBench detectors to also run (binary targets)
    detection_max_texts: int = 400  # cap on texts for detection (token activations are kept per token)
    n_top_features: int = 20

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.csv_path is None):
            raise BadInputError("Give either a built-in dataset or a CSV path (exactly one).")
        if not 0.05 <= float(self.test_fraction) <= 0.8:
            raise BadInputError(f"test_fraction {self.test_fraction} must be between 0.05 and 0.8.")
        if self.numeric_mode not in ("regress", "median"):
            raise BadInputError("numeric_mode must be 'regress' or 'median'.")
        if self.classifier not in classify.CLASSIFIERS:
            raise BadInputError(
                f"Unknown classifier {self.classifier!r}; choose one of {sorted(classify.CLASSIFIERS)}."
            )
        self.sparse_ks = [int(k) for k in self.sparse_ks]
        self.C_grid = [float(c) for c in self.C_grid]
        if self.tune_C and (not self.C_grid or min(self.C_grid) <= 0):
            raise BadInputError("C_grid needs at least one positive value to tune C.")
        self.detection = list(self.detection)

    def source_params(self) -> Any:
        from saelab.probing.feature_sources import SourceParams

        return SourceParams(
            source=self.source,
            pooling=self.pooling,
            topn=self.topn,
            binarise=self.binarise,
            layer=self.layer,
            hook=self.hook,
            max_tokens=self.max_tokens,
            batch_size=self.batch_size,
            top_k_neurons=self.top_k_neurons,
            top_heads=self.top_heads,
        )


def load_textset(cfg: ProbeConfig) -> Any:
    """The TextSet a config names (built-in set or CSV path)."""
    from saelab import textsets

    if cfg.dataset is not None:
        return textsets.from_builtin(cfg.dataset, max_rows=cfg.max_rows, seed=cfg.seed, kind=cfg.kind)
    return textsets.from_csv(
        cfg.csv_path,
        text_col=cfg.text_col,
        target_col=cfg.target_col,
        kind=cfg.kind,
        max_rows=cfg.max_rows,
        seed=cfg.seed,
    )


def make_split(cfg: ProbeConfig, ts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test indices (stratified for classes), optionally subsampled to n_train / n_test."""
    from saelab import textsets

    parts = textsets.split(
        ts, fractions=(1 - cfg.test_fraction, cfg.test_fraction), seed=cfg.seed, names=("train", "test")
    )
    tr, te = parts["train"], parts["test"]
    y = ts.target
    if cfg.n_train and cfg.n_train < len(tr):
        tr = tr[_subsample(y[tr], cfg.n_train, cfg.seed, ts.kind)]
    if cfg.n_test and cfg.n_test < len(te):
        te = te[_subsample(y[te], cfg.n_test, cfg.seed + 1, ts.kind)]
    return tr, te


def _subsample(y: np.ndarray, n: int, seed: int, kind: str) -> np.ndarray:
    if kind == "numeric":
        return np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return metrics.stratified_subsample(y, n, seed)


def _target(cfg: ProbeConfig, ts: Any, tr: np.ndarray, notes: list[str]) -> tuple[np.ndarray, list[str] | None, str]:
    """Targets as used by the probe: class ids, or floats; numeric + median → two classes at the train median."""
    if ts.kind != "numeric":
        return ts.target.astype(np.int64), list(ts.classes), "classification"
    if cfg.numeric_mode == "regress":
        return ts.target.astype(np.float64), None, "regression"
    med = float(np.median(ts.target[tr]))
    notes.append(f"Numeric target binarised at the training median {med:.4g}: class 1 = value > median.")
    return (ts.target > med).astype(np.int64), [f"≤ {med:.4g}", f"> {med:.4g}"], "classification"


def _label_lookup(cfg: ProbeConfig, latent_labels: dict[int, str] | None) -> dict[int, str]:
    if latent_labels is not None:
        return latent_labels
    try:
        from saelab.features.store import DashboardStore

        path = cfg.sae_path or str(_default_sae_dir())
        if not DashboardStore.exists(path):
            return {}
        labels = DashboardStore(path).labels()
        return {i: lab.label for i, lab in enumerate(labels.latents)} if labels is not None else {}
    except Exception as err:  # labels are a nicety; the probe's numbers do not depend on them
        log.warning("latent labels unavailable: %s", err)
        return {}


def _default_sae_dir() -> Any:
    from saelab.defaults import default_sae_dir

    return default_sae_dir()


def load_resources(cfg: ProbeConfig, handle: Any = None, loaded_sae: Any = None) -> tuple[Any, Any]:
    """The model and (for SAE sources and detectors) the SAE a config needs, unless given."""
    needs_model = cfg.source != "tfidf" or any(m != "bow" for m in cfg.detection)
    needs_sae = cfg.source == "sae" or "sae-a" in cfg.detection
    if handle is None and needs_model:
        from saelab.models import load_model

        handle = load_model(cfg.model) if cfg.model else load_model()
    if loaded_sae is None and needs_sae:
        from saelab.sae.files import load_sae

        loaded_sae = load_sae(cfg.sae_path or _default_sae_dir(), handle=handle)
    return handle, loaded_sae


def run_probe(
    cfg: ProbeConfig,
    *,
    handle: Any = None,
    loaded_sae: Any = None,
    textset: Any = None,
    latent_labels: dict[int, str] | None = None,
    progress: Progress | None = None,
) -> ProbeReport:
    """Run the whole probe `cfg` describes. `textset` overrides loading (the page passes its upload)."""
    from saelab.probing.feature_sources import extract_features

    say = progress or (lambda phase, done, total: None)
    config = cfg.to_dict()  # as asked: with tune_C, re-running it repeats the same (seeded) choice of C
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    ts = textset if textset is not None else load_textset(cfg)
    notes = list(ts.notes)
    tr, te = make_split(cfg, ts)
    y_all, classes, task = _target(cfg, ts, tr, notes)
    name = cfg.classifier
    if task == "regression" and name not in classify.NUMERIC:
        notes.append(f"Numeric target: {name} replaced by ridge regression (R²).")
        name = "ridge"
    if task == "classification" and name in classify.NUMERIC:
        raise BadInputError(f"{name} is for numeric targets; choose a classifier.")
    handle, loaded_sae = load_resources(cfg, handle, loaded_sae)

    used = np.r_[tr, te]
    texts = [ts.texts[i] for i in used]
    y_used = y_all[used]
    # Out-of-distribution texts ride along in the same extraction (same vocabulary, same neurons), never fitted on.
    ood_texts = _ood_texts(cfg, set(texts)) if cfg.ood_dataset and task == "classification" else []
    fit_mask = np.r_[np.ones(len(tr), bool), np.zeros(len(te) + len(ood_texts), bool)]
    say("features", 0, 1)
    fs = extract_features(
        cfg.source_params(),
        texts + ood_texts,
        handle=handle,
        loaded_sae=loaded_sae,
        labels=np.r_[y_used, np.zeros(len(ood_texts), y_used.dtype)],
        fit_texts_mask=fit_mask,
        progress=lambda d, t: say("features", d, t),
    )
    timings["features_s"] = time.perf_counter() - t0
    X = np.asarray(fs.X, dtype=np.float32)
    notes += [str(n) for n in fs.extra.get("notes", [])]
    n_tr = len(tr)
    X_tr, X_te, y_tr, y_te = X[:n_tr], X[n_tr : len(texts)], y_used[:n_tr], y_used[n_tr:]

    t1 = time.perf_counter()
    tuning = None
    if cfg.tune_C and name not in classify.TUNABLE:
        notes.append(f"{name} has no C: tuning skipped.")
    elif cfg.tune_C:
        say("tuning C", 0, len(cfg.C_grid))
        found = classify.tune_C(
            name, X_tr, y_tr, grid=cfg.C_grid, folds=cfg.cv_folds, seed=cfg.seed, k=cfg.k,
            progress=lambda d, t: say("tuning C", d, t),
        )  # fmt: skip
        tuning = found
        cfg = replace(cfg, C=found.best_C)  # every later fit (CV, sparse, learning curve, layers) uses C*
        notes.append(
            f"C = {found.best_C:g} chosen by {found.folds}-fold CV on the training split over {found.grid} "
            f"(CV {found.metric} {max(found.means):.3f}); the test split was not used."
            + (" C* is at the edge of the grid: a wider grid may do better." if found.at_edge else "")
        )
    say("probe", 0, 1)
    probe = classify.fit_probe(name, X_tr, y_tr, C=cfg.C, k=cfg.k, seed=cfg.seed)
    from saelab.probing import evaluate

    ev = evaluate.evaluate(cfg, name, task, probe, X_tr, y_tr, X_te, y_te, say)
    timings["probe_s"] = time.perf_counter() - t1

    layers = evaluate.layer_curve(cfg, name, fs, n_tr, y_tr, y_te, task) if "layers" in fs.extra else None
    msp_ood = None
    if ood_texts:
        msp_ood = {**evaluate.ood(ev.proba_te, probe, X[len(texts) :]), "dataset": cfg.ood_dataset}
    detection = None
    if cfg.detection:
        if task != "classification" or len(classes) != 2:
            notes.append("Detection mode needs a binary target; skipped.")
        else:
            say("detection", 0, 1)
            t2 = time.perf_counter()
            detection = evaluate.detection(cfg, texts, y_used, n_tr, handle, loaded_sae)
            timings["detection_s"] = time.perf_counter() - t2
    labels = _label_lookup(cfg, latent_labels) if fs.latent_ids is not None else {}
    top = evaluate.top_features(probe, fs, labels, classes, cfg.n_top_features)
    preds = evaluate.predictions(ts, te, y_te, ev, classes, task)
    timings["total_s"] = time.perf_counter() - t0
    return ProbeReport(
        config=config,
        data={
            **ts.describe(),
            "task": task,
            "classes_used": classes,
            "split": {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "n_train": int(n_tr), "n_test": len(te)},
            "train_index": [int(i) for i in tr],
            "test_index": [int(i) for i in te],
            "train_class_counts": _counts(y_tr, classes),
            "test_class_counts": _counts(y_te, classes),
        },
        features={
            "source": fs.source,
            "params": jsonable(fs.params if isinstance(fs.params, dict) else getattr(fs.params, "__dict__", {})),
            "n_features": int(X.shape[1]),
            "latent_ids": fs.latent_ids is not None,
            "extra": jsonable({k: v for k, v in fs.extra.items() if k not in ("layers", "notes")}),
        },
        task=task,
        classifier=name,
        metrics=ev.test,
        ci={k: list(v) for k, v in ev.ci.items()},
        cv=ev.cv,
        sparse=ev.sparse,
        learning=ev.learning,
        msp_error=ev.msp_error,
        msp_ood=msp_ood,
        layers=layers,
        detection=detection,
        source_results=evaluate.source_results(cfg, fs, n_tr, len(texts), y_te, task),
        top_features=top,
        predictions=preds,
        formulas={**metrics.FORMULAS, "classifier": classify.FORMULAS[name], **evaluate.source_formula(fs)},
        timings={k: round(v, 3) for k, v in timings.items()},
        notes=notes,
        weights=evaluate.weights(probe, fs),
        tuning=tuning,
    )


def _ood_texts(cfg: ProbeConfig, seen: set[str]) -> list[str]:
    """Up to `n_ood` texts of another built-in set (seeded sample), minus any also in the probed set."""
    from saelab import textsets

    other = textsets.from_builtin(cfg.ood_dataset, max_rows=cfg.n_ood, seed=cfg.seed)
    return [t for t in other.texts if t not in seen]


def _counts(y: np.ndarray, classes: list[str] | None) -> dict[str, int]:
    if classes is None:
        return {}
    vals, cnt = np.unique(y, return_counts=True)
    return {classes[int(v)]: int(c) for v, c in zip(vals, cnt, strict=True)}
