"""Read precomputed feature dashboards (`<sae_dir>/dashboards/`) one latent at a time.

A dashboards folder holds `meta.json` and `latents.safetensors` (every tensor's first axis is the
latent), and later perhaps `labels.json` (written by `saelab.features.labels`). `DashboardStore` keeps
one `safe_open` handle and reads a latent's rows as slices of the memory-mapped file, so a feature
page costs about a millisecond whatever the SAE's width; the whole file is never loaded.

This module imports neither torch models nor hooks: the UI can open a store cheaply.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open

from saelab.errors import BadInputError, CorruptFileError
from saelab.storage import DASHBOARD_DIR, read_json

if TYPE_CHECKING:
    from saelab.features.labels import LabelSet

FORMAT = "saelab.dashboards"
FORMAT_VERSION = 1
META_FILE = "meta.json"
LATENTS_FILE = "latents.safetensors"
LABELS_FILE = "labels.json"  # written by saelab.features.labels, read here

# name -> (dtype, shape after the latent axis). Strings are meta.json keys, ints are literal sizes.
TENSORS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "density": ("float32", ()),
    "max_act": ("float32", ()),
    "mean_act": ("float32", ()),
    "top_tokens": ("int32", ("n_top", "ctx")),
    "top_acts": ("float16", ("n_top", "ctx")),
    "top_seq": ("int32", ("n_top",)),
    "top_pos": ("int32", ("n_top",)),
    "q_tokens": ("int32", ("n_int", "n_per", "ctx")),
    "q_acts": ("float16", ("n_int", "n_per", "ctx")),
    "q_bounds": ("float32", ("n_int", 2)),
    "q_frac": ("float32", ("n_int",)),
    "hist_counts": ("int32", ("n_bins",)),
    "logit_pos_ids": ("int32", ("n_logits",)),
    "logit_pos_vals": ("float32", ("n_logits",)),
    "logit_neg_ids": ("int32", ("n_logits",)),
    "logit_neg_vals": ("float32", ("n_logits",)),
    "nbr_ids": ("int32", ("n_neighbours",)),
    "nbr_cos": ("float32", ("n_neighbours",)),
    "map_xy": ("float32", (2,)),
    "map_cluster": ("int32", ()),
}

# Definitions written into meta.json["formulas"] (the builder adds "logit_effects" and "projection").
FORMULAS = {
    "density": "#(analysed tokens with act > 0) / n_tokens",
    "mean_act": "mean of act over the analysed tokens with act > 0 (exact float32)",
    "top": "the n_top tokens with the largest float16 activation, highest first (ties: earlier token first); "
    "top_seq/top_pos = row/position in the analysed token rows (see corpus for where those rows come from)",
    "windows": "positions p-ctx_left … p+ctx_right of the example's row (the example at index ctx_left); "
    "outside the row: token -1, act 0; positions not analysed (row starts, separators): act 0",
    "intervals": "interval j = (max_act*j/n_int, max_act*(j+1)/n_int], j = 0 … n_int-1 (lowest first), membership "
    "by float16 value (the last interval also holds values that float16 rounds above max_act); n_per samples: one uniform pick in each of n_per equal slices of the interval's "
    "activation-sorted entries (highest first); q_frac = entries in the interval / positive entries",
    "histogram": "hist_counts[b] = #positive acts with float16 value in (max_act*b/n_bins, max_act*(b+1)/n_bins] "
    "(bin 0 also holds values that round to 0, the last bin those rounded above max_act); sums to density * n_tokens",
    "neighbours": "the n_neighbours other latents j with the largest cos(W_dec[i], W_dec[j]), descending "
    "(pad: id -1, cos NaN)",
}
SUMMARY_TENSORS = ("density", "max_act", "mean_act", "map_xy", "map_cluster")
_ST_DTYPES = {"float32": "F32", "float16": "F16", "int32": "I32"}


def tensor_shape(name: str, meta: dict[str, Any]) -> tuple[int, ...]:
    """The full shape of tensor `name` for a dashboards folder described by `meta`."""
    _, tail = TENSORS[name]
    return (int(meta["d_sae"]), *(int(meta[t]) if isinstance(t, str) else t for t in tail))


@dataclass
class LatentDashboard:
    """Everything precomputed for one latent (see `meta.json` → "formulas" for definitions).

    Attributes:
        index: the latent.
        density: fraction of analysed tokens where it is > 0.
        max_act, mean_act: its largest activation and the mean of its positive activations.
        ctx_left: index of the example's own token inside every context window.
        top_tokens, top_acts: int32 / float16 `[n_top, ctx]` windows around its top activations, highest
            first; token id -1 and act 0 pad windows clipped at a row edge and missing examples.
        top_seq, top_pos: int32 `[n_top]` row and position of each example's token (-1 if none).
        q_tokens, q_acts: `[n_int, n_per, ctx]` windows sampled from each activation interval.
        q_bounds: float32 `[n_int, 2]` the intervals (lo, hi], lowest first; q_frac: float32 `[n_int]` the
            fraction of its positive activations in each.
        hist_counts: int32 `[n_bins]` positive activations per equal bin of (0, max_act].
        logit_pos_ids/_vals, logit_neg_ids/_vals: `[n_logits]` tokens it promotes / suppresses most.
        nbr_ids, nbr_cos: `[n_neighbours]` nearest other latents by decoder cosine (-1 / NaN pad).
        map_xy: float32 `[2]` position on the feature map; map_cluster: its cluster.
    """

    index: int
    density: float
    max_act: float
    mean_act: float
    ctx_left: int
    top_tokens: np.ndarray
    top_acts: np.ndarray
    top_seq: np.ndarray
    top_pos: np.ndarray
    q_tokens: np.ndarray
    q_acts: np.ndarray
    q_bounds: np.ndarray
    q_frac: np.ndarray
    hist_counts: np.ndarray
    logit_pos_ids: np.ndarray
    logit_pos_vals: np.ndarray
    logit_neg_ids: np.ndarray
    logit_neg_vals: np.ndarray
    nbr_ids: np.ndarray
    nbr_cos: np.ndarray
    map_xy: np.ndarray
    map_cluster: int

    @property
    def n_examples(self) -> int:
        """How many top examples exist (fewer than n_top for a rarely firing latent)."""
        return int((self.top_seq >= 0).sum())

    def hist_edges(self) -> np.ndarray:
        """float32 `[n_bins + 1]` bin edges of `hist_counts`."""
        return np.linspace(0.0, self.max_act, len(self.hist_counts) + 1, dtype=np.float32)


def dashboards_dir(sae_dir: str | Path) -> Path:
    """`<sae_dir>/dashboards`, or `sae_dir` itself when it already is a dashboards folder."""
    path = Path(sae_dir).expanduser()
    if (path / META_FILE).is_file() and not (path / DASHBOARD_DIR).exists():
        return path
    return path / DASHBOARD_DIR


class DashboardStore:
    """A dashboards folder, read-only and thread-safe. Raises `BadInputError` when there is none and
    `CorruptFileError` when it is unreadable or its tensors disagree with `meta.json`."""

    def __init__(self, sae_dir: str | Path):
        self.path = dashboards_dir(sae_dir)
        meta_path, latents_path = self.path / META_FILE, self.path / LATENTS_FILE
        if not meta_path.is_file() or not latents_path.is_file():
            raise BadInputError(
                f"No feature dashboards at {self.path} ({META_FILE} or {LATENTS_FILE} missing); "
                "build them first (saelab.features.dashboards.build_dashboards, or `saelab dashboards`)."
            )
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CorruptFileError(f"{meta_path} is not a SAE Lab dashboards file; rebuild the dashboards.")
        if not isinstance(meta.get("version"), int):
            raise CorruptFileError(f"{meta_path} has no integer format version; rebuild the dashboards.")
        if meta["version"] > FORMAT_VERSION:
            raise BadInputError(
                f"{self.path} was written by a newer SAE Lab (format version {meta.get('version')}); "
                "update SAE Lab or rebuild the dashboards."
            )
        self.meta: dict[str, Any] = meta
        self._lock = threading.Lock()
        self._summary: dict[str, np.ndarray] | None = None
        self._labels: tuple[float, Any] | None = None
        try:
            self._file = safe_open(str(latents_path), framework="numpy")
            self._slices = {name: self._file.get_slice(name) for name in TENSORS}
            for name, (dtype, _) in TENSORS.items():
                want = tensor_shape(name, meta)
                got = tuple(self._slices[name].get_shape())
                if got != want or self._slices[name].get_dtype() != _ST_DTYPES[dtype]:
                    raise ValueError(
                        f"{name} is {self._slices[name].get_dtype()}{list(got)}, meta.json says {dtype}{list(want)}"
                    )
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
            raise CorruptFileError(
                f"{latents_path} is unreadable or does not match {META_FILE} ({err}); rebuild the dashboards."
            ) from err

    @staticmethod
    def exists(sae_dir: str | Path) -> bool:
        """True when `sae_dir` has a dashboards folder with both files (it may still be corrupt)."""
        path = dashboards_dir(sae_dir)
        return (path / META_FILE).is_file() and (path / LATENTS_FILE).is_file()

    @property
    def d_sae(self) -> int:
        return int(self.meta["d_sae"])

    def _read(self, name: str, i: int) -> np.ndarray:
        try:
            return self._slices[name][i : i + 1][0]
        except (SafetensorError, OSError, ValueError) as err:
            raise CorruptFileError(f"{self.path / LATENTS_FILE}: cannot read {name}[{i}] ({err}).") from err

    def latent(self, i: int) -> LatentDashboard:
        """The dashboard of latent `i` (0 ≤ i < d_sae), read as slices."""
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= int(i) < self.d_sae:
            raise BadInputError(f"Latent {i!r} does not exist; valid latents are 0 … {self.d_sae - 1}.")
        i = int(i)
        with self._lock:
            row = {name: self._read(name, i) for name in TENSORS}
        scalars = {k: float(row.pop(k)) for k in ("density", "max_act", "mean_act")}
        return LatentDashboard(
            index=i,
            ctx_left=int(self.meta["ctx_left"]),
            map_cluster=int(row.pop("map_cluster")),
            **scalars,
            **row,
        )

    def summary(self) -> dict[str, np.ndarray]:
        """Whole small arrays over all latents: density, max_act, mean_act `[d]`, map_xy `[d, 2]`,
        map_cluster `[d]` (read once, then cached; do not modify them)."""
        with self._lock:
            if self._summary is None:
                try:
                    self._summary = {name: self._file.get_tensor(name) for name in SUMMARY_TENSORS}
                except (SafetensorError, OSError, ValueError) as err:
                    raise CorruptFileError(f"{self.path / LATENTS_FILE} is unreadable ({err}).") from err
            return self._summary

    def labels(self) -> LabelSet | None:
        """`labels.json` as a `LabelSet`, or None when there is none (re-read when the file changes).

        A file that is not a label set raises `CorruptFileError`.
        """
        from saelab.features.labels import read_labels

        path = self.path / LABELS_FILE
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        with self._lock:
            if self._labels is None or self._labels[0] != mtime:
                self._labels = (mtime, read_labels(self.path))
            return self._labels[1]


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMULAS",
    "LABELS_FILE",
    "LATENTS_FILE",
    "META_FILE",
    "TENSORS",
    "DashboardStore",
    "LatentDashboard",
    "dashboards_dir",
    "tensor_shape",
]
