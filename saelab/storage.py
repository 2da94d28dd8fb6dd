"""Files on disk: the cache folder, atomic writes, and checked safetensors/JSON reads.

Every write goes to a temporary file in the destination folder and is renamed into place, so a
crash or a kill never leaves a half-written file where a good one was expected.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saelab.errors import CorruptFileError

if TYPE_CHECKING:  # torch is imported where tensors are read or written, so JSON-only callers start fast
    import torch

# File names shared across the package (one place, so readers and writers agree).
SAE_WEIGHTS_FILE = "sae_weights.safetensors"  # SAE-Lens's own name
SAE_CFG_FILE = "cfg.json"  # SAE-Lens's own name
SAELAB_META_FILE = "saelab.json"  # SAE Lab's provenance beside an SAE-Lens folder
EVAL_FILE = "eval.json"
DASHBOARD_DIR = "dashboards"  # precomputed feature dashboards beside an SAE (saelab.features)
HARVEST_MANIFEST = "manifest.json"
TRAIN_STATE_DIR = "checkpoint"


def cache_dir() -> Path:
    """The folder for converted weights and tokenizers: `$SAELAB_CACHE`, else the user's cache dir."""
    env = os.environ.get("SAELAB_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        path = Path(base) / "saelab"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest`, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be shared like any file
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; on success it replaces `dest` whole."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(dest: str | Path) -> list[Path]:
    """Delete the temporaries `atomic_path`/`atomic_dir` left beside `dest` when a process was killed mid-write
    (`.<name>.*.tmp`, `.<name>.old`). Call only where no other writer of `dest` can be running."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    old = dest.with_name(f".{dest.name}.old")
    gone = [*dest.parent.glob(f".{dest.name}.*.tmp"), *([old] if old.exists() else [])]
    for p in gone:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


def jsonable(obj: Any, *, max_array: int = 10_000) -> Any:
    """`obj` as strict-JSON data, recursively: numpy scalars become Python numbers, NaN/inf become None,
    arrays become lists (larger than `max_array` elements: "array[shape]"), tuples lists, other objects
    their repr."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, max_array=max_array) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, max_array=max_array) for v in obj]
    import numpy as np

    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), max_array=max_array) if obj.size <= max_array else f"array{list(obj.shape)}"
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a parse error into a `CorruptFileError` that names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is not valid JSON ({err}); it was left untouched.") from err


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors, atomically. Tensors are made contiguous (safetensors needs it)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=dict(metadata) if metadata else None)


def load_tensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a truncated or garbled file raises `CorruptFileError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({err}). It was left untouched; "
            "delete it or point to a good copy."
        ) from err
