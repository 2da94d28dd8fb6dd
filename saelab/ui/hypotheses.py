"""Streamlit helpers for the Hypotheses page: cached data loading and the run with a progress bar."""

from __future__ import annotations

import streamlit as st

from saelab.corpus import list_datasets
from saelab.textsets import TextSet, csv_columns, from_builtin, from_csv


@st.cache_data(show_spinner=False)
def builtin_names() -> list[str]:
    return list_datasets()


@st.cache_data(show_spinner="Reading the set…", max_entries=8)
def builtin_set(name: str, seed: int) -> TextSet:
    return from_builtin(name, seed=seed)


@st.cache_data(show_spinner=False, max_entries=8)
def upload_columns(data: bytes) -> list[str]:
    return csv_columns(data)


@st.cache_data(show_spinner="Reading the CSV…", max_entries=8)
def upload_set(data: bytes, text_col: str, target_col: str, kind: str, seed: int) -> TextSet:
    return from_csv(data, text_col=text_col, target_col=target_col, kind=kind, seed=seed)


def run_with_bar(cfg, textset: TextSet, endpoint=None, handle=None):
    """`run_hypotheses` with a Streamlit progress bar (embeddings and SAE are cached on disk by the backend)."""
    from saelab.hypotheses import run_hypotheses

    bar = st.progress(0, text="Embedding texts, training the SAE, interpreting latents…")
    stages = [(40, "Embedding texts"), (70, "Training the SAE"), (85, "Interpreting latents"), (90, "Validating"),
              (100, "Bag-of-words baseline")]  # fmt: skip

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        label = next((name for limit, name in stages if pct < limit), "Done")
        bar.progress(min(pct, 100), text=f"{label}… {pct}%")

    try:
        return run_hypotheses(cfg, textset, progress=progress, endpoint=endpoint, handle=handle)
    finally:
        bar.empty()
