"""Desired, live and inventory -> the ordered actions of one cluster's reconcile.

Pure (no I/O, no clients), so every ordering and every prune decision is tested
with plain data; the engine executes a Plan, the store and the CLI report it.

It reads the reconcile's one join (reconciler.pairs): create, update and prune
all come out of the same pairs, so no object can be created by one rule and
deleted by another, and only inventory members can ever be pruned (invariant 4).

Order follows Argo CD: Namespaces and CRDs first (everything else may need
them), then per app wave the PreSync hooks, the Sync phase by resource wave,
kind and name, and the PostSync hooks; prunes come last, in reverse order, so
nothing is deleted before every apply had its chance (Argo CD prunes at the end
of the Sync phase, before PostSync) and dependants go before what they depend on.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.model import (
    CRD,
    NAMESPACE,
    SYNC_WAVE,
    App,
    Drift,
    DriftType,
    GroupKind,
    Manifest,
    Mode,
    ObjectRef,
    Origin,
    Result,
)
from reconciler.pairs import Pair, Pairs, inventory_by_app

HOOK = "argocd.argoproj.io/hook"
HOOK_DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"
HELM_HOOK = "helm.sh/hook"
HELM_HOOK_WEIGHT = "helm.sh/hook-weight"
HELM_HOOK_DELETE_POLICY = "helm.sh/hook-delete-policy"
DEFAULT_MAX_PRUNE_SHARE = 0.5
# The reason of an action that waits for the live view of its kind.
WAITING = "waiting: "

# Argo CD's kind order (gitops-engine sync_tasks.go, itself Helm's kind_sorter).
# Kinds not listed, custom resources among them, come after all of these.
KIND_ORDER: Mapping[str, int] = {
    kind: rank
    for rank, kind in enumerate(
        (
            "Namespace",
            "NetworkPolicy",
            "ResourceQuota",
            "LimitRange",
            "PodSecurityPolicy",
            "PodDisruptionBudget",
            "ServiceAccount",
            "Secret",
            "SecretList",
            "ConfigMap",
            "StorageClass",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleList",
            "ClusterRoleBinding",
            "ClusterRoleBindingList",
            "Role",
            "RoleList",
            "RoleBinding",
            "RoleBindingList",
            "Service",
            "DaemonSet",
            "Pod",
            "ReplicationController",
            "ReplicaSet",
            "Deployment",
            "HorizontalPodAutoscaler",
            "StatefulSet",
            "Job",
            "CronJob",
            "IngressClass",
            "Ingress",
            "APIService",
        )
    )
}

# `protected(live_object)`: why policy forbids pruning it, or None. Supplied by the policy module.
Protection = Callable[[Mapping[str, Any]], str | None]


class ActionKind(enum.Enum):
    """What the engine does with one object; only the first four send a write."""

    CREATE = "create"
    UPDATE = "update"
    PRUNE = "prune"
    HOOK = "hook"
    NONE = "none"
    REPORT_ONLY = "report-only"


WRITES = frozenset({ActionKind.CREATE, ActionKind.UPDATE, ActionKind.PRUNE, ActionKind.HOOK})


class Phase(enum.Enum):
    """Argo CD's sync phases, plus the prune step that follows them here."""

    PRE_SYNC = "PreSync"
    SYNC = "Sync"
    POST_SYNC = "PostSync"
    PRUNE = "Prune"


class DeletePolicy(enum.Enum):
    """When the engine deletes a hook object (Argo CD's hook-delete-policy)."""

    BEFORE_HOOK_CREATION = "BeforeHookCreation"
    HOOK_SUCCEEDED = "HookSucceeded"
    HOOK_FAILED = "HookFailed"


