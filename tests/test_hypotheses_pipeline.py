"""Hypotheses end to end: a planted keyword is found and significant; LLM path, fallback, exports, CLI, page.

One pipeline run on synthetic reviews (MiniLM embeddings, 20 SAE epochs) is shared; later runs reuse its
embeddings and SAE from the on-disk cache (a temporary SAELAB_CACHE for this module).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from saelab.features.llm import LLMEndpoint
from saelab.hypotheses import HypothesisConfig, run_hypotheses
from saelab.reports.hypotheses import export_bytes, export_result
from saelab.reports.hypotheses_figures import effect_sizes
from saelab.textsets import TextSet
from tests.fixtures_ui import XSS, open_page, page_html, tiny_app
from tests.test_hypotheses import _planted_texts

FAST = {"n_hypotheses": 5, "epochs": 20}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    old = os.environ.get("SAELAB_CACHE")
    os.environ["SAELAB_CACHE"] = str(tmp_path_factory.mktemp("hyp-cache"))
    yield
    if old is None:
        os.environ.pop("SAELAB_CACHE", None)
    else:
        os.environ["SAELAB_CACHE"] = old


@pytest.fixture(scope="module")
def planted():
    """Reviews of foods; the target is 2 × [mentions pizza] + noise."""
    texts, pizza = _planted_texts(400)
    y = 2.0 * pizza + np.random.default_rng(0).normal(size=400)
    return TextSet(texts, y, "numeric", None, {"source": "synthetic"})


@pytest.fixture(scope="module")
def result(planted):
    seen = []
    res = run_hypotheses(HypothesisConfig(**FAST), planted, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (100, 100) and all(b >= a for (a, _), (b, _) in zip(seen, seen[1:])), "progress only rises"
    return res


def test_run__planted_keyword_hypothesis_is_recovered_and_significant(result):
    top = [h for h in result.sae_method.hypotheses if "pizza" in h.terms]
    assert top, [h.label for h in result.sae_method.hypotheses]
    h = top[0]
    assert h.significant and h.p_value < result.sae_method.threshold == pytest.approx(0.1 / 5)
    assert h.separation > 1.0 and h.ci_low > 0 and h.proxy and h.source == "keywords"
    assert all("pizza" in e["evidence"] for e in h.examples) and h.examples
    assert result.sae_method.r2 > 0.3 and result.interpretation == "keywords (PROXY)"
    reference = result.latent_reference
    assert (
        reference["n"] == len(result.sae_method.hypotheses)
        and 0 <= reference["r2"] <= 1
        and reference["mean_fidelity_f1"] > 0
    )
    assert any(n.startswith("PROXY") for n in result.notes)
    assert result.data["split_sizes"] == {"train": 240, "val": 80, "test": 80} and result.data["split_seed"] == 0
    assert result.baseline is not None and any(h.terms == ["pizza"] for h in result.baseline.hypotheses)


def test_run__result_exports_html_json_csv(result, tmp_path):
    files = export_result(result, tmp_path)
    assert {p.name for p in files.values()} == {"report.html", "result.json", "hypotheses.csv"}
    data = json.loads((tmp_path / "result.json").read_text())  # strict JSON: NaN became null
    assert data["sae_method"]["hypotheses"][0]["label"] and "significant" in data["formulas"]
    csv = (tmp_path / "hypotheses.csv").read_text().splitlines()
    assert csv[0].startswith("method,rank,label") and len(csv) == 1 + len(result.sae_method.hypotheses) + len(
        result.baseline.hypotheses
    )
    html = (tmp_path / "report.html").read_text()
    assert "<mark>pizza</mark>" in html and "PROXY" in html and "plotly" in html
    assert set(export_bytes(result)) == {"html", "json", "csv"}
    fig = effect_sizes(result.sae_method, result.baseline)
    assert len(fig.data) == 2 and fig.data[0].error_x.array is not None


def test_run__unreachable_endpoint_falls_back_to_offline_and_says_so(planted):
    dead = LLMEndpoint("http://127.0.0.1:9/v1", "none", timeout=2)
    res = run_hypotheses(HypothesisConfig(**FAST, baseline=False), planted, endpoint=dead)
    assert res.interpretation == "keywords (PROXY)"
    assert any("unreachable" in n for n in res.notes)
    assert any("pizza" in h.terms and h.significant for h in res.sae_method.hypotheses)


def test_run__llm_endpoint_writes_and_annotates_hypotheses(planted, monkeypatch):
    calls = []

    def fake_chat(self, messages, *, max_tokens=64, temperature=0.0):
        calls.append(messages)
        system, user = messages[0]["content"], messages[-1]["content"]
        if "candidate descriptions" in system:
            shown = user.split("\n\n")[0].lower()
            return "mentions pizza\nmentions food\nmentions a number" if "pizza" in shown else "mentions food\n-\n"
        if "mentions pizza" in system:
            return "Yes." if "pizza" in user.lower() else "no"
        return "yes"

    monkeypatch.setattr(LLMEndpoint, "chat", fake_chat)
    monkeypatch.setenv("SAELAB_ALLOWED_HOSTS", "llm.invalid")
    ep = LLMEndpoint("http://llm.invalid/v1", "fake")
    res = run_hypotheses(HypothesisConfig(**FAST, baseline=False, llm_max_texts=60), planted, endpoint=ep)
    assert res.interpretation.startswith("llm") and res.sae_method.n_test == 60
    n_llm = sum(h.source == "llm" for h in res.sae_method.hypotheses)
    assert n_llm >= 1 and sum("keyword PROXY rule was used" in n for n in res.notes) == 5 - n_llm
    pizza = [h for h in res.sae_method.hypotheses if h.label == "mentions pizza"]
    assert pizza and pizza[0].significant and not pizza[0].proxy and pizza[0].fidelity_f1 > 0.9
    assert any(n.startswith("PROXY") for n in res.notes) == (n_llm < 5) and calls


def test_run__llm_failing_on_heldout_texts_falls_back_to_keywords(planted, monkeypatch):
    from saelab.features.llm import EndpointError
    from saelab.hypotheses import llm as llm_mod

    def fake_chat(self, messages, *, max_tokens=64, temperature=0.0):
        return "mentions pizza\nmentions food\nmentions soup" if max_tokens > 3 else "yes"

    real_annotate = llm_mod.LLMRule.annotate

    def annotate(self, texts, progress=None):
        if len(texts) > 20:  # validation samples hold at most 10 + 10 texts; this is the held-out split
            raise EndpointError("server went away")
        return real_annotate(self, texts, progress)

    monkeypatch.setattr(LLMEndpoint, "chat", fake_chat)
    monkeypatch.setattr(llm_mod.LLMRule, "annotate", annotate)
    monkeypatch.setenv("SAELAB_ALLOWED_HOSTS", "llm.invalid")
    ep = LLMEndpoint("http://llm.invalid/v1", "fake")
    res = run_hypotheses(HypothesisConfig(**FAST, baseline=False), planted, endpoint=ep)
    assert res.interpretation == "keywords (PROXY)" and all(h.proxy for h in res.sae_method.hypotheses)
    assert any("server went away" in n for n in res.notes)


def test_cli__runs_on_a_small_builtin_subset(tmp_path, capsys):
    from saelab.cli import main

    out = tmp_path / "hyp"
    args = ["hypotheses", "--dataset", "26_headline_isfrontpage", "--max-texts", "250", "--epochs", "10", "--n", "5"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SAE:" in text and "Bag-of-words baseline:" in text and "significant" in text
    assert (out / "report.html").exists() and (out / "result.json").exists() and (out / "hypotheses.csv").exists()
    assert main(["hypotheses", "--dataset", "26_headline_isfrontpage", "--max-texts", "100"]) == 2
    assert "needs at least 214" in capsys.readouterr().err


def test_page__runs_and_shows_table_plot_and_downloads(monkeypatch):
    at = open_page(tiny_app(monkeypatch), "pages/hypotheses.py")
    at.number_input(key="hyp_max_texts").set_value(250)
    at.number_input(key="hyp_n").set_value(5)
    at.number_input(key="hyp_epochs").set_value(10)
    at.button(key="hyp_run").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert len(at.get("plotly_chart")) == 1 and len(at.dataframe) == 2
    assert len(at.get("download_button")) == 3
    assert any("significant" in m.label for m in at.metric)


@pytest.mark.slow
def test_run__default_model_residual_embedding_end_to_end(planted, default_handle):
    """The "lm" embedding: SmolLM2's layer-6 residual, mean-pooled after the sink token, through saelab.hooks."""
    from saelab.hooks import active_hook_count

    cfg = HypothesisConfig(**FAST, embedding="lm", lm_layer=6, baseline=False)
    res = run_hypotheses(cfg, planted, handle=default_handle)
    assert "blocks.6.hook_resid_post" in res.embedding and active_hook_count(default_handle) == 0
    assert res.sae_method.n_test == 80 and res.sae_method.hypotheses
    assert any("pizza" in h.terms and h.significant for h in res.sae_method.hypotheses), [
        h.label for h in res.sae_method.hypotheses
    ]


