"""The feature pages through the real entry point (AppTest), on the tiny model and a tiny SAE + dashboards."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixtures_ui import (
    APP,
    D_SAE,
    XSS,
    build_feature_root,
    build_real_dashboards,
    open_page,
    page_html,
    tiny_app,
)


@pytest.fixture
def app(feature_root, monkeypatch):
    """An AppTest of app.py reading the tiny SAE, on the tiny model."""
    return tiny_app(monkeypatch, feature_root)


@pytest.mark.parametrize(
    "page",
    ["pages/explorer.py", "pages/prompt_view.py", "pages/feature_map.py", "pages/compare.py", "pages/steering.py"],
)
def test_pages__render_without_exception(app, page):
    at = open_page(app, page)
    assert not at.error, [e.value for e in at.error]


def test_explorer__latent_from_url_shows_its_dashboard(app):
    at = open_page(app, "pages/explorer.py", latent="3")
    html = page_html(at)
    assert "Latent 3" in html and "proxy" in html
    assert "<script" not in html.lower() and "&lt;script&gt;" in html  # label and context shown as text
    assert "saelab-tok" in html  # highlighted contexts
    assert len(at.get("plotly_chart")) >= 1  # activation histogram
    assert "Promoted tokens" in html and "Suppressed tokens" in html
    assert at.number_input[0].value == 3
    assert any("latent=3" in link.proto.query_string for link in at.get("page_link"))  # steer link


def test_explorer__shows_both_label_score_levels_and_browses_by_quality(app):
    at = open_page(app, "pages/explorer.py", latent="3")
    html = page_html(at)
    assert "Label score, token level" in html and "0.66" in html  # 0.6 + 0.02 · 3
    assert "Label score, sequence level" in html and "0.53" in html
    assert at.radio(key="explorer_quality_level").value == "token"
    at.slider(key="explorer_quality_min").set_value(0.7).run()
    df = at.dataframe[-1].value  # the quality table (no label or token search typed)
    scores = list(df["token BA"])
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.7 and 0 not in list(df["latent"])
    at.radio(key="explorer_quality_order").set_value("worst first").run()
    df = at.dataframe[-1].value
    assert list(df["token BA"]) == sorted(df["token BA"]) and not at.exception


def test_explorer__neighbour_button_opens_that_latent(app):
    at = open_page(app, "pages/explorer.py", latent="3")
    neighbours = at.pills[0]
    assert any(opt.startswith("#4 ") for opt in neighbours.options)
    neighbours.set_value(4).run()
    assert not at.exception
    assert at.query_params["latent"] == ["4"] or at.query_params["latent"] == "4"
    assert "Latent 4" in page_html(at)


@pytest.mark.parametrize("bad", [str(D_SAE), "-1", "abc"])
def test_explorer__bad_latent_shows_error_not_exception(app, bad):
    at = open_page(app, "pages/explorer.py", latent=bad)
    assert at.error, "an out-of-range or non-numeric index is reported"
    assert "latent" in at.error[0].value.lower()


def test_explorer__dead_latent_says_so(app):
    at = open_page(app, "pages/explorer.py", latent="0")
    assert any("never fired" in w.value for w in at.warning)


def test_explorer__number_input_opens_latent(app):
    at = open_page(app, "pages/explorer.py")
    at.number_input[0].set_value(5).run()
    assert not at.exception
    assert "Latent 5" in page_html(at)


def test_prompt_view__typed_sentence_renders_table_heatmap_and_links(app):
    at = open_page(app, "pages/prompt_view.py")
    at.text_area[0].input(f"The cat sat on the mat. {XSS}")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.dataframe, "a token × latent table"
    table = at.dataframe[0].value
    assert "token" in table.columns and len(table) > 5
    assert any("cat" in t for t in table["token"]), "the typed text, not the example, was analysed"
    assert at.get("plotly_chart"), "a heatmap"
    html = page_html(at)
    assert 'href="explorer?latent=' in html
    assert "<script" not in html.lower()
    assert any("PROXY labels" in c.value for c in at.caption), "the labels say they are proxies"


def test_prompt_view__long_text_is_capped_and_says_so(app):
    at = open_page(app, "pages/prompt_view.py")
    at.text_area[0].input("word " * 700)
    at.button[0].click().run()
    assert not at.exception, at.exception
    cap = 255  # the tiny model's context is 256 positions (512 for the default model)
    assert any(f"first {cap} tokens" in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.dataframe[0].value) == cap + 1  # the separator + the kept tokens


def test_explorer__test_your_own_text_highlights_this_latent(app):
    at = open_page(app, "pages/explorer.py", latent="5")
    at.text_area[0].input("The cat sat on the mat.")
    next(b for b in at.button if b.label == "Show activations").click().run()
    assert not at.exception, at.exception
    assert any("Max in your text" in c.value for c in at.caption)
    assert "·mat" in re.sub(r"<[^>]+>", "", page_html(at))


def test_prompt_view__empty_text_is_a_message(app):
    at = open_page(app, "pages/prompt_view.py")
    at.text_area[0].input("   ")
    at.button[0].click().run()
    assert not at.exception
    assert at.warning


def test_feature_map__one_point_per_latent(app):
    at = open_page(app, "pages/feature_map.py")
    chart = at.get("plotly_chart")[0]
    assert "scattergl" in chart.proto.spec
    assert any("PROXY labels" in c.value for c in at.caption)


def test_steering__opened_from_the_explorer_preselects_the_latent(app):
    at = open_page(app, "pages/steering.py", latent="3")
    assert "Latent 3" in page_html(at)
    assert next(n for n in at.number_input if n.key == "steer_latent").value == 3


def test_pages__no_dashboards_offer_to_build(tmp_path, tiny_handle, monkeypatch):
    build_feature_root(tmp_path, tiny_handle.tokenizer, dashboards=False)
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    at = open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="1")
    assert any("saelab dashboards --sae" in w.value for w in at.warning)
    prompt = open_page(AppTest.from_file(APP, default_timeout=120), "pages/prompt_view.py")
    assert prompt.dataframe, "the prompt view works without dashboards"


def test_pages__no_sae_is_an_empty_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    for page in ("pages/explorer.py", "pages/feature_map.py"):
        at = open_page(AppTest.from_file(APP, default_timeout=120), page)
        assert at.info and "No SAE found" in at.info[0].value


def test_pages__dashboards_from_the_real_builder_render(tmp_path, tiny_handle, monkeypatch):
    """The hand-made fixture and `build_dashboards` agree on the format the pages read."""
    sae_dir = build_feature_root(tmp_path, tiny_handle.tokenizer, dashboards=False)
    build_real_dashboards(sae_dir, tiny_handle)
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    for page, query in [
        ("pages/explorer.py", {"latent": "3"}),
        ("pages/feature_map.py", {}),
        ("pages/steering.py", {"latent": "3"}),
    ]:
        at = open_page(AppTest.from_file(APP, default_timeout=120), page, **query)
        assert not at.error, [e.value for e in at.error]
    assert "Latent 3" in page_html(
        open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="3")
    )


def test_pages__unreadable_dashboards_are_an_error_and_a_rebuild_offer(tmp_path, tiny_handle, monkeypatch):
    sae_dir = build_feature_root(tmp_path, tiny_handle.tokenizer)
    (sae_dir / "dashboards" / "latents.safetensors").write_bytes(b"not safetensors")
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    at = open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="1")
    assert at.error and "latents.safetensors" in at.error[0].value
    assert any("cannot be read" in w.value for w in at.warning)


def test_explorer__llm_label_is_shown_with_its_score_and_escaped(tmp_path, tiny_handle, monkeypatch):
    import json

    sae_dir = build_feature_root(tmp_path, tiny_handle.tokenizer)
    path = sae_dir / "dashboards" / "labels.json"
    labels = json.loads(path.read_text())
    labels["llm"] = {
        "model": "local-llm",
        "latents": {"2": {"label": "cats <b>and</b> dogs", "detection_balanced_accuracy": 0.81}},
    }
    path.write_text(json.dumps(labels))
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    html = page_html(open_page(AppTest.from_file(APP, default_timeout=120), "pages/explorer.py", latent="2"))
    assert "LLM label (local-llm)" in html and "cats &lt;b&gt;and&lt;/b&gt; dogs" in html and "0.81" in html


def test_feature_map__colours_by_any_statistic_including_label_quality(app):
    at = open_page(app, "pages/feature_map.py")
    options = at.radio(key="map_colour").options
    assert {"log density", "max activation", "label quality, sequence level (balanced accuracy)"} <= set(options)
    for option in options:
        at.radio(key="map_colour").set_value(option).run()
        assert not at.exception, (option, at.exception)
