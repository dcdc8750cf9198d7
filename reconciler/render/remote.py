"""Remote fetches during rendering are opt-in.

A commit could otherwise make the management host call any address (internal
URLs included) through a Helm `valueFiles` URL or a kustomize remote base.
Such references are refused unless their host (or host:port) is listed in
`[render] allow_remote`. Allowed Helm value files are fetched here, by the
reconciler, and handed to helm as local files, so helm itself never needs
the network; charts are fetched only by the chart fetcher (render/charts.py).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection
from typing import IO, Any

from reconciler.errors import RenderError
from reconciler.urls import redact_url

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^[^/@:\s]+@(?P<host>[^/:\s]+):")  # git@github.com:org/repo
_HOST_FIRST = re.compile(r"^(?P<host>[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:\d+)?)/")  # github.com/org/x


def is_url(reference: str) -> bool:
    """Whether `reference` names something to fetch rather than a local path."""
    return bool(_SCHEME.match(_strip_getter(reference)) or _SCP_LIKE.match(reference))


def remote_host(reference: str) -> str | None:
    """host or host:port (lower-case) of a URL, `git@host:` or `host.tld/path` reference."""
    stripped = _strip_getter(reference)
    if _SCHEME.match(stripped):
        parsed = urllib.parse.urlsplit(stripped)
        try:
            host, port = parsed.hostname, parsed.port
        except ValueError:
            return None
        if not host:
            return None
        return f"{host.lower()}:{port}" if port else host.lower()
    match = _SCP_LIKE.match(reference) or _HOST_FIRST.match(reference)
    return match.group("host").lower() if match else None


def _strip_getter(reference: str) -> str:
    # go-getter style forced schemes: git::https://host/..., s3::https://...
    return reference.split("::", 1)[1] if re.match(r"^[a-z0-9]+::", reference) else reference


def check_remote(reference: str, allow: Collection[str], what: str) -> None:
    """Refuse `reference` unless its host, or host:port, is in `allow`."""
    host = remote_host(reference)
    if host is None:
        raise RenderError(f"{what} {_shown(reference)} names no host it could be fetched from")
    if host not in allow and host.rsplit(":", 1)[0] not in allow:
        raise RenderError(
            f"{what} {_shown(reference)} is remote and its host {host} is not in "
            "[render] allow_remote"
        )


def _shown(reference: str) -> str:
    try:
        return redact_url(reference)
    except ValueError:
        return "(an unreadable URL)"


class _SameRules(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a host the allow-list names too."""

    def __init__(self, allow: Collection[str], what: str) -> None:
        self._allow = allow
        self._what = what

    def redirect_request(
        self, req: Any, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        check_remote(newurl, self._allow, f"{self._what} redirects to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, allow: Collection[str], what: str, max_bytes: int, timeout: float) -> bytes:
    """The body of an allowed http(s) URL, at most `max_bytes`, TLS verified."""
    check_remote(url, allow, what)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise RenderError(f"{what} {_shown(url)}: only http and https URLs are fetched")
    opener = urllib.request.build_opener(_SameRules(allow, what))
    try:
        with opener.open(url, timeout=timeout) as response:
            data: bytes = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise RenderError(f"{what} {_shown(url)} could not be fetched ({reason})") from None
    if len(data) > max_bytes:
        raise RenderError(f"{what} {_shown(url)} is over the {max_bytes}-byte file limit")
    return data
