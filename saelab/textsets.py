"""Labelled text sets for probing and hypothesis generation: built-in `sae-probes` sets or a user's CSV.

Everything a user uploads is read as data (pandas CSV parser, no pickle, no eval). Bad input gets a
message that says what to change: missing columns, one class only, a label column of free text,
non-UTF-8 bytes (decoded with replacement and said so), empty or duplicate texts (dropped and counted),
and very large files (sampled with a recorded seed, and said so).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from saelab.corpus import load_dataset
from saelab.errors import BadInputError

Kind = Literal["binary", "multiclass", "numeric"]
MAX_ROWS = 20_000  # default cap on rows read into the app; larger sets are sampled (seeded) and the note says so
MAX_CLASSES = 50  # more distinct non-numeric labels than this looks like free text, not classes
MAX_TEXT_CHARS = 20_000  # longer texts are cut (models read at most a few hundred tokens anyway)
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


@dataclass
class TextSet:
    """Texts with one target each. `target` is int class ids (binary/multiclass) or float (numeric)."""

    texts: list[str]
    target: np.ndarray  # [n] int64 class ids, or float64 values for numeric targets
    kind: Kind
    classes: list[str] | None  # class names in id order (None for numeric)
    provenance: dict[str, Any] = field(default_factory=dict)  # source, columns, rows read/kept, seed
    notes: list[str] = field(default_factory=list)  # what was changed on the way in, for the user to see

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> dict[str, Any]:
        """What the set is, without its texts and targets (those are data, saved as CSV, not in a result's JSON).

        A description, not a serialisation: there is no `to_dict`/`from_dict` round trip for a text set."""
        return {
            "kind": self.kind,
            "classes": self.classes,
            "n": len(self),
            "provenance": self.provenance,
            "notes": self.notes,
        }


def _decode(data: bytes) -> tuple[str, list[str]]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark (Excel's "Unicode text")
        try:
            return data.decode("utf-16"), ["The file was UTF-16 text; it was read as such (UTF-8 is preferred)."]
        except UnicodeDecodeError as err:
            raise BadInputError(f"The file starts like UTF-16 text but is not ({err}); save it as UTF-8.") from err
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as err:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        return text, [
            f"The file is not valid UTF-8 (first bad byte at offset {err.start}); "
            f"{bad:,} undecodable byte(s) were replaced with '\ufffd'. Save it as UTF-8 to avoid this."
        ]


def read_frame(data: bytes | str | Path) -> tuple[pd.DataFrame, list[str], str]:
    """A CSV (bytes, text or path) as an all-string DataFrame, the notes on its decoding, and its source name."""
    if isinstance(data, (str, Path)) and not (isinstance(data, str) and "\n" in data):
        path = Path(data)
        if not path.exists():
            raise BadInputError(f"{path} does not exist.")
        raw, source = path.read_bytes(), str(path)
    elif isinstance(data, str):
        raw, source = data.encode("utf-8"), "uploaded text"
    else:
        raw, source = bytes(data), "uploaded file"
    if not raw.strip():
        raise BadInputError("The CSV is empty.")
    if len(raw) > MAX_UPLOAD_BYTES:
        raise BadInputError(f"The CSV is {len(raw) / 2**20:,.0f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB.")
    text, notes = _decode(raw)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise BadInputError(f"The file could not be read as CSV: {err}") from err
    header = next(csv.reader(io.StringIO(text)), [])
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise BadInputError(f"The CSV has duplicate column names {dupes[:5]}; rename them so each column is unique.")
    if df.shape[1] < 2:
        raise BadInputError(
            f"The CSV has {df.shape[1]} column(s) ({list(df.columns)}); it needs a text column and a label column."
        )
    return df, notes, source


def csv_columns(data: bytes | str | Path) -> list[str]:
    """The column names of a CSV (for the page's column pickers)."""
    df, _, _ = read_frame(data)
    return [str(c) for c in df.columns]


def _infer_target(values: pd.Series, kind: str) -> tuple[np.ndarray, Kind, list[str] | None]:
    raw = values.astype(str).str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    is_numeric = bool(numeric.notna().all())
    distinct = sorted(raw.unique().tolist())
    if kind == "auto":
        if len(distinct) == 2:
            kind = "binary"
        elif is_numeric and len(distinct) > 10:
            kind = "numeric"
        else:
            kind = "multiclass"
    if kind == "numeric":
        if not is_numeric:
            bad = raw[numeric.isna()].iloc[0]
            raise BadInputError(
                f"The target column is not numeric (e.g. {bad[:40]!r}); choose a label kind of classes."
            )
        infinite = ~np.isfinite(numeric.to_numpy(dtype=np.float64))
        if infinite.any():
            bad = raw[infinite].iloc[0]
            raise BadInputError(
                f"The numeric target holds {int(infinite.sum())} infinite value(s) (e.g. {bad[:40]!r}); "
                "fix or drop those rows."
            )
        if float(numeric.std()) == 0.0:
            raise BadInputError("The target is constant: there is nothing to predict.")
        return numeric.to_numpy(dtype=np.float64), "numeric", None
    if len(distinct) < 2:
        raise BadInputError(f"Only one class ({distinct[0]!r}) is present; probing needs at least two.")
    if len(distinct) > MAX_CLASSES:
        hint = " It looks numeric: choose the numeric kind." if is_numeric else " It looks like free text."
        raise BadInputError(
            f"The label column has {len(distinct):,} distinct values (more than {MAX_CLASSES}); "
            f"pick a column of class labels.{hint}"
        )
    if is_numeric:  # order numeric class labels by value: "2" before "10"
        distinct = sorted(distinct, key=float)
    if kind == "binary" and len(distinct) != 2:
        raise BadInputError(f"A binary target needs exactly 2 classes; this column has {len(distinct)}.")
    ids = {c: i for i, c in enumerate(distinct)}
    return raw.map(ids).to_numpy(dtype=np.int64), ("binary" if len(distinct) == 2 else "multiclass"), distinct


def _from_frame(
    df: pd.DataFrame,
    text_col: str,
    target_col: str,
    *,
    kind: str,
    max_rows: int | None,
    seed: int,
    notes: list[str],
    provenance: dict[str, Any],
) -> TextSet:
    missing = [c for c in (text_col, target_col) if c not in df.columns]
    if missing:
        raise BadInputError(f"No column {missing[0]!r}; the file has {[str(c) for c in df.columns]}.")
    if text_col == target_col:
        raise BadInputError("The text and the label must be different columns.")
    if kind not in ("auto", "binary", "multiclass", "numeric"):
        raise BadInputError(f"Unknown target kind {kind!r}: auto, binary, multiclass or numeric.")
    frame = pd.DataFrame({"text": df[text_col].astype(str), "target": df[target_col].astype(str)})
    n_read = len(frame)
    frame["text"] = frame["text"].str.strip()
    empty = frame["text"].eq("") | frame["target"].str.strip().eq("")
    if empty.any():
        notes.append(f"Dropped {int(empty.sum()):,} row(s) with an empty text or label.")
        frame = frame[~empty]
    dup = frame.duplicated(subset=["text"], keep="first")
    if dup.any():
        notes.append(f"Dropped {int(dup.sum()):,} duplicate text(s) (first occurrence kept).")
        frame = frame[~dup]
    if frame.empty:
        raise BadInputError("No rows are left after dropping empty texts and labels.")
    if max_rows is not None and len(frame) > max_rows:
        notes.append(f"Sampled {max_rows:,} of {len(frame):,} rows at random (seed {seed}) to stay responsive.")
        frame = frame.sample(n=max_rows, random_state=seed).sort_index()
    long = frame["text"].str.len() > MAX_TEXT_CHARS
    if long.any():
        notes.append(f"Cut {int(long.sum()):,} text(s) to {MAX_TEXT_CHARS:,} characters.")
        frame.loc[long, "text"] = frame.loc[long, "text"].str.slice(0, MAX_TEXT_CHARS)
    try:
        target, kind_out, classes = _infer_target(frame["target"], kind)
    except BadInputError as err:  # say which column, so the fix is obvious on a page with several pickers
        raise BadInputError(f"Target column {target_col!r}: {err}") from err
    provenance = {
        **provenance,
        "text_col": text_col,
        "target_col": target_col,
        "rows_read": n_read,
        "rows_kept": len(frame),
        "seed": seed,
        "max_rows": max_rows,
        "row_ids": frame.index.tolist(),
    }
    return TextSet(frame["text"].tolist(), target, kind_out, classes, provenance, notes)


def from_csv(
    data: bytes | str | Path,
    *,
    text_col: str,
    target_col: str,
    kind: str = "auto",
    max_rows: int | None = MAX_ROWS,
    seed: int = 0,
) -> TextSet:
    """A TextSet from CSV bytes, CSV text or a path. Row ids in provenance index the original file's rows."""
    df, notes, source = read_frame(data)
    return _from_frame(
        df, text_col, target_col, kind=kind, max_rows=max_rows, seed=seed, notes=notes, provenance={"source": source}
    )


def from_builtin(name: str, *, max_rows: int | None = None, seed: int = 0, kind: str = "auto") -> TextSet:
    """A built-in `sae-probes` set (`prompt`, `target` columns), e.g. `92_glue_sst2`."""
    df = load_dataset(name).astype({"prompt": str, "target": str})
    return _from_frame(
        df,
        "prompt",
        "target",
        kind=kind,
        max_rows=max_rows,
        seed=seed,
        notes=[],
        provenance={"source": f"sae-probes:{name}", "dataset": name},
    )


def split(
    textset: TextSet,
    *,
    fractions: tuple[float, ...] = (0.6, 0.2, 0.2),
    seed: int = 0,
    names: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, np.ndarray]:
    """Disjoint index arrays covering every row; stratified by class for class targets (seeded)."""
    if len(fractions) != len(names) or any(f <= 0 for f in fractions):
        raise BadInputError("split: one positive fraction per split name is needed.")
    total = float(sum(fractions))
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(textset.target == c) for c in np.unique(textset.target)]
        if textset.kind != "numeric"
        else [np.arange(len(textset))]
    )
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for idx in groups:
        idx = rng.permutation(idx)
        bounds = np.round(np.cumsum(fractions) / total * len(idx)).astype(int)
        for i, (lo, hi) in enumerate(zip(np.r_[0, bounds[:-1]], bounds, strict=True)):
            parts[i].append(idx[lo:hi])
    out = {name: np.sort(np.concatenate(p)) for name, p in zip(names, parts, strict=True)}
    small = [n for n, idx in out.items() if len(idx) == 0]
    if small:
        raise BadInputError(f"Too few rows ({len(textset)}) for a {'/'.join(names)} split: {small} would be empty.")
    return out
