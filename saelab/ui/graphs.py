"""Streamlit helpers for the Attribution graph page: where transcoders are, building a graph with a progress bar,
a feature node's dashboard, and interventions (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from saelab.defaults import features_root
from saelab.ui.progress import streamlit_bar

TRANSCODERS_ENV = "SAELAB_TRANSCODERS"


def transcoder_dirs() -> list[str]:
    """Transcoder sets the app knows: `$SAELAB_TRANSCODERS`, then `<features root>/transcoders*/` folders."""
    found = []
    env = os.environ.get(TRANSCODERS_ENV)
    if env:
        found.append(env)
    root = features_root()
    if root.is_dir():
        found += [str(p) for p in sorted(root.glob("transcoders*")) if p.is_dir() and any(p.glob("layer_*"))]
    return list(dict.fromkeys(found))


def _stamp(path: str) -> float:
    p = Path(path)
    return max((f.stat().st_mtime for f in p.glob("layer_*/*")), default=0.0)


@st.cache_resource(show_spinner="Reading the transcoders…", max_entries=2)
def _load(path: str, stamp: float):
    from saelab.graphs.transcoders import load_transcoder_set

    return load_transcoder_set(path)


def get_transcoders(path: str):
    return _load(path, _stamp(path))


def build(handle, tcs, prompt: str, cfg):
    """`attribution_graph` with a progress bar (rows computed / rows planned)."""
    from saelab.graphs.graph import attribution_graph

    with streamlit_bar("Backward passes: logits first, then the most influential features") as progress:
        return attribution_graph(handle, tcs, prompt, cfg, progress=progress, labels=labels(tcs))


def labels(tcs) -> dict[tuple[int, int], str]:
    """Each layer's proxy labels, when its folder has dashboards with labels."""
    from saelab.features.store import DashboardStore

    out: dict[tuple[int, int], str] = {}
    if tcs.path is None:
        return out
    for layer in tcs.layers:
        folder = Path(tcs.path) / f"layer_{layer}"
        if DashboardStore.exists(folder):
            label_set = DashboardStore(folder).labels()
            if label_set is not None:
                out.update({(layer, lab.latent): lab.label for lab in label_set.latents if lab.label})
    return out


def feature_card(tcs, node: dict, decode) -> None:
    """The transcoder feature's dashboard (top contexts) when its layer has dashboards; an empty state otherwise."""
    from saelab.features.store import DashboardStore
    from saelab.reports import render

    folder = Path(tcs.path) / f"layer_{node['layer']}" if tcs.path else None
    st.markdown(f"**Layer {node['layer']} transcoder · latent {node['latent']}** · activation "
                f"{node['activation']:.3g} at position {node['pos']} · influence {node['influence']:.4f}")  # fmt: skip
    if node.get("label"):
        st.caption(f"Label (PROXY, offline labeller): {node['label']}")
    if folder is None or not DashboardStore.exists(folder):
        st.info(f"No dashboards for this layer's transcoder yet: `saelab dashboards --sae {folder}` builds them.")
        return
    d = DashboardStore(folder).latent(int(node["latent"]))
    st.caption(f"density {d.density:.2e} · max activation {d.max_act:.3g}")
    for i in range(d.n_examples):
        st.html(render.context_html(d.top_tokens[i], d.top_acts[i], d.max_act, decode, centre=d.ctx_left))


def intervene(handle, tcs, graph, node: dict, value: float):
    """Predicted (graph) and measured (real model) change of each target logit when `node` is set to `value`."""
    from saelab.graphs.interventions import Change, measure, predict

    change = [Change(node["layer"], node["pos"], node["latent"], value)]
    return predict(graph, change), measure(handle, tcs, graph, change)


__all__ = ["TRANSCODERS_ENV", "build", "feature_card", "get_transcoders", "intervene", "labels", "transcoder_dirs"]
