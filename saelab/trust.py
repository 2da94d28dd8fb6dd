"""The trust model: which folders a user may point the app at, and which hosts it may send requests to.

SAE Lab is a single-user tool by default: `make app` binds 127.0.0.1, so only this machine reaches it, and
every local path is allowed. Serving a network (`make app ADDRESS=0.0.0.0`) lets anyone who reaches the port
type paths and URLs into the app, so then:

* `SAELAB_ALLOWED_ROOTS` (folders separated by `os.pathsep`) bounds every SAE/model/output path a page
  accepts; when the app serves a network and the variable is unset, only the features folder
  (`saelab.defaults.features_root()`) is allowed (`set_network_mode`). On the CLI nothing is bounded unless the
  variable is set.
* `SAELAB_ALLOWED_HOSTS` (comma-separated host names) lists the hosts an LLM endpoint may live on; by default
  only loopback (127.0.0.1, ::1, localhost), so the app never POSTs to another machine unless told to.

Every check raises `BadInputError` with the variable to set, never a traceback.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from saelab.errors import BadInputError

ROOTS_ENV = "SAELAB_ALLOWED_ROOTS"
HOSTS_ENV = "SAELAB_ALLOWED_HOSTS"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 255  # one path component (the usual file-system limit)

_network_mode = False


def set_network_mode(serving_network: bool) -> None:
    """Called by the app with whether Streamlit listens beyond loopback (then paths default to the features root)."""
    global _network_mode
    _network_mode = bool(serving_network)


def is_loopback_address(address: str | None) -> bool:
    return (address or "127.0.0.1").strip("[]") in (*LOOPBACK_HOSTS, "")


def allowed_roots() -> list[Path] | None:
    """The folders user paths must lie in, or None when any path is allowed."""
    raw = os.environ.get(ROOTS_ENV, "").strip()
    if raw:
        return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    if _network_mode:
        from saelab.defaults import features_root

        return [features_root().resolve()]
    return None


def user_path(raw: object, what: str = "path") -> Path:
    """A path typed by a user: `~` expanded, resolved, checked for length and against `allowed_roots()`."""
    if not isinstance(raw, str | os.PathLike):
        raise BadInputError(f"The {what} must be text, got {type(raw).__name__}.")
    text = os.fspath(raw).strip()
    if not text:
        raise BadInputError(f"Type a {what}: the box is empty.")
    if "\x00" in text:
        raise BadInputError(f"The {what} contains a NUL character.")
    if len(text) > MAX_PATH_CHARS:
        raise BadInputError(f"The {what} is {len(text):,} characters long; at most {MAX_PATH_CHARS} are allowed.")
    long = [p for p in Path(text).parts if len(p.encode("utf-8", "replace")) > MAX_NAME_CHARS]
    if long:
        raise BadInputError(f"A part of the {what} is longer than {MAX_NAME_CHARS} bytes ({long[0][:40]}…).")
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise BadInputError(f"The {what} {text!r} cannot be resolved ({err}).") from err
    roots = allowed_roots()
    if roots is not None and not any(path == r or path.is_relative_to(r) for r in roots):
        shown = ", ".join(str(r) for r in roots)
        raise BadInputError(
            f"{path} is outside the folders this server may read ({shown}); set {ROOTS_ENV} to allow more."
        )
    return path


def allowed_hosts() -> set[str]:
    raw = os.environ.get(HOSTS_ENV, "")
    return {*LOOPBACK_HOSTS, *(h.strip().lower().strip("[]") for h in raw.split(",") if h.strip())}


def check_endpoint_url(url: str) -> str:
    """`url` if its host is allowed (loopback, or listed in `SAELAB_ALLOWED_HOSTS`), else a clear error."""
    try:
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError as err:
        raise BadInputError(f"The endpoint URL {url!r} cannot be parsed ({err}).") from err
    if not host:
        raise BadInputError(f"The endpoint URL {url!r} names no host.")
    if host not in allowed_hosts():
        raise BadInputError(
            f"Requests to {host} are not allowed: only {', '.join(sorted(allowed_hosts()))}. "
            f"Set {HOSTS_ENV}={host} (comma-separated) to allow that endpoint."
        )
    return url


__all__ = [
    "HOSTS_ENV",
    "ROOTS_ENV",
    "allowed_hosts",
    "allowed_roots",
    "check_endpoint_url",
    "is_loopback_address",
    "set_network_mode",
    "user_path",
]
