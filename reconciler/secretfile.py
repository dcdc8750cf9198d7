"""Files that hold a secret (a chart registry password, the Matrix access token).

One rule for all of them, as ssh has for a private key: the file is readable by
its owner only, or it is not used. `reconciler check` reports a file that breaks
it, and the parts that read one at run time refuse it, with the same words.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


class SecretFileError(ReconcilerError):
    """A secret's file cannot be used; the message says why, never what it holds."""


def exposed(file: Path) -> str | None:
    """Why `file` may not hold a secret (others may read it), or None. Raises OSError
    when it cannot be looked at."""
    mode = file.stat().st_mode
    if mode & 0o077:
        return (
            f"readable by others (mode {mode & 0o777:o}); "
            "make it readable by its owner only (chmod 600)"
        )
    return None


def read_secret(file: Path) -> str:
    """The text of `file`, once it is found readable by its owner only."""
    try:
        why = exposed(file)
        if why is not None:
            raise SecretFileError(f"{file} is {why}")
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SecretFileError(f"{file} cannot be read ({reason})") from None
