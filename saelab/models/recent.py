"""Models used before, remembered in the cache so the app's model picker can offer them again.

`<cache>/models/recent.json` holds the specs (model names, GGUF files, Hugging Face folders) most recently
loaded, newest first. A missing or unreadable file is an empty list, never an error: it is a convenience.
"""

from __future__ import annotations

import logging

from saelab.errors import SaelabError
from saelab.storage import cache_dir, read_json, write_json

log = logging.getLogger(__name__)

RECENT_FILE = "recent.json"
MAX_RECENT = 8


def _path():
    return cache_dir() / "models" / RECENT_FILE


def recent_models(n: int = MAX_RECENT) -> list[str]:
    """The specs loaded most recently, newest first (at most `n`)."""
    try:
        data = read_json(_path())
    except (FileNotFoundError, SaelabError, OSError):
        return []
    specs = data.get("models") if isinstance(data, dict) else None
    return [s for s in specs if isinstance(s, str) and s.strip()][:n] if isinstance(specs, list) else []


def remember_model(spec: str) -> None:
    """Put `spec` first in the recent list (written atomically; a write failure is only logged)."""
    specs = [spec, *[s for s in recent_models() if s != spec]][:MAX_RECENT]
    try:
        write_json(_path(), {"models": specs})
    except OSError as err:
        log.warning("could not remember model %s: %s", spec, err)


__all__ = ["recent_models", "remember_model"]
