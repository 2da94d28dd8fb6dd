"""Bring your own model: a local HF folder of every supported family loads through TransformerLens.

Each family is a tiny random model (2 layers, d_model 64, 4 heads) built offline with `transformers`,
saved with the default model's tokenizer, and loaded with `load_model(folder)` as a user's folder would be
(fast path installed, converted weights cached). Every parameter is jittered after init so that norm
weights, biases and Gemma's (1 + w) norms are not their trivial init values, and sliding windows are 4
tokens on 16-token inputs so local attention really masks something. Checked per family:
logits against `transformers` (fp32, ≤ 1e-3), every hook point the app reads fires with the width
`ModelHandle.hook_width` promises, the cached reload gives the same logits, and greedy generation through
the app's decode engine picks tokens `transformers` ranks first.

GGUF: the header is read before anything loads; another architecture is refused in under 2 s with the
supported list, a truncated or garbage file gets one line.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from saelab.errors import BadInputError, CorruptFileError
from saelab.models import load_model

VOCAB_PAD = 64  # vocab_size = tokenizer size + this: a model may have more embedding rows than tokens
_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    initializer_range=0.1,
)
_GEMMA = dict(_LLAMA, head_dim=16, query_pre_attn_scalar=24, sliding_window=4)
_LOCAL_GLOBAL = ["sliding_attention", "full_attention"]
FAMILIES: dict[str, dict] = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=0.1),
    "gpt_neox": dict(  # Pythia: parallel attention + MLP, rotary on a quarter of each head
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        initializer_range=0.1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    ),
    "llama": _LLAMA,
    "mistral": dict(_LLAMA, sliding_window=4),
    "qwen2": dict(_LLAMA, use_sliding_window=True, sliding_window=4, max_window_layers=1),  # layer 1 local
    "qwen3": dict(_LLAMA, head_dim=32),  # head_dim != d_model / n_heads, q/k norms
    "phi3": dict(_LLAMA, sliding_window=4, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "gemma": dict(_LLAMA, head_dim=16),
    "gemma2": dict(_GEMMA, layer_types=_LOCAL_GLOBAL, attn_logit_softcapping=2.0, final_logit_softcapping=1.5),
    "gemma3_text": dict(
        _GEMMA,
        layer_types=_LOCAL_GLOBAL,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 4.0},
        },
    ),
    "llama3_rope": dict(  # Llama 3.x: NTK-by-parts RoPE scaling, tied embeddings
        _LLAMA,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
}
MODEL_TYPE = {"llama3_rope": "llama"}
FAST_DECODE = {"llama", "llama3_rope", "gemma"}  # eligible for saelab.models.decode_step (no window, no qk norm)
TOLERANCE = 1e-3
IDS = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0))


def app_hooks(cfg) -> list[str]:
    """The hook points SAE Lab reads (SAEs, probes, circuits, steering, prompt views) on every layer."""
    names = ["hook_embed"] + (["hook_pos_embed"] if cfg.positional_embedding_type == "standard" else [])
    for layer in range(cfg.n_layers):
        block = f"blocks.{layer}"
        names += [f"{block}.hook_resid_pre", f"{block}.hook_resid_post", f"{block}.hook_attn_out"]
        names += [f"{block}.hook_mlp_out", f"{block}.ln1.hook_normalized", f"{block}.ln2.hook_normalized"]
        names += [f"{block}.attn.hook_z", f"{block}.attn.hook_pattern", f"{block}.mlp.hook_post"]
        if not cfg.parallel_attn_mlp:  # attention and MLP read the same residual: there is no mid point
            names.append(f"{block}.hook_resid_mid")
    return names


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from saelab.models import load_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    load_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory, tokenizer_dir):
    """(name, hf model, handle, folder): a tiny random model of one family, saved and loaded as a user's."""
    import transformers

    name = request.param
    root = tmp_path_factory.mktemp(name)
    folder = root / f"tiny-{name}"
    folder.mkdir()
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    n_tokens = len(transformers.AutoTokenizer.from_pretrained(str(folder)))
    cfg = transformers.AutoConfig.for_model(
        MODEL_TYPE.get(name, name), vocab_size=n_tokens + VOCAB_PAD, **FAMILIES[name]
    )
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(str(folder))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAELAB_CACHE", str(root / "cache"))
        handle = load_model(str(folder))
    return name, hf, handle, folder


def test_family__logits_match_transformers(family):
    from saelab.models import fastpath

    name, hf, handle, _ = family
    assert fastpath.is_installed()
    with torch.inference_mode():
        ref = hf(IDS).logits
        got = handle.model(IDS)
    diff = (ref - got).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max |logit diff| {diff:.2e}"


def test_family__every_app_hook_fires_with_its_width(family):
    from saelab.hooks import gate

    name, _, handle, _ = family
    names = app_hooks(handle.cfg)
    seen: dict[str, torch.Size] = {}

    def record(act, hook=None):
        seen.setdefault(hook.name, act.shape)

    with gate(handle, [(n, record) for n in names]) as model, torch.inference_mode():
        model(IDS)
    assert sorted(set(names) - set(seen)) == [], f"{name}: hooks that did not fire"
    for n in names:
        if n.endswith("hook_pattern"):
            assert seen[n] == (2, handle.cfg.n_heads, 16, 16), n
        else:
            assert seen[n][-1] == handle.hook_width(n), n
    if handle.cfg.parallel_attn_mlp:
        with pytest.raises(BadInputError, match="Unknown hook point"):
            handle.check_hook("blocks.0.hook_resid_mid")


