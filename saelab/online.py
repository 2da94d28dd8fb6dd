"""Offline by default; online only when the user says so.

SAE Lab never reaches a model hub unless `SAELAB_ONLINE=1` is set before it starts (Hugging Face's libraries read
their offline switches once, at import). Offline, a request that needs the network — a TransformerLens model name
or an SAE-Lens release not in the local cache — fails at once with a message naming the setting; online, it is
fetched through TransformerLens / SAE-Lens (their progress bars on the terminal) and cached by them.
"""

from __future__ import annotations

import os

from saelab.errors import MissingDependencyError

ONLINE_ENV = "SAELAB_ONLINE"
_HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def online_allowed() -> bool:
    """True when the user opted in with `SAELAB_ONLINE=1` (or true/yes/on)."""
    return os.environ.get(ONLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def configure_hub() -> None:
    """Offline unless opted in: set the hubs' offline switches (without overriding what the user set)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not online_allowed():
        for var in _HUB_OFFLINE_VARS:
            os.environ.setdefault(var, "1")


def offline_error(what: str, local_hint: str) -> MissingDependencyError:
    """The one message for a request that needs the network while SAE Lab is offline."""
    return MissingDependencyError(
        f"{what} is not in the local cache and SAE Lab is offline. Set {ONLINE_ENV}=1 before starting SAE Lab to "
        f"fetch it (it is then cached), or {local_hint}."
    )


__all__ = ["ONLINE_ENV", "configure_hub", "offline_error", "online_allowed"]
