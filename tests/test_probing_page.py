"""The Probing page through the real entry point (AppTest) on the tiny model and a tiny SAE with dashboards."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixtures_ui import XSS, open_page, page_html, tiny_app

PAGE = "pages/probing.py"


@pytest.fixture
def at(feature_root, monkeypatch):
    return open_page(tiny_app(monkeypatch, feature_root, timeout=180), PAGE)


def _small(at: AppTest) -> None:
    at.number_input(key="probe_ntrain").set_value(60)
    at.number_input(key="probe_ntest").set_value(30)
    at.number_input(key="probe_folds").set_value(3)
    at.checkbox(key="probe_lc").uncheck()


def test_probing_page__sae_probe_on_builtin_task_shows_metrics_latents_and_exports(at):
    assert at.selectbox(key="probe_set").value == "92_glue_sst2"
    at.selectbox(key="probe_source").set_value("sae")
    at.selectbox(key="probe_pooling").set_value("max")
    _small(at)
    at.button(key="probe_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "Test macro_f1" in labels and "95 % CI" in labels
    assert len(at.get("plotly_chart")) >= 3
    html = page_html(at)
    assert 'href="explorer?latent=' in html  # top latents link into the Feature Explorer
    assert "saelab-tok" in html  # per-example token highlights
    assert "<script" not in html.lower()  # labels and texts are escaped (latent 3's label holds a script tag)
    assert len(at.get("download_button")) >= 4


def test_probing_page__uploaded_csv_with_bad_columns_shows_message_then_runs(at):
    at.radio(key="probe_data").set_value("Upload a CSV").run()
    rows = "".join(
        f'"{XSS} the film was {"great" if i % 2 else "awful"} {i}",{i % 2},free text {i}\n' for i in range(80)
    )
    at.file_uploader(key="probe_upload").set_value(("r.csv", ("review,label,notes\n" + rows).encode(), "text/csv"))
    at.run()
    at.selectbox(key="probe_target_col").set_value("notes").run()
    assert not at.exception
    assert any("free text" in e.value for e in at.error)  # a clear message; the page keeps running
    at.selectbox(key="probe_target_col").set_value("label").run()
    at.selectbox(key="probe_pair_b").set_value("notes")
    at.button(key="probe_pairs_run").click().run()  # paired contrast over two text columns
    assert not at.exception, at.exception
    assert 'href="explorer?latent=' in page_html(at)
    at.selectbox(key="probe_source").set_value("tfidf")
    _small(at)
    assert at.checkbox(key="probe_tune").value  # on by default
    at.button(key="probe_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(m.label == "Test macro_f1" for m in at.metric)
    assert any("chosen by 3-fold CV" in w.value for w in at.warning)  # C came from the training folds
    assert "<script" not in page_html(at).lower()


def test_probing_page__one_class_upload_is_a_message(at):
    at.radio(key="probe_data").set_value("Upload a CSV").run()
    at.file_uploader(key="probe_upload").set_value(("one.csv", b"text,label\na,x\nb,x\nc,x\n", "text/csv"))
    at.run()
    assert not at.exception
    assert any("Only one class" in e.value for e in at.error)
    assert at.button(key="probe_run").disabled
