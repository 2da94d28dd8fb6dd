"""Load test in a real browser: N concurrent sessions for S seconds; errors, cross-talk, latency and server memory.

Starts `streamlit run app.py` on a free localhost port (the shipped default model and SAE; `--tiny`: the tiny
model and a tiny SAE, a smoke run) and drives Debian's /usr/bin/chromium with async Playwright. Each session
is its own browser context (its own Streamlit session) with its own steering setup (prompt, latent, factor;
greedy decoding) and moves between pages through the sidebar, as a person would. Actions, each timed:
  * explorer: type a latent index on the Feature Explorer; until that latent's heading is drawn and the page idle;
  * prompt:   type a new text on the Prompt view, click Analyse; until that text's highlighted tokens are drawn;
  * steer:    click Generate on the Steering page; until the run is over and the steered text is drawn.
Solo phase first: one session at a time runs its steering setup (recording the unsteered and steered texts) and
a few switches and analyses; the p50s of this phase are the same-run baseline. Load phase: all sessions loop
over a random mix of actions until the time is up. Every steered text under load must equal its solo text
(cross-talk); errors are Streamlit exception boxes, st.error boxes, timeouts, page crashes and harness failures.
The server's RSS is sampled every second. Writes bench/results/load.json (`--tiny`: load_tiny.json), the
server log to test-artifacts/load_server.log, and exits 1 on any error or cross-talk.

    .venv/bin/python bench/load.py                       # 8 sessions, 180 s, default model
    .venv/bin/python bench/load.py --tiny --seconds 30 --sessions 2
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from common import ROOT, write_results

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]  # fmt: skip
ACTIONS = {"explorer": 0.4, "prompt": 0.3, "steer": 0.3}  # the load phase's mix
SOLO_MIX = ["explorer"] * 3 + ["prompt"] * 2  # per session in the solo phase, after its steering run
PAGES = {"explorer": "Feature Explorer", "prompt_view": "Prompt view", "steering": "Steering playground"}
PROMPTS = ["Tell me about your weekend.", "Write a short poem about the sea.", "How do I bake bread?",
           "What is the capital of France?", "Describe a busy train station.", "Give me three tips for sleep.",
           "Explain how a bicycle works.", "What did you have for breakfast?", "Name a famous painter.",
           "Why is the sky blue?"]  # fmt: skip
TEXTS = ["The Eiffel Tower in Paris was finished in 1889.", "Marie Curie won two Nobel prizes.",
         "def area(r): return 3.14159 * r ** 2", "The cat sat on the warm windowsill all afternoon."]  # fmt: skip

# Installed in every page before Streamlit's own scripts: window.__runs counts script runs (each time the
# page turns busy: the "Running…" widget, shown only after a delay, or an element left stale by the new run),
# __idle() and __steered() read the page.
PAGE_JS = """(() => {
  window.__runs = 0; let on = false;
  window.__idle = () => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]');
  const text = el => { if (!el) return ''; const t = [...el.querySelectorAll('.saelab-tok')];
    return t.length ? t.map(e => e.textContent).join('') : el.querySelector('[data-testid="stText"]')?.textContent || ''; };
  const column = name => [...document.querySelectorAll('[data-testid="stColumn"]')].filter(c =>
    c.querySelector('[data-testid="stMarkdown"]')?.textContent.trim() === name).pop();
  window.__steered = () => [text(column('Unsteered')), text(column('Steered')),
    [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(e => e.textContent)
      .filter(t => t.includes('SAE latent')).join(' | ')];
  new MutationObserver(() => {
    const now = !window.__idle();
    if (now && !on) window.__runs++;
    on = now;
  }).observe(document, {childList: true, subtree: true, attributes: true, attributeFilter: ['data-stale']});
})();"""
EXPLORER_DONE = """n => window.__idle() && [...document.querySelectorAll('h3')]
  .some(h => h.textContent === `Latent ${n}` || h.textContent.startsWith(`Latent ${n} `))"""
PROMPT_DONE = """t => [...document.querySelectorAll('.saelab-tok')].map(e => e.textContent).join('')
  .replace(/·/g, ' ').replace(/↵/g, '\\n').replace(/⇥/g, '\\t').includes(t)"""
STEER_DONE = "n => window.__runs > n && window.__idle() && window.__steered()[1] !== ''"
SETTLED = "a => (window.__runs > a.n || performance.now() - a.t > 1000) && window.__idle()"
ERRORS = """() => [...document.querySelectorAll('[data-testid="stException"]')].map(e => 'exception: ' + e.innerText)
  .concat([...document.querySelectorAll('[data-testid="stAlertContentError"]')].map(e => 'st.error: ' + e.innerText))"""


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    return sorted(xs)[max(0, math.ceil(q * len(xs)) - 1)]


class Session:
    """One browser context: its page, its steering setup and the page it is on."""

    def __init__(self, idx: int, page, url: str, latent: int, factor: float, prompt: str, d_sae: int, timeout_s):
        self.idx, self.url, self.d_sae, self.timeout = idx, url, d_sae, timeout_s * 1000
        self.latent, self.factor, self.prompt = latent, factor, prompt
        self.where: str | None = None  # the page's slug, None: not opened (yet, or since an error)
        self.notes, self.crashed = 0, False
        self.watch(page)

    def watch(self, page) -> None:
        self.page = page
        page.on("crash", lambda _: setattr(self, "crashed", True))

    async def idle(self) -> None:
        await self.page.wait_for_function("() => window.__idle()", polling=250, timeout=self.timeout)

    async def open(self, slug: str) -> None:
        """Go to a page through the sidebar (the first time, and after an error, by URL)."""
        if self.where == slug:
            return
        if self.where is None:
            await self.page.goto(f"{self.url}/{slug}", wait_until="domcontentloaded", timeout=self.timeout)
        else:
            await self.page.locator(f'[data-testid="stSidebarNav"] a[href$="/{slug}"]').click(timeout=self.timeout)
        await self.page.locator("h1").filter(has_text=PAGES[slug]).wait_for(timeout=self.timeout)
        await self.idle()
        self.where = slug

    async def commit(self, locator, value: str, key: str = "Enter") -> None:
        """Type `value` into a widget and wait for the rerun it causes."""
        await locator.fill(value, timeout=self.timeout)
        n, t = await self.page.evaluate("() => [window.__runs, performance.now()]")
        await locator.press(key)
        await self.page.wait_for_function(SETTLED, arg={"n": n, "t": t}, polling=100, timeout=self.timeout)

    async def explorer(self, rng: random.Random) -> float:
        await self.open("explorer")
        box = self.page.get_by_label(re.compile(r"^Latent index"))
        current = await box.input_value(timeout=self.timeout)
        latent = rng.choice([i for i in range(self.d_sae) if str(i) != current])
        await box.fill(str(latent), timeout=self.timeout)
        t0 = time.perf_counter()
        await box.press("Enter")
        await self.page.wait_for_function(EXPLORER_DONE, arg=latent, polling=100, timeout=self.timeout)
        return time.perf_counter() - t0

    async def prompt_view(self, rng: random.Random) -> float:
        await self.open("prompt_view")
        self.notes += 1
        text = f"{rng.choice(TEXTS)} (session {self.idx}, note {self.notes})"
        await self.page.get_by_label(re.compile(r"^Text \(up to")).fill(text, timeout=self.timeout)
        t0 = time.perf_counter()
        await self.page.get_by_role("button", name="Analyse").click(timeout=self.timeout)
        await self.page.wait_for_function(PROMPT_DONE, arg=text, polling=100, timeout=self.timeout)
        dt = time.perf_counter() - t0
        await self.idle()
        return dt

    async def steer(self, new_tokens: int) -> tuple[float, list[str]]:
        """Set this session's setup (only the widgets that differ), click Generate; (seconds, texts)."""
        await self.open("steering")
        page = self.page
        prompt = page.get_by_label("Prompt", exact=True)
        if await prompt.input_value(timeout=self.timeout) != self.prompt:
            await self.commit(prompt, self.prompt, "Control+Enter")
        if not await page.get_by_label("New tokens").is_visible():
            await page.locator("summary").filter(has_text="Sampling").first.click(timeout=self.timeout)
        for label, value in [("New tokens", new_tokens), ("Temperature (0 = greedy)", 0), ("Seed", 0),
                             ("Latent", self.latent), (re.compile(r"^Factor \("), self.factor)]:  # fmt: skip
            box = page.get_by_label(label, exact=True) if isinstance(label, str) else page.get_by_label(label)
            if float(await box.input_value(timeout=self.timeout)) != float(value):
                await self.commit(box, str(value))
        n = await page.evaluate("() => window.__runs")
        t0 = time.perf_counter()
        await page.get_by_role("button", name="Generate", exact=True).click(timeout=self.timeout)
        await page.wait_for_function(STEER_DONE, arg=n, polling=250, timeout=self.timeout)
        return time.perf_counter() - t0, await page.evaluate("() => window.__steered()")


