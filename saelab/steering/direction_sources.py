"""Where steering directions come from: an SAE latent, texts (DiffMean/PCA/LAT/probe), or one MLP neuron.

A `Direction` is a unit-norm vector at one hook point plus its **scale** `max_act`, so an intervention
adds α·w with α = factor × max_act (AxBench). Conventions per source:

* SAE latent j (`sae_latent_direction`): w = W_dec[j] / ‖W_dec[j]‖ at the SAE's hook;
  max_act = (latent j's largest activation) × ‖W_dec[j]‖, so factor 1 adds exactly the latent's largest
  observed contribution to the reconstruction. The latent's activation comes from the dashboards
  (`max_act` over the dashboard corpus), from the caller, or is computed over reference texts.
* Texts (`text_direction`): w from `saelab.directions` on the activations of every token of the positive
  and negative texts except the attention sinks (position 0, the separator that starts every text, and any
  separator token), read by `saelab.activations.text_batches.text_hook_acts`;
  max_act = max over the positive texts' tokens of h·w (AxBench's "largest detection score").
* MLP neuron n of layer L (`neuron_direction`): the hook is `blocks.L.mlp.hook_post` (the neuron's
  activation after the gated SiLU), w is the one-hot vector e_n in that d_mlp-wide space; adding α·e_n
  there equals adding α·W_out[n] to the residual stream. max_act = the neuron's largest activation over
  the given texts (default: `reference_texts()`, 48 texts of four sae-probes sets, ≤ 64 tokens each).

`DIRECTION_SOURCES` maps a source kind to its builder; `Direction.to_dict/from_dict` round-trip presets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from saelab.activations.text_batches import text_hook_acts
from saelab.directions import METHOD_FORMULAS, compute_direction
from saelab.errors import BadInputError
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE
from saelab.sae.text_latents import check_latent, ids_latents, latent_max

MAX_TEXT_TOKENS = 128  # each text contributes at most this many tokens to a direction
MAX_TEXTS = 512  # per side
REFERENCE_DOCS = 48


@dataclass
class Direction:
    """A steering direction.

    Attributes:
        name: display name ("SAE latent 42", "diffmean: sports").
        source: "sae", "text" or "neuron" (a key of `DIRECTION_SOURCES`).
        hook: TransformerLens hook point the vector lives at.
        vector: unit-norm float32 `[width]` (d_model for residual hooks, d_mlp for neurons).
        max_act: the scale: α = factor × max_act (see the module docstring for each source).
        meta: provenance (latent index, method, texts counts, formulas, seed, ...).
    """

    name: str
    source: str
    hook: str
    vector: torch.Tensor
    max_act: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vec = torch.as_tensor(self.vector, dtype=torch.float32).detach().cpu().flatten()
        if vec.numel() == 0 or not torch.isfinite(vec).all():
            raise BadInputError(f"Direction {self.name!r} is empty or holds NaN/inf values.")
        norm = float(vec.norm())
        if norm < 1e-12:
            raise BadInputError(f"Direction {self.name!r} is the zero vector; it cannot steer.")
        self.vector = vec / norm
        if not isinstance(self.max_act, int | float) or not math.isfinite(float(self.max_act)):
            raise BadInputError(f"Direction {self.name!r} has max_act {self.max_act!r}; it must be a finite number.")
        self.max_act = float(self.max_act)

    @property
    def width(self) -> int:
        return int(self.vector.numel())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "hook": self.hook,
            "vector": [float(x) for x in self.vector.tolist()],
            "max_act": self.max_act,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Direction:
        if not isinstance(data, dict):
            raise BadInputError(f"A direction must be a JSON object, got {type(data).__name__}.")
        missing = [k for k in ("name", "source", "hook", "vector", "max_act") if k not in data]
        if missing:
            raise BadInputError(f"The direction is missing {missing}.")
        vec = data["vector"]
        if not isinstance(vec, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vec):
            raise BadInputError("A direction's vector must be a list of numbers.")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise BadInputError("A direction's meta must be a JSON object.")
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            hook=str(data["hook"]),
            vector=torch.tensor(vec, dtype=torch.float32),
            max_act=data["max_act"],
            meta=meta,
        )


def _clean_texts(texts: object, what: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise BadInputError(f"{what} texts must be a list of strings.")
    out = [t for t in texts if isinstance(t, str) and t.strip()]
    if not out:
        raise BadInputError(f"Give at least one non-empty {what} text (one per line).")
    if len(out) > MAX_TEXTS:
        raise BadInputError(f"{len(out)} {what} texts is too many; use at most {MAX_TEXTS}.")
    return out


REFERENCE_SETS = ("88_glue_mnli", "99_sci_cat", "111_yelp_data", "159_code_Python")


@functools.lru_cache(maxsize=1)
def reference_texts(n: int = REFERENCE_DOCS, seed: int = 0) -> tuple[str, ...]:
    """`n` real texts for measuring a max activation: an equal, seeded sample of each of `REFERENCE_SETS`
    (sae-probes sets of general sentences, science forum posts, reviews and Python code; ~0.1 s to read)."""
    from saelab.corpus import load_dataset

    per = max(1, n // len(REFERENCE_SETS))
    texts: list[str] = []
    for name in REFERENCE_SETS:
        prompts = load_dataset(name)["prompt"].dropna().astype(str)
        prompts = prompts[prompts.str.strip().str.len() > 0]
        texts += prompts.sample(n=min(per, len(prompts)), random_state=seed).tolist()
    return tuple(texts)


# ---------------------------------------------------------------- the sources


def latent_max_activation(handle: ModelHandle, loaded: LoadedSAE, latent: int, texts: Sequence[str]) -> float:
    """Latent `latent`'s largest activation over the non-sink tokens of `texts`."""
    return latent_max(handle, loaded, latent, list(texts))


