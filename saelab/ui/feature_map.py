"""The Feature map page's data: every latent's map position and density from the dashboards, the figure
drawn from them, the latents picked in it, and the table of a multi-point selection (the page stays thin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from saelab.reports import figures

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from saelab.features.store import DashboardStore


@dataclass(frozen=True)
class FeatureMap:
    """The dashboards' 2-D layout of the decoder directions: `xy [d, 2]`, `density [d]`, `cluster [d]` or None."""

    xy: np.ndarray
    density: np.ndarray
    cluster: np.ndarray | None
    statistics: dict[str, np.ndarray] = field(default_factory=dict)  # per-latent values the map can colour by

    @classmethod
    def of(cls, store: DashboardStore) -> FeatureMap:
        """Read from the store's summary arrays (cached by the store; CorruptFileError when unreadable), and the
        label set's detection scores when there are labels."""
        summary = store.summary()
        cluster = summary.get("map_cluster")
        stats = {"max activation": np.asarray(summary["max_act"], dtype=float),
                 "mean activation": np.asarray(summary["mean_act"], dtype=float)}  # fmt: skip
        labels = store.labels()
        if labels is not None:
            if any(lab.token_balanced_accuracy is not None for lab in labels.latents):
                stats["label quality, token level (balanced accuracy)"] = np.array(
                    [np.nan if lab.token_balanced_accuracy is None else lab.token_balanced_accuracy
                     for lab in labels.latents], dtype=float)  # fmt: skip
            stats["label quality, sequence level (balanced accuracy)"] = np.array(
                [np.nan if lab.detection_balanced_accuracy is None else lab.detection_balanced_accuracy
                 for lab in labels.latents], dtype=float)  # fmt: skip
        return cls(
            xy=np.asarray(summary["map_xy"]),
            density=np.asarray(summary["density"]),
            cluster=None if cluster is None else np.asarray(cluster),
            statistics=stats,
        )

    @property
    def colour_options(self) -> list[str]:
        return ["log density", *(["cluster"] if self.cluster is not None else []), *self.statistics]

    @property
    def n_latents(self) -> int:
        return len(self.xy)

    @property
    def n_dead(self) -> int:
        """Latents that never fired on the dashboard tokens."""
        return int((self.density <= 0).sum())

    def cluster_names(self, labels: dict[int, str]) -> dict[int, str]:
        from saelab.features.projection import cluster_names

        return {} if self.cluster is None or not labels else cluster_names(self.cluster, labels)

    def figure(self, labels: dict[int, str], *, colour_by: str = "log density") -> go.Figure:
        """The map coloured by one of `colour_options`, clusters named by their members' labels."""
        names = self.cluster_names(labels)
        if colour_by in self.statistics:
            return figures.feature_map(self.xy, self.density, self.cluster, labels, colour_by="values",
                                       values=self.statistics[colour_by], values_title=colour_by, names=names)  # fmt: skip
        kind: Literal["density", "cluster"] = "cluster" if colour_by == "cluster" else "density"
        return figures.feature_map(self.xy, self.density, self.cluster, labels, colour_by=kind, names=names)

    def selection_rows(self, latents: list[int], labels: dict[int, str]) -> list[dict[str, object]]:
        """One table row per selected latent: index, label, density."""
        return [{"latent": i, "label": labels.get(i, ""), "density": float(self.density[i])} for i in latents]


def picked_latents(event: Any) -> list[int]:
    """The latents selected in the map's `st.plotly_chart` event (clicked, boxed or lassoed), sorted.

    Only the first trace holds latents (a second one only rings the highlighted point)."""
    points = event.selection.points if event else []
    return sorted({int(p.get("customdata", p.get("point_index"))) for p in points if p.get("curve_number", 0) == 0})


__all__ = ["FeatureMap", "picked_latents"]
