"""Model spec names, importable without torch (the app's first page needs them before the model loads)."""

DEFAULT_MODEL = "smollm2-135m-instruct"
