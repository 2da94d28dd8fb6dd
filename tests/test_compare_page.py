"""The Compare page (pages/compare.py) under AppTest on the tiny model."""

from __future__ import annotations

from tests.fixtures_ui import build_dashboards_folder, build_feature_root, build_tiny_sae, open_page, tiny_app

PAGE = "pages/compare.py"


def test_compare__two_saes_show_metrics_figures_and_tables(tmp_path, tiny_handle, monkeypatch):
    build_feature_root(tmp_path, tiny_handle.tokenizer)
    other = build_tiny_sae(tmp_path / "seed1", seed=1)
    build_dashboards_folder(other, tiny_handle.tokenizer, seed=1)
    at = open_page(tiny_app(monkeypatch, tmp_path), PAGE)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= 1  # best-match histograms (no eval.json: no scatter)
    assert len(at.dataframe) >= 2  # metrics and matched pairs (splits may be empty)
    metrics = at.dataframe[0].value
    assert list(metrics["SAE"]) == ["default", "seed1"]
    pairs = at.dataframe[-1].value
    assert len(pairs) == 32 and "default label" in pairs.columns and "seed1 density" in pairs.columns
    assert any("Mean best cos" in m.label for m in at.metric)
    assert any("exact" in c.value for c in at.caption)
    assert len(at.get("download_button")) == 2
    # a lower threshold reruns the comparison
    at.slider(key="compare_threshold").set_value(0.5).run()
    assert not at.exception and not at.error
    # open the second SAE's latent in the Explorer: the session's SAE becomes that SAE
    at.button(key="compare_open_b").click().run()
    assert not at.exception
    assert at.session_state["sae_path"] == str(other)


def test_compare__one_sae_is_an_empty_state(tmp_path, tiny_handle, monkeypatch):
    build_feature_root(tmp_path, tiny_handle.tokenizer, dashboards=False)
    at = open_page(tiny_app(monkeypatch, tmp_path), PAGE)
    assert at.info and "Compare needs two SAEs" in at.info[0].value
    assert not at.error


def test_compare__typed_folder_that_is_not_an_sae_is_one_line_error(tmp_path, tiny_handle, monkeypatch):
    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer, dashboards=False)
    junk = tmp_path / "not_an_sae"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    at = open_page(tiny_app(monkeypatch, root), PAGE)
    at.text_area(key="compare_typed").set_value(str(junk)).run()
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert at.title[0].value == "Compare SAEs"  # the page still renders


def test_compare__joint_map_colours_by_sae(tmp_path, tiny_handle, monkeypatch):
    build_feature_root(tmp_path, tiny_handle.tokenizer)
    build_tiny_sae(tmp_path / "seed1", seed=1)
    at = open_page(tiny_app(monkeypatch, tmp_path), PAGE)
    n_charts = len(at.get("plotly_chart"))
    at.toggle(key="compare_joint_map").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == n_charts + 1
