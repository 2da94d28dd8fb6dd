"""Steering the real default model (SmolLM2-135M-Instruct) with the shipped SAE: slow, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saelab.hooks import active_hook_count

SAE_DIR = Path(__file__).resolve().parents[1] / "cached_features" / "default"


@pytest.mark.slow
def test_steer_default__strong_latent_changes_output_and_factor_zero_reproduces_it(default_handle):
    from saelab.features.store import DashboardStore
    from saelab.sae.files import load_sae
    from saelab.steering import GenerationConfig, Intervention, generate, sae_latent_direction

    loaded = load_sae(SAE_DIR, handle=default_handle)
    summary = DashboardStore(SAE_DIR).summary()
    # A frequent latent that is not an attention-sink latent (those have max_act in the thousands).
    ordinary = np.where((summary["max_act"] > 0) & (summary["max_act"] < 200))[0]
    latent = int(ordinary[np.argmax(summary["density"][ordinary])])
    direction = sae_latent_direction(loaded, latent)
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=0)
    prompts = ["Tell me about your weekend.", "What is the capital of France?"]

    zero = generate(default_handle, prompts, [Intervention("add", direction, 0.0)], cfg)
    assert zero.steered == zero.unsteered, "factor 0 reproduces the unsteered text exactly"
    assert all(len(ids) >= 3 for ids in zero.unsteered_token_ids)

    strong = generate(default_handle, prompts, [Intervention("add", direction, 8.0)], cfg, with_unsteered=False)
    assert strong.steered != zero.unsteered, f"latent {latent} at factor 8 (α = {8 * direction.max_act:.0f})"
    assert active_hook_count(default_handle) == 0
