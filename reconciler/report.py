"""What one reconcile (or drift check) of one cluster found and did.

The result types live apart from the engine that fills them, so the CLI, the
status view and the daemon read a report without importing the machinery that
made it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.model import Drift, GroupKind, Mode, ObjectRef, Result, Violation


@dataclass(frozen=True)
class ObjectError:
    """A problem with one object (or one app, `ref` None); the rest carries on."""

    app: str
    ref: ObjectRef | None
    message: str

    def __str__(self) -> str:
        return f"app {self.app}: {self.ref}: {self.message}" if self.ref else self.message


@dataclass(frozen=True)
class ArgoStatus:
    """What Argo CD itself says of one of its Applications."""

    sync: str | None
    health: str | None


class FindingKind(enum.Enum):
    """What needs a person's attention in an app, beyond its drift and its errors."""

    # Drift the app's syncPolicy does not let the reconciler apply on its own.
    OUT_OF_SYNC = "out-of-sync"
    # A prune held back by the guard: confirmed with `reconciler sync --app A --prune`.
    PRUNE_BLOCKED = "prune-blocked"
    # Left by an Application removed from git without Argo CD's resources finalizer.
    ORPHANED = "orphaned"
    # One object rendered by two apps (Argo CD's SharedResourceWarning): neither applies it.
    SHARED = "shared"
    # A desired object that breaks a policy: not applied.
    VIOLATION = "violation"
    # A hook that failed or a wave that did not become healthy in time.
    HOOK = "hook"
    WAVE = "wave"


# Findings that mean an app's sync stopped before its end: the run failed.
STOPPED_SYNC = frozenset({FindingKind.HOOK, FindingKind.WAVE})


@dataclass(frozen=True)
class Finding:
    """One thing a person should know about an app (`ref` None: the app as a whole).
    Messages are redacted like the rest of a report: safe to log, store and print."""

    app: str
    kind: FindingKind
    ref: ObjectRef | None
    message: str

    def __str__(self) -> str:
        where = f" {self.ref}" if self.ref else ""
        return f"app {self.app}{where}: {self.kind.value}: {self.message}"


@dataclass(frozen=True)
class Outcome:
    """What happened to one object, in the one result vocabulary."""

    app: str
    ref: ObjectRef
    result: Result
    message: str = ""


@dataclass(frozen=True)
class Report:
    """One cluster's reconcile (or drift check), for the CLI, store, logs and metrics."""

    cluster: str
    mode: Mode
    drifts: tuple[tuple[str, Drift], ...]
    violations: tuple[Violation, ...]
    errors: tuple[ObjectError, ...]
    argocd: Mapping[str, ArgoStatus] = field(default_factory=dict)
    outcomes: tuple[Outcome, ...] = ()
    notes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    duration_s: float = 0.0
    unreachable: str | None = None  # why the cluster stopped answering mid-apply
    # Kinds whose live state was unknown (cannot be listed), with why: their work waits.
    unlisted: Mapping[GroupKind, str] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    # The apps this run covered, those sharing an object with the ones asked for
    # included (engine.entangled); None: the whole cluster.
    scope: frozenset[str] | None = None

    @property
    def counts(self) -> Counter[Result]:
        return Counter(o.result for o in self.outcomes)

    @property
    def result(self) -> str:
        """converged | drift | failed: the run's one-word summary."""
        if self.errors or self.counts[Result.FAILED]:
            return "failed"
        if any(f.kind in STOPPED_SYNC for f in self.findings):
            return "failed"
        return "drift" if self.drifts else "converged"
