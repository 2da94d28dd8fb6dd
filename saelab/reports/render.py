"""HTML for token text: the one place the app turns model text into markup.

Every piece of text that reaches the browser through `st.html` is built here and passes through
`html.escape` first (tokens, labels, tooltips, link texts), so a token `<script>` is shown as text
and runs nothing; `plotly_esc` does the same for Plotly's own mini-markup in chart labels. Pure
functions: strings and numbers in, an HTML string out, no Streamlit.

Rendered with `st.html`, not `st.markdown`: markdown would still read `*`, `_`, `$` in escaped
text as emphasis or LaTeX.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

# Activation colour: orange, its opacity proportional to activation / max (Neuronpedia's convention).
_ACT_RGB = (255, 127, 14)
_WS_MARKS = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}
_WS_STYLE = "color:#9aa0a6"
_TOKEN_STYLE = (
    "white-space:pre;border-radius:3px;padding:1px 0;margin:0;font-family:ui-monospace,monospace;font-size:0.9em"
)
EXPLORER_URL = "explorer"  # url_path of pages/explorer.py (set in app.py)


def esc(text: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(text), quote=True)


def plotly_esc(text: object) -> str:
    """Text for Plotly labels and hovers: `&`, `<`, `>` escaped, quotes kept.

    Plotly reads `<b>`, `<a href>`, `<br>` in its text as markup, so a token `<b>` would turn the
    rest bold; it decodes `&lt;` `&gt;` `&amp;` back for display but not `&quot;`/`&#x27;`.
    """
    return html.escape(str(text), quote=False)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~$:|!])")  # markup anywhere in a line (links, images, emphasis, colours)
_MD_LINE_START = re.compile(r"^(\s*\d*)([-+#=.)])")  # list, heading or setext markers at the start


def md_esc(text: object, max_chars: int = 300) -> str:
    """User text (file, class, preset names…) for Streamlit markdown: one line, markup characters
    backslash-escaped, so `![x](http://…)` shows as text and the offline app fetches nothing."""
    one_line = " ".join(str(text).split())
    if len(one_line) > max_chars:
        one_line = one_line[: max_chars - 1] + "…"
    out = _MD_SPECIAL.sub(r"\\\1", one_line)
    start = _MD_LINE_START.match(out)
    if start and (not start.group(1).strip() or start.group(2) in ".)"):
        out = start.group(1) + "\\" + out[len(start.group(1)) :]
    return out


def visible_token(text: str) -> str:
    """A token as escaped HTML, whitespace drawn as dim markers (· space, ↵ newline, ⇥ tab)."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        if ch in _WS_MARKS:
            if run:
                out.append(esc("".join(run)))
                run = []
            out.append(f'<span style="{_WS_STYLE}">{_WS_MARKS[ch]}</span>')
        else:
            run.append(ch)
    if run:
        out.append(esc("".join(run)))
    return "".join(out) if out else f'<span style="{_WS_STYLE}">∅</span>'


def intensity(value: float, max_value: float) -> float:
    """Opacity in [0, 1] for an activation: value / max_value, clipped; 0 when max is not positive."""
    if not (max_value > 0) or not math.isfinite(value) or value <= 0:
        return 0.0
    return min(1.0, float(value) / float(max_value))


def act_colour(value: float, max_value: float) -> str:
    """CSS background colour for an activation (same hue, opacity ∝ activation / max)."""
    r, g, b = _ACT_RGB
    return f"rgba({r},{g},{b},{intensity(value, max_value):.3f})"


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def token_span(text: str, value: float, max_value: float, *, title: str | None = None, mark: bool = False) -> str:
    """One token with its activation as background; hovering shows `title` (default: the value)."""
    tip = title if title is not None else f"{text!r}: {_fmt(value)}"
    extra = ";outline:1.5px solid #d62728" if mark else ""
    return (
        f'<span class="saelab-tok" style="{_TOKEN_STYLE};background:{act_colour(value, max_value)}{extra}" '
        f'title="{esc(tip)}">{visible_token(text)}</span>'
    )


def highlight_tokens(
    tokens: Sequence[str],
    values: Sequence[float],
    max_value: float,
    *,
    mark_index: int | None = None,
    titles: Sequence[str] | None = None,
) -> str:
    """A run of tokens, each shaded by its activation relative to `max_value`."""
    spans = [
        token_span(t, float(v), max_value, title=titles[i] if titles else None, mark=i == mark_index)
        for i, (t, v) in enumerate(zip(tokens, values))
    ]
    # <wbr>: whitespace is drawn as markers, so the line may only break between tokens.
    return f'<div style="line-height:1.9;margin:2px 0">{"<wbr>".join(spans)}</div>'


def context_html(
    token_ids: Sequence[int],
    acts: Sequence[float],
    max_value: float,
    decode: Callable[[int], str],
    *,
    centre: int | None = None,
) -> str:
    """A stored context window (token ids, padding id -1 skipped) with the max token outlined."""
    tokens, values, mark = [], [], None
    for i, (tid, act) in enumerate(zip(token_ids, acts)):
        if int(tid) < 0:
            continue
        if i == centre:
            mark = len(tokens)
        tokens.append(decode(int(tid)))
        values.append(float(act))
    if not tokens:
        return '<div style="color:#9aa0a6">(empty)</div>'
    return highlight_tokens(tokens, values, max_value, mark_index=mark)


def latent_href(latent: int, page: str = EXPLORER_URL, **params: object) -> str:
    """Relative URL of a page with `?latent=N` (relative, so it works under any base path)."""
    return f"{page}?{urlencode({'latent': int(latent), **params})}"


