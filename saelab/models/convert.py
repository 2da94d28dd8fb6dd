"""Hugging Face causal-LM configs and weights → TransformerLens, for the architectures we support.

A registry maps the HF `model_type` to (config builder, weight converter). The weight converters are
TransformerLens's own; the config builders are ours (`saelab/models/architectures/<family>.py`) because
TransformerLens picks a config by official model name (anything named "llama"/"gemma" never reads its
config.json), and a user's local folder or GGUF is not one of those names.

GGUF files name their architecture in the `general.architecture` key; `GGUF_ARCHITECTURES` maps those
names to the HF `model_type` that `transformers` gives the model it builds from the file.
"""

from __future__ import annotations

from typing import Any

from saelab.errors import BadInputError
from saelab.models.architectures import gemma, gpt, llama
from saelab.models.architectures.common import Architecture

ARCHITECTURES: dict[str, Architecture] = {**llama.ARCHITECTURES, **gemma.ARCHITECTURES, **gpt.ARCHITECTURES}

# GGUF `general.architecture` → HF model_type, for the families above whose GGUF files `transformers` reads
# (it has no GGUF reader for gemma 1 or gpt-neox). A "llama" GGUF named like Mistral loads as "mistral".
GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}


def supported() -> str:
    return ", ".join(sorted(ARCHITECTURES))


def architecture_for(hf_config: Any) -> Architecture:
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise BadInputError(
            f"Model type {model_type!r} is not supported for local loading; supported: {supported()}. "
            "A TransformerLens model name whose weights are already in the Hugging Face cache also works."
        )
    return ARCHITECTURES[model_type]


__all__ = ["ARCHITECTURES", "GGUF_ARCHITECTURES", "Architecture", "architecture_for", "supported"]
