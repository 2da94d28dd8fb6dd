"""Compare page helpers: the SAE comparison (`saelab.compare.run.compare_saes`), cached per process.

The cache key is the SAE paths, the threshold, the model spec and the files' modification times, so a
retrained or re-evaluated SAE (new weights, eval.json or dashboards) is compared afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from saelab.ui.loader import get_model
from saelab.ui.model_choice import current_model_spec

if TYPE_CHECKING:
    from saelab.compare.joint_map import JointMap
    from saelab.compare.run import CompareResult


def _stamp(path: str) -> tuple[tuple[str, int], ...]:
    """(name, mtime_ns) of the files in an SAE folder and its dashboards folder; () for a release spec."""
    folder = Path(path)
    if not folder.is_dir():
        return ()
    out = []
    for sub in (folder, folder / "dashboards"):
        if sub.is_dir():
            for f in sorted(sub.iterdir()):
                if f.is_file():
                    out.append((str(f.relative_to(folder)), f.stat().st_mtime_ns))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=8)
def _compare(paths: tuple[str, ...], threshold: float, spec: str, stamps: tuple, _handle) -> CompareResult:
    from saelab.compare.run import compare_saes

    return compare_saes(list(paths), threshold=threshold, handle=_handle)


def run_compare(paths: list[str], threshold: float) -> CompareResult:
    """Compare the SAEs at `paths` on the session's model (each SAE after the first against the first)."""
    spec = current_model_spec()
    handle = get_model(spec)
    stamps = tuple(_stamp(p) for p in paths)
    with st.spinner(f"Comparing {len(paths)} SAEs (decoder matching)…"):
        return _compare(tuple(str(p) for p in paths), round(float(threshold), 4), spec, stamps, handle)


@st.cache_data(show_spinner=False, max_entries=4)
def _joint_map(paths: tuple[str, ...], names: tuple[str, ...], stamps: tuple, _handle) -> JointMap:
    from saelab.compare.joint_map import joint_map
    from saelab.sae.files import load_sae

    decoders = [load_sae(p, handle=_handle).sae.W_dec.detach().float().cpu().numpy() for p in paths]
    return joint_map(decoders, list(names))


def run_joint_map(result: CompareResult) -> JointMap:
    """The joint feature map of the compared SAEs (one t-SNE over a subset of each; cached like the comparison)."""
    handle = get_model(current_model_spec())
    stamps = tuple(_stamp(p) for p in result.paths)
    with st.spinner(f"Laying out {len(result.paths)} SAEs' decoder directions together (t-SNE, about 20-60 s)…"):
        return _joint_map(tuple(result.paths), tuple(result.names), stamps, handle)


def open_in_explorer(sae_path: str, latent: int) -> None:
    """Make `sae_path` the session's SAE and open its latent in the Feature Explorer."""
    st.session_state["sae_path"] = str(sae_path)
    st.switch_page("pages/explorer.py", query_params={"latent": str(int(latent))})


__all__ = ["open_in_explorer", "run_compare", "run_joint_map"]
