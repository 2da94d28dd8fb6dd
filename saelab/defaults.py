"""The defaults every part of SAE Lab shares, in one place and importable without torch.

    DEFAULT_MODEL       the model spec used when none is given (SmolLM2-135M-Instruct, shipped in a wheel)
    DEFAULT_HOOK        the hook point of the shipped SAE and of commands that need one
    features_root()     where shipped SAEs live: `$SAELAB_FEATURES`, else `cached_features/` in the repository
    default_sae_dir()   the embedded default SAE: `<features_root()>/default`
    model_spec()        the model the app runs: `$SAELAB_MODEL`, else DEFAULT_MODEL

The CLI, the app and the library all read these, so `SAELAB_FEATURES` moves the default SAE everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_HOOK = "blocks.12.hook_resid_post"
REPO_ROOT = Path(__file__).resolve().parents[1]


def features_root() -> Path:
    """Where shipped SAEs live: `$SAELAB_FEATURES`, else `cached_features/` in the repository."""
    return Path(os.environ.get("SAELAB_FEATURES") or REPO_ROOT / "cached_features")


def default_sae_dir() -> Path:
    """The embedded default SAE folder (`default/` under `features_root()`)."""
    return features_root() / "default"


def model_spec() -> str:
    """The model the app runs: `$SAELAB_MODEL`, else the default model."""
    return os.environ.get("SAELAB_MODEL") or DEFAULT_MODEL


__all__ = ["DEFAULT_HOOK", "DEFAULT_MODEL", "REPO_ROOT", "default_sae_dir", "features_root", "model_spec"]
