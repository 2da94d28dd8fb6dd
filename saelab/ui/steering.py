"""Streamlit caches and small helpers for the steering playground (the page stays thin).

Directions are cached per process with `st.cache_resource` (read-only, shared by sessions: a Direction
is never mutated after it is built); the proxy judge likewise, keyed by its concept examples. Nothing
here runs a hooked forward itself: every model call goes through the backend, which uses `saelab.hooks`.
"""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from saelab.errors import BadInputError
from saelab.ui.loader import get_model, get_sae
from saelab.ui.model_choice import current_model_spec

MAX_TEXT_LINES = 200


def split_lines(text: str, what: str) -> list[str]:
    """Non-empty lines of a text box (one example per line), at most MAX_TEXT_LINES."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) > MAX_TEXT_LINES:
        raise BadInputError(f"{len(lines)} {what} lines; use at most {MAX_TEXT_LINES}.")
    return lines


def parse_factors(text: str) -> list[float]:
    """ "0, 0.5, 1, 2" → [0.0, 0.5, 1.0, 2.0], or BadInputError naming the bad entry."""
    out = []
    for part in re.split(r"[,\s;]+", (text or "").strip()):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise BadInputError(f"{part!r} is not a number; list factors like 0, 0.5, 1, 2, 4.") from None
    if not out:
        raise BadInputError("List at least one factor, e.g. 0, 0.5, 1, 2, 4.")
    return out


@st.cache_resource(show_spinner="Computing the direction from your texts…", max_entries=16)
def text_direction(
    method: str, positives: tuple[str, ...], negatives: tuple[str, ...], hook: str, seed: int, spec: str
):
    from saelab.steering.direction_sources import text_direction as build

    return build(get_model(spec), method, list(positives), list(negatives), hook=hook, seed=seed)


@st.cache_resource(show_spinner="Measuring the neuron's largest activation…", max_entries=16)
def neuron_direction(layer: int, neuron: int, spec: str):
    from saelab.steering.direction_sources import neuron_direction as build

    return build(get_model(spec), layer, neuron)


@st.cache_resource(show_spinner=False, max_entries=64)
def sae_direction(sae_path: str, latent: int, spec: str):
    from saelab.steering.direction_sources import sae_latent_direction

    return sae_latent_direction(get_sae(sae_path, spec), latent, handle=get_model(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def latent_values(sae_path: str, spec: str, ids: tuple[int, ...], latent: int, prefix: tuple[int, ...]) -> list[float]:
    """A latent's activation on each generated token, read in context; cached so that widget reruns after a
    generation do not repeat the two forwards."""
    from saelab.steering.direction_sources import latent_activations

    return latent_activations(get_model(spec), get_sae(sae_path, spec), list(ids), latent, prefix_ids=list(prefix))


def latent_examples(store: Any, latent: int, decode, n: int = 20) -> list[str]:
    """Texts of the latent's top dashboard contexts (its concept examples for the judge)."""
    if store is None:
        return []
    dash = store.latent(latent)
    texts = []
    for row in dash.top_tokens[:n]:
        text = "".join(decode(int(t)) for t in row if int(t) >= 0).strip()
        if text:
            texts.append(text)
    return texts


@st.cache_resource(show_spinner="Preparing the PROXY judge (sentence embeddings)…", max_entries=8)
def proxy_judge(examples: tuple[str, ...], spec: str):
    """`saelab.steering.judges.ProxyJudge` for these concept examples, or None when the module is missing."""
    try:
        from saelab.steering.judges import ProxyJudge
    except ImportError:
        return None
    return ProxyJudge(get_model(spec), list(examples))


def sweep_rows(res: Any) -> list[dict[str, Any]]:
    """A strength sweep as table rows: the unsteered text, then each factor's texts with their PROXY ratings."""
    rows: list[dict[str, Any]] = [{"factor": "unsteered", "text": res.unsteered[0]}]
    for f, texts, rats in zip(res.factors, res.texts, res.ratings):
        for t, r in zip(texts, rats):
            rows.append(
                {
                    "factor": f"{f:g}",
                    "text": t,
                    **({k: r[k] for k in ("concept", "relevance", "fluency", "score")} if r else {}),
                }
            )
    return rows


def spec() -> str:
    return current_model_spec()


def streaming_slots(slots: dict[str, Any], every_s: float = 0.25):
    """An `on_token(i, which, text)` callback drawing into `slots[which]` at most every `every_s` seconds.

    Each redraw is a websocket message and a browser re-render; on a 2-core machine the browser competes with
    the model for the CPU, so drawing every token of both texts slowed a Generate click several-fold.
    The last texts are drawn by the page once the generation returns.
    """
    import time

    pending: dict[str, str] = {}
    last = [0.0]

    def on_token(i: int, which: str, text: str) -> None:
        pending[which] = text
        now = time.monotonic()
        if now - last[0] >= every_s:
            for key, value in pending.items():
                slots[key].text(value)
            pending.clear()
            last[0] = now

    return on_token
