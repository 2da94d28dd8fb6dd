"""Streamlit helpers for the Circuits page: cached task building and checks, and the run with a progress bar."""

from __future__ import annotations

import json

import streamlit as st

from saelab.circuits.tasks import CircuitTask, builtin_task, pairs_from_csv
from saelab.ui.progress import streamlit_bar


@st.cache_data(show_spinner=False, max_entries=16)
def builtin(name: str, n: int, seed: int) -> CircuitTask:
    return builtin_task(name, n=n, seed=seed)


@st.cache_data(show_spinner="Reading the CSV…", max_entries=8)
def uploaded(data: bytes, name: str, metric: str) -> CircuitTask:
    return pairs_from_csv(data, name=name, metric=metric)


def _task_key(task: CircuitTask) -> str:
    return json.dumps([task.name, task.metric, [p.__dict__ for p in task.pairs]], sort_keys=True)


@st.cache_data(show_spinner="Checking the model on the prompts…", max_entries=16, hash_funcs={CircuitTask: _task_key})
def check(_handle, model_name: str, task: CircuitTask):
    """The model's metrics on every pair (cached per model and task)."""
    from saelab.circuits.run import check_task

    return check_task(_handle, task)


def run_with_bar(handle, cfg, task: CircuitTask):
    """`run_circuits` with a Streamlit progress bar."""
    from saelab.circuits.run import run_circuits

    with streamlit_bar("Activation patching every head (the reference), then the other methods") as progress:
        return run_circuits(handle, cfg, task=task, progress=progress)
