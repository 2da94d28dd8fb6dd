"""A terminal progress bar for the command line, driven by the `progress(done, total)` callbacks the backend takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def terminal_bar(desc: str, unit: str = "step") -> Iterator[Callable[[int, int], None]]:
    """Yield a `progress(done, total)` callback that draws a tqdm bar on stderr; the bar closes on exit."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()