def latent_link(latent: int, label: str | None = None, *, page: str = EXPLORER_URL) -> str:
    """An `<a href>` opening latent `latent` in the explorer, in this tab."""
    text = f"#{int(latent)}" + (f" {label}" if label else "")
    return (
        f'<a class="saelab-latent" href="{esc(latent_href(latent, page))}" target="_self" '
        f'title="{esc(f"Open latent {int(latent)} in the Feature Explorer")}">{esc(text)}</a>'
    )


def prompt_html(
    tokens: Sequence[str],
    top: Sequence[tuple[int, float] | None],
    labels: dict[int, str] | None = None,
    sinks: Sequence[int] = (),
) -> str:
    """The prompt, each token over its strongest latent (a link) and shaded by that latent's value.

    `top[i]` is (latent, value) of token i's strongest latent, or None when no latent fires there.
    Positions in `sinks` (attention sinks, not analysed) are drawn dimmed. Shading is relative to
    the largest value in the text.
    """
    labels = labels or {}
    sink_set = set(sinks)
    peak = max((t[1] for t in top if t), default=0.0)
    cells = []
    for pos, (text, best) in enumerate(zip(tokens, top)):
        dim = ""
        if pos in sink_set:
            tip, link, value, dim = f"{text!r}: attention sink, not analysed", "&nbsp;", 0.0, ";opacity:0.45"
        elif best is None:
            tip, link, value = f"{text!r}: no latent fires", "&nbsp;", 0.0
        else:
            latent, value = best
            name = labels.get(int(latent), "")
            tip = f"{text!r}: latent {int(latent)}{f' ({name})' if name else ''} = {_fmt(value)}"
            link = latent_link(int(latent))
        cells.append(
            '<span style="display:inline-flex;flex-direction:column;align-items:center;'
            f'margin:0 1px 6px 0{dim}">'
            f"{token_span(text, value, peak, title=tip)}"
            f'<span style="font-size:0.7em;line-height:1.2">{link}</span></span>'
        )
    return f'<div style="display:flex;flex-wrap:wrap;align-items:flex-start">{"".join(cells)}</div>'


def badge(text: str, colour: str = "#6c757d", title: str | None = None) -> str:
    """A small rounded label (e.g. "proxy"), with an optional tooltip."""
    tip = f' title="{esc(title)}"' if title else ""
    return (
        f'<span style="background:{colour};color:white;border-radius:8px;padding:1px 8px;'
        f'font-size:0.8em;margin-left:6px"{tip}>{esc(text)}</span>'
    )


def heading_html(latent: int, label: str | None, *, proxy: bool, tooltip: str | None = None) -> str:
    """The explorer's header: latent index, its label and a "proxy" badge for automatic labels."""
    name = f" · {esc(label)}" if label else ' · <span style="color:#9aa0a6">unlabelled</span>'
    tag = badge("proxy", "#8e44ad", tooltip) if proxy and label else ""
    return f'<h3 style="margin:0">Latent {int(latent)}{name}{tag}</h3>'


def definitions_html(definitions: dict[str, str]) -> str:
    """A definition list (name: formula), escaped; formulas keep `*` and `_` literally."""
    items = "".join(
        f'<dt style="font-weight:600;margin-top:4px">{esc(k)}</dt><dd style="margin-left:1em">{esc(v)}</dd>'
        for k, v in definitions.items()
    )
    return f'<dl style="font-size:0.85em;margin:0">{items}</dl>'


def logit_list_html(ids: Sequence[int], vals: Sequence[float], decode: Callable[[int], str], *, positive: bool) -> str:
    """The tokens a latent's decoder direction promotes (or suppresses) most, as a ranked list with bars.

    Plain HTML rather than a chart: it draws in a few milliseconds when the user steps through latents.
    """
    pairs = sorted(((int(i), float(v)) for i, v in zip(ids, vals) if int(i) >= 0), key=lambda p: p[1], reverse=positive)
    colour = "#2ca02c" if positive else "#d62728"
    title = "Promoted tokens" if positive else "Suppressed tokens"
    top = max((abs(v) for _, v in pairs), default=0.0) or 1.0
    rows = "".join(
        f'<tr title="token id {i}"><td style="padding:1px 6px"><code>{visible_token(decode(i))}</code></td>'
        f'<td style="padding:1px 6px;width:100%"><div style="background:{colour};opacity:.75;height:10px;'
        f'width:{100 * abs(v) / top:.1f}%"></div></td><td style="padding:1px 6px;text-align:right">{v:+.3g}</td></tr>'
        for i, v in pairs
    )
    body = rows or '<tr><td style="color:#9aa0a6">none</td></tr>'
    return (
        f'<div class="saelab-logits"><b>{title}</b> <span style="color:#6c757d;font-size:.8em">'
        f'(direct logit effect)</span><table style="border-collapse:collapse;font-size:.85em;width:100%">'
        f"{body}</table></div>"
    )


def stats_html(items: Sequence[tuple[str, str, str | None]]) -> str:
    """A row of (name, value, explanation) figures; the explanation shows on hover (one element, not four)."""
    cells = "".join(
        f'<div style="flex:1;min-width:9em"{f" title={chr(34)}{esc(tip)}{chr(34)}" if tip else ""}>'
        f'<div style="font-size:.8em;color:#6c757d">{esc(name)}{" ⓘ" if tip else ""}</div>'
        f'<div style="font-size:1.6em">{esc(value)}</div></div>'
        for name, value, tip in items
    )
    return f'<div style="display:flex;gap:12px;margin:6px 0">{cells}</div>'


def details_html(summary: str, body_html: str) -> str:
    """A collapsible block drawn by the browser alone (`<details>`); `body_html` must already be escaped."""
    return (
        f'<details style="margin:4px 0"><summary style="cursor:pointer">{esc(summary)}</summary>'
        f'<div style="margin:4px 0 4px 1em">{body_html}</div></details>'
    )