def _dashboard_max_act(loaded: LoadedSAE, latent: int) -> float | None:
    from saelab.features.store import DashboardStore

    try:
        if DashboardStore.exists(loaded.path):
            return float(DashboardStore(loaded.path).latent(latent).max_act)
    except Exception:  # unreadable dashboards: fall back to computing
        return None
    return None


def sae_latent_direction(
    loaded: LoadedSAE,
    latent: int,
    *,
    max_act: float | None = None,
    handle: ModelHandle | None = None,
    texts: Sequence[str] | None = None,
) -> Direction:
    """Latent `latent`'s decoder row as a unit direction at the SAE's hook.

    `max_act` is the LATENT's activation scale (before the decoder-norm factor): given, else the
    dashboards' `max_act`, else computed with `handle` over `texts` (default: `reference_texts()`).
    """
    latent = check_latent(loaded, latent)
    w_dec = loaded.sae.W_dec.detach()[latent].float().cpu()
    dec_norm = float(w_dec.norm())
    origin = "given"
    if max_act is None:
        max_act, origin = _dashboard_max_act(loaded, latent), "dashboards"
    if max_act is None:
        if handle is None:
            raise BadInputError(
                f"Latent {latent} has no dashboard max activation; pass max_act or a model to compute it."
            )
        max_act = latent_max_activation(handle, loaded, latent, texts or reference_texts())
        origin = "computed over given texts" if texts else f"computed over {REFERENCE_DOCS} reference texts"
    if not math.isfinite(float(max_act)):
        raise BadInputError(f"max_act {max_act!r} is not a finite number.")
    return Direction(
        name=f"SAE latent {latent}",
        source="sae",
        hook=loaded.decoder_hook,  # where the decoder row is written (a transcoder's output hook)
        vector=w_dec,
        max_act=float(max_act) * dec_norm,
        meta={
            "latent": latent,
            "latent_max_act": float(max_act),
            "max_act_origin": origin,
            "decoder_norm": dec_norm,
            "sae_path": str(loaded.path),
            "formula": "w = W_dec[j]/‖W_dec[j]‖; max_act = latent max activation × ‖W_dec[j]‖",
        },
    )


