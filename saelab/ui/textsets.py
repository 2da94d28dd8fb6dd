"""Cached loading of labelled text sets for the pages (built-in `sae-probes` sets and uploaded CSVs).

One copy for every page that takes a labelled set (Probing, Hypotheses); `saelab.textsets` does the work
and the checks, this only keeps results across reruns.
"""

from __future__ import annotations

import streamlit as st

from saelab.corpus import list_datasets
from saelab.textsets import MAX_ROWS, TextSet, csv_columns, from_builtin, from_csv


@st.cache_data(show_spinner=False)
def dataset_names() -> list[str]:
    return list_datasets()


@st.cache_data(show_spinner="Reading the set…", max_entries=8)
def builtin_set(name: str, seed: int, max_rows: int | None = None, kind: str = "auto") -> TextSet:
    return from_builtin(name, max_rows=max_rows, seed=seed, kind=kind)


@st.cache_data(show_spinner=False, max_entries=8)
def upload_columns(data: bytes) -> list[str]:
    return csv_columns(data)


@st.cache_data(show_spinner="Reading the CSV…", max_entries=8)
def upload_set(
    data: bytes, text_col: str, target_col: str, kind: str, seed: int, max_rows: int | None = MAX_ROWS
) -> TextSet:
    return from_csv(data, text_col=text_col, target_col=target_col, kind=kind, seed=seed, max_rows=max_rows)
