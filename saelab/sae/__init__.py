"""Sparse autoencoders: training with SAE-Lens (`train`), the architectures (`registry`), and SAE
folders on disk in SAE-Lens's format (`files`; `catalog` finds and reads them without importing torch), and
what differs between the kinds of SAE-Lens SAE that load (`kinds`: normalisation, `hook_z` heads, transcoders).

The names below are imported on first use (PEP 562): SAE-Lens takes seconds to import, and the app's
first page only reads JSON.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saelab.sae.files import LoadedSAE, SaeMeta, load_sae, save_sae
    from saelab.sae.registry import ARCHITECTURES, Architecture, SaeKnobs, architecture_names, get_architecture
    from saelab.sae.train import TqdmProgress, TrainConfig, TrainResult, train_sae

from saelab.sae.catalog import list_saes

_LAZY = {
    **dict.fromkeys(["LoadedSAE", "SaeMeta", "load_sae", "save_sae"], "saelab.sae.files"),
    **dict.fromkeys(
        ["ARCHITECTURES", "Architecture", "SaeKnobs", "architecture_names", "get_architecture"], "saelab.sae.registry"
    ),
    **dict.fromkeys(["TqdmProgress", "TrainConfig", "TrainResult", "train_sae"], "saelab.sae.train"),
}

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "LoadedSAE",
    "SaeKnobs",
    "SaeMeta",
    "TqdmProgress",
    "TrainConfig",
    "TrainResult",
    "architecture_names",
    "get_architecture",
    "list_saes",
    "load_sae",
    "save_sae",
    "train_sae",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
