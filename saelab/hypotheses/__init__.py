"""Hypothesis generation from labelled text (HypotheSAEs, offline): what in a text predicts its target?

Modules follow the data flow: `target` (clean texts, code y) → `embed` (cached embeddings) → `sae`
(Top-K SAE via SAE-Lens) → `select` (LASSO to n latents) → `interpret` (keyword PROXY rules) / `llm`
(an OpenAI-compatible endpoint) → `validate` (OLS/Logit, Bonferroni) → `results`; `baseline` is the
bag-of-words LASSO; `run` ties them together; `saelab.reports.hypotheses_figures` and
`saelab.reports.hypotheses` present a `HypothesisResult`.
"""

from saelab.hypotheses.run import HypothesisConfig, HypothesisResult, run_hypotheses

__all__ = ["HypothesisConfig", "HypothesisResult", "run_hypotheses"]
