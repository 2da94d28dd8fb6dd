"""Streamlit helpers for the Hypotheses page: cached data loading and the run with a progress bar."""

from __future__ import annotations

from saelab.textsets import TextSet
from saelab.ui.progress import streamlit_bar
from saelab.ui.textsets import builtin_set, upload_columns, upload_set  # noqa: F401  (the page reads sets here)
from saelab.ui.textsets import dataset_names as builtin_names  # noqa: F401


def run_with_bar(cfg, textset: TextSet, endpoint=None, handle=None):
    """`run_hypotheses` with a Streamlit progress bar (embeddings and SAE are cached on disk by the backend)."""
    from saelab.hypotheses import run_hypotheses

    stages = [(40, "Embedding texts"), (70, "Training the SAE"), (85, "Interpreting latents"), (90, "Validating"),
              (100, "Bag-of-words baseline")]  # fmt: skip
    with streamlit_bar("Embedding texts, training the SAE, interpreting latents…", stages=stages) as progress:
        return run_hypotheses(cfg, textset, progress=progress, endpoint=endpoint, handle=handle)


def hypothesis_rows(method) -> list[dict[str, object]]:
    """One table row per hypothesis of a method's result: rank, text (PROXY marked), coefficient, p, CI…"""
    return [
        {
            "#": h.rank, "hypothesis": h.label + (" (PROXY)" if h.proxy else ""), "coef": h.coefficient,
            "p": h.p_value, "significant": h.significant, "prevalence": h.prevalence,
            "separation": h.separation, "CI low": h.ci_low, "CI high": h.ci_high,
        }
        for h in method.hypotheses
    ]  # fmt: skip
