"""Loaded policies applied to objects and clusters. Pure: data in, answers out.

Each question the pipeline asks of policy has one method here: which
violations objects raise (reported like drift, under the policy's name), which
ignore rules apply on a cluster, whether a live object may be pruned, and
whether a cluster is forced into report mode. Where an expression fails on an
object the answer is the safe one: a violation is reported, an object stays
protected, a cluster stays report-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cel

from reconciler.config import ClusterConfig
from reconciler.diff.ignore import IgnoreRule
from reconciler.model import Manifest, ObjectRef, Violation, object_ref
from reconciler.policy.definitions import (
    ClusterModePolicy,
    IgnorePolicy,
    Match,
    Policy,
    PruneAllowance,
    PruneProtection,
    ValidatingPolicy,
    Validation,
)
from reconciler.policy.expressions import ExpressionError, new_context, run, run_bool
from reconciler.policy.load import PolicyError, load_policy_files
from reconciler.urls import normalise_server


def load_policies(directory: Path, clusters: Sequence[ClusterConfig]) -> Policies:
    """Load and validate `directory` for the configured `clusters`; raises PolicyError
    listing every problem."""
    policies = Policies(load_policy_files(directory, [c.name for c in clusters]), clusters)
    problems = policies.check_cluster_modes()
    if problems:
        raise PolicyError(problems)
    return policies


class _Scope:
    """The CEL variables of one evaluation. `variables` (a policy's own, as in
    ValidatingAdmissionPolicy) is replaced per policy without rebuilding the
    context, which would convert the object again."""

    def __init__(
        self, values: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.variables: dict[str, Any] = {}
        self.context = new_context(values, functions)
        self.context.set_variable_resolver(self._resolve)

    def _resolve(self, name: str) -> Any:
        return self.variables if name == "variables" else None

    def conditions_hold(self, match: Match) -> bool:
        """Whether every matchCondition is true; raises ExpressionError naming the failed one."""
        for condition in match.conditions:
            try:
                if not run_bool(condition.expression, self.context):
                    return False
            except ExpressionError as exc:
                raise ExpressionError(f"matchConditions {condition.name}: {exc}") from None
        return True


class Policies:
    """The validated policies of one configuration."""

    def __init__(self, policies: Iterable[Policy], clusters: Sequence[ClusterConfig]) -> None:
        listed = list(policies)
        self.validating = [p for p in listed if isinstance(p, ValidatingPolicy)]
        self.ignoring = [p for p in listed if isinstance(p, IgnorePolicy)]
        self.protections = [p for p in listed if isinstance(p, PruneProtection)]
        self.allowances = [p for p in listed if isinstance(p, PruneAllowance)]
        self.cluster_modes = [p for p in listed if isinstance(p, ClusterModePolicy)]
        self._clusters = {c.name: _cluster_value(c) for c in clusters}
        servers = {normalise_server(s): c.name for c in clusters for s in c.servers}
        self._functions: Mapping[str, Callable[..., Any]] = {
            # Argo CD names a destination by API URL; '' when no configured cluster has it.
            "clusterForServer": lambda url: servers.get(normalise_server(str(url)), ""),
        }

    # --- violations ---

    def evaluate(
        self,
        cluster: str,
        desired: Iterable[Manifest] = (),
        live: Iterable[Mapping[str, Any]] = (),
    ) -> list[Violation]:
        """Every violation by `cluster`'s desired manifests and live objects."""
        violations: list[Violation] = []
        for source, ref, obj, app in _inputs(desired, live):
            selected = [p for p in self.validating if p.match.selects(cluster, ref, source)]
            if not selected:
                continue
            scope = self._scope(cluster, obj, source, app)
            for policy in selected:
                for message in _validate(policy, scope):
                    name = app["name"] if app else None
                    violations.append(Violation(policy.name, cluster, ref, name, message, source))
        return violations

    # --- diff, prune, mode ---

    def ignore_rules(self, cluster: str) -> list[IgnoreRule]:
        return [rule for p in self.ignoring if p.match.covers(cluster) for rule in p.rules]

    def prune_protected(self, cluster: str, obj: Mapping[str, Any]) -> str | None:
        """Why the live object `obj` must not be pruned, or None when it may be."""
        ref = object_ref(obj)
        scope: _Scope | None = None
        reason = None
        for protection in self.protections:
            if not protection.match.selects(cluster, ref):
                continue
            scope = scope or self._scope(cluster, obj, "live", None)
            try:
                held = scope.conditions_hold(protection.match)
            except ExpressionError as exc:
                reason = f"policy {protection.name} could not be evaluated ({exc})"
                break
            if held:
                reason = f"{protection.reason} (policy {protection.name})"
                break
        if reason is None:
            return None
        for allowance in self.allowances:
            if not allowance.match.selects(cluster, ref):
                continue
            scope = scope or self._scope(cluster, obj, "live", None)
            try:
                if scope.conditions_hold(allowance.match):
                    return None
            except ExpressionError:
                continue  # an allowance that cannot be evaluated allows nothing
        return reason

    def forced_report_mode(self, cluster: ClusterConfig) -> bool:
        """Whether `cluster` must only be reported on, whatever its configured mode.

        A cluster with Argo CD always is (invariant 2), even if the policy saying
        so were removed; policies can add report-only clusters, never remove one."""
        if cluster.argocd:
            return True
        values = {"cluster": _cluster_value(cluster), "clusters": self._clusters}
        scope = _Scope(values, self._functions)
        for policy in self.cluster_modes:
            try:
                if run_bool(policy.report_only, scope.context):
                    return True
            except ExpressionError:
                return True
        return False

    def check_cluster_modes(self) -> list[str]:
        """Problems of ClusterMode expressions on the configured clusters, found at load
        rather than when a cluster is first reconciled."""
        problems = []
        for policy in self.cluster_modes:
            for cluster in self._clusters.values():
                scope = _Scope({"cluster": cluster, "clusters": self._clusters}, self._functions)
                try:
                    run_bool(policy.report_only, scope.context)
                except ExpressionError as exc:
                    problems.append(
                        f"{policy.file}: policy {policy.name}: spec.reportOnly: "
                        f"fails on cluster {cluster['name']}: {exc}"
                    )
        return problems

    def _scope(
        self, cluster: str, obj: Mapping[str, Any], source: str, app: Mapping[str, str] | None
    ) -> _Scope:
        values = {
            "object": obj,
            "cluster": self._clusters[cluster],
            "clusters": self._clusters,
            "source": source,
            "app": app,
        }
        return _Scope(values, self._functions)


