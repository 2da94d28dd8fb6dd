"""Activations of the model: harvested to disk for training, or read on the fly for user texts.

* `harvesting` — `harvest` the packed corpus at hook points to sharded safetensors (resumable).
* `store` — `ActivationStore` reads a harvest back as the seeded, resumable batch stream a trainer wants.
* `text_batches` — user texts into the model: tokenise, batch, forward, and mark the non-sink positions.
"""

from saelab.activations.harvesting import HarvestConfig, HarvestResult, compute_handle, harvest
from saelab.activations.store import ActivationStore
from saelab.activations.text_batches import Batch, Encoded, encode_texts, iter_batches, run_batches, text_hook_acts

__all__ = [
    "ActivationStore",
    "Batch",
    "Encoded",
    "HarvestConfig",
    "HarvestResult",
    "compute_handle",
    "encode_texts",
    "harvest",
    "iter_batches",
    "run_batches",
    "text_hook_acts",
]
