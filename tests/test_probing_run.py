"""The probing pipeline end to end: run → export → re-run, the HTML report, the CLI, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from saelab.errors import BadInputError
from saelab.probing.run import ProbeConfig, load_textset, run_probe
from saelab.reports.probing import (
    build_html,
    export,
    read_config,
    read_report,
    rerun_export,
    result_data,
    summary_rows,
)
from saelab.storage import load_tensors
from tests.fixtures_ui import XSS, build_tiny_sae

GOOD = ["wonderful", "lovely", "great", "delightful", "superb", "charming"]
BAD = ["awful", "terrible", "dreadful", "boring", "horrible", "dull"]
FAST = {"n_boot": 50, "sparse_ks": [1, 5], "cv_folds": 3}


def _csv(path, n=60, xss=False):
    rng = np.random.default_rng(0)
    rows = ["review,stars,score"]
    for i in range(n):
        pos = i % 2 == 0
        words = rng.choice(GOOD if pos else BAD, 2).tolist() + rng.choice(["film", "plot", "cast", "movie"], 2).tolist()
        text = f"the {words[2]} was {words[0]} and {words[1]} {i}"
        if xss and i < 6:
            text = f"{XSS} {text}"
        rows.append(f'"{text}",{"good" if pos else "bad"},{i * 0.5 + (3 if pos else 0)}')
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory):
    return build_tiny_sae(tmp_path_factory.mktemp("probe-sae") / "sae")


def _cfg(csv, **kw):
    return ProbeConfig(dataset=None, csv_path=str(csv), text_col="review", target_col="stars", **{**FAST, **kw})


def test_run__tfidf_learns_and_rerun_from_export_reproduces_metrics(tmp_path):
    csv = _csv(tmp_path / "reviews.csv")
    cfg = _cfg(csv, source="tfidf", ood_dataset="96_spam_is", n_ood=40)
    ts = load_textset(cfg)
    rep = run_probe(cfg, textset=ts)
    assert rep.task == "classification" and rep.data["classes_used"] == ["bad", "good"]
    assert rep.metrics["macro_f1"] > 0.8
    lo, hi = rep.ci["macro_f1"]
    assert lo <= rep.metrics["macro_f1"] <= hi
    assert rep.cv.folds == 3 and len(rep.cv.scores) == 3
    assert [p["n_train"] for p in rep.learning][0] == 24
    assert rep.msp_ood is not None and 0 <= rep.msp_ood["auroc"] <= 1
    assert not set(rep.data["train_index"]) & set(rep.data["test_index"])
    # misclassified first
    correct = [p["correct"] for p in rep.predictions]
    assert correct == sorted(correct)

    paths = export(rep, tmp_path / "out", textset=ts)
    assert {"html", "json", "weights", "csv:predictions", "csv:data"} <= set(paths)
    saved = json.loads(paths["json"].read_text())
    assert saved["config"]["seed"] == 0 and saved["data"]["split"]["seed"] == 0
    assert len(saved["predictions"]) == rep.data["split"]["n_test"]
    weights = load_tensors(paths["weights"])
    assert weights["coef"].shape[1] == rep.features["n_features"]
    back = read_report(tmp_path / "out")  # the export reloads into the same types, weights included
    assert result_data(back) == result_data(rep) and back.cv == rep.cv
    assert set(back.weights) == set(rep.weights) and np.allclose(back.weights["coef"], rep.weights["coef"])

    again = rerun_export(tmp_path / "out")  # reads data.csv beside result.json, not the original file
    csv.unlink()
    assert again.metrics == rep.metrics and again.ci == rep.ci and again.cv == rep.cv
    assert again.sparse == rep.sparse and again.learning == rep.learning


def test_run__sae_source_on_tiny_model_with_detection(tmp_path, tiny_handle, tiny_sae):
    from saelab.sae import load_sae

    csv = _csv(tmp_path / "reviews.csv")
    loaded = load_sae(tiny_sae, handle=tiny_handle)
    cfg = _cfg(
        csv, source="sae", pooling="max", detection=["diffmean", "sae-a", "bow"], learning_curve=False, cv_folds=2
    )
    kw = {"handle": tiny_handle, "loaded_sae": loaded, "latent_labels": {i: f"label {i}" for i in range(32)}}
    rep = run_probe(cfg, **kw)
    assert rep.features["n_features"] == 32 and rep.features["latent_ids"]
    assert all("latent" in r and r["label"].startswith("label") for r in rep.top_features)
    assert 0 <= rep.metrics["macro_f1"] <= 1
    assert set(rep.detection.auroc) == {"diffmean", "sae-a", "bow"}
    assert rep.detection.auroc["bow"] > 0.8  # the words give the class away


def test_run__tune_C_chooses_on_training_folds_and_the_export_repeats_it(tmp_path):
    csv = _csv(tmp_path / "reviews.csv")
    rep = run_probe(_cfg(csv, source="tfidf", tune_C=True, C_grid=[0.01, 1.0, 100.0], learning_curve=False))
    t = rep.tuning
    assert t is not None and t.grid == [0.01, 1.0, 100.0] and t.folds == 3 and len(t.means) == 3
    assert t.best_C in t.grid and t.means[t.grid.index(t.best_C)] == max(t.means)
    assert rep.config["tune_C"] is True and rep.config["C"] == 1.0  # the config as asked; C* is in `tuning`
    assert any("chosen by 3-fold CV" in n for n in rep.notes)
    assert any(r["metric"] == "C chosen by CV" for r in summary_rows(rep))
    assert all(0 <= r["cv_macro_f1"] <= 1 for r in rep.sparse)  # every sparse k is also scored on train folds
    chosen = max(rep.sparse, key=lambda r: (r["cv_macro_f1"], -r["k"]))
    row = next(r for r in summary_rows(rep) if r["metric"] == "Sparse probe, k chosen by CV")
    assert f"k* = {chosen['k']}:" in row["test value [95 % CI]"]
    export(rep, tmp_path / "out", textset=load_textset(_cfg(csv)))
    again = rerun_export(tmp_path / "out")
    assert again.tuning == t and again.metrics == rep.metrics


def test_run__numeric_target_regresses_or_splits_at_median(tmp_path):
    csv = _csv(tmp_path / "reviews.csv")
    base = {"source": "tfidf", "target_col": "score", "kind": "numeric"}
    reg = run_probe(ProbeConfig(dataset=None, csv_path=str(csv), text_col="review", **base, **FAST))
    assert reg.task == "regression" and reg.classifier == "ridge" and "r2" in reg.metrics
    assert any("ridge" in n for n in reg.notes)
    med = run_probe(
        ProbeConfig(dataset=None, csv_path=str(csv), text_col="review", numeric_mode="median", **base, **FAST)
    )
    assert med.task == "classification" and len(med.data["classes_used"]) == 2
    assert any("median" in n for n in med.notes)


def test_report__html_is_offline_and_escapes_user_text(tmp_path):
    csv = _csv(tmp_path / "xss.csv", xss=True)
    cfg = _cfg(csv, source="tfidf", test_fraction=0.5, learning_curve=False)
    html = build_html(run_probe(cfg)).to_html()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in html  # the user's script tag never appears raw
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing fetched: plotly.js is inline
    assert html.count("Plotly.newPlot") >= 3  # several figures embedded
    assert html.count("window.PlotlyConfig") == 1 and "* plotly.js v" in html  # the library inline, once


def test_cli__probe_on_tiny_model_and_rerun(tmp_path, tiny_sae, capsys):
    from saelab.cli import main

    csv = _csv(tmp_path / "reviews.csv")
    out, html = tmp_path / "run", tmp_path / "report.html"
    common = ["--n-boot", "50", "--folds", "3", "--no-learning-curve"]
    args = ["probe", "--csv", str(csv), "--text-col", "review", "--target-col", "stars", "--model", "tiny",
            "--sae", str(tiny_sae), "--source", "sae", "--pooling", "topn-sum", "--topn", "4", "--out", str(out),
            "--report", str(html), *common]  # fmt: skip
    assert main(args) == 0
    assert "macro_f1" in capsys.readouterr().out and html.exists()
    first = json.loads((out / "result.json").read_text())
    assert main(["probe", "--rerun", str(out), "--out", str(tmp_path / "again")]) == 0
    second = json.loads((tmp_path / "again" / "result.json").read_text())
    assert first["metrics"] == second["metrics"] and first["ci"] == second["ci"]
    assert main(["probe", "--csv", str(csv), "--text-col", "nope", "--source", "tfidf"]) == 2
    assert "No column 'nope'" in capsys.readouterr().err


def _write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.mark.parametrize(
    ("content", "cols", "message"),
    [
        ("review,stars\na,good\nb,bad\n", ("text", "stars"), "No column 'text'"),
        ("review,stars\na,good\nb,good\nc,good\n", ("review", "stars"), "Only one class"),
        ("review,stars\n" + "".join(f"text {i},free words {i}\n" for i in range(80)), ("review", "stars"), "free text"),
        ("review\nonly one column\n", ("review", "stars"), "needs a text column and a label column"),
        ("review,stars\n ,good\n  ,bad\n", ("review", "stars"), "No rows are left"),
    ],
)
def test_bad_input__csv_problems_are_clear_errors(tmp_path, content, cols, message):
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(BadInputError, match=message):
        load_textset(ProbeConfig(dataset=None, csv_path=str(path), text_col=cols[0], target_col=cols[1]))


def test_bad_input__non_utf8_and_huge_files_are_used_and_said_so(tmp_path):
    raw = b"review,stars\n" + b"".join(
        f"caf\xe9 {i},{'good' if i % 2 else 'bad'}\n".encode("latin-1") for i in range(50)
    )
    ts = load_textset(
        ProbeConfig(
            dataset=None, csv_path=str(_write(tmp_path / "latin.csv", raw)), text_col="review", target_col="stars"
        )
    )
    assert any("not valid UTF-8" in n for n in ts.notes)
    big = "review,stars\n" + "".join(f"text number {i},{i % 2}\n" for i in range(100_000))
    cfg = ProbeConfig(
        dataset=None, csv_path=str(_write(tmp_path / "big.csv", big)), text_col="review", target_col="stars"
    )
    ts = load_textset(cfg)
    assert len(ts) == 20_000 and any("Sampled 20,000 of 100,000" in n for n in ts.notes)


def test_bad_input__config_and_empty_texts(tmp_path):
    with pytest.raises(BadInputError, match="exactly one"):
        ProbeConfig(dataset=None, csv_path=None)
    with pytest.raises(BadInputError, match="Unknown classifier"):
        ProbeConfig(classifier="svm")
    path = _write(
        tmp_path / "e.csv", "review,stars\n" + "".join(f"{'' if i < 5 else f'text {i}'},{i % 2}\n" for i in range(40))
    )
    ts = load_textset(ProbeConfig(dataset=None, csv_path=str(path), text_col="review", target_col="stars"))
    assert len(ts) == 35 and any("Dropped 5" in n for n in ts.notes)
    with pytest.raises(BadInputError):
        read_config(tmp_path)  # no result.json


@pytest.mark.slow
def test_run__default_model_sae_features_on_sst2_subsample(default_handle):
    """The real model and shipped SAE on 240 SST-2 texts: SAE features carry sentiment (full-size numbers: docs)."""
    cfg = ProbeConfig(dataset="92_glue_sst2", source="sae", pooling="topn-sum", n_train=160, n_test=80,
                      n_boot=200, learning_curve=False, sparse_ks=[1, 5], cv_folds=3)  # fmt: skip
    rep = run_probe(cfg, handle=default_handle)
    assert rep.features["n_features"] == 4608
    assert rep.metrics["macro_f1"] > 0.6, rep.metrics
    assert rep.top_features and all(r.get("label") is not None for r in rep.top_features)


@pytest.mark.parametrize("source", ["sav", "neurons", "layer_sweep", "hidden"])
def test_run__model_sources_on_tiny_model_report_their_extras(tmp_path, tiny_handle, source):
    csv = _csv(tmp_path / "reviews.csv", n=40)
    cfg = _cfg(csv, source=source, pooling="mean", layer=1, top_k_neurons=8, top_heads=4, learning_curve=False,
               sparse_ks=[1], cv_folds=2)  # fmt: skip
    rep = run_probe(cfg, handle=tiny_handle)
    assert 0 <= rep.metrics["macro_f1"] <= 1 and rep.features["source"] == source
    if source == "sav":
        vote = rep.source_results["sav_vote"]
        assert len(vote["heads"]) == 4 and vote["ci"]["macro_f1"][0] <= vote["macro_f1"] <= vote["ci"]["macro_f1"][1]
        assert any("SAV" in r["metric"] for r in summary_rows(rep))
    if source == "neurons":
        assert rep.features["n_features"] == 8
        assert [p["layer"] for p in rep.source_results["best_neuron_by_layer"]] == [0, 1]
    if source == "layer_sweep":
        assert [p["layer"] for p in rep.layers] == [0, 1]
    from saelab.reports import probing_figures as figures

    assert len(figures.all_figures(rep)) >= 3
    json.dumps(result_data(rep))  # serialisable


def test_pairs__csv_pairs_rank_latents_and_bad_columns_are_clear(tmp_path, tiny_sae, capsys):
    from saelab.cli import main
    from saelab.probing.pairs import read_pairs

    rows = "".join(f'"the film was great {i}","the film was awful {i}"\n' for i in range(12))
    path = _write(tmp_path / "pairs.csv", "before,after\n" + rows + '"",x\n')
    a, b, notes = read_pairs(path, "before", "after")
    assert len(a) == len(b) == 12 and any("empty side" in n for n in notes)
    with pytest.raises(BadInputError, match="No column 'nope'"):
        read_pairs(path, "before", "nope")
    args = ["probe", "--csv", str(path), "--pairs", "before", "after", "--model", "tiny", "--sae", str(tiny_sae),
            "--out", str(tmp_path / "p")]  # fmt: skip
    assert main(args) == 0
    out = json.loads((tmp_path / "p" / "pairs.json").read_text())
    scores = [r["score"] for r in out["latents"]]
    assert out["n_pairs"] == 12 and scores == sorted(scores, reverse=True) and scores[0] > 0
