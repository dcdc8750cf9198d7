"""Carry out a plan against one cluster: apply, delete, wait and retry.

The plan decided what to write; this module sends it and turns what the cluster
answered into one Outcome per action. Each app syncs as Argo CD syncs it, step
by step (reconciler.waves decides the steps and when a wait is over): a step
starts once what the app applied before is healthy and its hooks completed, a
failure stops the app and runs its SyncFail hooks, and hook delete policies are
carried out at the end. Apps wait side by side, so one slow app never delays
another. Which writes are held back is decided by the pure rules in
reconciler.guards.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.cluster import (
    ClusterClient,
    ClusterError,
    Conflict,
    NotFound,
    UnknownKind,
    Unreachable,
    retrying,
)
from reconciler.errors import ReconcilerError
from reconciler.guards import without_write
from reconciler.logs import Logger
from reconciler.model import CRD, TRACKING_LABEL, GroupKind, ObjectRef, Result
from reconciler.plan import WAITING, Action, ActionKind, DeletePolicy, Phase, Plan
from reconciler.report import Finding, FindingKind, Outcome
from reconciler.waves import Awaited, Bounds, HookState, Step, Verdict, cut, hook_state, judge, seen

# Field managers whose writes are manual edits: the reconciler takes their fields back.
TAKEOVER_MANAGERS = re.compile(r"^(kubectl(-.+)?|before-first-apply)$")
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')
# How long a kind whose CRD was applied moments ago may take to be served.
_CRD_SETTLE_S = 10.0
_HOOK_DELETE_S = 30.0
# How often a waiting app looks at the live view (kept current by the cache's watches).
_POLL_S = 0.25

# Told of each applied object with what the cluster made of it.
Applied = Callable[[Action, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Executed:
    """Each action of a plan with its outcome, why the cluster stopped answering, and
    what a person must know (a wave that did not become healthy, a hook that failed)."""

    steps: tuple[tuple[Action, Outcome], ...]
    unreachable: str | None
    findings: tuple[Finding, ...] = ()

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return tuple(outcome for _, outcome in self.steps)


@dataclass
class _Run:
    """What one `Executor.run` has done so far."""

    broken: Mapping[ObjectRef, str]
    held: Mapping[ObjectRef, str]
    dry_run: bool
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    failed_apps: set[str] = field(default_factory=set)
    # Kinds whose CRD this reconcile applied: they may take a moment to be served.
    new_kinds: set[GroupKind] = field(default_factory=set)
    # What each app applied so far, as the cluster answered: what its next step waits for.
    applied: dict[str, list[Awaited]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unreachable: str | None = None

    @property
    def waits(self) -> bool:
        # Nothing was written (dry run) or can be seen (cluster gone): nothing to wait for.
        return not self.dry_run and self.unreachable is None


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
        bounds: Bounds | None = None,
    ) -> None:
        self.client = client
        self.live = live
        self.applied = applied
        self.contain = contain
        self.progress = progress
        self.log = log
        self.bounds = bounds or Bounds()

    def run(
        self,
        the_plan: Plan,
        broken: Mapping[ObjectRef, str],
        held: Mapping[ObjectRef, str],
        *,
        dry_run: bool = False,
    ) -> Executed:
        """Carry out the plan; objects in `broken` (ref -> why) fail alone and those in
        `held` (ref -> why) are not written this time. A `dry_run` writes nothing and
        says what each write would be. Outcomes come back in the plan's order."""
        run = _Run(broken, held, dry_run)
        steps = cut(the_plan.actions)
        for action in steps.first:
            self._do(run, action)
        syncs = [
            self._sync(run, app, app_steps, steps.sync_fail.get(app, ()))
            for app, app_steps in steps.steps.items()
        ]
        while syncs:
            syncs = [sync for sync in syncs if next(sync, True) is None]
            if syncs:
                self.progress(4 * _POLL_S)
                time.sleep(_POLL_S)
        for action in the_plan.actions:
            if id(action) not in run.outcomes:  # SyncFail hooks of apps whose sync went well
                run.outcomes[id(action)] = _not_run(action)
        executed = tuple((a, run.outcomes[id(a)]) for a in the_plan.actions)
        return Executed(executed, run.unreachable, tuple(run.findings))

    # -- one app's sync ------------------------------------------------------------

    def _sync(
        self, run: _Run, app: str, steps: Iterable[Step], sync_fail: tuple[Action, ...]
    ) -> Generator[None, None, None]:
        """One app's sync, step by step; yields while it waits, so apps wait together."""
        awaited = run.applied.setdefault(app, [])
        hooks: list[tuple[Action, Awaited]] = []
        pending = list(steps)
        failure: Finding | None = None
        while pending and failure is None:
            step, waited = pending[0], 0.0
            # Prunes wait for nothing, as Argo CD prunes within the waves it applies.
            if step.writes and step.phase is not Phase.PRUNE and awaited and run.waits:
                failure, waited = yield from self._wait(app, step.name, awaited, hooks_only=False)
                if failure is not None:
                    break
            pending.pop(0)
            failure = self._step(run, step, hooks, waited)
        if failure is None and hooks and run.waits:
            failure, _ = yield from self._wait(app, "end of sync", awaited, hooks_only=True)
        if failure is not None:
            run.findings.append(failure)
            why = f"{WAITING}{pending[0].name if pending else 'sync'} not applied: "
            for action in (a for s in pending for a in s.actions):
                self._record(run, action, _skipped(action, why + failure.message))
            if sync_fail:
                ran = len(hooks)
                self._step(run, Step(app, Phase.SYNC_FAIL, 0, sync_fail), hooks, 0.0)
                fail_hooks = [entry for _, entry in hooks[ran:]]
                yield from self._wait(app, Phase.SYNC_FAIL.value, fail_hooks, hooks_only=True)
        self._finish_hooks(run, app, hooks, succeeded=failure is None)

    def _step(
        self, run: _Run, step: Step, hooks: list[tuple[Action, Awaited]], waited: float
    ) -> Finding | None:
        """Apply one step. As in Argo CD, a write the cluster refused (or a hook that
        could not be created) fails the app's sync once the rest of the step is sent;
        an object refused before any write (`broken`: a policy, a render error) fails
        alone, and a cluster gone away leaves the rest for the next reconcile."""
        failure = None
        for action in step.actions:
            outcome, awaited = self._do(run, action)
            hook = action.kind is ActionKind.HOOK
            if hook and awaited is not None:
                hooks.append((action, awaited))
            refused = not hook and action.ref not in run.broken and run.unreachable is None
            if outcome.result is Result.FAILED and (hook or refused):
                kind = FindingKind.HOOK if hook else FindingKind.WAVE
                what = f"{'hook ' if hook else ''}{action.ref} {outcome.message}"
                failure = failure or Finding(step.app, kind, action.ref, what)
        if step.writes:
            self.log.info(
                "sync.step",
                app=step.app,
                phase=step.phase.value,
                wave=step.wave,
                objects=sum(1 for a in step.actions if a.writes),
                waited_s=round(waited, 1),
            )
        return failure

    def _wait(
        self, app: str, before: str, awaited: list[Awaited], hooks_only: bool
    ) -> Generator[None, None, tuple[Finding | None, float]]:
        """Wait until everything `awaited` is ready (only its hooks: `hooks_only`), within
        the bounds; the Finding says why the app's sync stops, if it does."""
        started, told = time.monotonic(), False
        while True:
            judged = judge(awaited, self.live, hooks_only=hooks_only)
            waited = time.monotonic() - started
            if judged.verdict is Verdict.DONE:
                return None, waited
            kind = FindingKind.HOOK if judged.hook else FindingKind.WAVE
            what = f"{'hook ' if judged.hook else ''}{judged.ref} {judged.message}"
            if judged.verdict is Verdict.FAILED:
                return Finding(app, kind, judged.ref, what), waited
            bound = self.bounds.hook_s if judged.hook else self.bounds.wave_s
            if waited >= bound:
                return Finding(app, kind, judged.ref, f"{what} after {bound:g}s"), waited
            if not told:
                self.log.info("sync.waiting", app=app, before=before, on=what)
                told = True
            yield

    def _finish_hooks(
        self, run: _Run, app: str, hooks: Iterable[tuple[Action, Awaited]], succeeded: bool
    ) -> None:
        """Once the app's sync is over (a hook may be needed by a later one until then),
        as Argo CD: a failed hook is reported failed, and completed hooks are deleted
        by HookSucceeded when the sync succeeded, by HookFailed when it failed."""
        policy = DeletePolicy.HOOK_SUCCEEDED if succeeded else DeletePolicy.HOOK_FAILED
        for action, awaited in hooks:
            obj = seen(awaited, self.live(awaited.ref))
            state = hook_state(obj)
            if state is HookState.FAILED:
                message = f"hook {judge([awaited], self.live).message}"
                self._record(run, action, Outcome(app, action.ref, Result.FAILED, message))
            if obj is None or state is HookState.RUNNING or policy not in action.delete_policies:
                continue
            if not _owned(obj, app):
                continue  # created with the label moments ago and changed since: left alone
            try:
                retrying(functools.partial(self.client.delete, awaited.ref, uid=awaited.uid))
                self.log.info("hook.deleted", app=app, object=str(awaited.ref), policy=policy.value)
            except NotFound:
                pass
            except ReconcilerError as exc:
                self.log.warning(
                    "hook.delete_failed", app=app, object=str(awaited.ref), error=str(exc)
                )

    # -- one action ----------------------------------------------------------------

    def _do(self, run: _Run, action: Action) -> tuple[Outcome, Awaited | None]:
        """Carry out one action; what it applied joins its app's awaited objects."""
        self.progress(0.0)
        outcome = without_write(
            action,
            broken=run.broken,
            unreachable=run.unreachable,
            held=run.held,
            failed_apps=run.failed_apps,
            dry_run=run.dry_run,
        )
        answer: Mapping[str, Any] | None = None
        wrote = outcome is None
        if outcome is None:
            settle = GroupKind(action.ref.group, action.ref.kind) in run.new_kinds
            try:
                outcome, answer = self._write(action, settle)
            except Unreachable as exc:
                run.unreachable = str(exc)
                outcome = Outcome(action.app, action.ref, Result.FAILED, run.unreachable)
        if outcome.result is Result.FAILED:
            run.failed_apps.add(action.app)
        elif wrote and action.manifest is not None and _is_crd(action.ref):
            run.new_kinds.add(defined_kind(action.manifest.obj))
        awaited = None
        if _awaits(action, outcome):
            awaited = Awaited.of(action.ref, action.kind is ActionKind.HOOK, answer)
            run.applied.setdefault(action.app, []).append(awaited)
        self._record(run, action, outcome)
        return outcome, awaited

    def _record(self, run: _Run, action: Action, outcome: Outcome) -> None:
        run.outcomes[id(action)] = outcome
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

    def _write(self, action: Action, settle: bool) -> tuple[Outcome, Mapping[str, Any] | None]:
        try:
            if action.kind is ActionKind.PRUNE:
                uid = (self.live(action.ref) or {}).get("metadata", {}).get("uid")
                with contextlib.suppress(NotFound):  # gone already: pruned all the same
                    retrying(
                        lambda: self.client.delete(
                            action.ref, propagation=action.propagation, uid=uid
                        )
                    )
                return Outcome(action.app, action.ref, Result.PRUNED), None
            assert action.manifest is not None, "a create, update or hook carries a manifest"
            if action.kind is ActionKind.HOOK and DeletePolicy.BEFORE_HOOK_CREATION in (
                action.delete_policies
            ):
                self._delete_previous_run(action.ref, action.app)
            answer = self._apply(action.manifest.obj, _CRD_SETTLE_S if settle else 0)
            self.applied(action, answer)
            result = Result.CREATED if action.kind is not ActionKind.UPDATE else Result.CONFIGURED
            return Outcome(action.app, action.ref, result, action.reason), answer
        except Unreachable:
            raise
        except NotFound as exc:
            # An apply creates what is missing, so a 404 means its namespace is missing.
            where = (
                f"; does namespace {action.ref.namespace} exist?" if action.ref.namespace else ""
            )
            return Outcome(action.app, action.ref, Result.FAILED, f"{exc}{where}"), None
        except ReconcilerError as exc:
            return Outcome(action.app, action.ref, Result.FAILED, str(exc)), None
        except Exception as exc:  # a bug met by one object stays with that object
            message = self.contain(action.ref, exc)
            return Outcome(action.app, action.ref, Result.FAILED, message), None

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

    def _delete_previous_run(self, ref: ObjectRef, app: str) -> None:
        """Delete a hook's previous run (BeforeHookCreation) and wait until it is gone, so
        the new one is created rather than applied onto an object being deleted. Only an
        object that carries the app's tracking label is deleted (invariant 4)."""
        deadline = time.monotonic() + _HOOK_DELETE_S
        try:
            previous = self.client.get(ref)
            if not _owned(previous, app):
                raise ClusterError(
                    self.client.name,
                    f"not run: a live {ref.kind} of that name does not carry "
                    f"{TRACKING_LABEL}={app}, so the hook does not replace it",
                    ref,
                )
            uid = (previous.get("metadata") or {}).get("uid")
            retrying(lambda: self.client.delete(ref, propagation="Foreground", uid=uid))
            while time.monotonic() < deadline:
                self.client.get(ref)
                time.sleep(0.25)
        except NotFound:
            return
        raise ClusterError(
            self.client.name, f"{ref}: the previous hook run is still being deleted", ref
        )


def _owned(obj: Mapping[str, Any], app: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, Mapping) and labels.get(TRACKING_LABEL) == app


def _awaits(action: Action, outcome: Outcome) -> bool:
    """Whether the app's later steps wait for this object: it was applied (or is already
    as git has it); a hook only when this sync ran it."""
    if action.kind is ActionKind.HOOK:
        return outcome.result is Result.CREATED
    if action.manifest is None or action.kind is ActionKind.PRUNE:
        return False
    return outcome.result in (Result.CREATED, Result.CONFIGURED, Result.UNCHANGED)


def _skipped(action: Action, why: str) -> Outcome:
    if not action.writes:
        return Outcome(action.app, action.ref, action.result, action.reason)
    return Outcome(action.app, action.ref, Result.SKIPPED, why)


def _not_run(action: Action) -> Outcome:
    return _skipped(action, "SyncFail hook: runs only when the sync fails")


def defined_kind(crd: Mapping[str, Any]) -> GroupKind:
    """The kind a CustomResourceDefinition defines."""
    spec = crd.get("spec") or {}
    return GroupKind(str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", "")))


def _is_crd(ref: ObjectRef) -> bool:
    return GroupKind(ref.group, ref.kind) == CRD
