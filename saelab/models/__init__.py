"""Language models as TransformerLens `HookedTransformer`s, wrapped in a `ModelHandle` with a lock.

`load_model(spec)` accepts the default name, a local GGUF file, a local Hugging Face folder, a
TransformerLens model name already on disk, or `"tiny"` (a random model for tests).

The names below are imported on first use (PEP 562), so `saelab.models.names` and code that only
needs a spec string do not pay for importing torch and TransformerLens (seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from saelab.models.names import DEFAULT_MODEL

if TYPE_CHECKING:
    from saelab.models.handle import ModelHandle
    from saelab.models.loading import load_model, load_tokenizer

_LAZY = {
    "ModelHandle": "saelab.models.handle",
    "load_model": "saelab.models.loading",
    "load_tokenizer": "saelab.models.loading",
}

__all__ = ["DEFAULT_MODEL", "ModelHandle", "load_model", "load_tokenizer"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
