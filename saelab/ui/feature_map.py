"""The Feature map page's data: every latent's map position and density from the dashboards, the figure
drawn from them, the latents picked in it, and the table of a multi-point selection (the page stays thin)."""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def of(cls, store: DashboardStore) -> FeatureMap:
        """Read from the store's summary arrays (cached by the store; CorruptFileError when unreadable)."""
        summary = store.summary()
        cluster = summary.get("map_cluster")
        return cls(
            xy=np.asarray(summary["map_xy"]),
            density=np.asarray(summary["density"]),
            cluster=None if cluster is None else np.asarray(cluster),
        )

    @property
    def n_latents(self) -> int:
        return len(self.xy)

    @property
    def n_dead(self) -> int:
        """Latents that never fired on the dashboard tokens."""
        return int((self.density <= 0).sum())

    def figure(self, labels: dict[int, str], *, colour_by: Literal["density", "cluster"] = "density") -> go.Figure:
        return figures.feature_map(self.xy, self.density, self.cluster, labels, colour_by=colour_by)

    def selection_rows(self, latents: list[int], labels: dict[int, str]) -> list[dict[str, object]]:
        """One table row per selected latent: index, label, density."""
        return [{"latent": i, "label": labels.get(i, ""), "density": float(self.density[i])} for i in latents]


def picked_latents(event: Any) -> list[int]:
    """The latents selected in the map's `st.plotly_chart` event (clicked, boxed or lassoed), sorted.

    Only the first trace holds latents (a second one only rings the highlighted point)."""
    points = event.selection.points if event else []
    return sorted({int(p.get("customdata", p.get("point_index"))) for p in points if p.get("curve_number", 0) == 0})


__all__ = ["FeatureMap", "picked_latents"]
