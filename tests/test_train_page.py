"""The Train page: its job (harvest → train → eval → dashboards, live curves) and the page driving it (tiny model)."""

from __future__ import annotations

import json
import math

import pytest

from saelab.features import train_job as tj
from saelab.jobs import JobQueue, default_queue
from tests.fixtures_ui import build_feature_root, open_page, tiny_app

TINY = {"d_sae": 32, "k": 4, "n_tokens": 4096, "eval_tokens": 512, "dashboard_tokens": 1024, "label_tokens": 512}
WAIT_S = 240
BROWSER_TOKENS = "100000"  # enough training steps (97 of 1,024) to see the curves grow between two looks


def test_curve_buffer__bounded_even_and_keeps_the_latest_step():
    buf = tj.CurveBuffer(d_sae=10, max_points=100)
    for step in range(1, 1001):
        buf.add(step, 1000, {"loss": 1.0 / step, "dead_features": 5, "l0": 3, "explained_variance": 0.5, "lr": 1e-3})
        assert len(buf) <= 101
    snap = buf.snapshot()
    assert 50 <= len(snap["step"]) <= 101 and snap["step"][-1] == 1000
    assert snap["step"] == sorted(snap["step"]) and snap["dead_fraction"][0] == 0.5
    assert math.isnan(snap["mse_loss"][0])  # not logged: NaN, left out of the figure
    assert buf.eta_s() == 0.0


def test_request__checks_settings_and_output_name(tmp_path):
    with pytest.raises(Exception, match="Output name"):
        tj.TrainRequest(name="../x", hook="blocks.0.hook_resid_post")
    with pytest.raises(Exception, match="Tokens to harvest"):
        tj.TrainRequest(name="x", hook="blocks.0.hook_resid_post", n_tokens=10)
    req = tj.TrainRequest(name="x", hook="blocks.0.hook_resid_post", **TINY)
    assert tj.check_output(tmp_path, req) == "new"
    (tmp_path / "x").mkdir()
    with pytest.raises(Exception, match="choose another output name"):
        tj.check_output(tmp_path, req)


def test_training_job__publishes_growing_curves_and_writes_a_pickable_sae(tiny_handle, tmp_path, monkeypatch):
    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer, dashboards=False)
    monkeypatch.setenv("SAELAB_FEATURES", str(root))
    lengths: list[int] = []
    add = tj.CurveBuffer.add

    def recording_add(self, step, total, metrics):
        add(self, step, total, metrics)
        lengths.append(len(self))

    monkeypatch.setattr(tj.CurveBuffer, "add", recording_add)
    req = tj.TrainRequest(name="run1", hook=tj.default_hook(tiny_handle), **TINY)
    queue = JobQueue()
    phases: list[str] = []
    try:
        job = queue.submit("train", req.key, "Train run1", tj.training_job(tiny_handle, req, root))
        while not job.wait(0.05):
            if job.progress.message and job.progress.message not in phases:
                phases.append(job.progress.message)
        assert job.state == "done", job.error_message
    finally:
        queue.close()
    out = root / "run1"
    assert job.result == out
    curves = job.published["curves"]
    snap = curves.snapshot()
    assert lengths == list(range(1, len(lengths) + 1)) and len(lengths) == req.train_config().total_steps
    assert snap["step"][-1] == req.train_config().total_steps and all(math.isfinite(v) for v in snap["loss"])
    for name in ("cfg.json", "sae_weights.safetensors", "eval.json", "dashboards/meta.json", "dashboards/labels.json"):
        assert (out / name).exists(), name
    assert json.loads((root / ".runs" / "run1" / "request.json").read_text())["done"] is True
    assert not (root / ".runs" / "run1" / "acts").exists()
    assert {"harvest", "train", "evaluate"} <= set(phases)

    from saelab.ui.sae_choice import available_saes

    assert out in available_saes() and (root / ".runs") not in available_saes()
    with pytest.raises(Exception, match="a finished run"):
        tj.check_output(root, req)


def test_train_page__starts_a_run_follows_it_and_offers_the_new_sae(tiny_handle, tmp_path, monkeypatch):
    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer)
    at = open_page(tiny_app(monkeypatch, root), "pages/train.py")
    assert any("No training run yet" in i.value for i in at.info)
    assert at.selectbox(key="train_hook").value == tj.default_hook(tiny_handle)
    at.number_input(key="train_d_sae").set_value(32)
    at.number_input(key="train_k").set_value(4)
    at.number_input(key="train_tokens").set_value(4096)
    at.expander[0]  # the evaluation settings
    at.number_input(key="train_eval").set_value(512)
    at.number_input(key="train_dash").set_value(1024)
    at.number_input(key="train_label").set_value(512)
    at.text_input(key="train_name").set_value("page-run")
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    job = default_queue().get(at.session_state["train_job_id"])
    assert job is not None and job.kind == "train"
    assert job.wait(WAIT_S) and job.state == "done", job.error_message
    at.run()
    assert not at.exception, at.exception
    assert any("Trained **page-run**" in s.value for s in at.success)
    assert at.get("plotly_chart"), "the curves figure is drawn"
    assert (root / "page-run" / "dashboards" / "meta.json").exists()
    at.button(key="train_open").click().run()
    assert at.session_state["sae_path"] == str(root / "page-run")


