"""Reports: everything that presents a result — HTML, escaping, Plotly figures and exports.

This package is the one place for presentation; analyses return typed results and never import it.
    `saelab.reports`                 the export format (this module): `HtmlReport`, `write_export`, `csv_text`
    `render`                         HTML escaping and token highlighting shared by the app and exports
    `figures`                        the feature figures (Explorer, Prompt view, Feature map)
    `probing`, `probing_figures`     probe reports
    `circuits`, `circuits_figures`   circuit reports
    `hypotheses`, `hypotheses_figures`, `steering_figures`, `steering_eval_figures`

Exportable reports: one self-contained HTML file plus JSON, CSV and safetensors beside it; `read_export` reads the
JSON back into the result's own type.

A report must open offline on a colleague's machine, years later: plotly.js is written inline once (the
first figure), no file is fetched, and every piece of user text is HTML-escaped (`text`, `table`);
only `html()` takes markup, and only from our own renderers. Files are written atomically.
"""

from __future__ import annotations

import csv
import html as html_lib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saelab.errors import BadInputError
from saelab.storage import atomic_dir, atomic_path, save_tensors, write_json
from saelab.typed_json import read_checked

REPORT_FILE = "report.html"
RESULT_FILE = "result.json"
WEIGHTS_FILE = "weights.safetensors"

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1f2328; line-height: 1.45; padding: 0 1rem; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .4rem .8rem; margin: .8rem 0; }
.meta { color: #59636e; font-size: .85rem; }
.figure { margin: 1rem 0; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return html_lib.escape(str(value))


def _rows(data: Any) -> tuple[list[str], list[Sequence[Any]]]:
    """Column names and rows from a DataFrame, a list of dicts, or a list of sequences."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame, without importing pandas
        cols = [str(c) for c in data.columns]
        return cols, [list(r) for r in data.itertuples(index=False)]
    data = list(data)
    if not data:
        return [], []
    if isinstance(data[0], Mapping):
        cols = list(dict.fromkeys(k for row in data for k in row))
        return [str(c) for c in cols], [[row.get(c, "") for c in cols] for row in data]
    return [], [list(r) for r in data]


class HtmlReport:
    """Build a report section by section, then `write(path)` or `to_html()`."""

    def __init__(self, title: str, *, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._plotly_written = False

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        level = min(max(int(level), 2), 6)
        self._parts.append(f"<h{level}>{html_lib.escape(text)}</h{level}>")
        return self

    def text(self, text: str) -> HtmlReport:
        """A paragraph of plain text (escaped; newlines kept)."""
        self._parts.append("<p>" + html_lib.escape(text).replace("\n", "<br>") + "</p>")
        return self

    def note(self, text: str) -> HtmlReport:
        """A highlighted caveat, e.g. 'ratings are from an offline proxy judge'."""
        self._parts.append(f'<div class="note">{html_lib.escape(text)}</div>')
        return self

    def table(self, data: Any, *, max_rows: int = 200, caption: str | None = None) -> HtmlReport:
        """A table from a DataFrame / list of dicts / list of rows; every cell escaped; long tables cut."""
        cols, rows = _rows(data)
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html_lib.escape(caption)}</caption>")
        if cols:
            out.append("<tr>" + "".join(f"<th>{html_lib.escape(c)}</th>" for c in cols) + "</tr>")
        for row in rows[:max_rows]:
            out.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
        out.append("</table>")
        if len(rows) > max_rows:
            out.append(f'<p class="meta">Showing {max_rows:,} of {len(rows):,} rows; the JSON/CSV has all.</p>')
        self._parts.append("".join(out))
        return self

    def figure(self, fig: Any) -> HtmlReport:
        """A plotly figure; plotly.js is embedded inline with the first one (no network needed)."""
        body = fig.to_html(full_html=False, include_plotlyjs=not self._plotly_written, config={"displaylogo": False})
        self._plotly_written = True
        self._parts.append(f'<div class="figure">{body}</div>')
        return self

    def html(self, trusted_html: str) -> HtmlReport:
        """Markup produced by SAE Lab's own renderers (which escape user text themselves)."""
        self._parts.append(trusted_html)
        return self

    def to_html(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html_lib.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html_lib.escape(self.title)}</h1>"
        )
        sub = f'<p class="meta">{html_lib.escape(self.subtitle)}</p>' if self.subtitle else ""
        foot = f'<p class="meta">Written by SAE Lab on {stamp}. Opens offline.</p></body></html>'
        return head + sub + "\n".join(self._parts) + foot

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_html(), encoding="utf-8")
        return path


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (starts with = + - @ tab CR) gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV of a list of dicts (columns in first-seen order), formula-like text cells neutralised (`csv_cell`)."""
    rows = list(rows)
    cols = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


EXPORT_FILES = (REPORT_FILE, RESULT_FILE, WEIGHTS_FILE)


def _export_folder_ok(folder: Path) -> None:
    """An export replaces its folder whole, so the folder must be new, empty, or an earlier export."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise BadInputError(f"{folder} is a file; choose a folder for the export.")
    other = [p.name for p in folder.iterdir() if p.name not in EXPORT_FILES and p.suffix != ".csv"]
    if other:
        raise BadInputError(f"{folder} holds other files ({', '.join(sorted(other)[:3])}…); an export replaces its "
                            "folder whole, so choose a new or empty folder.")  # fmt: skip


def write_export(
    folder: str | Path,
    *,
    report: HtmlReport | None = None,
    data: Any = None,
    tensors: Mapping[str, Any] | None = None,
    csv: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Write the parts given as the folder `folder`, atomically as a whole (a crash leaves the old export or the
    new one, never a mix); returns {kind: path}.

    report → report.html, data → result.json (must be JSON-serialisable), tensors → weights.safetensors,
    csv → <name>.csv for each name. `folder` must be new, empty or an earlier export (`BadInputError` otherwise).
    """
    folder = Path(folder)
    _export_folder_ok(folder)
    if data is not None:
        json.dumps(data)  # fail before touching the disk if it cannot be serialised
    names: dict[str, str] = {}
    with atomic_dir(folder) as tmp:
        if report is not None:
            report.write(tmp / REPORT_FILE)
            names["html"] = REPORT_FILE
        if data is not None:
            write_json(tmp / RESULT_FILE, data)
            names["json"] = RESULT_FILE
        if tensors:
            import torch

            save_tensors(tmp / WEIGHTS_FILE, {k: torch.as_tensor(v) for k, v in tensors.items()})
            names["weights"] = WEIGHTS_FILE
        for name, rows in (csv or {}).items():
            (tmp / f"{name}.csv").write_text(csv_text(rows), encoding="utf-8")
            names[f"csv:{name}"] = f"{name}.csv"
    return {kind: folder / name for kind, name in names.items()}


def read_export(path: str | Path, kind: type[Any]) -> Any:
    """The result an export holds (its folder or its result.json), read back as `kind` through `kind.from_dict`,
    e.g. `read_export(folder, CircuitResult)`; a file that is not one raises `CorruptFileError` naming it."""
    path = Path(path)
    file = path / RESULT_FILE if path.is_dir() else path
    if not file.is_file():
        raise BadInputError(f"No {RESULT_FILE} at {path}; give a folder that SAE Lab exported.")
    return read_checked(kind, file)
