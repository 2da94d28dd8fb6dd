"""Analyse one user text: which latents fire on which token ("test your own text" on a feature page).

One short text, so the forward runs in the model's own dtype (fp32) through `saelab.sae.text_latents` and stops
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

from saelab.activations.text_batches import check_max_tokens
from saelab.corpus import sink_mask
from saelab.errors import BadInputError
from saelab.models.handle import ModelHandle
from saelab.sae.files import LoadedSAE
from saelab.sae.text_latents import text_latents


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

    def strongest_latents(self) -> list[tuple[int, float] | None]:
        """Per position, the latent that fires most there and its activation (None at sinks and where none fires)."""
        return [(int(a[0][0]), float(a[0][1])) if a and a[0][1] > 0 else None for a in self.acts]

    def top(self, n: int) -> list[tuple[int, float]]:
        """The `n` latents with the largest activation anywhere in the text: (latent, max activation), largest first."""
        return [(int(t[0]), float(t[1])) for t in self.top_latents[: max(int(n), 0)]]

    def activation_matrix(self, latents: list[int]) -> np.ndarray:
        """`[len(latents), positions]` activations of these latents (0.0 at sinks and where a latent is silent)."""
        out = np.zeros((len(latents), len(self.token_ids)), dtype=np.float32)
        for row, latent in enumerate(latents):
            hit = self.nz_latent == int(latent)
            out[row, self.nz_pos[hit]] = self.nz_value[hit]
        return out

    def token_rows(self, labels: dict[int, str] | None = None) -> list[dict[str, object]]:
        """A table of the text: per position its token (newlines as ↵, sinks marked) and its top latents as
        "#latent (activation) label" in columns "latent 1", "latent 2", … (blank where a position has fewer)."""
        labels = labels or {}
        sinks = set(self.sink_positions)
        n_show = max((len(a) for a in self.acts), default=0)
        rows: list[dict[str, object]] = []
        for pos, (tok, acts) in enumerate(zip(self.tokens, self.acts)):
            shown = tok.replace("\n", "↵") + (" (sink)" if pos in sinks else "")
            row: dict[str, object] = {"pos": pos, "token": shown}
            for j in range(n_show):
                if j < len(acts):
                    lat, val = acts[j]
                    row[f"latent {j + 1}"] = f"#{int(lat)} ({float(val):.3g}) {labels.get(int(lat), '')}".strip()
                else:
                    row[f"latent {j + 1}"] = ""
            rows.append(row)
        return rows

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
    handle: ModelHandle, loaded: LoadedSAE, text: str, max_tokens: int = 512, top_n: int = 5
) -> PromptAnalysis:
    """Per-token latent activations of `loaded` on `text` (see `PromptAnalysis`).

    Raises `BadInputError` for empty or whitespace-only text, for non-text input and for text that is
    not valid Unicode. Text longer than `max_tokens` tokens is truncated (`truncated=True`), not refused.
    """
    t0 = time.perf_counter()
    text = _check_text(text)
    check_max_tokens(max_tokens)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise BadInputError(f"top_n must be a positive integer, got {top_n!r}")
    enc, f_LD = text_latents(handle, loaded, text, max_tokens)
    ids = enc.ids[0]
    if len(ids) < 2:
        raise BadInputError("Type some text to analyse: the text has no tokens.")
    tok = handle.tokenizer
    d_sae = int(loaded.sae.cfg.d_sae)
    sink = ~sink_mask(torch.tensor([ids]), enc.sep)[0]
    truncated = enc.truncated(0)

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
        text=tok.decode(ids[1:]) if truncated else text,
        tokens=[tok.decode([t]) for t in ids],
        token_ids=[int(t) for t in ids],
        sink_positions=[int(i) for i in torch.nonzero(sink).flatten()],
        acts=acts,
        top_latents=top_latents,
        truncated=truncated,
        n_input_tokens=enc.n_input_tokens[0],
        max_tokens=max_tokens,
        hook=loaded.hook,
        nz_pos=pos.numpy(),
        nz_latent=lat.numpy(),
        nz_value=val.numpy(),
        input_cut=enc.char_cut[0],
        elapsed_s=round(time.perf_counter() - t0, 4),
    )


__all__ = ["PromptAnalysis", "analyse_text"]
