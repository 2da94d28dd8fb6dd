"""Find SAE folders and read their JSON (config, provenance, evaluation) without importing torch.

The app's Overview page shows every SAE's size, hook and metrics from these files alone, while the
model and SAE-Lens import in the background.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from saelab.errors import SaelabError
from saelab.storage import EVAL_FILE, SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAELAB_META_FILE, TRAIN_STATE_DIR, read_json


def list_saes(root: str | Path) -> list[Path]:
    """Folders at or under `root` holding `cfg.json` + `sae_weights.safetensors`, sorted.

    Hidden folders (temporary saves) and training checkpoints are skipped.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != TRAIN_STATE_DIR)
        if SAE_CFG_FILE in filenames and SAE_WEIGHTS_FILE in filenames:
            found.append(Path(dirpath))
    return sorted(found)


def read_folder_json(folder: str | Path) -> dict[str, Any]:
    """{"cfg": SAE-Lens config, "meta": SAE Lab provenance or None, "eval": evaluation or None,
    "errors": [messages]} for an SAE folder; unreadable files become messages, not exceptions."""
    folder = Path(folder)
    out: dict[str, Any] = {"cfg": None, "meta": None, "eval": None, "errors": []}
    for key, name in (("cfg", SAE_CFG_FILE), ("meta", SAELAB_META_FILE), ("eval", EVAL_FILE)):
        path = folder / name
        if not path.exists():
            continue
        try:
            out[key] = read_json(path)
        except SaelabError as err:
            out["errors"].append(str(err))
    return out
