"""Carry out a plan against one cluster: apply, delete, wait and retry.

The plan decided what to write; this module sends it, in the plan's order, and
turns what the cluster answered into one Outcome per action. Which writes are
held back is decided by the pure rules in reconciler.guards.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from reconciler.cluster import (
    ClusterClient,
    ClusterError,
    Conflict,
    NotFound,
    UnknownKind,
    Unreachable,
)
from reconciler.errors import ReconcilerError
from reconciler.guards import without_write
from reconciler.logs import Logger
from reconciler.model import CRD, GroupKind, ObjectRef, Result
from reconciler.plan import Action, ActionKind, DeletePolicy, Plan
from reconciler.report import Outcome

# Field managers whose writes are manual edits: the reconciler takes their fields back.
TAKEOVER_MANAGERS = re.compile(r"^(kubectl(-.+)?|before-first-apply)$")
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')
_RETRIES = (0.5, 1.0, 2.0)
# How long a kind whose CRD was applied moments ago may take to be served.
_CRD_SETTLE_S = 10.0
_HOOK_DELETE_S = 30.0

T = TypeVar("T")
# Told of each applied object with what the cluster made of it.
Applied = Callable[[Action, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Executed:
    """Each action of a plan with its outcome, and why the cluster stopped answering."""

    steps: tuple[tuple[Action, Outcome], ...]
    unreachable: str | None

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return tuple(outcome for _, outcome in self.steps)


class Executor:
    """Carries out plans on one cluster through its client."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        live: Callable[[ObjectRef], Mapping[str, Any] | None],
        applied: Applied,
        contain: Callable[[ObjectRef, BaseException], str],
        progress: Callable[[float], None],
        log: Logger,
    ) -> None:
        self.client = client
        self.live = live
        self.applied = applied
        self.contain = contain
        self.progress = progress
        self.log = log

    def run(
        self,
        the_plan: Plan,
        broken: Mapping[ObjectRef, str],
        held: Mapping[ObjectRef, str],
        *,
        dry_run: bool = False,
    ) -> Executed:
        """Carry out the plan in order; objects in `broken` (ref -> why) fail alone and
        those in `held` (ref -> why) are not written this time. A `dry_run` writes
        nothing and says what each write would be."""
        steps: list[tuple[Action, Outcome]] = []
        failed_apps: set[str] = set()
        # Kinds whose CRD this reconcile applied: they may take a moment to be served.
        new_kinds: set[GroupKind] = set()
        unreachable: str | None = None
        for action in the_plan.actions:
            self.progress(0.0)
            outcome = without_write(
                action,
                broken=broken,
                unreachable=unreachable,
                held=held,
                failed_apps=failed_apps,
                dry_run=dry_run,
            )
            wrote = outcome is None
            if outcome is None:
                settle = GroupKind(action.ref.group, action.ref.kind) in new_kinds
                try:
                    outcome = self._write(action, settle)
                except Unreachable as exc:
                    unreachable = str(exc)
                    outcome = Outcome(action.app, action.ref, Result.FAILED, unreachable)
            if outcome.result is Result.FAILED:
                failed_apps.add(action.app)
            elif wrote and action.manifest is not None and _is_crd(action.ref):
                new_kinds.add(defined_kind(action.manifest.obj))
            steps.append((action, outcome))
            self._log(outcome)
        return Executed(tuple(steps), unreachable)

    def _log(self, outcome: Outcome) -> None:
        # Unchanged objects are the steady state: logging each would flood the journal.
        log = {Result.FAILED: self.log.warning, Result.UNCHANGED: self.log.debug}.get(
            outcome.result, self.log.info
        )
        log(
            "object",
            app=outcome.app,
            object=str(outcome.ref),
            result=outcome.result.value,
            **({"reason": outcome.message} if outcome.message else {}),
        )

    def _write(self, action: Action, settle: bool) -> Outcome:
        try:
            if action.kind is ActionKind.PRUNE:
                uid = (self.live(action.ref) or {}).get("metadata", {}).get("uid")
                with contextlib.suppress(NotFound):  # gone already: pruned all the same
                    retrying(lambda: self.client.delete(action.ref, uid=uid))
                return Outcome(action.app, action.ref, Result.PRUNED)
            assert action.manifest is not None, "a create, update or hook carries a manifest"
            if action.kind is ActionKind.HOOK and DeletePolicy.BEFORE_HOOK_CREATION in (
                action.delete_policies
            ):
                self._delete_if_present(action.ref)
            self.applied(action, self._apply(action.manifest.obj, _CRD_SETTLE_S if settle else 0))
            result = Result.CREATED if action.kind is not ActionKind.UPDATE else Result.CONFIGURED
            return Outcome(action.app, action.ref, result, action.reason)
        except Unreachable:
            raise
        except NotFound as exc:
            # An apply creates what is missing, so a 404 means its namespace is missing.
            where = (
                f"; does namespace {action.ref.namespace} exist?" if action.ref.namespace else ""
            )
            return Outcome(action.app, action.ref, Result.FAILED, f"{exc}{where}")
        except ReconcilerError as exc:
            return Outcome(action.app, action.ref, Result.FAILED, str(exc))
        except Exception as exc:  # a bug met by one object stays with that object
            return Outcome(action.app, action.ref, Result.FAILED, self.contain(action.ref, exc))

    def _apply(self, obj: Mapping[str, Any], settle: float) -> dict[str, Any]:
        """Server-side apply; fields last written by hand (kubectl edit, client-side
        apply) are taken back, while a conflict with another controller is reported."""
        deadline = time.monotonic() + settle
        while True:
            try:
                try:
                    return retrying(lambda: self.client.apply(obj))
                except Conflict as conflict:
                    managers = set(_CONFLICT_MANAGER.findall(" ".join(conflict.fields)))
                    if not managers or not all(TAKEOVER_MANAGERS.match(m) for m in managers):
                        raise
                    return retrying(lambda: self.client.apply(obj, force=True))
            except UnknownKind:
                # A CRD applied moments ago takes a little while to be served.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _delete_if_present(self, ref: ObjectRef) -> None:
        """Delete a hook's previous run and wait until it is gone, so the new one is
        created rather than applied onto an object being deleted."""
        deadline = time.monotonic() + _HOOK_DELETE_S
        try:
            retrying(lambda: self.client.delete(ref, propagation="Foreground"))
            while time.monotonic() < deadline:
                self.client.get(ref)
                time.sleep(0.25)
        except NotFound:
            return
        raise ClusterError(
            self.client.name, f"{ref}: the previous hook run is still being deleted", ref
        )


def retrying(call: Callable[[], T]) -> T:
    """`call`, retried with backoff while the cluster reports a transient failure."""
    for pause in _RETRIES:
        try:
            return call()
        except ClusterError as exc:
            if not exc.transient:
                raise
            time.sleep(pause)
    return call()


def defined_kind(crd: Mapping[str, Any]) -> GroupKind:
    """The kind a CustomResourceDefinition defines."""
    spec = crd.get("spec") or {}
    return GroupKind(str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", "")))


def _is_crd(ref: ObjectRef) -> bool:
    return GroupKind(ref.group, ref.kind) == CRD
