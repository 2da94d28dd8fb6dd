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


def list_saes(root: str | Path, *, max_depth: int | None = None, max_dirs: int | None = None) -> list[Path]:
    """Folders at or under `root` holding `cfg.json` + `sae_weights.safetensors`, sorted.

    Hidden folders (temporary saves) and training checkpoints are skipped. `max_depth` (levels below `root`)
    and `max_dirs` (folders visited) bound the walk, so a hint for a path like `/` never walks the whole disk.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found, visited = [], 0
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda err: None):
        visited += 1
        depth = len(Path(dirpath).parts) - base_depth
        keep = sorted(d for d in dirnames if not d.startswith(".") and d != TRAIN_STATE_DIR)
        dirnames[:] = [] if max_depth is not None and depth >= max_depth else keep
        if SAE_CFG_FILE in filenames and SAE_WEIGHTS_FILE in filenames:
            found.append(Path(dirpath))
        if max_dirs is not None and visited >= max_dirs:
            break
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
            data = read_json(path)
        except (SaelabError, OSError) as err:
            out["errors"].append(str(err))
            continue
        if isinstance(data, dict):
            out[key] = data
        else:
            out["errors"].append(f"{path} is not a JSON object ({type(data).__name__}); it was ignored.")
    return out
