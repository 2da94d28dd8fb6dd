"""The steering-evaluation page through the real entry point (AppTest), on the tiny model with tiny sizes."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from saelab.jobs import default_queue
from tests.fixtures_ui import open_page, tiny_app


@pytest.fixture
def page(feature_root, monkeypatch):
    return open_page(tiny_app(monkeypatch, feature_root, timeout=180), "pages/steering_eval.py")


def _set_tiny_sizes(at: AppTest) -> None:
    concepts, methods, factors = at.multiselect[0], at.multiselect[1], at.multiselect[2]
    concepts.set_value(["spam"])
    methods.set_value(["diffmean", "prompting"])
    factors.set_value([1.0])
    labels = {n.label: n for n in at.number_input}
    labels["Instructions"].set_value(2)
    labels["New tokens (AxBench 128)"].set_value(3)
    labels["Training texts per class (AxBench 72)"].set_value(4)
    labels["Held-out judge examples"].set_value(3)


def _run_and_finish(at: AppTest, label: str, kind: str) -> AppTest:
    """Click `label`: the run goes to the job queue; wait for the job, then rerun to draw its result."""
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    job = next(j for j in default_queue().jobs() if j.kind == kind)
    assert job.wait(300), job.title
    return at.run()


def test_steering_eval_page__runs_tiny_evaluation_and_labels_proxy(page):
    at = page
    assert any("PROXY" in c.value for c in at.caption)
    _set_tiny_sizes(at)
    _run_and_finish(at, "Run evaluation", "steer_eval")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("PROXY judge ratings" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) >= 2
    methods = set(at.dataframe[0].value["method"])
    assert {"unsteered", "diffmean", "prompting"} <= methods


def test_steering_eval_page__bad_input_shows_message_and_keeps_running(page):
    at = page
    at.multiselect[0].set_value([])
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert not at.exception, at.exception
    assert any("at least one concept" in e.value for e in at.error)


def test_steering_eval_page__detox_tiers_plot(page):
    at = page
    labels = {n.label: n for n in at.number_input}
    labels["Latents"].set_value(2)
    labels["Prompts"].set_value(3)
    labels["New tokens"].set_value(3)
    labels["Ranking texts per class"].set_value(20)
    _run_and_finish(at, "Run detox tiers", "detox")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    conditions = next(df.value for df in at.dataframe if "condition" in df.value.columns)["condition"].tolist()
    assert conditions == ["unsteered", "mild", "medium", "strong"]
    assert any("toxicity" in c.value.lower() for c in at.caption)
