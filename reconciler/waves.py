"""A plan cut into each app's sync steps, and when a step's wait is over (pure).

Argo CD syncs an app in steps: its PreSync hooks, then each wave of the Sync
phase, then its PostSync hooks; a step starts only once everything the app
applied before it is healthy and every hook it ran has completed, and a failure
(a Degraded object, a failed hook, a wait past its bound) ends the sync and runs
the app's SyncFail hooks. The executor carries the steps out; this module decides
what a step holds and whether its wait is over, from plain data.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.health import assess, object_health
from reconciler.health.base import Status
from reconciler.model import CRD, NAMESPACE, GroupKind, ObjectRef
from reconciler.plan import Action, ActionKind, Phase

# Argo CD has no bound; one is needed here, since a reconcile holds its cluster's worker.
DEFAULT_WAVE_TIMEOUT_S = 300.0
DEFAULT_HOOK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Bounds:
    """How long a wave may take to become healthy, and a hook to complete."""

    wave_s: float = DEFAULT_WAVE_TIMEOUT_S
    hook_s: float = DEFAULT_HOOK_TIMEOUT_S


@dataclass(frozen=True)
class Step:
    """Actions of one app applied together: one hook phase, or one wave of the Sync
    phase, or the app's prunes (which come after everything else)."""

    app: str
    phase: Phase
    wave: int
    actions: tuple[Action, ...]

    @property
    def writes(self) -> bool:
        return any(action.writes for action in self.actions)

    @property
    def name(self) -> str:
        if self.phase is Phase.SYNC:
            return f"wave {self.wave}"
        return self.phase.value if self.phase is not Phase.PRUNE else "prune"


@dataclass(frozen=True)
class Cut:
    """A plan cut for execution: what goes before every app (Namespaces and CRDs,
    which any app may need), each app's steps in order, and each app's SyncFail hooks."""

    first: tuple[Action, ...]
    steps: Mapping[str, tuple[Step, ...]]
    sync_fail: Mapping[str, tuple[Action, ...]]


def cut(actions: Iterable[Action]) -> Cut:
    """`actions` in plan order, cut into steps. Steps keep the plan's order; apps are
    listed in the order of their first step."""
    first: list[Action] = []
    steps: dict[str, list[Step]] = {}
    sync_fail: dict[str, list[Action]] = {}
    for action in actions:
        if action.phase is Phase.SYNC_FAIL:
            sync_fail.setdefault(action.app, []).append(action)
            continue
        if _goes_first(action):
            first.append(action)
            continue
        app_steps = steps.setdefault(action.app, [])
        wave = action.wave if action.phase is Phase.SYNC else 0
        last = app_steps[-1] if app_steps else None
        if last is not None and (last.phase, last.wave) == (action.phase, wave):
            app_steps[-1] = Step(last.app, last.phase, last.wave, (*last.actions, action))
        else:
            app_steps.append(Step(action.app, action.phase, wave, (action,)))
    return Cut(
        tuple(first),
        {app: tuple(s) for app, s in steps.items()},
        {app: tuple(a) for app, a in sync_fail.items()},
    )


def _goes_first(action: Action) -> bool:
    # As plan's sort key puts them: Namespaces and CRDs that are not hooks, before any app.
    return (
        action.phase is Phase.SYNC
        and action.kind is not ActionKind.HOOK
        and not action.delete_policies
        and GroupKind(action.ref.group, action.ref.kind) in (NAMESPACE, CRD)
    )


def needs_wait(steps: Sequence[Step], done: int) -> bool:
    """Whether the wait after the first `done` steps is needed: only before a step that
    writes (an app with nothing left to write waits for nothing)."""
    return any(step.writes for step in steps[done:])


@dataclass(frozen=True)
class Awaited:
    """An object a step applied, as the cluster answered the apply: the live view
    counts only once it shows this incarnation (`uid`) at this `generation` or later."""

    ref: ObjectRef
    hook: bool
    uid: str | None = None
    generation: int | None = None

    @classmethod
    def of(cls, ref: ObjectRef, hook: bool, answer: Mapping[str, Any] | None) -> Awaited:
        metadata = (answer or {}).get("metadata") or {}
        generation = metadata.get("generation")
        return cls(
            ref,
            hook,
            metadata.get("uid"),
            generation if isinstance(generation, int) else None,
        )


class HookState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Verdict(enum.Enum):
    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Judged:
    """Whether a wait is over; when it is not (or failed), the object it is about."""

    verdict: Verdict
    ref: ObjectRef | None = None
    hook: bool = False
    message: str = ""


Live = Callable[[ObjectRef], Mapping[str, Any] | None]


def hook_state(obj: Mapping[str, Any] | None) -> HookState:
    """A hook's progress from its live object, as Argo CD reads it: by its health
    (a Job completes or fails, a Pod succeeds or fails); a kind that states no
    health is done once created."""
    if obj is None:
        return HookState.RUNNING
    health = assess(obj)
    if health is None or health.status is Status.HEALTHY:
        return HookState.SUCCEEDED
    if health.status in (Status.DEGRADED, Status.UNKNOWN):
        return HookState.FAILED
    return HookState.RUNNING


def seen(awaited: Awaited, obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`obj` if the live view already shows what was applied, else None."""
    if obj is None:
        return None
    metadata = obj.get("metadata") or {}
    if awaited.uid is not None and metadata.get("uid") != awaited.uid:
        return None  # an older object of that name, not yet replaced in the view
    generation = metadata.get("generation")
    behind = isinstance(generation, int) and generation < (awaited.generation or 0)
    return None if behind else obj


def judge(awaited: Iterable[Awaited], live: Live, *, hooks_only: bool = False) -> Judged:
    """Whether everything `awaited` is ready: objects Healthy, hooks completed. The
    first failure (a Degraded object, a failed hook) ends the wait; else the first
    object still waited for is named. `hooks_only`: objects need not be healthy
    (after the app's last step, only its hooks are awaited)."""
    pending: Judged | None = None
    for item in awaited:
        obj = seen(item, live(item.ref))
        if item.hook:
            state = hook_state(obj)
            if state is HookState.FAILED:
                return Judged(Verdict.FAILED, item.ref, True, _health_message(obj, "failed"))
            if state is HookState.RUNNING and pending is None:
                pending = Judged(Verdict.WAITING, item.ref, True, "not completed")
            continue
        if hooks_only:
            continue
        health = object_health(obj) if obj is not None else Status.MISSING.value
        if health == Status.DEGRADED.value:
            return Judged(Verdict.FAILED, item.ref, False, _health_message(obj, "Degraded"))
        if health != Status.HEALTHY.value and pending is None:
            pending = Judged(Verdict.WAITING, item.ref, False, f"not healthy ({health})")
    return pending or Judged(Verdict.DONE)


def _health_message(obj: Mapping[str, Any] | None, word: str) -> str:
    health = assess(obj) if obj is not None else None
    return f"{word}: {health.message}" if health is not None and health.message else word