_HOOK_PHASES = {"PreSync": Phase.PRE_SYNC, "Sync": Phase.SYNC, "PostSync": Phase.POST_SYNC}
_PHASE_RANK = {Phase.PRE_SYNC: 0, Phase.SYNC: 1, Phase.POST_SYNC: 2}
# Helm hooks as Argo CD maps them; other Helm hooks (test, *-delete, *-rollback) are unsupported.
_HELM_HOOKS = {
    "pre-install": "PreSync",
    "pre-upgrade": "PreSync",
    "post-install": "PostSync",
    "post-upgrade": "PostSync",
}
_DELETE_POLICIES = {
    **{policy.value: policy for policy in DeletePolicy},
    "before-hook-creation": DeletePolicy.BEFORE_HOOK_CREATION,
    "hook-succeeded": DeletePolicy.HOOK_SUCCEEDED,
    "hook-failed": DeletePolicy.HOOK_FAILED,
}
# What each writing action does, as a report or a dry run words it.
VERBS = {
    ActionKind.CREATE: "create",
    ActionKind.UPDATE: "update",
    ActionKind.PRUNE: "prune",
    ActionKind.HOOK: "run hook",
}
_APPLIED = frozenset({Result.CREATED, Result.CONFIGURED, Result.UNCHANGED})


@dataclass(frozen=True)
class Action:
    """One step of a plan. `result` is the expected outcome: for actions that send no
    write it is final, for writes the engine replaces it with what really happened.

    `manifest` is what to apply (None for prunes). `tracked`: a successful apply puts
    the object in its app's inventory; hooks and namespaces made for
    `CreateNamespace=true` are never tracked, so they are never pruned (as in Argo CD).
    """

    ref: ObjectRef
    app: str
    kind: ActionKind
    result: Result
    phase: Phase
    wave: int
    manifest: Manifest | None = None
    drift: Drift | None = None
    reason: str = ""
    delete_policies: tuple[DeletePolicy, ...] = ()
    tracked: bool = False

    @property
    def writes(self) -> bool:
        return self.kind in WRITES


@dataclass(frozen=True)
class Plan:
    """The actions of one cluster, in execution order, and per-app notes for operators."""

    actions: tuple[Action, ...]
    notes: Mapping[str, tuple[str, ...]]

    @property
    def writes(self) -> tuple[Action, ...]:
        return tuple(action for action in self.actions if action.writes)


def plan(
    *,
    apps: Iterable[App],
    pairs: Pairs,
    drift: Mapping[ObjectRef, Drift | None],
    mode: Mode,
    protected: Protection,
    render_failed: Collection[str] = (),
    max_prune_share: float = DEFAULT_MAX_PRUNE_SHARE,
    unserved: Collection[GroupKind] = (),
    unlisted: Mapping[GroupKind, str] | None = None,
) -> Plan:
    """The ordered actions that bring one cluster's live objects to the desired ones.

    `apps` are the cluster's apps in the catalogue; `pairs` their rendered objects,
    the inventory of what the reconciler applied before (apps no longer in the
    catalogue included) and the live objects of both and of the apps' destination
    namespaces (None: absent); `drift` the diff of each desired object that differs
    from live (missing or None: in sync). Apps in `render_failed` did not render,
    so nothing of theirs is pruned. An app may lose at most `max_prune_share` of
    its inventory in one reconcile; beyond that its prune is blocked. Objects of
    `unserved` kinds (no CRD installed, none in `desired`) cannot be created: they
    fail without a write, so they do not make their app sync (and run its hooks).
    Kinds in `unlisted` (kind -> why) cannot be listed right now, so an object of
    theirs missing from `live` may exist all the same: it is neither created nor
    dropped from the inventory as "already absent"; it waits, skipped.
    """
    if not 0.0 <= max_prune_share <= 1.0:
        raise ValueError(f"max_prune_share must lie in [0, 1], not {max_prune_share}")
    inventory = inventory_by_app(pairs)
    planner = _Planner({app.name: app for app in apps}, frozenset(unserved), unlisted or {})
    hooks: list[tuple[Pair, _Hook, int]] = []
    candidates: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs.values():
        if pair.prune_candidate:
            candidates[pair.app].append(pair)
        if pair.desired is None:
            continue
        annotations = _annotations(pair.desired.obj)
        wave = planner.wave(pair, annotations)
        hook = _hook(annotations)
        if hook is None:
            planner.sync(pair, drift.get(pair.ref), wave)
        else:
            hooks.append((pair, hook, wave))
    planner.create_namespaces(pairs)
    rendered = {p.app for p in pairs.values() if p.desired is not None}
    for app, members in candidates.items():
        block = planner.prune_block(
            app,
            failed=app in render_failed,
            rendered=app in rendered,
            losing=len(members),
            of=len(inventory[app]),
            max_share=max_prune_share,
        )
        for pair in members:
            planner.prune(pair, drift.get(pair.ref), block, protected)
    # Hooks belong to a sync operation: an app with nothing to write runs none (invariant 3).
    syncing = {action.app for _, action in planner.entries + planner.prunes if action.writes}
    for pair, hook, wave in hooks:
        planner.hook(pair, hook, wave, syncing=pair.app in syncing)
    return planner.finish(mode)


