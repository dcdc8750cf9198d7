"""One exception hierarchy, so callers can catch reconciler failures without
catching programming errors, and every message names the file, key, app or
object it is about (never the content of a document, which may be secret)."""

from __future__ import annotations


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
