"""Language models as TransformerLens `HookedTransformer`s, wrapped in a `ModelHandle` with a lock.

`load_model(spec)` accepts the default name, a local GGUF file, a local Hugging Face folder, a
TransformerLens model name already on disk, or `"tiny"` (a random model for tests).
"""

from saelab.models.handle import ModelHandle
from saelab.models.loading import DEFAULT_MODEL, load_model, load_tokenizer

__all__ = ["DEFAULT_MODEL", "ModelHandle", "load_model", "load_tokenizer"]
