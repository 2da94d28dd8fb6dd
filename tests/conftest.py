"""Shared fixtures: a tiny random model (fast), the real default model (slow, cached per session)."""

from __future__ import annotations

import os

import pytest

# Tests never reach a hub; set before anything imports transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_handle():
    """A 2-layer random Llama-style HookedTransformer with the default tokenizer (seed 0)."""
    from saelab.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def default_handle():
    """The real SmolLM2-135M-Instruct (converted weights are cached after the first load)."""
    from saelab.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def feature_root(tmp_path_factory, tiny_handle):
    """A folder holding `default/` = a tiny SAE with dashboards and labels: point `SAELAB_FEATURES` at it.

    Shared read-only by every AppTest of the pages (tests that change it build their own)."""
    from tests.fixtures_ui import build_feature_root

    root = tmp_path_factory.mktemp("features")
    build_feature_root(root, tiny_handle.tokenizer)
    return root
