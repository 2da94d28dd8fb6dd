"""A latent index from user input or from the URL (`?latent=N`), checked against the SAE's size."""

from __future__ import annotations

import streamlit as st

from saelab.errors import BadInputError


def parse_latent(raw: object, d_sae: int) -> int:
    """A latent index from user input or a URL, or BadInputError saying the valid range."""
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadInputError(f"Latent {str(raw)[:40]!r} is not a number; use an index from 0 to {d_sae - 1}.") from None
    if not 0 <= value < d_sae:
        raise BadInputError(f"There is no latent {value}: this SAE has latents 0 to {d_sae - 1}.")
    return value


def query_latent(d_sae: int) -> int | None:
    """The latent named by `?latent=N` in the URL, None when absent; BadInputError when invalid."""
    raw = st.query_params.get("latent")
    if raw is None or str(raw).strip() == "":
        return None
    return parse_latent(raw, d_sae)


__all__ = ["parse_latent", "query_latent"]
