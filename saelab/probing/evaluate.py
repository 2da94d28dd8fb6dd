"""The measurements of one probing run on fixed features: test metrics with CIs, CV, sparse-k curve,
low-N learning curve, MSP baselines, per-layer curve, detection mode, top features and per-text predictions.

Split out of `run.py` so that file reads as the pipeline; every function here is deterministic given its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from saelab.probing import classify, metrics


@dataclass
class Evaluation:
    test: dict[str, Any]
    ci: dict[str, tuple[float, float]]
    cv: classify.CVResult
    sparse: list[dict[str, Any]]
    learning: list[dict[str, Any]]
    msp_error: dict[str, Any] | None
    proba_te: np.ndarray | None  # [n_test, n_classes]
    pred_te: np.ndarray  # class ids or numbers


def _score(task: str, probe: classify.FittedProbe, X: np.ndarray, y: np.ndarray) -> float:
    if task == "regression":
        return metrics.regression_metrics(y, probe.predict(X))["r2"]
    return metrics.classification_metrics(y, _proba(probe, X))["macro_f1"]


def _proba(probe: classify.FittedProbe, X: np.ndarray) -> np.ndarray:
    """Probabilities with one column per class id 0 … C−1 (a class absent from training gets 0)."""
    p = probe.predict_proba(X)
    n_classes = int(probe.info.get("n_classes", int(probe.classes.max()) + 1))
    full = np.zeros((len(X), n_classes))
    full[:, probe.classes.astype(int)] = p
    return full


def evaluate(cfg: Any, name: str, task: str, probe, X_tr, y_tr, X_te, y_te, say) -> Evaluation:
    """Test metrics + CIs, CV on train, sparse probing over k, learning curve, MSP error detection."""
    seed = cfg.seed
    if task == "regression":
        pred = probe.predict(X_te)
        test = metrics.regression_metrics(y_te, pred)
        ci = metrics.regression_cis(y_te, pred, n_boot=cfg.n_boot, seed=seed)
        proba, msp = None, None
    else:
        n_classes = int(max(y_tr.max(), y_te.max())) + 1
        probe.info["n_classes"] = n_classes
        proba = _proba(probe, X_te)
        pred = np.argmax(proba, axis=1)
        test = metrics.classification_metrics(y_te, proba)
        ci = metrics.classification_cis(y_te, proba, n_boot=cfg.n_boot, seed=seed)
        msp = metrics.msp_error_detection(y_te, proba)
    say("cross-validation", 0, cfg.cv_folds)
    cv = classify.cross_validate(
        name,
        X_tr,
        y_tr,
        folds=cfg.cv_folds,
        seed=seed,
        C=cfg.C,
        k=cfg.k,
        progress=lambda d, t: say("cross-validation", d, t),
    )

    sparse = []
    if task == "classification":
        ks = [k for k in cfg.sparse_ks if 1 <= k <= X_tr.shape[1]]
        for i, k in enumerate(ks):
            sp = classify.fit_probe("topk", X_tr, y_tr, C=cfg.C, k=k, seed=seed)
            sp.info["n_classes"] = probe.info["n_classes"]
            m = metrics.classification_metrics(y_te, _proba(sp, X_te))
            # the same k scored on the training folds (features re-selected inside each fold): lets k be chosen
            # without looking at the test curve
            cv_k = classify.cross_validate("topk", X_tr, y_tr, folds=cfg.cv_folds, seed=seed, C=cfg.C, k=k).mean
            sparse.append(
                {
                    "k": k,
                    "macro_f1": m["macro_f1"],
                    "accuracy": m["accuracy"],
                    "cv_macro_f1": cv_k,
                    "features": sp.selected.tolist(),
                }
            )
            say("sparse probing", i + 1, len(ks))

    learning = []
    if cfg.learning_curve:

        def fit_score(idx: np.ndarray) -> float:
            p = classify.fit_probe(name, X_tr[idx], y_tr[idx], C=cfg.C, k=cfg.k, seed=seed)
            if task == "classification":
                p.info["n_classes"] = probe.info["n_classes"]
            return _score(task, p, X_te, y_te)

        start = 24 if len(y_tr) > 24 else len(y_tr)
        pts = metrics.learning_curve(fit_score, y_tr, start=start, seed=seed)
        key = "r2" if task == "regression" else "macro_f1"
        learning = [{"n_train": p.n_train, key: p.score} for p in pts]
    return Evaluation(test, ci, cv, sparse, learning, msp, proba, pred)


def sparse_choice(sparse: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sparse probe whose k has the best mean CV macro-F1 on the training split (ties to the smaller k)."""
    rows = [r for r in sparse if r.get("cv_macro_f1") is not None]
    if not rows:
        return None
    return max(rows, key=lambda r: (round(r["cv_macro_f1"], 9), -r["k"]))


