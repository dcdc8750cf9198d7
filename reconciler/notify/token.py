"""The Matrix access token, read from `[notify.matrix] token_file` when it is needed.

It is never in argv, the environment, the config, the store or a log line; the
file must be readable by its owner only, the rule of every secret's file
(reconciler.secretfile).
"""

from __future__ import annotations

from pathlib import Path

from reconciler.config import MatrixConfig
from reconciler.errors import ReconcilerError
from reconciler.notify.matrix import MatrixClient
from reconciler.secretfile import SecretFileError, read_secret


class TokenError(ReconcilerError):
    """The token file cannot be used; the message names it, never its content."""


def read_token(file: Path) -> str:
    try:
        token = read_secret(file).strip()
    except SecretFileError as exc:
        raise TokenError(f"[notify.matrix] token_file {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise TokenError(f"[notify.matrix] token_file {file} holds no access token (one line)")
    return token


def client(config: MatrixConfig, timeout_s: float, token: str | None = None) -> MatrixClient:
    """A client of the configured homeserver, with `token` or the token file read now."""
    token = read_token(config.token_file) if token is None else token
    return MatrixClient(config.homeserver, token, ca_file=config.ca_file, timeout_s=timeout_s)
