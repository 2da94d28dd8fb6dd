"""Sparse autoencoders: training with SAE-Lens (`train`), the architectures (`registry`), and SAE
folders on disk in SAE-Lens's format (`files`).
"""

from saelab.sae.files import LoadedSAE, SaeMeta, list_saes, load_sae, save_sae
from saelab.sae.registry import ARCHITECTURES, Architecture, SaeKnobs, architecture_names, get_architecture
from saelab.sae.train import TqdmProgress, TrainConfig, TrainResult, train_sae

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
