"""The steering playground through the real entry point (AppTest), on the tiny model and a tiny SAE."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixtures_ui import APP, open_page, page_html, tiny_app

PAGE = "pages/steering.py"


@pytest.fixture
def app(feature_root, monkeypatch):
    return tiny_app(monkeypatch, feature_root)


def _open(at: AppTest, **query: str) -> AppTest:
    return open_page(at, PAGE, **query)


def _widget(at: AppTest, kind: str, key: str):
    return next(w for w in getattr(at, kind) if w.key == key)


def _generate(at: AppTest, new_tokens: int = 6) -> AppTest:
    _widget(at, "number_input", "steer_max_new_tokens").set_value(new_tokens)
    _widget(at, "button", "steer_generate").click().run()
    assert not at.exception, at.exception
    return at


def test_steering_page__latent_from_url_is_preselected(app):
    at = _open(app, latent="3")
    assert "Latent 3" in page_html(at)
    assert _widget(at, "number_input", "steer_latent").value == 3
    assert not at.error, [e.value for e in at.error]


def test_steering_page__generate_shows_both_texts_with_the_latent_highlighted(app):
    at = _generate(_open(app, latent="5"))
    assert not at.error, [e.value for e in at.error]
    assert page_html(at).count("saelab-tok") > 2, "the generated tokens are shaded by latent 5's activation"
    assert any("Latent 5 activation" in c.value for c in at.caption)
    assert any("add SAE latent 5" in c.value for c in at.caption)
    assert at.get("download_button"), "the run can be saved as a preset"


def test_steering_page__text_direction_and_neuron_together(app):
    at = _open(app)
    _widget(at, "multiselect", "steer_sources").set_value(["Texts (DiffMean / PCA / LAT / probe)", "MLP neuron"]).run()
    _widget(at, "text_area", "steer_pos").input("I love football.\nThe match was great.")
    _widget(at, "text_area", "steer_neg").input("Flour and sugar.\nBake the cake.")
    _widget(at, "selectbox", "steer_method").set_value("lat")
    at = _generate(at)
    assert not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert "lat (2+/2−)" in captions and "neuron L1.0" in captions


@pytest.mark.parametrize(
    "key, value, message",
    [("steer_sae_factor", 1e6, "absurd"), ("steer_prompt", "   ", "empty")],
)
def test_steering_page__bad_input_is_a_message_and_the_page_keeps_running(app, key, value, message):
    at = _open(app, latent="2")
    widget = _widget(at, "number_input" if key.endswith("factor") else "text_area", key)
    widget.set_value(value) if key.endswith("factor") else widget.input(value)
    at = _generate(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert _widget(at, "button", "steer_generate"), "still usable"


def test_steering_page__thousands_of_tokens_are_capped_and_said(app):
    at = _open(app)
    _widget(at, "number_input", "steer_max_new_tokens").set_value(5000).run()
    assert any("capped at 256" in w.value for w in at.warning)


def test_steering_page__out_of_range_latent_in_url_is_an_error(app):
    at = _open(app, latent="999")
    assert any("latents 0 to 31" in e.value for e in at.error)


def test_steering_page__preset_round_trip_and_bad_preset(app, tiny_handle):
    from saelab.steering import GenerationConfig, Intervention, text_direction
    from saelab.steering.presets import Preset, dumps_preset

    d = text_direction(tiny_handle, "diffmean", ["sport"], ["cake"], hook="blocks.0.hook_resid_post")
    cfg = GenerationConfig(max_new_tokens=5, seed=4)
    preset = Preset("Hello from a preset", cfg, [Intervention("add", d, 3.0)], model="tiny")
    at = _open(app)
    _widget(at, "text_area", "steer_paste").input(dumps_preset(preset)).run()
    _widget(at, "button", "steer_load").click().run()
    assert not at.exception, at.exception
    assert _widget(at, "text_area", "steer_prompt").value == "Hello from a preset"
    assert any("loaded preset" in i.value for i in at.info)
    _widget(at, "button", "steer_generate").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("add diffmean" in c.value for c in at.caption)

    bad = _open(AppTest.from_file(APP, default_timeout=120))
    _widget(bad, "text_area", "steer_paste").input(json.dumps({"format": "x", "code": "__import__('os')"})).run()
    _widget(bad, "button", "steer_load").click().run()
    assert any("not a steering preset" in e.value for e in bad.error)


def test_steering_page__strength_sweep_plots_proxy_ratings(app):
    at = _open(app, latent="4")
    _widget(at, "number_input", "steer_max_new_tokens").set_value(4)
    _widget(at, "text_input", "steer_sweep_factors").input("0, 4")
    _widget(at, "button", "steer_sweep").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    chart = at.get("plotly_chart")
    assert chart and "PROXY" in chart[0].proto.spec
    table = at.dataframe[0].value
    assert list(table["factor"])[:3] == ["unsteered", "0", "4"] and "concept" in table.columns
