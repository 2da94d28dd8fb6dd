"""Probing: can a model's SAE latents, hidden states, neurons or heads tell labelled texts apart, and which ones?

Data flow: `sources` (feature extraction registry: `extract_features` → `FeatureSet`) → `classify` / `metrics` →
`run` (`ProbeConfig` → `ProbeReport`) → `saelab.reports.probing` (self-contained HTML + JSON + safetensors
export, figures in `saelab.reports.probing_figures`) → CLI and page.
Heavy imports stay inside the modules; importing this package is cheap.
"""
