"""policies/*.yaml -> validated policy definitions, every problem reported at once.

Policies are configuration: the daemon refuses to start on a bad one, and the
operator gets every problem in one pass, each naming the file, the policy and
the key (`spec.validations[0].expression`), never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from reconciler.diff.ignore import IgnoreRule, parse_ignore_rules
from reconciler.documents import parse_documents
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.policy.definitions import (
    ANY,
    SOURCES,
    ClusterModePolicy,
    Condition,
    IgnorePolicy,
    Match,
    Policy,
    PruneAllowance,
    PruneProtection,
    ResourceRule,
    ValidatingPolicy,
    Validation,
    Variable,
)
from reconciler.policy.expressions import Expression, ExpressionError, compile_expression

API_VERSION = "reconciler.kernow.io/v1alpha1"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PolicyError(ConfigError):
    """The policies are invalid; carries every problem found, like ConfigError."""


def load_policy_files(directory: Path, clusters: Collection[str]) -> list[Policy]:
    """Every policy in the *.yaml / *.yml files of `directory` (not recursive).
    `clusters` are the configured cluster names, which policies may name."""
    problems: list[str] = []
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory of policies"])
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise PolicyError([f"{directory}: no policy files (*.yaml)"])
    policies: list[Policy] = []
    seen: dict[str, Path] = {}
    for file in files:
        for policy in _read_file(file, frozenset(clusters), problems):
            if policy.name in seen:
                problems.append(
                    f"{file}: policy {policy.name}: metadata.name: expected a unique name; "
                    f"also used in {seen[policy.name]}"
                )
                continue
            seen[policy.name] = file
            policies.append(policy)
    if problems:
        raise PolicyError(problems)
    return policies


def _read_file(file: Path, clusters: frozenset[str], problems: list[str]) -> list[Policy]:
    try:
        documents = parse_documents(file.read_bytes(), str(file))
    except OSError as exc:
        problems.append(f"{file}: cannot read: {exc.strerror}")
        return []
    except ReconcilerError as exc:
        problems.append(str(exc))
        return []
    policies = []
    for number, document in enumerate(documents, start=1):
        reader = _Reader(file, f"document {number}", clusters)
        policy = reader.policy(document)
        problems.extend(reader.problems)
        if policy is not None and not reader.problems:
            policies.append(policy)
    return policies


class _Reader:
    """Reads one policy document, collecting problems instead of stopping at the first."""

    def __init__(self, file: Path, label: str, clusters: frozenset[str]) -> None:
        self.file = file
        self.label = label
        self.clusters = clusters
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.file}: {self.label}: {key}: {text}")

    def policy(self, document: Any) -> Policy | None:
        doc = self.mapping(document, "(document)", {"apiVersion", "kind", "metadata", "spec"})
        if doc is None:
            return None
        metadata = self.mapping(doc.get("metadata"), "metadata", {"name", "labels", "annotations"})
        name = metadata.get("name") if metadata is not None else None
        if isinstance(name, str) and _NAME.match(name):
            self.label = f"policy {name}"
        else:
            if metadata is not None:
                self.problem(
                    "metadata.name",
                    f"expected a lower-case DNS name such as 'mcp-on-agentic', got {_show(name)}",
                )
            name = None
        if doc.get("apiVersion") != API_VERSION:
            self.problem(
                "apiVersion", f"expected {API_VERSION!r}, got {_show(doc.get('apiVersion'))}"
            )
        kind = doc.get("kind")
        if not isinstance(kind, str) or kind not in _KINDS:
            self.problem("kind", f"expected one of {sorted(_KINDS)}, got {_show(kind)}")
            return None
        spec = self.mapping(doc.get("spec"), "spec", _SPEC_KEYS[kind])
        if spec is None or name is None:
            return None
        return _KINDS[kind](self, name, spec)

    # --- kinds ---

    def validating(self, name: str, spec: Mapping[str, Any]) -> ValidatingPolicy:
        match = self.match(spec, {"clusters", "sources", "resourceRules"}, rules_required=True)
        variables = tuple(
            Variable(n, e) for n, e in self.named(spec, "variables", identifiers=True)
        )
        validations = []
        entries = self.entries(spec, "validations", required=True)
        for key, entry in entries:
            validation = self.mapping(entry, key, {"expression", "message", "messageExpression"})
            if validation is None:
                continue
            expression = self.expression(validation, key, "expression", required=True)
            message = validation.get("message")
            if message is not None and not (isinstance(message, str) and message.strip()):
                self.problem(f"{key}.message", "expected a non-empty string")
                message = None
            message_expression = self.expression(validation, key, "messageExpression")
            if expression is not None:
                validations.append(Validation(expression, message, message_expression))
        return ValidatingPolicy(name, self.file, match, variables, tuple(validations))

    def ignore(self, name: str, spec: Mapping[str, Any]) -> IgnorePolicy:
        match = self.match(spec, {"clusters"}, conditions=False)
        entries = [entry for _, entry in self.entries(spec, "ignoreDifferences", required=True)]
        rules: tuple[IgnoreRule, ...] = ()
        if all(isinstance(entry, dict) for entry in entries):
            try:
                # The shared parser names the entry: "spec: ignoreDifferences entry 2: ...".
                rules = parse_ignore_rules(entries, f"{self.file}: {self.label}: spec")
            except ReconcilerError as exc:
                self.problems.append(str(exc))
        else:
            self.problem("spec.ignoreDifferences", "expected a list of mappings")
        return IgnorePolicy(name, self.file, match, rules)

    def protection(self, name: str, spec: Mapping[str, Any]) -> PruneProtection:
        match = self.match(spec, {"clusters", "resourceRules"})
        reason = spec.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            self.problem("spec.reason", "expected a non-empty string saying why it is protected")
            reason = ""
        return PruneProtection(name, self.file, match, reason.strip())

    def allowance(self, name: str, spec: Mapping[str, Any]) -> PruneAllowance:
        match = self.match(spec, {"clusters", "resourceRules"}, rules_required=True)
        # An allowance lifts a safety net, so it must say exactly where and for what.
        if not match.clusters:
            self.problem("spec.matchConstraints.clusters", "required: the clusters it applies to")
        for i, rule in enumerate(match.rules):
            if ANY in rule.kinds:
                self.problem(
                    f"spec.matchConstraints.resourceRules[{i}].kinds",
                    "expected the kinds it allows to be pruned, not '*'",
                )
        return PruneAllowance(name, self.file, match)

    def cluster_mode(self, name: str, spec: Mapping[str, Any]) -> ClusterModePolicy | None:
        expression = self.expression(spec, "spec", "reportOnly", required=True)
        return None if expression is None else ClusterModePolicy(name, self.file, expression)

    # --- shared parts ---

    def match(
        self,
        spec: Mapping[str, Any],
        allowed: set[str],
        rules_required: bool = False,
        conditions: bool = True,
    ) -> Match:
        key = "spec.matchConstraints"
        raw = spec.get("matchConstraints")
        if raw is None and not rules_required:
            raw = {}
        constraints = self.mapping(raw, key, allowed) or {}
        clusters = self.strings(constraints, key, "clusters")
        for cluster in clusters:
            if cluster not in self.clusters:
                self.problem(
                    f"{key}.clusters",
                    f"expected configured cluster names {sorted(self.clusters)}, got {cluster!r}",
                )
        sources = self.strings(constraints, key, "sources") if "sources" in constraints else SOURCES
        for source in sources:
            if source not in SOURCES:
                self.problem(f"{key}.sources", f"expected {list(SOURCES)}, got {source!r}")
        rules = []
        for rule_key, entry in self.entries(constraints, "resourceRules", rules_required, key):
            rule = self.mapping(entry, rule_key, {"groups", "kinds", "namespaces", "names"})
            if rule is None:
                continue
            groups = self.strings(rule, rule_key, "groups", required=True, empty_ok=True)
            kinds = self.strings(rule, rule_key, "kinds", required=True)
            rules.append(
                ResourceRule(
                    frozenset(groups),
                    frozenset(kinds),
                    frozenset(self.strings(rule, rule_key, "namespaces")),
                    frozenset(self.strings(rule, rule_key, "names")),
                )
            )
        named = self.named(spec, "matchConditions") if conditions else []
        return Match(
            frozenset(clusters),
            frozenset(sources),
            tuple(rules),
            tuple(Condition(n, e) for n, e in named),
        )

    def named(
        self, spec: Mapping[str, Any], list_key: str, identifiers: bool = False
    ) -> list[tuple[str, Expression]]:
        out: list[tuple[str, Expression]] = []
        for key, entry in self.entries(spec, list_key):
            item = self.mapping(entry, key, {"name", "expression"})
            if item is None:
                continue
            name = item.get("name")
            pattern = _IDENTIFIER if identifiers else _NAME
            if not isinstance(name, str) or not pattern.match(name):
                what = "an identifier (letters, digits, '_')" if identifiers else "a DNS name"
                self.problem(f"{key}.name", f"expected {what}, got {_show(name)}")
                continue
            if name in {n for n, _ in out}:
                self.problem(f"{key}.name", f"expected a unique name; {name!r} is used twice")
            expression = self.expression(item, key, "expression", required=True)
            if expression is not None:
                out.append((name, expression))
        return out

    def entries(
        self, table: Mapping[str, Any], key: str, required: bool = False, prefix: str = "spec"
    ) -> list[tuple[str, Any]]:
        value = table.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list) or (required and not value):
            self.problem(f"{prefix}.{key}", "expected a non-empty list")
            return []
        return [(f"{prefix}.{key}[{i}]", v) for i, v in enumerate(value)]

    def mapping(self, value: Any, key: str, allowed: set[str]) -> Mapping[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(key, f"expected a mapping, got {_show(value)}")
            return None
        for unknown in sorted(set(value) - allowed, key=str):
            self.problem(f"{key}.{unknown}", f"unknown key; expected one of {sorted(allowed)}")
        return value

    def strings(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        required: bool = False,
        empty_ok: bool = False,
    ) -> tuple[str, ...]:
        if key not in table:
            if required:
                self.problem(f"{prefix}.{key}", "required: a list of strings ('*' for any)")
            return ()
        value = table[key]
        ok = (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(v, str) and (v or empty_ok) for v in value)
        )
        if not ok:
            self.problem(
                f"{prefix}.{key}", f"expected a non-empty list of strings, got {_show(value)}"
            )
            return ()
        return tuple(value)

    def expression(
        self, table: Mapping[str, Any], prefix: str, key: str, required: bool = False
    ) -> Expression | None:
        if key not in table:
            if required:
                self.problem(f"{prefix}.{key}", "required: a CEL expression")
            return None
        text = table[key]
        if not isinstance(text, str) or not text.strip():
            self.problem(f"{prefix}.{key}", f"expected a CEL expression, got {_show(text)}")
            return None
        try:
            return compile_expression(text.strip())
        except ExpressionError as exc:
            self.problem(f"{prefix}.{key}", str(exc))
            return None


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else "a long string"
    if isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


_KINDS: Mapping[str, Callable[[_Reader, str, Mapping[str, Any]], Policy | None]] = {
    "ValidatingPolicy": _Reader.validating,
    "IgnoreDifferences": _Reader.ignore,
    "PruneProtection": _Reader.protection,
    "PruneAllowance": _Reader.allowance,
    "ClusterMode": _Reader.cluster_mode,
}
_SPEC_KEYS: Mapping[str, set[str]] = {
    "ValidatingPolicy": {"matchConstraints", "matchConditions", "variables", "validations"},
    "IgnoreDifferences": {"matchConstraints", "ignoreDifferences"},
    "PruneProtection": {"matchConstraints", "matchConditions", "reason"},
    "PruneAllowance": {"matchConstraints", "matchConditions"},
    "ClusterMode": {"reportOnly"},
}