def test_family__reload_from_cache_gives_the_same_model(family, monkeypatch):
    name, _, handle, folder = family
    monkeypatch.setenv("SAELAB_CACHE", handle.info["cache"].rsplit("/models/", 1)[0])
    again = load_model(str(folder))
    assert again.info["from_cache"] is True
    with torch.inference_mode():
        assert torch.equal(again.model(IDS), handle.model(IDS)), name


def test_family__greedy_generation_follows_transformers(family):
    """The app's decode engine (KV cache; fast step or TransformerLens's forward) picks, at every step, a
    token whose `transformers` logit is the maximum (to the tolerance: random models have near-ties)."""
    from saelab.decode import engine_for
    from saelab.steering import GenerationConfig, generate

    name, hf, handle, _ = family
    engine = engine_for(handle)
    fast_before = engine.fast_steps
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.0, stop_at_eos=False, chat_template=False)
    result = generate(handle, "The weather today is", [], cfg)
    prompt, new = result.prompt_token_ids[0], result.unsteered_token_ids[0]
    assert len(new) == 8 and len(prompt) > 4  # longer than the 4-token sliding windows
    with torch.inference_mode():
        logits = hf(torch.tensor([prompt + new])).logits[0]
    for i, token in enumerate(new):
        step = logits[len(prompt) + i - 1]
        assert step[token] >= step.max() - TOLERANCE, f"{name}: step {i} chose {token}, HF prefers {int(step.argmax())}"
    used_fast = engine.fast_steps > fast_before
    assert used_fast == (name in FAST_DECODE), f"{name}: fast decode step used={used_fast}"


# ---------------------------------------------------------------- refusals


def test_hf_folder__unsupported_model_type_is_refused_before_loading_weights(tmp_path):
    folder = tmp_path / "tiny-mamba"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(b"not read")
    t0 = time.perf_counter()
    with pytest.raises(BadInputError, match="'mamba' is not supported.*gemma2, gemma3_text, gpt2, gpt_neox, llama"):
        load_model(str(folder))
    assert time.perf_counter() - t0 < 2


def test_registry__gguf_architectures_are_loadable_by_transformers_and_by_us():
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from saelab.models.convert import ARCHITECTURES, GGUF_ARCHITECTURES

    assert set(GGUF_ARCHITECTURES) <= set(GGUF_SUPPORTED_ARCHITECTURES)
    assert set(GGUF_ARCHITECTURES.values()) <= set(ARCHITECTURES)
    for needed in ("gpt2", "gpt_neox", "gemma2", "gemma3_text", "llama", "mistral", "qwen2", "qwen3", "phi3"):
        assert needed in ARCHITECTURES


# ---------------------------------------------------------------- GGUF header


def _fake_gguf(path, arch: str) -> int:
    """A small, well-formed GGUF of `arch`: metadata (with a string array, as a tokenizer has) and two
    F32 tensors. Returns the file size."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_token_list(["<s>", "hello", "world", "é"])
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.stat().st_size


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("arch", ["bert", "mamba"])
def test_gguf__other_architecture_is_refused_fast_with_the_supported_list(tmp_path, arch):
    path = tmp_path / f"tiny-{arch}.gguf"
    _fake_gguf(path, arch)
    t0 = time.perf_counter()
    with pytest.raises(BadInputError) as err:
        load_model(str(path))
    assert time.perf_counter() - t0 < 2
    msg = _one_line(err)
    assert f"'{arch}' GGUF" in msg
    assert "gemma2, gemma3, gpt2, llama, mistral, phi3, qwen2, qwen3" in msg


def test_gguf__header_of_a_whole_file_reads(tmp_path):
    from saelab.models import gguf

    path = tmp_path / "tiny.gguf"
    size = _fake_gguf(path, "llama")
    header = gguf.check(path)
    assert header.architecture == "llama" and header.metadata["llama.block_count"] == 2
    assert [t[0] for t in header.tensors] == ["token_embd.weight", "output.weight"]
    assert header.file_size == size


def test_gguf__default_model_header_reads_in_well_under_a_second():
    from saelab.models import gguf
    from saelab.models.loading import smollm2_gguf_path

    t0 = time.perf_counter()
    header = gguf.check(smollm2_gguf_path())  # the header only: no tensor is read
    assert time.perf_counter() - t0 < 1
    assert header.architecture == "llama" and len(header.tensors) == 272


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (lambda size: size - 16, "truncated: tensor 'output.weight' needs bytes"),  # inside the tensor data
        (lambda size: 100, "truncated or garbled: its metadata runs past the end"),  # inside the metadata
        (lambda size: 10, "too short for a GGUF header"),
    ],
)
def test_gguf__truncated_file_is_one_clear_line(tmp_path, monkeypatch, keep, match):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cut.gguf"
    size = _fake_gguf(path, "llama")
    data = path.read_bytes()
    path.write_bytes(data[: keep(size)])
    with pytest.raises(CorruptFileError, match=match) as err:
        load_model(str(path))
    assert _one_line(err).startswith("cut.gguf ")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (bytes(range(256)) * 16, "not a GGUF file"),
        (b"GGUF" + (7).to_bytes(4, "little") + bytes(32), "GGUF version 7"),
        (
            b"GGUF"
            + (3).to_bytes(4, "little")
            + (0).to_bytes(8, "little")
            + (1).to_bytes(8, "little")
            + (3).to_bytes(8, "little")
            + b"\xff\xfe\xfd"
            + (8).to_bytes(4, "little"),
            "not valid UTF-8",
        ),
    ],
)
def test_gguf__garbage_is_one_clear_line(tmp_path, monkeypatch, content, match):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "junk.gguf"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=match) as err:
        load_model(str(path))
    _one_line(err)
