"""Analyse one user text: which latents fire on which token ("test your own text" on a feature page).

One short text, so the forward runs in the model's own dtype (fp32) through `saelab.hooks` and stops
after the SAE's hook. The text is preceded by the separator token (`<|endoftext|>`), exactly as a document
starts inside the packed training rows: the separator takes the attention-sink role at position 0 and the
user's first token is analysed like any other.

Attention sinks — position 0 and every separator token — have residual norms ~100x the rest; SAEs are
trained without them, so their latent values are meaningless. They are listed in `sink_positions`, carry
no activations in the result, and never enter the `top_latents` ranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from saelab.corpus import separator_id, sink_mask
from saelab.errors import BadInputError
from saelab.hooks import cache_activations
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE

_CHARS_PER_TOKEN_CAP = 64  # tokenize at most max_tokens × this many characters (a pasted book stays fast)


@dataclass
class PromptAnalysis:
    """Latent activations on one text.

    Attributes:
        text: the text analysed (after truncation to `max_tokens`: the decoded kept tokens).
        tokens: each position's token decoded on its own, for display (index 0 is the separator).
        token_ids: the ids the model read.
        sink_positions: attention-sink positions (0 and separators): no activations recorded there.
        acts: per position, its `top_n` (latent, activation) pairs, largest first (empty at sinks).
        top_latents: (latent, max activation, position of the max) for every latent that fired, largest
            max first.
        truncated: True when the text had more than `max_tokens` tokens and only the first were analysed.
        n_input_tokens: tokens of the text before truncation (a lower bound when `input_cut`).
        input_cut: the text was so long that only its first max_tokens × 64 characters were tokenized.
        max_tokens: the cap on text tokens (the separator not counted).
        hook: the hook point the SAE read.
        nz_pos, nz_latent, nz_value: every non-zero activation at a non-sink position (sparse COO).
        elapsed_s: wall time of the analysis.
    """

    text: str
    tokens: list[str]
    token_ids: list[int]
    sink_positions: list[int]
    acts: list[list[tuple[int, float]]]
    top_latents: list[tuple[int, float, int]]
    truncated: bool
    n_input_tokens: int
    max_tokens: int
    hook: str
    nz_pos: np.ndarray = field(repr=False)
    nz_latent: np.ndarray = field(repr=False)
    nz_value: np.ndarray = field(repr=False)
    input_cut: bool = False
    elapsed_s: float = 0.0

    def latent_acts(self, latent: int) -> list[float]:
        """One latent's activation at every position (0.0 at sinks and where it is silent)."""
        out = np.zeros(len(self.token_ids), dtype=np.float32)
        hit = self.nz_latent == int(latent)
        out[self.nz_pos[hit]] = self.nz_value[hit]
        return [float(v) for v in out]

    @property
    def truncation_note(self) -> str | None:
        if not self.truncated:
            return None
        n = f"more than {self.n_input_tokens}" if self.input_cut else str(self.n_input_tokens)
        return f"Only the first {self.max_tokens} tokens were analysed (the text has {n})."


def _check_text(text: object) -> str:
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadInputError(f"The text is not valid UTF-8 ({err}); paste it as plain text.") from err
    if not isinstance(text, str):
        raise BadInputError(f"Expected text (a string), got {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadInputError(f"The text holds characters that cannot be encoded ({err.reason}); retype them.") from err
    if not text.strip():
        raise BadInputError("Type some text to analyse: the box is empty.")
    return text


def analyse_text(
    handle: ModelHandle,
    loaded: LoadedSAE,
    text: str,
    max_tokens: int = 512,
    top_n: int = 5,
    *,
    prepend_separator: bool = True,
) -> PromptAnalysis:
    """Per-token latent activations of `loaded` on `text` (see `PromptAnalysis`).

    Raises `BadInputError` for empty or whitespace-only text, for non-text input and for text that is
    not valid Unicode. Text longer than `max_tokens` tokens is truncated (`truncated=True`), not refused.
    """
    t0 = time.perf_counter()
    text = _check_text(text)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadInputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not isinstance(top_n, int) or top_n < 1:
        raise BadInputError(f"top_n must be a positive integer, got {top_n!r}")
    tok = handle.tokenizer
    cap = max_tokens * _CHARS_PER_TOKEN_CAP
    cut = len(text) > cap
    ids = tok(text[:cap] if cut else text, add_special_tokens=False)["input_ids"]
    n_input = len(ids)
    truncated = cut or n_input > max_tokens
    ids = ids[:max_tokens]
    if not ids:
        raise BadInputError("Type some text to analyse: the text has no tokens.")
    sep = separator_id(tok)
    if prepend_separator:
        ids = [sep, *ids]
    tokens = torch.tensor([ids], dtype=torch.long, device=handle.cfg.device)

    sae, hook = loaded.sae, loaded.hook
    d_sae = int(sae.cfg.d_sae)
    act = cache_activations(handle, tokens, [hook])[hook]
    with torch.no_grad():  # not inference_mode: the sink rows are zeroed in place below
        f_LD = sae.encode(act.to(device=sae.device, dtype=sae.dtype)).reshape(len(ids), d_sae).float().cpu()
    sink = ~sink_mask(torch.tensor([ids]), sep)[0]
    f_LD[sink] = 0.0

    pos, lat = torch.nonzero(f_LD, as_tuple=True)
    val = f_LD[pos, lat]
    k = min(top_n, d_sae)
    top_v, top_i = f_LD.topk(k, dim=1)
    acts = [[(int(i), float(v)) for v, i in zip(vs, is_) if v != 0] for vs, is_ in zip(top_v, top_i)]
    max_v, max_pos = f_LD.max(dim=0)
    ranked = torch.argsort(max_v, descending=True, stable=True)
    ranked = ranked[max_v[ranked] > 0]
    top_latents = [(int(j), float(max_v[j]), int(max_pos[j])) for j in ranked]
    return PromptAnalysis(
        text=tok.decode(ids[1:] if prepend_separator else ids) if truncated else text,
        tokens=[tok.decode([t]) for t in ids],
        token_ids=[int(t) for t in ids],
        sink_positions=[int(i) for i in torch.nonzero(sink).flatten()],
        acts=acts,
        top_latents=top_latents,
        truncated=truncated,
        n_input_tokens=n_input,
        max_tokens=max_tokens,
        hook=hook,
        nz_pos=pos.numpy(),
        nz_latent=lat.numpy(),
        nz_value=val.numpy(),
        input_cut=cut,
        elapsed_s=round(time.perf_counter() - t0, 4),
    )


__all__ = ["PromptAnalysis", "analyse_text"]