def layer_curve(cfg, name, fs, n_tr, y_tr, y_te, task) -> list[dict[str, Any]]:
    """Test score of the same probe on each layer's features (source `layer_sweep`)."""
    layers = fs.extra["layers"]
    items = layers.items() if isinstance(layers, dict) else enumerate(layers)
    out = []
    for layer, X in items:
        X = np.asarray(X, dtype=np.float32)
        p = classify.fit_probe(name, X[:n_tr], y_tr, C=cfg.C, k=cfg.k, seed=cfg.seed)
        if task == "classification":
            p.info["n_classes"] = int(max(y_tr.max(), y_te.max())) + 1
        key = "r2" if task == "regression" else "macro_f1"
        out.append({"layer": int(layer), key: _score(task, p, X[n_tr : n_tr + len(y_te)], y_te)})
    return out


def detection(cfg, texts: list[str], y: np.ndarray, n_tr: int, handle, loaded_sae) -> Any:
    """AxBench detection on (at most `detection_max_texts`, stratified) train and test texts."""
    from saelab.probing.concept_detection import collect_tokens, run_detection

    cap = max(4, int(cfg.detection_max_texts) // 2)
    tr = metrics.stratified_subsample(y[:n_tr], min(cap, n_tr), cfg.seed)
    te = n_tr + metrics.stratified_subsample(y[n_tr:], min(cap, len(y) - n_tr), cfg.seed)
    hook = loaded_sae.hook if loaded_sae is not None else (cfg.hook or f"blocks.{cfg.layer}.hook_resid_post")
    methods = list(cfg.detection)
    if handle is None:
        from saelab.probing.concept_detection import TokenData

        train = TokenData([texts[i] for i in tr], y[tr])
        test = TokenData([texts[i] for i in te], y[te])
    else:
        sae = loaded_sae if "sae-a" in methods else None
        kw = {"loaded_sae": sae, "max_tokens": cfg.max_tokens, "batch_size": cfg.batch_size}
        train = collect_tokens(handle, [texts[i] for i in tr], y[tr], hook, **kw)
        test = collect_tokens(handle, [texts[i] for i in te], y[te], hook, **kw)
    res = run_detection(methods, train, test, seed=cfg.seed, n_boot=cfg.n_boot)
    res.info["_data"] = {"n_train": len(tr), "n_test": len(te), "hook": hook}
    return res


def ood(proba_in: np.ndarray, probe, X_ood: np.ndarray) -> dict[str, Any]:
    """MSP AUROC: in-distribution test texts against another data set's texts (same features, same probe)."""
    return metrics.msp_ood_detection(proba_in, _proba(probe, X_ood))


def top_features(probe, fs, labels: dict[int, str], classes, n: int) -> list[dict[str, Any]]:
    """The n features the probe relies on most (importance, see `FittedProbe.importance`), with their label."""
    imp = probe.importance
    order = np.argsort(-imp, kind="stable")[:n]
    coef = probe.coef
    out = []
    for rank, j in enumerate(order):
        if imp[j] <= 0:
            break
        row: dict[str, Any] = {
            "rank": rank + 1,
            "feature": int(j),
            "name": str(fs.names[j]),
            "importance": float(imp[j]),
        }
        if fs.latent_ids is not None:
            latent = int(fs.latent_ids[j])
            row["latent"] = latent
            row["label"] = labels.get(latent, "")
        if coef is not None:
            if coef.shape[0] == 1:
                row["weight"] = float(coef[0, j])
                if classes:
                    row["favours"] = classes[1] if coef[0, j] > 0 else classes[0]
            elif classes:
                row["favours"] = classes[int(np.argmax(coef[:, j]))]
        out.append(row)
    return out


def predictions(ts, te: np.ndarray, y_te: np.ndarray, ev: Evaluation, classes, task: str) -> list[dict[str, Any]]:
    """One row per test text; misclassified (largest error) first, then the rest by index."""
    rows = []
    for i, idx in enumerate(te):
        row: dict[str, Any] = {"index": int(idx), "text": ts.texts[int(idx)]}
        if task == "regression":
            row.update(true=float(y_te[i]), pred=float(ev.pred_te[i]), error=float(abs(ev.pred_te[i] - y_te[i])))
        else:
            p = ev.proba_te[i]
            row.update(
                true=classes[int(y_te[i])],
                pred=classes[int(ev.pred_te[i])],
                p_max=float(p.max()),
                p_true=float(p[int(y_te[i])]),
                correct=bool(ev.pred_te[i] == y_te[i]),
            )
        rows.append(row)
    if task == "regression":
        return sorted(rows, key=lambda r: (-r["error"], r["index"]))
    return sorted(rows, key=lambda r: (r["correct"], r["p_true"], r["index"]))


def weights(probe: classify.FittedProbe, fs) -> dict[str, np.ndarray]:
    """Arrays to export: standardisation, linear weights (or forest importances) and selected columns."""
    out = {"feature_mean": probe.mean.astype(np.float32), "feature_scale": probe.scale.astype(np.float32)}
    if probe.coef is not None:
        out["coef"] = probe.coef.astype(np.float32)
        out["intercept"] = probe.intercept.astype(np.float32)
    else:
        out["importance"] = probe.importance.astype(np.float32)
    if probe.selected is not None:
        out["selected"] = probe.selected.astype(np.int64)
    if fs.latent_ids is not None:
        out["latent_ids"] = np.asarray(fs.latent_ids, dtype=np.int64)
    return out


def source_results(cfg, fs, n_tr: int, n_used: int, y_te: np.ndarray, task: str) -> dict[str, Any]:
    """What a source computes beyond X: the SAV majority vote scored on the test split (with CIs), and the
    neurons source's best single neuron per layer."""
    out: dict[str, Any] = {}
    if "sav" in fs.extra and task == "classification":
        from saelab.probing.feature_sources import sav_predict

        sav = fs.extra["sav"]
        pred = np.asarray(sav_predict(fs, fs.X[n_tr:n_used])).astype(np.int64)
        onehot = np.eye(int(max(y_te.max(), pred.max())) + 1)[pred]  # hard votes: AUROC is that of a 0/1 score
        m = metrics.classification_metrics(y_te, onehot)
        ci = metrics.classification_cis(y_te, onehot, n_boot=cfg.n_boot, seed=cfg.seed)
        out["sav_vote"] = {
            "macro_f1": m["macro_f1"],
            "accuracy": m["accuracy"],
            "ci": {k: list(ci[k]) for k in ("macro_f1", "accuracy")},
            "heads": sav["heads"],
            "head_accuracy": sav["head_accuracy"],
            "train_vote_accuracy": sav["train_vote_accuracy"],
            "formula": "majority vote of the kept heads' nearest-centroid (cosine) predictions",
        }
    if "best_neuron_by_layer" in fs.extra:
        out["best_neuron_by_layer"] = fs.extra["best_neuron_by_layer"]
        out["separability"] = str(fs.extra.get("separability", ""))
    return out


def source_formula(fs) -> dict[str, str]:
    formula = fs.extra.get("formula") if isinstance(fs.extra, dict) else None
    return {"features": str(formula)} if formula else {}
