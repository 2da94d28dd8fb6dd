"""A terminal progress bar for the command line, driven by the `progress(done, total)` callbacks the backend takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _show(bar, done: float, total: float) -> None:
    bar.total = total
    bar.n = done
    bar.refresh()


@contextmanager
def terminal_bar(desc: str, unit: str = "step") -> Iterator[Callable[[int, int], None]]:
    """Yield a `progress(done, total)` callback that draws a tqdm bar on stderr; the bar closes on exit."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit)

    def progress(done: int, total: int) -> None:
        _show(bar, done, total)

    try:
        yield progress
    finally:
        bar.close()


@contextmanager
def phase_bars() -> Iterator[Callable[[str, float, float], None]]:
    """Yield a `progress(phase, done, total)` callback: one tqdm bar per phase on stderr, closed when it changes."""
    from tqdm.auto import tqdm

    state: dict = {"phase": None, "bar": None}

    def progress(phase: str, done: float, total: float) -> None:
        if phase != state["phase"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["phase"], state["bar"] = phase, tqdm(desc=phase, total=total)
        _show(state["bar"], done, total)

    try:
        yield progress
    finally:
        if state["bar"] is not None:
            state["bar"].close()