@dataclass(frozen=True)
class _Hook:
    phases: tuple[Phase, ...]
    skip: bool
    unsupported: tuple[str, ...]
    delete_policies: tuple[DeletePolicy, ...]
    unknown_policies: tuple[str, ...]


class _Planner:
    """Collects the actions of one `plan` call with their sort keys, and the notes."""

    def __init__(
        self,
        apps: Mapping[str, App],
        unserved: frozenset[GroupKind],
        unlisted: Mapping[GroupKind, str],
    ) -> None:
        self.apps = apps
        self.unserved = unserved
        self.unlisted = unlisted
        self.entries: list[tuple[tuple[Any, ...], Action]] = []
        self.prunes: list[tuple[tuple[Any, ...], Action]] = []
        self.notes: dict[str, list[str]] = defaultdict(list)

    def wave(self, pair: Pair, annotations: Mapping[str, Any]) -> int:
        # Argo CD reads the Helm hook weight when there is no sync-wave.
        for key in (SYNC_WAVE, HELM_HOOK_WEIGHT):
            if key in annotations:
                try:
                    return int(str(annotations[key]).strip())
                except ValueError:
                    self.notes[pair.app].append(
                        f"{pair.ref}: {key} {annotations[key]!r} is not an integer; wave 0"
                    )
                    return 0
        return 0

    def waiting(self, ref: ObjectRef) -> str | None:
        """Why the absence of `ref` from the live view proves nothing, or None."""
        why = self.unlisted.get(GroupKind(ref.group, ref.kind))
        return None if why is None else f"{WAITING}kind {ref.kind} cannot be listed ({why})"

    def sync(self, pair: Pair, drift: Drift | None, wave: int) -> None:
        reason = ""
        absent = pair.live is None
        waiting = self.waiting(pair.ref) if absent else None
        if waiting is not None:
            kind, result, reason = ActionKind.NONE, Result.SKIPPED, waiting
        elif absent and GroupKind(pair.ref.group, pair.ref.kind) in self.unserved:
            kind, result = ActionKind.NONE, Result.FAILED
            reason = f"the cluster does not serve {pair.ref.kind} (CRD not installed)"
        elif absent:
            kind, result = ActionKind.CREATE, Result.CREATED
        elif drift is not None:
            kind, result = ActionKind.UPDATE, Result.CONFIGURED
        else:
            kind, result = ActionKind.NONE, Result.UNCHANGED
        action = Action(
            pair.ref,
            pair.app,
            kind,
            result,
            Phase.SYNC,
            wave,
            pair.desired,
            drift,
            reason=reason,
            tracked=True,
        )
        self._add(action, hook=False)

    def create_namespaces(self, pairs: Pairs) -> None:
        """A Namespace for each `CreateNamespace=true` app whose namespace is neither
        desired, nor live, nor already planned for another app."""
        taken = {ref for ref, p in pairs.items() if p.desired or p.inventory}
        for app in sorted(self.apps.values(), key=lambda a: (a.sync_wave, a.name)):
            ref = ObjectRef("", "Namespace", "", app.namespace)
            if app.sync_option("CreateNamespace") != "true" or not app.namespace:
                continue
            live = pairs[ref].live if ref in pairs else None
            if ref in taken or live is not None or self.waiting(ref) is not None:
                continue
            taken.add(ref)
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app.namespace}}
            origin = Origin(app.origin.repo, app.origin.commit, app.name, app.origin.path)
            action = Action(
                ref,
                app.name,
                ActionKind.CREATE,
                Result.CREATED,
                Phase.SYNC,
                0,
                Manifest(ref, obj, origin),
                Drift(DriftType.MISSING, ref, "v1", desired=obj),
                reason="CreateNamespace=true",
            )
            self._add(action, hook=False)

    def prune_block(
        self, app: str, *, failed: bool, rendered: bool, losing: int, of: int, max_share: float
    ) -> str | None:
        """Why none of `app`'s objects may be pruned now, or None. Blocks that protect
        against a broken render are noted; a prune turned off by the app is not news."""
        spec = self.apps.get(app)
        if spec is None:
            reason = "app is no longer in the catalogue"
        elif failed:
            reason = "render failed"
        elif not rendered:
            reason = "render produced no objects"
        elif not _automated_prune(spec):
            return "automated prune is off (syncPolicy.automated.prune)"
        elif losing > max_share * of:
            reason = f"mass-deletion guard: {losing} of {of} objects would be pruned at once"
        else:
            return None
        self.notes[app].append(f"prune blocked: {reason}")
        return reason

    def prune(
        self, pair: Pair, drift: Drift | None, block: str | None, protected: Protection
    ) -> None:
        live = pair.live
        waiting = self.waiting(pair.ref) if live is None else None
        if waiting is not None:
            kind, result, reason = ActionKind.NONE, Result.SKIPPED, waiting
        elif live is None:
            # Deleted by someone else: nothing to send, and it leaves the inventory.
            kind, result, reason = ActionKind.NONE, Result.PRUNED, "already absent"
        elif block is not None:
            kind, result, reason = ActionKind.NONE, Result.SKIPPED, f"prune blocked: {block}"
        elif (protection := protected(live)) is not None:
            kind, result, reason = ActionKind.NONE, Result.SKIPPED, f"protected: {protection}"
        else:
            kind, result, reason = ActionKind.PRUNE, Result.PRUNED, ""
        wave = self.wave(pair, _annotations(live or {}))
        action = Action(
            pair.ref, pair.app, kind, result, Phase.PRUNE, wave, drift=drift, reason=reason
        )
        # Sorted like an apply, then reversed: see `finish`.
        self.prunes.append((self._key(action, Phase.SYNC, hook=False), action))

    def hook(self, pair: Pair, hook: _Hook, wave: int, *, syncing: bool) -> None:
        ref, app = pair.ref, pair.app

        def add(
            kind: ActionKind, result: Result, phase: Phase, reason: str, *, run: bool = False
        ) -> None:
            policies = hook.delete_policies if run else ()
            self._add(
                Action(ref, app, kind, result, phase, wave, pair.desired, None, reason, policies),
                hook=True,
            )

        for policy in hook.unknown_policies:
            self.notes[app].append(f"{ref}: unknown hook delete policy {policy!r} ignored")
        if hook.skip:
            add(ActionKind.NONE, Result.SKIPPED, Phase.SYNC, "hook Skip: not applied")
            return
        for name in hook.unsupported:
            self.notes[app].append(f"{ref}: hook {name} is not supported, so it is not run")
            add(ActionKind.NONE, Result.SKIPPED, Phase.SYNC, f"hook {name} is not supported")
        for phase in hook.phases:
            if syncing:
                add(ActionKind.HOOK, Result.CREATED, phase, "", run=True)
            else:
                add(ActionKind.NONE, Result.UNCHANGED, phase, "app in sync: not run", run=True)

    def finish(self, mode: Mode) -> Plan:
        applies = [action for _, action in sorted(self.entries, key=lambda e: e[0])]
        prunes = [action for _, action in sorted(self.prunes, key=lambda e: e[0], reverse=True)]
        actions = applies + prunes
        if mode == "report":
            actions = [_report_only(action) for action in actions]
        return Plan(tuple(actions), {app: tuple(notes) for app, notes in self.notes.items()})

    def _add(self, action: Action, *, hook: bool) -> None:
        self.entries.append((self._key(action, action.phase, hook), action))

    def _key(self, action: Action, phase: Phase, hook: bool) -> tuple[Any, ...]:
        ref = action.ref
        kind_rank = KIND_ORDER.get(ref.kind, len(KIND_ORDER))
        if not hook and GroupKind(ref.group, ref.kind) in (NAMESPACE, CRD):
            return (0, 0, 0, 0, kind_rank, ref.name, ref)
        # The Application's own wave orders whole apps, as an app-of-apps parent does;
        # the resource's annotation orders within them (default 0, as in Argo CD).
        app = self.apps.get(action.app)
        app_wave = app.sync_wave if app else 0
        return (1, app_wave, _PHASE_RANK[phase], action.wave, kind_rank, ref.name, ref)


