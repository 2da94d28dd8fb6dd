"""How a page shows an error: one red line that says what to change; the app keeps running.

User errors (`SaelabError`) show their message. Anything else shows its type and first line, and the full
traceback goes to the server log (never to the browser).
"""

from __future__ import annotations

import logging

import streamlit as st

from saelab.errors import SaelabError

log = logging.getLogger("saelab.ui")
MAX_MESSAGE_CHARS = 500


def error_line(err: BaseException) -> str:
    """The one line a user sees for `err`."""
    text = str(err).strip() or type(err).__name__
    if not isinstance(err, SaelabError):
        text = f"Unexpected {type(err).__name__}: {text.splitlines()[0]}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def show_error(err: Exception) -> None:
    """User errors as a red box with their message; anything else with its type, logged with its traceback."""
    if not isinstance(err, SaelabError):
        log.error("unexpected error in a page", exc_info=err)
    st.error(error_line(err))


__all__ = ["error_line", "show_error"]
