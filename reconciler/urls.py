"""URL forms shared by config, catalogue and sources: how URLs are compared
and how they are shown (never with credentials in them)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def normalise_url(url: str) -> str:
    """The form in which repo URLs are compared: case, trailing '/' and '.git' ignored."""
    url = url.strip().lower().rstrip("/")
    return url.removesuffix(".git").rstrip("/")


def normalise_server(url: str) -> str:
    """The form in which API server URLs are compared."""
    return url.strip().lower().rstrip("/")


def redact_url(url: str) -> str:
    """A URL fit for messages: any user:password part removed."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url
