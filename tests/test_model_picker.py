"""The sidebar model picker: a session switches the whole app to another model; misfit SAEs are refused clearly."""

from __future__ import annotations

import pytest

from saelab.models.recent import recent_models, remember_model
from tests.fixtures_ui import tiny_app
from tests.test_models import _save_tiny_hf


def test_recent_models__newest_first_deduplicated_and_robust(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path))
    assert recent_models() == []
    for spec in ["a", "b", "a", "c"]:
        remember_model(spec)
    assert recent_models() == ["c", "a", "b"]
    (tmp_path / "models" / "recent.json").write_text("{not json")
    assert recent_models() == []  # a convenience file: unreadable means empty, never an error


@pytest.mark.slow
def test_model_picker__switches_this_session_and_refuses_a_misfit_sae(feature_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAELAB_ALLOWED_ROOTS", str(tmp_path))
    folder = tmp_path / "tiny-qwen2"
    _save_tiny_hf(folder, "qwen2")  # d_model 64 like the tiny model, but its own weights

    at = tiny_app(monkeypatch, feature_root)
    at.run()
    assert at.selectbox(key="model_pick").value == "tiny"
    at.text_input(key="model_path").set_value(str(folder)).run()
    assert not at.exception, at.exception
    assert at.session_state["model_spec"] == str(folder)
    at.switch_page("pages/explorer.py").run()  # the shipped tiny SAE reads blocks.0 (64 wide): it fits
    assert not at.exception, at.exception
    assert str(folder) in recent_models()

    at.switch_page("pages/overview.py").run()
    at.text_input(key="model_path").set_value(str(tmp_path / "nope" / "model.gguf")).run()
    at.switch_page("pages/explorer.py").run()
    assert not at.exception
    assert any("model.gguf" in e.value for e in at.error), [e.value for e in at.error]
