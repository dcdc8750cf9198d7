"""What one reconcile (or drift check) of one cluster found and did.

The result types live apart from the engine that fills them, so the CLI, the
status view and the daemon read a report without importing the machinery that
made it.
"""

from __future__ import annotations

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

    @property
    def counts(self) -> Counter[Result]:
        return Counter(o.result for o in self.outcomes)

    @property
    def result(self) -> str:
        """converged | drift | failed: the run's one-word summary."""
        if self.errors or self.counts[Result.FAILED]:
            return "failed"
        return "drift" if self.drifts else "converged"
