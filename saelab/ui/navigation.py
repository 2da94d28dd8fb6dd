"""The one workaround for Streamlit's legacy `pages/` mode: every page runs under app.py's `st.navigation`.

Trap: a fresh server whose first request is a deep link (`/explorer?latent=3`) sees the `pages/` folder
and runs pages/explorer.py on its own, skipping app.py (no page config, file-name titles, no
`st.navigation`). Streamlit keeps that choice in a process-wide private flag,
`PagesManager.uses_pages_directory`, which only a call of `st.navigation` clears, and it has no public
option to turn the legacy mode off. So `saelab/ui/__init__.py` calls `ensure_app_navigation` when a page
first imports the `saelab.ui` package: if the flag is still set, it clears it and reruns. The rerun raises
out of the package's import (Python then forgets the half-imported package) and executes app.py, which
imports `saelab.ui` afresh, finds the flag clear and routes to the same URL with the same query parameters.

No page calls anything for this. `tests/test_navigation.py` fails when a Streamlit upgrade moves the flag
or stops consulting it; `tests/test_browser.py` opens `/prompt_view` as a server's first request.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx


def ensure_app_navigation() -> None:
    """Clear Streamlit's legacy `pages/` flag and rerun (through app.py) when it is set in a script run.

    A no-op outside a Streamlit script run (imports in tests, the CLI, worker threads), when the flag is
    already clear, and on a Streamlit without the flag.
    """
    if get_script_run_ctx(suppress_warning=True) is None:
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


__all__ = ["ensure_app_navigation"]
