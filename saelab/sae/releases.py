"""SAE-Lens's published SAEs by release and id: `sae-lens:<release>:<sae_id>` (e.g.
`sae-lens:gpt2-small-res-jb:blocks.8.hook_resid_pre`).

Offline (the default) such a spec is served from `<cache>/saes/<release>/<sae_id>/` when it was fetched before, and
otherwise fails at once naming `SAELAB_ONLINE`. Online, SAE-Lens's `SAE.from_pretrained` fetches it (its own
progress on the terminal) and the SAE is saved there as an ordinary SAE-Lens folder, so every later load is local.
"""

from __future__ import annotations

import re
from pathlib import Path

from saelab.errors import BadInputError
from saelab.online import offline_error, online_allowed
from saelab.storage import SAE_CFG_FILE, atomic_dir, cache_dir

PREFIX = "sae-lens:"


def is_release_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _parts(spec: str) -> tuple[str, str]:
    body = spec[len(PREFIX) :]
    release, sep, sae_id = body.partition(":")
    if not sep or not release.strip() or not sae_id.strip():
        raise BadInputError(f"Write an SAE-Lens SAE as {PREFIX}<release>:<sae_id>, got {spec!r}.")
    return release.strip(), sae_id.strip()


def release_dir(spec: str) -> Path:
    """Where a fetched release SAE is kept (names made file-system safe)."""
    release, sae_id = _parts(spec)
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:120] for s in (release, sae_id)]
    return cache_dir() / "saes" / safe[0] / safe[1]


def resolve(spec: str) -> Path:
    """A local SAE-Lens folder for `spec`: the cached copy, or (online only) a fresh fetch saved there."""
    release, sae_id = _parts(spec)
    folder = release_dir(spec)
    if (folder / SAE_CFG_FILE).is_file():
        return folder
    if not online_allowed():
        raise offline_error(f"SAE-Lens SAE {release}:{sae_id}", "point to a local SAE-Lens folder")
    from sae_lens import SAE

    sae = SAE.from_pretrained(release, sae_id, device="cpu")
    with atomic_dir(folder) as tmp:
        sae.save_model(tmp)
    return folder


__all__ = ["PREFIX", "is_release_spec", "release_dir", "resolve"]
