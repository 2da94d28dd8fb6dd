"""A user's text through the model and SAE: the token caps, the cached analysis, and a memoised token decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

from saelab.ui.loader import get_model, get_sae

if TYPE_CHECKING:
    from saelab.features.prompt import PromptAnalysis
    from saelab.models import ModelHandle

MAX_PROMPT_TOKENS = 512  # the prompt pages analyse at most this many tokens (and say so)
MAX_PROMPT_CHARS = 20_000  # text areas refuse more characters than this

_DECODE_MEMOS: dict[int, dict[int, str]] = {}


def token_decoder(handle: ModelHandle) -> Callable[[int], str]:
    """id → text of one token, as the tokenizer decodes it alone (memoised per tokenizer, for every
    session: stepping through latents decodes the same few thousand tokens again and again)."""
    tokenizer = handle.tokenizer
    memo = _DECODE_MEMOS.setdefault(id(tokenizer), {})

    def decode(token_id: int) -> str:
        if token_id not in memo:
            memo[token_id] = tokenizer.decode([int(token_id)])
        return memo[token_id]

    return decode


def prompt_token_cap(handle: ModelHandle) -> int:
    """Most text tokens a prompt page analyses: MAX_PROMPT_TOKENS, less for a model with a shorter
    context (the separator in front takes one position)."""
    return max(1, min(MAX_PROMPT_TOKENS, int(handle.cfg.n_ctx) - 1))


@st.cache_data(show_spinner="Running the model on your text…", max_entries=32)
def analyse(sae_path: str, text: str, spec: str, top_n: int = 5) -> PromptAnalysis:
    """`saelab.features.prompt.analyse_text` on the app's model and SAE (capped at
    `prompt_token_cap`), cached per text."""
    from saelab.features.prompt import analyse_text

    handle = get_model(spec)
    return analyse_text(handle, get_sae(sae_path, spec), text, max_tokens=prompt_token_cap(handle), top_n=top_n)


__all__ = ["MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS", "analyse", "prompt_token_cap", "token_decoder"]
