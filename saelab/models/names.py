"""Model spec names, importable without torch (the app's first page needs them before the model loads)."""

from saelab.defaults import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL"]