def test_page__csv_upload_bad_columns_and_bytes_are_messages_then_it_runs(monkeypatch):
    """The upload path: a free-text target is refused clearly, non-UTF-8 bytes are noted, then it runs."""
    import csv
    import io

    texts, pizza = _planted_texts(260)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["review", "notes", "stars"])
    for i, (t, p) in enumerate(zip(texts, pizza)):
        writer.writerow([f"{t} {XSS}" if i % 7 == 0 else t, f"free note {i}", 4 + int(p) if i % 3 else 1 + int(p)])
    data = buf.getvalue().encode() + b"Review 999: caf\xe9 latte was fine.,free note 999,3\n"  # one Latin-1 byte

    at = open_page(tiny_app(monkeypatch), "pages/hypotheses.py")
    at.radio(key="hyp_source").set_value("Upload a CSV").run()
    assert at.button(key="hyp_run").disabled  # nothing to run on yet
    at.file_uploader(key="hyp_upload").set_value(("reviews.csv", data, "text/csv"))
    at.run()
    at.selectbox(key="hyp_target_col").set_value("notes").run()
    assert not at.exception, at.exception
    assert any("notes" in e.value for e in at.error), [e.value for e in at.error]  # free text is no target
    assert at.button(key="hyp_run").disabled
    at.selectbox(key="hyp_target_col").set_value("stars").run()
    at.selectbox(key="hyp_kind").set_value("numeric").run()  # five star values would be classes under "auto"
    assert not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert "UTF-8" in captions and "261 texts" in captions and "numeric" in captions, captions
    at.number_input(key="hyp_n").set_value(5)
    at.number_input(key="hyp_epochs").set_value(10)
    at.button(key="hyp_run").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert len(at.dataframe) == 2 and any("significant" in m.label for m in at.metric)
    assert "<script" not in page_html(at).lower()  # texts are escaped
