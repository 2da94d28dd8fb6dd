"""Export a probing run: self-contained HTML (every figure, plotly.js inline, user text escaped), `result.json`
(config, data provenance, seeds, metrics, per-example predictions), `weights.safetensors`, `predictions.csv`,
and — for uploaded CSVs — `data.csv` with the exact texts and labels, so the export alone re-runs.

`read_report(folder)` reads the export back into a `ProbeReport` (weights included); `rerun_export(folder)` runs
its config again, and the metrics come out identical.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saelab.errors import BadInputError, CorruptFileError
from saelab.probing.evaluate import sparse_choice
from saelab.probing.report import ProbeReport
from saelab.probing.run import ProbeConfig, run_probe
from saelab.reports import RESULT_FILE, WEIGHTS_FILE, HtmlReport, write_export
from saelab.reports import probing_figures as figures
from saelab.storage import jsonable, load_tensors, read_json

FORMAT = "saelab.probe"
VERSION = 1
DATA_FILE = "data.csv"


def _fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:  # NaN, as a report read back from JSON holds it
        return "–"
    if ci is None or any(v != v for v in ci):
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def summary_rows(report: ProbeReport) -> list[dict[str, Any]]:
    """Headline metrics with their 95 % bootstrap CIs."""
    m, ci = report.metrics, report.ci
    keys = ["r2", "mae", "pearson_r"] if report.task == "regression" else ["macro_f1", "accuracy", "auroc"]
    rows = [
        {"metric": k, "test value [95 % CI]": _fmt_ci(m[k], ci.get(k)), "formula": report.formulas.get(k, "")}
        for k in keys
    ]
    cv = report.cv
    rows.append(
        {
            "metric": f"CV {cv.metric}",
            "test value [95 % CI]": f"{cv.mean:.3f} ± {cv.std:.3f} (sd over {cv.folds} folds)",
            "formula": "stratified k-fold on the training split",
        }
    )
    best = sparse_choice(report.sparse)
    if best is not None:
        rows.append(
            {
                "metric": "Sparse probe, k chosen by CV",
                "test value [95 % CI]": f"k* = {best['k']}: test macro-F1 {best['macro_f1']:.3f} "
                f"(CV {best['cv_macro_f1']:.3f})",
                "formula": "k* = argmax_k mean CV macro-F1 on the training split (top-k features by class-mean "
                "spread, re-selected in each fold), ties to the smaller k",
            }
        )
    if report.tuning is not None:
        t = report.tuning
        rows.append(
            {
                "metric": "C chosen by CV",
                "test value [95 % CI]": f"C* = {t.best_C:g} of {t.grid} (CV {t.metric} {max(t.means):.3f})",
                "formula": t.rule,
            }
        )
    if report.msp_error:
        e = report.msp_error
        rows.append(
            {
                "metric": "MSP error-detection AUROC",
                "test value [95 % CI]": f"{e['auroc']:.3f} (AUPR {e['aupr']:.3f}; {e['n_neg']} errors)",
                "formula": report.formulas["msp_error"],
            }
        )
    sav = report.source_results.get("sav_vote")
    if sav:
        rows.append(
            {
                "metric": "SAV head-vote macro-F1",
                "test value [95 % CI]": _fmt_ci(sav["macro_f1"], sav["ci"]["macro_f1"]),
                "formula": sav["formula"],
            }
        )
    if report.msp_ood:
        o = report.msp_ood
        rows.append(
            {
                "metric": f"MSP OOD AUROC vs {o['dataset']}",
                "test value [95 % CI]": f"{o['auroc']:.3f}",
                "formula": report.formulas["msp_ood"],
            }
        )
    return rows  # fmt: skip


def build_html(report: ProbeReport) -> HtmlReport:
    """The HTML report of a run."""
    cfg, data = report.config, report.data
    what = cfg["dataset"] or data["provenance"].get("source", "uploaded CSV")
    rep = HtmlReport(
        f"Probe report: {what}",
        subtitle=f"{report.features['source']} features · {report.classifier} · seed {cfg['seed']}",
    )
    rep.heading("Result")
    rep.table(summary_rows(report))
    for note in report.notes:
        rep.note(note)
    rep.heading("Data")
    split = data["split"]
    rep.text(
        f"{data['n']:,} texts ({data['kind']} target) from {data['provenance'].get('source')}; "
        f"train {split['n_train']:,} / test {split['n_test']:,} (seeded split, seed {split['seed']}, "
        f"test fraction {split['test_fraction']}). Class counts — train: {data['train_class_counts']}, "
        f"test: {data['test_class_counts']}."
    )
    rep.heading("Features and probe")
    feats = report.features
    rep.table(
        [{"setting": k, "value": str(v)} for k, v in feats["params"].items()]
        + [{"setting": "n_features", "value": feats["n_features"]}]
    )
    rep.table([{"what": k, "formula": v} for k, v in report.formulas.items()], caption="Formulas")
    rep.heading("Figures")
    for fig in figures.all_figures(report):
        rep.figure(fig)
    if report.top_features:
        rep.heading("Top features")
        if any("label" in r for r in report.top_features):
            rep.note("Latent labels come from the dashboards' offline labeller: a proxy, not an LLM judge.")
        rep.table(report.top_features, max_rows=50)
    if report.detection is not None:
        det = report.detection
        rep.heading("Concept detection (AxBench)")
        rep.text(det.formula)
        formulas = det.detector_formulas
        rep.table(
            [{"detector": m, "AUROC [95 % CI]": _fmt_ci(v, det.ci.get(m)), "formula": formulas[m]} for m, v in det.auroc.items()]
        )  # fmt: skip
        for m, why in det.errors.items():
            rep.note(f"{m} not run: {why}")
    rep.heading("Test predictions (misclassified first)")
    cols = (
        ["index", "true", "pred", "p_max", "correct", "text"]
        if report.task != "regression"
        else ["index", "true", "pred", "error", "text"]
    )
    rep.table([{c: (r[c][:300] if c == "text" else r[c]) for c in cols} for r in report.predictions], max_rows=100)  # fmt: skip
    rep.heading("Reproduce")
    rep.text("saelab probe --rerun <this folder>   (reads result.json's config; the metrics come out identical)")
    rep.html("<pre>" + html_lib.escape(_json(cfg)) + "</pre>")
    return rep


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, ensure_ascii=False)


def result_data(report: ProbeReport) -> dict[str, Any]:
    """result.json's content: format tag, then the report (undefined numbers as null)."""
    return jsonable({"format": FORMAT, "version": VERSION, **report.to_dict()})