def text_direction(
    handle: ModelHandle,
    method: str,
    positives: list[str],
    negatives: list[str],
    *,
    hook: str,
    seed: int = 0,
    name: str | None = None,
) -> Direction:
    """A DiffMean/PCA/LAT/probe direction at `hook` from positive and negative example texts."""
    positives = _clean_texts(positives, "positive")
    negatives = _clean_texts(negatives, "negative")
    handle.check_hook(hook)
    pos = torch.cat(text_hook_acts(handle, positives, hook, max_tokens=MAX_TEXT_TOKENS))
    neg = torch.cat(text_hook_acts(handle, negatives, hook, max_tokens=MAX_TEXT_TOKENS))
    vec = compute_direction(method, pos, neg, seed)
    score = pos @ vec
    return Direction(
        name=name or f"{method} ({len(positives)}+/{len(negatives)}−)",
        source="text",
        hook=hook,
        vector=vec,
        max_act=float(score.max()),
        meta={
            "method": method,
            "formula": METHOD_FORMULAS[method],
            "max_act_formula": "max over positive texts' tokens of h·w",
            "n_pos_texts": len(positives),
            "n_neg_texts": len(negatives),
            "n_pos_tokens": int(len(pos)),
            "n_neg_tokens": int(len(neg)),
            "seed": int(seed),
        },
    )


def neuron_direction(
    handle: ModelHandle,
    layer: int,
    neuron: int,
    *,
    max_act: float | None = None,
    texts: Sequence[str] | None = None,
) -> Direction:
    """MLP neuron `neuron` of block `layer`: one-hot at `blocks.{layer}.mlp.hook_post` (see module docstring)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < handle.n_layers:
        raise BadInputError(f"Layer {layer!r} does not exist; this model has layers 0 to {handle.n_layers - 1}.")
    hook = f"blocks.{layer}.mlp.hook_post"
    d_mlp = handle.hook_width(hook)
    if isinstance(neuron, bool) or not isinstance(neuron, int) or not 0 <= neuron < d_mlp:
        raise BadInputError(f"There is no neuron {neuron!r} in layer {layer}: neurons are 0 to {d_mlp - 1}.")
    origin = "given"
    if max_act is None:
        acts = text_hook_acts(handle, list(texts or reference_texts()), hook, max_tokens=64)
        max_act = max((float(a[:, neuron].max()) for a in acts if len(a)), default=0.0)
        origin = "computed over given texts" if texts else f"computed over {REFERENCE_DOCS} reference texts"
    vec = torch.zeros(d_mlp)
    vec[neuron] = 1.0
    return Direction(
        name=f"neuron L{layer}.{neuron}",
        source="neuron",
        hook=hook,
        vector=vec,
        max_act=float(max_act),
        meta={"layer": layer, "neuron": neuron, "max_act_origin": origin, "formula": "w = e_n at mlp.hook_post"},
    )


def latent_activations(
    handle: ModelHandle,
    loaded_sae: LoadedSAE,
    text_token_ids: Sequence[int],
    latent: int,
    *,
    prefix_ids: Sequence[int] | None = None,
) -> list[float]:
    """Latent `latent`'s activation at each token of `text_token_ids`, read WITHOUT steering.

    The text is read in context after `prefix_ids` (e.g. `SteeringResult.prompt_token_ids[i]`), else after
    the corpus separator; the values say how strongly the unsteered model sees the latent's concept in the
    generated text, so they can be compared between the unsteered and the steered output.
    """
    from saelab.corpus import separator_id

    latent = check_latent(loaded_sae, latent)
    text = [int(t) for t in text_token_ids]
    if not text:
        return []
    prefix = [int(t) for t in prefix_ids] if prefix_ids else [separator_id(handle.tokenizer)]
    ids = (prefix + text)[-int(handle.cfg.n_ctx) :]
    f = ids_latents(handle, loaded_sae, ids)[-len(text) :, latent]
    return [float(v) for v in f]


DIRECTION_SOURCES: dict[str, Callable[..., Direction]] = {
    "sae": sae_latent_direction,
    "text": text_direction,
    "neuron": neuron_direction,
}

__all__ = [
    "DIRECTION_SOURCES",
    "Direction",
    "latent_activations",
    "latent_max_activation",
    "neuron_direction",
    "reference_texts",
    "sae_latent_direction",
    "text_direction",
]