class Run:
    """Timings, errors and cross-talk of one bench run."""

    def __init__(self, new_tokens: int):
        self.new_tokens = new_tokens
        self.times = {phase: {a: [] for a in ACTIONS} for phase in ("solo", "load")}
        self.errors: list[str] = []
        self.solo: dict[int, list[str]] = {}
        self.mismatch = {"steered": 0, "unsteered": 0, "setup": 0}
        self.details: list[str] = []
        self.solo_done = self.load_s = self.rss_load_start = float("nan")

    async def act(self, s: Session, action: str, phase: str, rng: random.Random) -> None:
        try:
            if action == "explorer":
                dt = await s.explorer(rng)
            elif action == "prompt":
                dt = await s.prompt_view(rng)
            else:
                dt, texts = await s.steer(self.new_tokens)
                self.check(s, texts, phase)
            if phase:
                self.times[phase][action].append(dt)
            found = await s.page.evaluate(ERRORS)
        except Exception as err:
            kind = "crash" if s.crashed else "timeout" if "Timeout" in type(err).__name__ else "harness"
            found = [f"{kind}: {type(err).__name__}: {str(err).splitlines()[0][:300]}"]
        if found:
            self.errors += [f"session {s.idx} {phase or 'warm-up'} {action}: {e[:400]}" for e in found]
            print(f"  ERROR session {s.idx} {action}: {found[0][:300]}", flush=True)
            await self.recover(s)

    def check(self, s: Session, texts: list[str], phase: str) -> None:
        """Record the first (solo) texts of the setup; compare every later run with them (greedy: equal)."""
        if f"latent {s.latent} × {s.factor:g} (" not in texts[2]:
            self.mismatch["setup"] += 1
            self.details.append(f"session {s.idx} {phase}: setup caption {texts[2]!r}")
        ref = self.solo.setdefault(s.idx, texts)  # the first run of the setup (warm-up or solo phase)
        for i, which in enumerate(("unsteered", "steered")):
            if texts[i] != ref[i]:
                self.mismatch[which] += 1
                self.details.append(f"session {s.idx} {phase} {which}: solo {ref[i]!r} now {texts[i]!r}")

    async def recover(self, s: Session) -> None:
        """A fresh page after an error, so one error is counted once."""
        try:
            if s.crashed:
                s.watch(await s.page.context.new_page())
                s.crashed = False
            s.where = None
            await s.page.goto("about:blank")
        except Exception as err:
            self.errors.append(f"session {s.idx} recovery: {type(err).__name__}: {err}")


