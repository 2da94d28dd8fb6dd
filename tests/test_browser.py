"""A real browser on a real server: the Prompt view, typed into and submitted through Chromium.

Starts `streamlit run app.py` on a free localhost port (tiny model, tiny SAE + dashboards), drives
Debian's /usr/bin/chromium with Playwright and saves a screenshot to test-artifacts/prompt_view.png.
`playwright install` is never run: `make test` installs chromium with apt.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures_ui import build_feature_root

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
SENTENCE = "Marie Curie won two Nobel prizes <b>in</b> physics and chemistry."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def _wait_idle(page, timeout_ms: int = 90_000) -> None:
    """Wait until the script run is over: no "Running…" widget and no stale (greyed) elements."""
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=timeout_ms)


def _chromium(pw):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium).")
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def app_server(root: Path):
    """A Streamlit server for app.py on a free port over the features folder `root` (tiny model); always
    terminated. Yields its URL once healthy."""
    port = _free_port()
    env = {**os.environ, "SAELAB_FEATURES": str(root), "SAELAB_MODEL": "tiny", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_handle):
    root = tmp_path_factory.mktemp("browser_features")
    build_feature_root(root, tiny_handle.tokenizer)
    with app_server(root) as url:
        yield url


@pytest.mark.browser
def test_browser__prompt_view_highlights_tokens_and_links_latents(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = _chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{server}/prompt_view", wait_until="domcontentloaded")
            box = page.locator("textarea").first
            box.wait_for(timeout=90_000)
            # This deep link is the server's first request: it must run under app.py's navigation
            # (saelab/ui/navigation.py), not Streamlit's legacy pages/ mode (file-name titles, no page config).
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text(timeout=30_000)
            assert "Feature Explorer" in nav and "Prompt view" in nav, f"legacy pages/ navigation: {nav!r}"
            box.fill(SENTENCE)
            page.get_by_role("button", name="Analyse").click()
            # The new text has arrived when its words are among the highlighted tokens.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.saelab-tok')].map(e => e.textContent).join('')"
                ".includes('Nobel')",
                timeout=90_000,
            )
            _wait_idle(page)
            tokens = page.locator(".saelab-tok")
            assert tokens.count() >= 10
            text = "".join(tokens.all_text_contents())
            assert "<b>" in text, "an HTML tag in the text is shown as text"
            assert page.locator("span.saelab-tok b").count() == 0, "…and not parsed as markup"
            links = page.locator('a[href*="latent="]')
            assert links.count() >= 1, "latent links into the Feature Explorer"
            assert page.locator("script:text('alert')").count() == 0
            page.screenshot(path=str(ARTIFACTS / "prompt_view.png"), full_page=True)

            # Following a latent link opens its Feature Explorer page.
            href = links.first.get_attribute("href")
            links.first.click()
            page.wait_for_url("**/explorer?latent=*", timeout=30_000)
            page.get_by_text("Top activating contexts").wait_for(timeout=90_000)
            assert href and "latent=" in page.url
        finally:
            browser.close()


@pytest.mark.browser
def test_browser__clicking_a_feature_map_point_opens_that_latent(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{server}/feature_map", wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=90_000)
            _wait_idle(page)
            # Screen position of point 5 from Plotly's own axes (the WebGL canvas has no DOM per point).
            x, y, latent = page.evaluate(
                """() => { const gd = document.querySelector('.js-plotly-plot');
                  const fd = gd._fullData[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                  const r = gd.getBoundingClientRect();
                  return [r.left + xa._offset + xa.c2p(fd.x[5]), r.top + ya._offset + ya.c2p(fd.y[5]),
                          fd.customdata[5]]; }"""
            )
            page.mouse.move(x, y)
            page.mouse.click(x, y)
            page.wait_for_url(f"**/explorer?latent={latent}", timeout=60_000)
            page.get_by_text(f"Latent {latent}").first.wait_for(timeout=60_000)
        finally:
            browser.close()