def _inputs(
    desired: Iterable[Manifest], live: Iterable[Mapping[str, Any]]
) -> Iterator[tuple[str, ObjectRef, Mapping[str, Any], Mapping[str, str] | None]]:
    for manifest in desired:
        origin = manifest.origin
        app = {"name": origin.app, "repo": origin.repo, "path": origin.path}
        yield "desired", manifest.ref, manifest.obj, app
    for obj in live:
        yield "live", object_ref(obj), obj, None


def _validate(policy: ValidatingPolicy, scope: _Scope) -> list[str]:
    """The messages of the policy's failed validations on the scope's object."""
    scope.variables = {}
    try:
        if not scope.conditions_hold(policy.match):
            return []
        for variable in policy.variables:
            try:
                scope.variables[variable.name] = run(variable.expression, scope.context)
            except ExpressionError as exc:
                raise ExpressionError(f"variables.{variable.name}: {exc}") from None
    except ExpressionError as exc:
        return [f"could not be evaluated: {exc}"]
    messages = []
    for number, validation in enumerate(policy.validations):
        try:
            passed = run_bool(validation.expression, scope.context)
        except ExpressionError as exc:
            messages.append(f"could not be evaluated: validations[{number}]: {exc}")
            continue
        if not passed:
            messages.append(_message(validation, scope.context))
    return messages


def _message(validation: Validation, context: cel.Context) -> str:
    """As in ValidatingAdmissionPolicy: messageExpression, else message, else the
    expression that failed."""
    if validation.message_expression is not None:
        try:
            text = run(validation.message_expression, context)
        except ExpressionError:
            text = None
        if isinstance(text, str) and text.strip():
            return text.strip()
    return validation.message or f"failed expression: {validation.expression.text}"


def _cluster_value(cluster: ClusterConfig) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "mode": cluster.mode,
        "argocd": cluster.argocd,
        "network": str(cluster.network) if cluster.network else None,
        "servers": [normalise_server(s) for s in cluster.servers],
    }
