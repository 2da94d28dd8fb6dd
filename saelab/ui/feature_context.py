"""What a feature page opens first: the session's SAE with the model and its dashboards, or a message why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from saelab.ui.dashboards import dashboards_exist, get_dashboards, label_map, offer_dashboard_build
from saelab.ui.errors import show_error
from saelab.ui.loader import get_model, get_sae
from saelab.ui.sae_choice import current_sae_path

if TYPE_CHECKING:
    from saelab.features.store import DashboardStore
    from saelab.models import ModelHandle
    from saelab.sae.files import LoadedSAE


@dataclass
class FeatureContext:
    """What a feature page works with: the SAE's folder, the model, the SAE and its dashboards."""

    sae_path: str
    handle: ModelHandle
    loaded: LoadedSAE
    store: DashboardStore | None
    labels: dict[int, str]
    proxy_labels: bool = False  # the labels are the offline PROXY labels, not an LLM's explanations

    @property
    def labels_caption(self) -> str:
        """One line saying what the labels shown beside latents are ("" when there are none)."""
        if not self.labels:
            return ""
        if self.proxy_labels:
            return ("Labels are offline PROXY labels (a token rule from each latent's top contexts, scored by "
                    "detection on held-out text), not an LLM judge's explanations.")  # fmt: skip
        return "Labels are LLM explanations (see each latent's dashboard for their detection score)."


def open_features(*, need_dashboards: bool = True) -> FeatureContext:
    """Resolve model, SAE and dashboards for a page, or show why not and stop the page.

    Empty states (no SAE, no dashboards) are messages, never exceptions: the app keeps running.
    """
    path = current_sae_path()
    if path is None:
        st.info(
            "No SAE found. Train one with `saelab harvest` then `saelab train`, or enter the path of an "
            "SAE-Lens folder on the Overview page's sidebar."
        )
        st.stop()
    try:
        handle = get_model()
        loaded = get_sae(path)
    except Exception as err:  # shown in the page; the app keeps running
        show_error(err)
        st.stop()
    st.sidebar.caption(f"SAE: `{path}` · hook `{loaded.hook}` · {int(loaded.sae.cfg.d_sae):,} latents")
    store, labels, proxy = None, {}, False
    try:
        if dashboards_exist(path):
            store = get_dashboards(path)
            labels = label_map(store)
            label_set = store.labels() if labels else None
            proxy = bool(label_set is not None and label_set.proxy)
    except Exception as err:
        show_error(err)
        if need_dashboards:
            offer_dashboard_build(path, broken=True)
            st.stop()
    if store is None and need_dashboards:
        offer_dashboard_build(path)
        st.stop()
    return FeatureContext(sae_path=str(path), handle=handle, loaded=loaded, store=store, labels=labels,
                          proxy_labels=proxy)  # fmt: skip


__all__ = ["FeatureContext", "open_features"]
