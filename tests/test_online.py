"""Offline by default; online only on `SAELAB_ONLINE=1` (downloads cannot run here: routing and messages are tested)."""

from __future__ import annotations

import time

import pytest

from saelab import online
from saelab.errors import MissingDependencyError


def test_configure_hub__offline_unless_opted_in(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", online.ONLINE_ENV):
        monkeypatch.delenv(var, raising=False)
    online.configure_hub()
    assert online.online_allowed() is False
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var)
    monkeypatch.setenv(online.ONLINE_ENV, "1")
    online.configure_hub()
    assert online.online_allowed() and "HF_HUB_OFFLINE" not in os.environ


def test_hub_model_name_offline__fails_at_once_naming_the_setting(monkeypatch):
    from saelab.models import load_model

    monkeypatch.delenv(online.ONLINE_ENV, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(MissingDependencyError, match=online.ONLINE_ENV) as err:
        load_model("EleutherAI/pythia-14m-definitely-not-cached")
    assert time.perf_counter() - t0 < 30 and "local GGUF" in str(err.value)


def test_sae_lens_release__offline_fails_at_once_online_fetches_once_and_caches(tmp_path, monkeypatch, tiny_handle):
    from sae_lens import SAE

    from saelab.sae.files import load_sae
    from tests.fixtures_ui import build_tiny_sae

    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(online.ONLINE_ENV, raising=False)
    spec = "sae-lens:tiny-release:blocks.0.hook_resid_post"
    t0 = time.perf_counter()
    with pytest.raises(MissingDependencyError, match=online.ONLINE_ENV):
        load_sae(spec)
    assert time.perf_counter() - t0 < 2

    source = build_tiny_sae(tmp_path / "published")
    calls = []

    def fake_from_pretrained(release, sae_id, device="cpu", **kw):  # what SAE-Lens would download
        calls.append((release, sae_id))
        return SAE.load_from_disk(str(source), device=device)

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setenv(online.ONLINE_ENV, "1")
    loaded = load_sae(spec, handle=tiny_handle)
    assert calls == [("tiny-release", "blocks.0.hook_resid_post")] and loaded.hook == "blocks.0.hook_resid_post"
    monkeypatch.delenv(online.ONLINE_ENV)  # offline again: the cached copy serves
    assert load_sae(spec, handle=tiny_handle).hook == loaded.hook and len(calls) == 1
    with pytest.raises(Exception, match="sae-lens:<release>:<sae_id>"):
        load_sae("sae-lens:only-a-release")
