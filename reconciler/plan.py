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
from collections import Counter, defaultdict
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
    SyncRequest,
    Violation,
)
from reconciler.pairs import Pair, Pairs, inventory_by_app
from reconciler.pruneguard import (
    DEFAULT_PRUNE_FLOOR,
    SYNC_OPTIONS,
    AppPrune,
    Departure,
    Limits,
    app_prune,
    blocked,
    guard,
    option_hold,
    orphaned,
)
from reconciler.report import Finding, FindingKind

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
    """Argo CD's sync phases, plus the prune step that follows them here. SyncFail hooks
    run only when the app's sync fails (reconciler.waves)."""

    PRE_SYNC = "PreSync"
    SYNC = "Sync"
    POST_SYNC = "PostSync"
    SYNC_FAIL = "SyncFail"
    PRUNE = "Prune"


class DeletePolicy(enum.Enum):
    """When the engine deletes a hook object (Argo CD's hook-delete-policy)."""

    BEFORE_HOOK_CREATION = "BeforeHookCreation"
    HOOK_SUCCEEDED = "HookSucceeded"
    HOOK_FAILED = "HookFailed"


_HOOK_PHASES = {
    phase.value: phase for phase in (Phase.PRE_SYNC, Phase.SYNC, Phase.POST_SYNC, Phase.SYNC_FAIL)
}
_PHASE_RANK = {Phase.PRE_SYNC: 0, Phase.SYNC: 1, Phase.POST_SYNC: 2, Phase.SYNC_FAIL: 3}
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
# How a prune held for a person's confirmation begins its `skipped` reason.
PRUNE_HELD = "prune blocked: "
# Why a prune a person confirmed stays held: the approval did not show it.
UNAPPROVED = "not among the objects the approval showed; it needs one of its own"


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
    # A prune's deletion propagation (the app's PrunePropagationPolicy sync option).
    propagation: str = "Background"

    @property
    def writes(self) -> bool:
        return self.kind in WRITES


@dataclass(frozen=True)
class Plan:
    """The actions of one cluster, in execution order, per-app notes for operators,
    and what needs a person's attention (reconciler.report.Finding)."""

    actions: tuple[Action, ...]
    notes: Mapping[str, tuple[str, ...]]
    findings: tuple[Finding, ...] = ()

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
    prune_floor: int = DEFAULT_PRUNE_FLOOR,
    unserved: Collection[GroupKind] = (),
    unlisted: Mapping[GroupKind, str] | None = None,
    requested: Mapping[str, SyncRequest] | None = None,
    departed: Mapping[str, Departure] | None = None,
    contested: Mapping[ObjectRef, Mapping[str, str]] | None = None,
    cluster_inventory: Mapping[str, int] | None = None,
) -> Plan:
    """The ordered actions that bring one cluster's live objects to the desired ones.

    `apps` are the cluster's apps in the catalogue; `pairs` their rendered objects,
    the inventory of what the reconciler applied before (apps no longer in the
    catalogue included) and the live objects of both and of the apps' destination
    namespaces (None: absent); `drift` the diff of each desired object that differs
    from live (missing or None: in sync). Apps in `render_failed` did not render,
    so nothing of theirs is pruned. Prunes go through the guard (reconciler.pruneguard):
    past `prune_floor` objects, at most `max_prune_share` of an app's and of the
    cluster's inventory; what it holds waits for a person, as a finding, and apps in
    `requested` with `prune` are that person's confirmation. `departed` says what
    became of each app that has inventory but is no longer in `apps`. Objects of
    `unserved` kinds (no CRD installed, none in `desired`) cannot be created: they
    fail without a write, so they do not make their app sync (and run its hooks).
    Kinds in `unlisted` (kind -> why) cannot be listed right now, so an object of
    theirs missing from `live` may exist all the same: it is neither created nor
    dropped from the inventory as "already absent"; it waits, skipped. Objects in
    `contested` (ref -> app -> where it renders it) are shared by several apps: see
    `_shared`. When `pairs` cover some apps only, `cluster_inventory` (app -> objects)
    is the whole cluster's, which the cluster's share is taken of.
    """
    limits = Limits(prune_floor, max_prune_share)
    inventory = inventory_by_app(pairs)
    planner = _Planner({app.name: app for app in apps}, frozenset(unserved), unlisted or {})
    hooks: list[tuple[Pair, _Hook, int]] = []
    candidates: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs.values():
        if pair.prune_candidate and pair.ref not in (contested or {}):
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
        request = (requested or {}).get(app)
        verdict = planner.prune_block(
            app,
            failed=app in render_failed,
            rendered=app in rendered,
            departed=(departed or {}).get(app),
            request=request,
        )
        bound = request.objects if request is not None else None
        for pair in members:
            planner.prune(pair, drift.get(pair.ref), verdict, protected, bound)
    sizes = {app: len(refs) for app, refs in inventory.items()}
    planner.guard_prunes(limits, sizes if cluster_inventory is None else cluster_inventory)
    # Hooks belong to a sync operation: an app with nothing to write runs none (invariant 3).
    syncing = {action.app for _, action in planner.entries + planner.prunes if action.writes}
    for pair, hook, wave in hooks:
        planner.hook(pair, hook, wave, syncing=pair.app in syncing)
    return _shared(planner.finish(mode), contested or {}, planner.apps, mode)


