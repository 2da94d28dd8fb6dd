"""The one Streamlit progress adapter: a bar driven by the backend's progress callbacks.

Backend functions report progress as `progress(done, total)` or `progress(phase, done, total)`; the CLI draws
them with `saelab.progress.terminal_bar`, the app with `streamlit_bar`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import streamlit as st


def _callback(bar, label: str, stages: Sequence[tuple[int, str]] | None) -> Callable[..., None]:
    def progress(*args) -> None:
        phase, done, total = args if len(args) == 3 else (None, *args)
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        if stages:  # named stages by percentage reached, for backends that only count steps
            name = next((n for limit, n in stages if 100 * frac < limit), "Done")
            bar.progress(frac, text=f"{name}… {int(100 * frac)}%")
        else:
            bar.progress(frac, text=f"{phase or label}: {done:,} / {total:,}")

    return progress


@contextmanager
def streamlit_bar(
    label: str, *, stages: Sequence[tuple[int, str]] | None = None, keep: bool = False
) -> Iterator[Callable[..., None]]:
    """Yield a progress callback drawing an `st.progress` bar; the bar is removed on exit unless `keep`.

    stages: optional (percent limit, name) pairs naming what runs below each limit.
    """
    bar = st.progress(0.0, text=label)
    try:
        yield _callback(bar, label, stages)
    finally:
        if not keep:
            bar.empty()


__all__ = ["streamlit_bar"]