def sample_rss(pid: int, out: list[float], stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(proc.memory_info().rss / 2**20)
        except psutil.Error:
            return
        stop.wait(1.0)


async def drive(a: argparse.Namespace, url: str, d_sae: int, latents: list[int], rss: list[float]) -> Run:
    from playwright.async_api import async_playwright

    run = Run(a.new_tokens)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        sessions = []
        for i in range(a.sessions):
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
            await ctx.add_init_script(PAGE_JS)
            prompt = PROMPTS[i % len(PROMPTS)]
            sessions.append(Session(i, await ctx.new_page(), url, latents[i], 4.0 + i, prompt, d_sae, a.timeout))
        # Warm-up (model load, first runs of each page), untimed; session 0's texts become its solo texts.
        t0 = time.perf_counter()
        for action in ACTIONS:
            await run.act(sessions[0], action, "", random.Random(-1))
        print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        for s in sessions:  # solo: one session at a time
            rng = random.Random(1000 + s.idx)
            await run.act(s, "steer", "solo", rng)
            for action in SOLO_MIX:
                await run.act(s, action, "solo", rng)
            print(f"solo session {s.idx}: steered {run.solo.get(s.idx, ['', ''])[1][:60]!r}", flush=True)
        run.solo_done, run.rss_load_start = time.perf_counter(), rss[-1] if rss else float("nan")
        deadline = time.perf_counter() + a.seconds

        async def loop(s: Session) -> None:
            rng = random.Random(s.idx)
            while time.perf_counter() < deadline:
                await run.act(s, rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0], "load", rng)

        await asyncio.gather(*(loop(s) for s in sessions))
        run.load_s = time.perf_counter() - run.solo_done
        await browser.close()
    return run


def feature_root_for(tiny: bool) -> tuple[dict, Path]:
    """Environment for the server, and the SAE folder it will open."""
    from saelab.defaults import default_sae_dir

    drop = ("SAELAB_MODEL", "SAELAB_FEATURES")  # the default model and SAE unless --tiny
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"HF_HUB_OFFLINE": "1"}
    if not tiny:
        return env, default_sae_dir()
    from saelab.models import load_model
    from tests.fixtures_ui import build_feature_root

    root = Path(tempfile.mkdtemp(prefix="saelab_load_"))
    atexit.register(shutil.rmtree, root, True)
    build_feature_root(root, load_model("tiny").tokenizer)
    return {**env, "SAELAB_MODEL": "tiny", "SAELAB_FEATURES": str(root)}, root / "default"