def _shared(
    the_plan: Plan,
    contested: Mapping[ObjectRef, Mapping[str, str]],
    apps: Mapping[str, App],
    mode: Mode,
) -> Plan:
    """An object several apps render, as Argo CD's SharedResourceWarning: each app's
    copy is skipped naming the others (it is neither applied nor pruned) and a finding
    says so; the apps' other objects sync. On an apply-mode cluster an app with
    `FailOnSharedResource=true` fails its sync instead: none of its writes is sent."""
    actions: list[Action] = []
    findings: list[Finding] = []
    failing: dict[str, str] = {}
    for ref, by in sorted(contested.items()):
        for app in (name for name in by if name in apps):
            also = "also rendered by " + " and ".join(
                f"app {other} ({where})" for other, where in by.items() if other != app
            )
            findings.append(Finding(app, FindingKind.SHARED, ref, also))
            result, reason = Result.SKIPPED, f"shared: {also}"
            if mode == "apply" and apps[app].sync_option("FailOnSharedResource") == "true":
                result, reason = Result.FAILED, f"FailOnSharedResource=true: {also}"
                failing.setdefault(app, f"not synced: FailOnSharedResource=true, {ref} is {also}")
            actions.append(Action(ref, app, ActionKind.NONE, result, Phase.SYNC, 0, reason=reason))
    kept = [
        replace(a, kind=ActionKind.NONE, result=Result.SKIPPED, reason=failing[a.app])
        if a.writes and a.app in failing
        else a
        for a in the_plan.actions
    ]
    return replace(
        the_plan, actions=(*kept, *actions), findings=the_plan.findings + tuple(findings)
    )


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
        self.findings: list[Finding] = []
        self.verdicts: dict[str, AppPrune] = {}
        # Objects that wait for a person's confirmation to be pruned: app -> why -> refs.
        self.unconfirmed: dict[str, dict[str, list[ObjectRef]]] = defaultdict(
            lambda: defaultdict(list)
        )

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
        self,
        app: str,
        *,
        failed: bool,
        rendered: bool,
        departed: Departure | None,
        request: SyncRequest | None,
    ) -> AppPrune:
        """How `app`'s objects that left git are treated now (reconciler.pruneguard);
        a block no person can lift now (a broken input) is noted."""
        verdict = app_prune(
            self.apps.get(app), failed=failed, rendered=rendered, departed=departed, request=request
        )
        self.verdicts[app] = verdict
        if verdict.held is not None:
            self.notes[app].append(f"prune blocked: {verdict.held}")
        return verdict

    def prune(
        self,
        pair: Pair,
        drift: Drift | None,
        verdict: AppPrune,
        protected: Protection,
        bound: frozenset[ObjectRef] | None = None,
    ) -> None:
        """`bound`: the only objects a person's confirmation covers (None: all)."""
        live, ref, app = pair.live, pair.ref, pair.app
        waiting = self.waiting(ref) if live is None else None
        kind, result, reason = ActionKind.NONE, Result.SKIPPED, ""
        hold = option_hold(live, verdict) if live is not None else None
        if waiting is not None:
            reason = waiting
        elif live is None:
            # Deleted by someone else: nothing to send, and it leaves the inventory.
            result, reason = Result.PRUNED, "already absent"
        elif verdict.held is not None:
            reason = f"prune blocked: {verdict.held}"
        elif verdict.orphaned is not None:
            reason = f"orphaned: {verdict.orphaned}"
            self.findings.append(orphaned(app, ref, verdict.orphaned))
        elif (protection := protected(live)) is not None:
            reason = f"protected: {protection}"
            if verdict.deleting is not None:
                kept = f"kept, protected ({protection}): {verdict.deleting}"
                self.findings.append(orphaned(app, ref, kept))
        elif hold is not None and not hold[1]:
            reason = f"{hold[0]} ({SYNC_OPTIONS})"
            if verdict.deleting is not None:
                self.findings.append(orphaned(app, ref, f"kept by {hold[0]}: {verdict.deleting}"))
        elif hold is not None or verdict.waits is not None:
            why = f"{hold[0]} ({SYNC_OPTIONS})" if hold is not None else str(verdict.waits)
            reason = f"prune blocked: {why}"
            self.unconfirmed[app][why].append(ref)
        elif verdict.confirmed and bound is not None and ref not in bound:
            why = UNAPPROVED
            reason = f"{PRUNE_HELD}{why}"
            self.unconfirmed[app][why].append(ref)
        else:
            kind, result = ActionKind.PRUNE, Result.PRUNED
        wave = self.wave(pair, _annotations(live or {}))
        action = Action(
            pair.ref, pair.app, kind, result, Phase.PRUNE, wave, drift=drift, reason=reason
        )
        # Sorted like an apply, then reversed: see `finish`.
        self.prunes.append((self._key(action, Phase.SYNC, hook=False), action))

    def guard_prunes(self, limits: Limits, inventory: Mapping[str, int]) -> None:
        """Hold the prunes the share guards stop (those of apps a person confirmed
        excepted), and report everything that waits for a confirmation, per app.
        What orphaned apps left is no longer managed: it is not part of the cluster's
        inventory the share is taken of."""
        orphans = {app for app, verdict in self.verdicts.items() if verdict.orphaned}
        inventory = {app: n for app, n in inventory.items() if app not in orphans}
        losing = Counter(
            action.app
            for _, action in self.prunes
            if action.kind is ActionKind.PRUNE and not self.verdicts[action.app].confirmed
        )
        held = guard(losing, inventory, limits)
        for i, (key, action) in enumerate(self.prunes):
            why = held.get(action.app)
            if why is not None and action.kind is ActionKind.PRUNE:
                reason = f"{PRUNE_HELD}{why}"
                action = replace(action, kind=ActionKind.NONE, result=Result.SKIPPED, reason=reason)
                self.prunes[i] = (key, action)
                self.unconfirmed[action.app][why].append(action.ref)
        for app, reasons in sorted(self.unconfirmed.items()):
            self.findings.extend(blocked(app, why, refs) for why, refs in reasons.items())

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
        notes = {app: tuple(notes) for app, notes in self.notes.items()}
        return Plan(tuple(actions), notes, tuple(self.findings))

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


