"""The loaded, validated form of each kind of policy in `policies/`.

Every kind shares one selector, shaped like a ValidatingAdmissionPolicy's
`matchConstraints` plus `matchConditions`, so "which objects does this policy
concern" reads the same in every file and is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.diff.ignore import IgnoreRule
from reconciler.model import ObjectRef
from reconciler.policy.expressions import Expression

ANY = "*"
SOURCES = ("desired", "live")


@dataclass(frozen=True)
class ResourceRule:
    """Objects by group and kind, optionally narrowed to namespaces and names.
    `*` in a list matches anything; empty namespaces or names match any."""

    groups: frozenset[str]
    kinds: frozenset[str]
    namespaces: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()

    def matches(self, ref: ObjectRef) -> bool:
        return (
            _listed(self.groups, ref.group)
            and _listed(self.kinds, ref.kind)
            and (not self.namespaces or _listed(self.namespaces, ref.namespace))
            and (not self.names or _listed(self.names, ref.name))
        )


def _listed(values: frozenset[str], value: str) -> bool:
    return ANY in values or value in values


@dataclass(frozen=True)
class Condition:
    name: str
    expression: Expression


@dataclass(frozen=True)
class Match:
    """Empty `clusters` or `rules` match every cluster or object; `conditions` are
    CEL expressions that must all be true."""

    clusters: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset(SOURCES)
    rules: tuple[ResourceRule, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def covers(self, cluster: str) -> bool:
        return not self.clusters or cluster in self.clusters

    def selects(self, cluster: str, ref: ObjectRef, source: str = "live") -> bool:
        """Whether the static part selects the object; `conditions` are left to the caller."""
        return (
            self.covers(cluster)
            and source in self.sources
            and (not self.rules or any(rule.matches(ref) for rule in self.rules))
        )


@dataclass(frozen=True)
class Variable:
    name: str
    expression: Expression


@dataclass(frozen=True)
class Validation:
    expression: Expression
    message: str | None = None
    message_expression: Expression | None = None


@dataclass(frozen=True)
class ValidatingPolicy:
    name: str
    file: Path
    match: Match
    variables: tuple[Variable, ...]
    validations: tuple[Validation, ...]


@dataclass(frozen=True)
class IgnorePolicy:
    name: str
    file: Path
    match: Match
    rules: tuple[IgnoreRule, ...]


@dataclass(frozen=True)
class PruneProtection:
    name: str
    file: Path
    match: Match
    reason: str


@dataclass(frozen=True)
class PruneAllowance:
    name: str
    file: Path
    match: Match


@dataclass(frozen=True)
class ClusterModePolicy:
    name: str
    file: Path
    report_only: Expression


Policy = ValidatingPolicy | IgnorePolicy | PruneProtection | PruneAllowance | ClusterModePolicy
