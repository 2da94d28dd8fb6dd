"""Optional LLM explanations for latents, from any OpenAI-compatible chat endpoint (e.g. a local server).

The faithful version of what `saelab.features.labels` approximates offline:
  * explainer: the LLM reads a latent's top contexts, the peak tokens marked <<like this>>, and writes a
    short explanation (the OpenAI "language models can explain neurons" / Neuronpedia auto-interp recipe);
  * simulator, kept simple: for each held-out row the LLM answers yes/no "does this text match the
    explanation?"; the answers are scored with the SAME detection score as the offline rules (balanced
    accuracy and F1 on rows where the latent fires vs rows where it never fires; the rows are a prefix of
    the offline score's sample, so both scores are also reported on the very same rows).

Only the standard library talks to the endpoint (urllib), with a timeout on every call and a total deadline
on reading the answer. Any failure becomes an `EndpointError` saying what happened; when the endpoint
cannot be reached at all, `llm_labels` returns the offline proxy labels and says so.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from saelab.errors import BadInputError, SaelabError
from saelab.features.label_detection import HeldoutRows, predict_rows, sample_rows, score_predictions, too_few_rows
from saelab.features.labels import LabelSet, dashboard_arrays
from saelab.trust import check_endpoint_url

log = logging.getLogger(__name__)

_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_MAX_ERROR_BYTES = 4096  # of an error body: enough for a message, never the whole of a hostile answer
UNREACHABLE_NOTE = "endpoint unreachable: offline proxy labels used"

EXPLAINER_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document. Look at the parts of the documents the neuron activates for and summarize in a single short "
    "phrase what the neuron is looking for. The tokens where it activates most are marked <<like this>>. "
    "Don't list examples of words. Answer with the phrase only, e.g. 'the word Paris and other French "
    "place names' or 'closing brackets in code'."
)
SIMULATOR_SYSTEM = (
    "A neuron in a language model looks for this: {explanation}\n"
    "You will see one text. Answer 'yes' if any part of the text is something this neuron looks for, "
    "otherwise 'no'. Answer with one word: yes or no."
)


class EndpointError(SaelabError):
    """The LLM endpoint could not be reached or did not answer like an OpenAI chat completion."""


@dataclass
class LLMEndpoint:
    """An OpenAI-compatible chat endpoint: POST `{base_url}/chat/completions`.

    Attributes:
        base_url: e.g. "http://127.0.0.1:8080/v1" (http or https).
        model: the model name the server expects.
        api_key: sent as "Authorization: Bearer …" when given (never shown in reprs).
        timeout: seconds for connecting and for each read; the whole answer must arrive within 2x this.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 20.0

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise BadInputError(f"The endpoint URL must start with http:// or https://, got {self.base_url!r}.")
        self.base_url = check_endpoint_url(self.base_url.rstrip("/"))
        if not isinstance(self.model, str) or not self.model.strip():
            raise BadInputError("Name the endpoint's model (e.g. the name your local server loaded).")
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout <= 600:
            raise BadInputError(f"The endpoint timeout must be between 0 and 600 seconds, got {self.timeout!r}.")

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def chat(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 64, temperature: float = 0.0) -> str:
        """The assistant's reply to `messages` ([{"role": ..., "content": ...}, ...]); `EndpointError` on failure."""
        body = json.dumps(
            {"model": self.model, "messages": list(messages), "max_tokens": max_tokens, "temperature": temperature}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        deadline = time.monotonic() + 2 * self.timeout
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                raw = _read_until(resp, deadline, self.url, self.timeout)
        except urllib.error.HTTPError as err:
            detail = _snippet(
                _read_until(err, deadline, self.url, self.timeout, cap=_MAX_ERROR_BYTES) if err.fp else b""
            )
            raise EndpointError(f"{self.url} answered HTTP {err.code} {err.reason}: {detail}") from err
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise EndpointError(f"{self.url} did not answer within {self.timeout:g} s.") from err
            raise EndpointError(f"Cannot reach {self.url} ({reason}). Is the server running at that address?") from err
        except TimeoutError as err:
            raise EndpointError(f"{self.url} did not answer within {self.timeout:g} s.") from err
        except (http.client.HTTPException, OSError) as err:
            raise EndpointError(f"The connection to {self.url} failed ({type(err).__name__}: {err}).") from err
        try:
            data = json.loads(raw.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
            raise EndpointError(
                f"{self.url} did not return an OpenAI-style chat completion ({type(err).__name__}): {_snippet(raw)}"
            ) from err
        if not isinstance(content, str):
            raise EndpointError(f"{self.url} returned a non-text message: {_snippet(raw)}")
        return content


def _read_until(resp, deadline: float, url: str, timeout: float, cap: int | None = None) -> bytes:
    """Read the whole response, but give up at `deadline` (a server trickling bytes cannot hold us).

    With `cap`, return at most `cap` bytes (an error body: its start is enough); without, more than
    `_MAX_RESPONSE_BYTES` is an error."""
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            if cap is not None:
                return b"".join(chunks)
            raise EndpointError(f"{url} took longer than {2 * timeout:g} s to send its answer.")
        read = getattr(resp, "read1", resp.read)  # read1: what has arrived (one recv), so the deadline is kept
        chunk = read(min(65536, cap - size) if cap is not None else 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if cap is not None:
            chunks.append(chunk)
            if size >= cap:
                return b"".join(chunks)
            continue
        if size > _MAX_RESPONSE_BYTES:
            raise EndpointError(f"{url} sent more than {_MAX_RESPONSE_BYTES // 2**20} MiB; not a chat completion.")
        chunks.append(chunk)


def _snippet(raw: bytes, n: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return repr(text[:n] + ("…" if len(text) > n else ""))


# ---------------------------------------------------------------- explainer and simulator


def format_contexts(
    top_tokens: np.ndarray, top_acts: np.ndarray, tokenizer, *, n: int = 10, mark_frac: float = 0.5
) -> str:
    """A latent's top contexts as text, one per line, tokens ≥ `mark_frac` × the window's max marked <<…>>."""
    lines = []
    for toks, acts in zip(np.asarray(top_tokens)[:n], np.asarray(top_acts, dtype=np.float32)[:n]):
        ok = toks >= 0
        if not ok.any() or acts.max() <= 0:
            continue
        peak = float(acts.max())
        parts = []
        for t, a in zip(toks[ok], acts[ok]):
            piece = tokenizer.decode([int(t)])
            parts.append(f"<<{piece}>>" if a >= mark_frac * peak else piece)
        lines.append(f"{len(lines) + 1}. " + "".join(parts).replace("\n", "\\n"))
    return "\n".join(lines)


def explain_latent(endpoint: LLMEndpoint, contexts: str) -> str:
    """A one-phrase explanation of a latent from its marked contexts (see `format_contexts`)."""
    if not contexts.strip():
        raise BadInputError("No contexts to explain: the latent never fired in the dashboard sample.")
    reply = endpoint.chat(
        [
            {"role": "system", "content": EXPLAINER_SYSTEM},
            {"role": "user", "content": f"Documents:\n{contexts}\n\nWhat does the neuron look for?"},
        ],
        max_tokens=48,
    )
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        raise EndpointError(f"{endpoint.url} returned an empty explanation.")
    return lines[0].strip("\"' ").removeprefix("Explanation:").strip()[:200]


def simulate_row(endpoint: LLMEndpoint, explanation: str, text: str) -> bool:
    """Does the LLM say `text` matches `explanation`? (a yes/no simulator; anything but 'yes' is no)"""
    reply = endpoint.chat(
        [
            {"role": "system", "content": SIMULATOR_SYSTEM.format(explanation=explanation)},
            {"role": "user", "content": text},
        ],
        max_tokens=3,
    )
    return reply.strip().strip(".!\"' ").lower().startswith("yes")


def row_text(tokenizer, tokens: torch.Tensor, keep: torch.Tensor) -> str:
    """The text of one held-out row at its analysed positions; separators become blank lines."""
    pieces, run = [], []
    for t, k in zip(tokens.tolist(), keep.tolist()):
        if k:
            run.append(t)
        elif run:
            pieces.append(tokenizer.decode(run))
            run = []
    if run:
        pieces.append(tokenizer.decode(run))
    return "\n\n".join(p.strip() for p in pieces if p.strip())


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def llm_labels(
    endpoint: LLMEndpoint,
    store: Any,
    latents: Sequence[int],
    offline: LabelSet,
    rows: HeldoutRows,
    tokenizer,
    *,
    n_per_class: int = 5,
    n_contexts: int = 10,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelSet:
    """Explain `latents` with the LLM and score each explanation with the offline detection score.

    Returns a copy of `offline` whose `llm` field holds, per latent: the explanation, its balanced accuracy,
    F1 and counts on up to `n_per_class` firing and as many non-firing rows of `rows` (a prefix of the offline
    score's sample), and the offline rule's balanced accuracy on those same rows. When the endpoint cannot be
    reached on the first call, the offline labels come back unchanged with `llm.note` = "endpoint
    unreachable: offline proxy labels used". A later failure for one latent is recorded on that latent.
    `progress(done_calls, total_calls)`.
    """
    if not latents:
        raise BadInputError("Pick at least one latent to explain.")
    seed = int(offline.config.get("seed", 0)) if seed is None else seed
    min_rows = int(offline.config.get("min_rows", 5))
    arrays, _ = dashboard_arrays(store, ("top_tokens", "top_acts"))
    if "top_tokens" not in arrays or "top_acts" not in arrays:
        raise BadInputError("The dashboard data has no top contexts (top_tokens/top_acts) to explain.")
    reached = False  # has any call succeeded? (if not, a failure means the endpoint is unusable)
    fires = rows.fires.numpy()
    total = len(latents) * (1 + 2 * n_per_class)
    done = 0
    result: dict[str, Any] = {
        "method": "llm-explainer + llm-simulator (yes/no per held-out row)",
        "proxy": False,
        "endpoint": endpoint.base_url,
        "model": endpoint.model,
        "formula": "the same detection score as the offline labels, with the rule replaced by the LLM's yes/no "
        "answer to 'does this text match the explanation?' on each sampled row",
        "n_per_class": n_per_class,
        "latents": {},
        "note": None,
    }
    for latent in latents:
        latent = int(latent)
        if not 0 <= latent < fires.shape[1]:
            raise BadInputError(f"Latent {latent} does not exist; valid latents are 0 … {fires.shape[1] - 1}.")
        entry: dict[str, Any] = {}
        try:
            contexts = format_contexts(
                arrays["top_tokens"][latent], arrays["top_acts"][latent], tokenizer, n=n_contexts
            )
            if not contexts:
                entry = {"label": None, "note": "the latent never fired in the dashboard sample"}
            else:
                entry["label"] = explain_latent(endpoint, contexts)
                reached = True
            done += 1
            reason = too_few_rows(int(fires[:, latent].sum()), rows.n_rows, min_rows)
            if entry.get("label") and reason:
                entry["note"] = reason
            elif entry.get("label"):
                pos, neg = sample_rows(fires[:, latent], n_per_class, seed, latent)
                answers = []
                for r in np.concatenate([pos, neg]):
                    answers.append(
                        simulate_row(endpoint, entry["label"], row_text(tokenizer, rows.tokens[r], rows.keep[r]))
                    )
                    done += 1
                    if progress is not None:
                        progress(done, total)
                answers_a = np.array(answers, dtype=bool)
                entry.update(score_predictions(answers_a[: pos.size], answers_a[pos.size :]))
                if offline[latent].token_ids:
                    pred = predict_rows(rows, offline[latent])
                    same = score_predictions(pred[pos], pred[neg])
                    entry["offline_balanced_accuracy_same_rows"] = same["detection_balanced_accuracy"]
        except EndpointError as err:
            if not reached:
                log.warning("LLM endpoint unusable (%s); keeping the offline labels", err)
                note = f"{UNREACHABLE_NOTE} ({err})"
                return replace(offline, llm={"note": note, "endpoint": endpoint.base_url, "model": endpoint.model})
            entry = {"label": None, "note": f"endpoint error: {err}"}
        for k in ("detection_balanced_accuracy", "detection_f1", "offline_balanced_accuracy_same_rows"):
            if k in entry:
                entry[k] = _finite(entry[k])
        result["latents"][str(latent)] = entry
        if progress is not None:
            progress(min(done, total), total)
    return replace(offline, llm=result)


__all__ = [
    "EndpointError",
    "LLMEndpoint",
    "UNREACHABLE_NOTE",
    "explain_latent",
    "format_contexts",
    "llm_labels",
    "row_text",
    "simulate_row",
]