def refuse_violations(the_plan: Plan, violations: Iterable[Violation]) -> Plan:
    """The plan with no write of a desired object that breaks a policy.

    Such an object fails without a write, it is not skipped: skipped is for what waits
    for something that passes (a report-only cluster, a kind that cannot be listed, a
    held object), while this waits for a person to change git or the policy, so its app
    and the run must show failed until then, as Argo CD shows a sync that a
    ValidatingAdmissionPolicy refused. The app's other objects sync as usual; its
    prunes wait, as after any failed apply (reconciler.guards), and the refused object
    keeps its place in the inventory, so being refused never gets it pruned. An app
    whose only writes were refused runs no hooks: it has nothing to sync."""
    why: dict[ObjectRef, list[str]] = defaultdict(list)
    for v in violations:
        if v.source == "desired":
            why[v.ref].append(f"policy violation: {v.policy}: {v.message}")

    def refused(a: Action) -> bool:
        return a.writes and a.manifest is not None and a.ref in why

    syncing = {
        a.app
        for a in the_plan.actions
        if a.writes and a.kind is not ActionKind.HOOK and not refused(a)
    }
    stopped = {a.app for a in the_plan.actions if refused(a)} - syncing
    actions = []
    for a in the_plan.actions:
        if refused(a):
            a = replace(a, kind=ActionKind.NONE, result=Result.FAILED, reason="; ".join(why[a.ref]))
        elif a.kind is ActionKind.HOOK and a.app in stopped:
            reason = "not run: the app's only changes break policies"
            a = replace(a, kind=ActionKind.NONE, result=Result.SKIPPED, reason=reason)
        actions.append(a)
    return replace(the_plan, actions=tuple(actions))


def _report_only(action: Action) -> Action:
    if not action.writes:
        return action
    reason = f"report-only cluster: would {VERBS[action.kind]}"
    return replace(action, kind=ActionKind.REPORT_ONLY, result=Result.SKIPPED, reason=reason)


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