@contextlib.contextmanager
def server(env: dict, log: Path):
    """`streamlit run app.py` on a free port, answering its health check; yields (url, pid); always ended."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log}")
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def report(a: argparse.Namespace, run: Run, rss: list[float], latents: list[int]) -> None:
    figures: dict = {"sessions": a.sessions, "load_seconds": run.load_s, "cpu_cores": os.cpu_count()}
    ratios, rows = {}, []
    for action in ACTIONS:
        solo, load = run.times["solo"][action], run.times["load"][action]
        solo_p50 = statistics.median(solo) if solo else float("nan")
        figures.update({f"{action}_solo_count": len(solo), f"{action}_solo_p50_s": solo_p50})
        figures[f"{action}_load_count"] = len(load)
        if load:
            stats = {"p50": statistics.median(load), "p95": pct(load, 0.95), "max": max(load)}
            figures.update({f"{action}_load_{k}_s": v for k, v in stats.items()})
            ratios[f"{action}_p50_load_over_solo"] = stats["p50"] / solo_p50
            ratios[f"{action}_p95_load_over_solo_p50"] = stats["p95"] / solo_p50
            rows.append((action, len(load), stats["p50"], stats["p95"], stats["max"], solo_p50))
    figures.update(errors=len(run.errors), crosstalk_mismatches=run.mismatch["steered"],
                   unsteered_mismatches=run.mismatch["unsteered"], setup_mismatches=run.mismatch["setup"],
                   server_rss_start_mb=rss[0], server_rss_load_start_mb=run.rss_load_start,
                   server_rss_peak_mb=max(rss), server_rss_end_mb=rss[-1], server_rss_samples=len(rss))  # fmt: skip
    notes = [
        "times in seconds from the triggering key press or click as Playwright sees it (polling every 100 ms; "
        "250 ms for steer), so up to one poll late; 'solo' = one session alone in the same run (the baseline)",
        f"load mix {ACTIONS}; steer: greedy, {a.new_tokens} new tokens, session i: latent {latents}[i], factor 4+i",
        "server RSS: start = the server just up (model not loaded), load_start = after the solo phase",
        *run.errors[:20],
        *run.details[:20],
    ]
    config = {**vars(a), "latents": latents, "prompts": PROMPTS[: a.sessions]}
    write_results("load_tiny" if a.tiny else "load", figures, ratios, notes, config=config)
    print(f"\n{'action':9} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'solo p50':>9} {'ratio':>6}")
    for action, n, p50, p95, mx, solo in rows:
        print(f"{action:9} {n:4d} {p50:7.2f} {p95:7.2f} {mx:7.2f} {solo:9.2f} {p50 / solo:6.2f}")
    print(f"errors {len(run.errors)}, cross-talk {run.mismatch['steered']} (unsteered {run.mismatch['unsteered']}, "
          f"setup {run.mismatch['setup']}), server RSS MB start/load start/peak/end {rss[0]:.0f}/"
          f"{run.rss_load_start:.0f}/{max(rss):.0f}/{rss[-1]:.0f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180, help="length of the load phase")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="tiny model and SAE (a smoke run)")
    ap.add_argument("--new-tokens", type=int, default=32, help="new tokens per steering generation")
    ap.add_argument("--timeout", type=float, default=180, help="seconds an action may take before it is an error")
    a = ap.parse_args()

    from saelab.features.store import DashboardStore

    env, sae_dir = feature_root_for(a.tiny)
    store = DashboardStore(sae_dir)
    d_sae = int(store.d_sae)
    live = [i for i in random.Random(0).sample(range(d_sae), d_sae) if float(store.latent(i).max_act) > 0]
    latents = [live[i % len(live)] for i in range(a.sessions)]  # distinct while there are enough live ones
    rss: list[float] = []
    stop = threading.Event()
    with server(env, ROOT / "test-artifacts" / "load_server.log") as (url, pid):
        threading.Thread(target=sample_rss, args=(pid, rss, stop), daemon=True).start()
        try:
            run = asyncio.run(drive(a, url, d_sae, latents, rss))
        finally:
            stop.set()
    report(a, run, rss, latents)
    return 1 if run.errors or any(run.mismatch.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