def _report_only(action: Action) -> Action:
    if not action.writes:
        return action
    reason = f"report-only cluster: would {VERBS[action.kind]}"
    return replace(action, kind=ActionKind.REPORT_ONLY, result=Result.SKIPPED, reason=reason)


def _automated_prune(app: App) -> bool:
    automated = app.sync_policy.get("automated")
    return isinstance(automated, Mapping) and automated.get("prune") is True


def _hook(annotations: Mapping[str, Any]) -> _Hook | None:
    names = _csv(annotations.get(HOOK))
    if not names:
        # Helm 2 marked CRDs with crd-install; Argo CD does not treat them as hooks.
        helm = [name for name in _csv(annotations.get(HELM_HOOK)) if name != "crd-install"]
        if not helm:
            return None
        names = [_HELM_HOOKS.get(name, f"{HELM_HOOK}={name}") for name in helm]
    policies = _csv(annotations.get(HOOK_DELETE_POLICY)) + _csv(
        annotations.get(HELM_HOOK_DELETE_POLICY)
    )
    known = tuple(dict.fromkeys(_DELETE_POLICIES[p] for p in policies if p in _DELETE_POLICIES))
    return _Hook(
        phases=tuple(dict.fromkeys(_HOOK_PHASES[n] for n in names if n in _HOOK_PHASES)),
        skip="Skip" in names,
        unsupported=tuple(n for n in names if n not in _HOOK_PHASES and n != "Skip"),
        # With no policy given, Argo CD deletes the previous hook object before creating it.
        delete_policies=known or (DeletePolicy.BEFORE_HOOK_CREATION,),
        unknown_policies=tuple(p for p in policies if p not in _DELETE_POLICIES),
    )


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    return [part.strip() for part in str(value).split(",") if part.strip()]


def next_inventory(
    previous: Mapping[str, Collection[ObjectRef]],
    outcomes: Iterable[tuple[Action, Result]],
) -> dict[str, frozenset[ObjectRef]]:
    """The inventory after an apply: previous - pruned + applied, per app.

    `outcomes` pairs each executed action with its real result (for actions that
    send no write, the planned one). A delete that failed leaves the object in the
    inventory for the next attempt; an object applied by another app than the one
    whose inventory held it changes owner.
    """
    inventory = {app: set(refs) for app, refs in previous.items()}
    for action, result in outcomes:
        if result is Result.PRUNED or (action.tracked and result in _APPLIED):
            for refs in inventory.values():
                refs.discard(action.ref)
        if action.tracked and result in _APPLIED:
            inventory.setdefault(action.app, set()).add(action.ref)
    return {app: frozenset(refs) for app, refs in inventory.items()}
