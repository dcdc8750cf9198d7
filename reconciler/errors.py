"""One exception hierarchy, so callers can catch reconciler failures without
catching programming errors, and every message names the file, key, app or
object it is about (never the content of a document, which may be secret)."""

from __future__ import annotations

import traceback
from pathlib import Path


class ReconcilerError(Exception):
    """Base of every error the reconciler expects and reports."""


class ConfigError(ReconcilerError):
    """The configuration is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SourceError(ReconcilerError):
    """A repository cannot be read: missing, corrupt, unknown ref, failed fetch."""


class TreeError(ReconcilerError):
    """A path inside a committed tree cannot be used (missing, too large, unsafe symlink)."""


class RenderError(ReconcilerError):
    """One app could not be turned into manifests; the others are unaffected."""


def internal_error(exc: BaseException) -> str:
    """A bug met by odd input, described without its message (which may quote the
    input): the exception type and the innermost reconciler frame."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/reconciler/" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"internal error ({type(exc).__name__}{where})"
