"""The kill test: SIGKILL the process during a dashboard build and during SAE training (both from the CLI, the
same backend the app's job queue runs); a rerun resumes from the last checkpoint and ends with valid files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from saelab.features.dashboard_collect import STATE_FILE, partial_dir
from saelab.storage import DASHBOARD_DIR, TRAIN_STATE_DIR, load_tensors, read_json
from tests.fixtures_ui import HOOK, build_tiny_sae

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
pytestmark = pytest.mark.slow


def _saelab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saelab", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start `saelab *args`, SIGKILL it as soon as `ready()`; fail if it ends first."""
    proc = subprocess.Popen([sys.executable, "-m", "saelab", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"saelab {args[0]} ended (rc {proc.returncode}) before the kill: {proc.stdout.read()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"saelab {args[0]} wrote no checkpoint within {timeout:.0f} s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _all_files_valid(folder: Path) -> None:
    """Every JSON and safetensors file under `folder` reads back whole."""
    for p in folder.rglob("*"):
        if p.suffix == ".json":
            read_json(p)
        elif p.suffix == ".safetensors":
            load_tensors(p)


def test_kill__dashboard_build_resumes_after_sigkill(tmp_path, tiny_handle):
    sae = build_tiny_sae(tmp_path / "sae")
    args = ["dashboards", "--sae", str(sae), "--tokens", "48000", "--seq-len", "64", "--no-labels"]
    part = partial_dir(sae / DASHBOARD_DIR)
    _kill_when(args, lambda: (part / STATE_FILE).exists())
    state = json.loads((part / STATE_FILE).read_text())
    assert state["rows_done"] > 0 and not (sae / DASHBOARD_DIR).exists()
    _all_files_valid(part)

    done = _saelab(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming after row {state['rows_done']}" in done.stderr or state["rows_done"] <= 0
    assert not part.exists() and not list(sae.glob(".*.tmp"))
    _all_files_valid(sae)

    # That the resumed result equals an uninterrupted build is checked in-process (test_dashboards.py).


def test_kill__training_resumes_after_sigkill(tmp_path):
    acts, out = tmp_path / "acts", tmp_path / "run"
    harvest = _saelab("harvest", "--model", "tiny", "--hooks", HOOK, "--tokens", "8000", "--seq-len", "64",
                      "--out", str(acts))  # fmt: skip
    assert harvest.returncode == 0, harvest.stderr[-3000:]
    args = ["train", "--acts", str(acts), "--arch", "topk", "--d-sae", "64", "--k", "4", "--batch-size", "64",
            "--epochs", "8", "--checkpoint-every", "20", "--out", str(out)]  # fmt: skip
    ckpt = out / TRAIN_STATE_DIR
    _kill_when(args, lambda: (ckpt / "state.json").exists())
    step = read_json(ckpt / "state.json")["n_training_steps"]
    assert step > 0
    _all_files_valid(out)

    done = _saelab(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from step" in done.stdout
    assert not ckpt.exists()
    _all_files_valid(out)
    assert (out / "sae_weights.safetensors").exists()
