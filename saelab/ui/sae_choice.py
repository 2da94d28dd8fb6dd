"""Which SAE a session looks at: the SAEs shipped in the features folder, and the one chosen in the sidebar.

The folder is read at call time (not import time), because one Python process may run several apps under test:
    SAELAB_FEATURES  folder holding the shipped SAEs (default: <repo>/cached_features)
A path typed in the sidebar goes through `saelab.trust.user_path` (`~` expanded, length checked, bounded by
`SAELAB_ALLOWED_ROOTS`, or by the features folder when the server listens beyond loopback).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from saelab import trust
from saelab.defaults import features_root
from saelab.sae.catalog import list_saes


def available_saes() -> list[Path]:
    """SAE folders shipped in cached_features/ (the embedded default first)."""
    root = features_root()
    if not root.exists():
        return []
    found = list_saes(root)
    return sorted(found, key=lambda p: (p.name != "default", p.name))


def sync_trust_mode() -> None:
    """Tell `saelab.trust` whether this server listens beyond loopback (then user paths are bounded)."""
    trust.set_network_mode(not trust.is_loopback_address(st.get_option("server.address")))


def user_sae_path(raw: str) -> str:
    """A typed SAE folder, checked by the trust model (`BadInputError` with what to change)."""
    from saelab.sae.releases import is_release_spec

    if is_release_spec(raw.strip()):  # sae-lens:<release>:<sae_id>: cached, or fetched when SAELAB_ONLINE=1
        return raw.strip()
    sync_trust_mode()
    return str(trust.user_path(raw, "SAE folder"))


def current_sae_path() -> str | None:
    """The SAE this session is looking at: chosen in the sidebar, else the embedded default."""
    chosen = st.session_state.get("sae_path")
    if chosen:
        return chosen
    found = available_saes()
    return str(found[0]) if found else None


__all__ = ["available_saes", "current_sae_path", "sync_trust_mode", "user_sae_path"]