def test_run_training__a_run_stopped_after_training_resumes_without_training_again(tiny_handle, tmp_path):
    req = tj.TrainRequest(name="again", hook="blocks.0.hook_resid_post", **TINY)

    class Stop(Exception):
        pass

    def stop_at_evaluate(phase, done, total):
        if phase == "evaluate":
            raise Stop

    with pytest.raises(Stop):
        tj.run_training(tiny_handle, req, tmp_path, stop_at_evaluate)
    assert tj.check_output(tmp_path, req) == "resume"
    other = tj.TrainRequest(**{**req.to_dict(), "seed": 1})
    with pytest.raises(Exception, match="unfinished run of other settings"):
        tj.check_output(tmp_path, other)
    phases: set[str] = set()
    out = tj.run_training(tiny_handle, req, tmp_path, lambda phase, done, total: phases.add(phase))
    assert "train" not in phases and "harvest" not in phases and "evaluate" in phases
    assert (out / "eval.json").exists() and (out / "dashboards" / "meta.json").exists()


@pytest.mark.browser
def test_browser__train_page_draws_growing_curves_and_the_sae_reaches_the_picker(tiny_handle, tmp_path):
    """A real server and Chromium: start a run, see the curve figure gain points, find the SAE on the Overview."""
    import time

    from playwright.sync_api import sync_playwright

    from tests.test_browser import _chromium, _wait_idle, app_server

    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer)
    n_points = "() => { const gd = document.querySelector('.js-plotly-plot'); return gd && gd.data ? gd.data[0].x.length : 0; }"
    with app_server(root) as url, sync_playwright() as pw:
        browser = _chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}/train", wait_until="domcontentloaded")
            page.get_by_text("No training run yet").wait_for(timeout=90_000)

            def fill(label: str, value: str) -> None:
                box = page.get_by_label(label, exact=False).first
                box.fill(value)
                box.press("Enter")
                _wait_idle(page)

            fill("Width d_sae", "2048")
            fill("k (active latents)", "16")
            fill("Tokens to harvest", BROWSER_TOKENS)
            page.get_by_text("Evaluation and dashboards").click()
            fill("Held-out tokens to evaluate", "512")
            fill("Dashboard tokens", "1024")
            fill("Held-out tokens to score labels", "512")
            fill("Output name", "browser-run")
            page.get_by_role("button", name="Start training").click()
            page.wait_for_function(f"() => ({n_points})() > 0", timeout=180_000)
            first = page.evaluate(n_points)
            # A rerun remounts the chart (its key carries the point count), so one look can catch it empty:
            # poll until it holds more points than the first look; the finished page draws all 97 steps.
            try:
                page.wait_for_function(f"() => ({n_points})() > {first} || ({first} >= 97 && "
                                       "document.body.innerText.includes('Trained '))", timeout=240_000)  # fmt: skip
            except Exception:
                raise AssertionError(f"the curves did not grow past {first} points: "
                                     f"{page.evaluate(n_points)} now") from None  # fmt: skip
            page.get_by_text("Trained ").first.wait_for(timeout=240_000)
            time.sleep(0.5)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("SAE in use").first.wait_for(timeout=90_000)
            _wait_idle(page)
            page.get_by_label("Shipped SAEs").click()
            page.locator('[role="option"]').first.wait_for(timeout=30_000)
            options = page.locator('[role="option"]').all_inner_texts()
            assert "browser-run" in options, options
        finally:
            browser.close()


def test_request__dead_window_fits_the_run_length():
    """A 100k-token run has ~97 steps: SAE-Lens's default 1,000-step dead window would never revive a latent."""
    from saelab.sae.train import auto_dead_window

    cfg = tj.TrainRequest(name="x", hook="blocks.0.hook_resid_post", n_tokens=100_000).train_config()
    assert cfg.dead_feature_window == auto_dead_window(cfg.total_steps) == 12 < cfg.total_steps
    assert auto_dead_window(100_000) == 1000 and auto_dead_window(3) == 10