def export(report: ProbeReport, folder: str | Path, *, textset: Any = None) -> dict[str, Path]:
    """Write the run into `folder` (report.html, result.json, weights.safetensors, predictions.csv[, data.csv])."""
    csvs: dict[str, Any] = {"predictions": report.predictions}
    if report.config.get("csv_path") is not None or textset is not None and report.config.get("dataset") is None:
        if textset is None:
            raise BadInputError("Exporting a run on a CSV needs its text set (the texts go into data.csv).")
        classes = textset.classes
        csvs["data"] = [
            {"text": t, "label": classes[int(y)] if classes else float(y)}
            for t, y in zip(textset.texts, textset.target, strict=True)
        ]
    paths = write_export(folder, report=build_html(report), data=result_data(report), tensors=report.weights, csv=csvs)
    return paths


def _read_result(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """An export's result.json (given its folder or the file) and its content, checked to be a probe export."""
    path = Path(path)
    file = path / RESULT_FILE if path.is_dir() else path
    if not file.exists():
        raise BadInputError(f"No {RESULT_FILE} at {path}; give an export folder written by `saelab probe`.")
    data = read_json(file)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("config"), dict):
        raise CorruptFileError(f"{file} is not a probe export (format {FORMAT}).")
    return file, data


def read_report(path: str | Path) -> ProbeReport:
    """The `ProbeReport` of an export (folder or result.json), with the probe's weights when they are beside it."""
    file, data = _read_result(path)
    weights_file = file.parent / WEIGHTS_FILE
    weights = {k: v.numpy() for k, v in load_tensors(weights_file).items()} if weights_file.exists() else {}
    try:
        return ProbeReport.from_dict(data, weights=weights)
    except CorruptFileError as err:
        raise CorruptFileError(f"{file}: {err}") from err


def read_config(path: str | Path) -> ProbeConfig:
    """The `ProbeConfig` of an export (folder or result.json). A CSV run points at the export's data.csv."""
    file, data = _read_result(path)
    cfg = dict(data["config"])
    if cfg.get("dataset") is None:
        local = file.parent / DATA_FILE
        if not local.exists():
            raise BadInputError(f"This run used an uploaded CSV; {local} with its texts is missing.")
        cfg.update(csv_path=str(local), text_col="text", target_col="label")
    return ProbeConfig.from_dict(cfg)


def rerun_export(path: str | Path, **resources: Any) -> ProbeReport:
    """Run an exported config again (same data, seeds and settings)."""
    return run_probe(read_config(path), **resources)
