"""Config builders and weight converters per model family; `saelab.models.convert` holds the registry.

One module per family (`llama`, `gemma`, `gpt`), each exporting `ARCHITECTURES` (HF `model_type` →
`Architecture`); `common` holds what they share (RoPE, sliding windows, refusals).
"""
