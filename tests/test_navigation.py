"""The one workaround for Streamlit's legacy `pages/` mode (`saelab.ui.navigation`), and the Streamlit
internals it relies on: these fail when a Streamlit upgrade moves or drops them, so the workaround is
revisited then. tests/test_browser.py is the end-to-end check (a deep link as a server's first request)."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

import saelab
from saelab.ui import navigation

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the Streamlit internals relied on


def test_streamlit_still_has_the_process_wide_legacy_pages_flag():
    assert "uses_pages_directory" in vars(PagesManager), (
        "PagesManager.uses_pages_directory is gone: revisit navigation.py"
    )


def test_streamlit_script_runner_still_runs_pages_directly_while_the_flag_is_set():
    from streamlit.runtime.scriptrunner import script_runner

    source = inspect.getsource(script_runner.ScriptRunner)
    assert "PagesManager.uses_pages_directory" in source and "_mpa_v1(" in source


def test_st_navigation_still_clears_the_flag():
    from streamlit.commands import navigation as st_navigation

    assert "PagesManager.uses_pages_directory = False" in inspect.getsource(st_navigation.navigation)
    assert st.navigation is st_navigation.navigation


# ---------------------------------------------------------------- ensure_app_navigation


@pytest.fixture
def flag(monkeypatch):
    """Restore Streamlit's flag after the test (monkeypatch puts the class attribute back)."""
    monkeypatch.setattr(PagesManager, "uses_pages_directory", PagesManager.uses_pages_directory)
    return PagesManager


@pytest.fixture
def reruns(monkeypatch):
    """Calls of `st.rerun`, each raising RerunException as Streamlit does inside a script run."""
    calls = []

    def rerun(*args, **kwargs):
        calls.append((args, kwargs))
        raise RerunException(RerunData())

    monkeypatch.setattr(st, "rerun", rerun)
    return calls


def _in_script_run(monkeypatch, inside: bool) -> None:
    monkeypatch.setattr(navigation, "get_script_run_ctx", lambda suppress_warning=False: object() if inside else None)


def test_a_set_flag_in_a_script_run_is_cleared_and_the_script_reruns(monkeypatch, flag, reruns):
    _in_script_run(monkeypatch, True)
    flag.uses_pages_directory = True
    with pytest.raises(RerunException):
        navigation.ensure_app_navigation()
    assert flag.uses_pages_directory is False
    assert len(reruns) == 1


@pytest.mark.parametrize("value", [False, None])
def test_a_clear_flag_is_left_alone(monkeypatch, flag, reruns, value):
    _in_script_run(monkeypatch, True)
    flag.uses_pages_directory = value
    navigation.ensure_app_navigation()
    assert flag.uses_pages_directory is value and not reruns


def test_outside_a_script_run_nothing_happens(monkeypatch, flag, reruns):
    _in_script_run(monkeypatch, False)
    flag.uses_pages_directory = True
    navigation.ensure_app_navigation()
    assert flag.uses_pages_directory is True and not reruns


def test_importing_the_ui_package_reruns_once_then_imports(monkeypatch, flag, reruns):
    """The package's import raises the rerun, Python forgets the half-imported package, and the rerun's
    import (flag now clear) succeeds: what a page's first import does on a deep link to a fresh server."""
    monkeypatch.setattr(saelab, "ui", sys.modules["saelab.ui"])  # put back after the test
    monkeypatch.delitem(sys.modules, "saelab.ui")
    _in_script_run(monkeypatch, True)
    flag.uses_pages_directory = True
    with pytest.raises(RerunException):
        importlib.import_module("saelab.ui")
    assert "saelab.ui" not in sys.modules and flag.uses_pages_directory is False
    fresh = importlib.import_module("saelab.ui")
    assert fresh.navigation is navigation and len(reruns) == 1


# ---------------------------------------------------------------- every page goes through the package


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


@pytest.mark.parametrize("path", [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))], ids=lambda p: p.name)
def test_every_page_imports_the_ui_package_and_none_calls_the_workaround(path):
    names = _imports(path)
    assert any(n == "saelab.ui" or n.startswith("saelab.ui.") for n in names), (
        f"{path.name} imports no saelab.ui module"
    )
    assert "ensure_app_navigation" not in path.read_text(encoding="utf-8"), (
        "saelab/ui/__init__.py runs it for every page"
    )
