"""One reconcile of one cluster, conducted: gather -> pair -> diff -> plan -> execute -> record.

Every stage it calls is a module of its own: the join (pairs), the diff, the
plan and the runtime guards are pure; execute talks to the cluster and record
to the state store. This module gathers the inputs from the edges (live cache,
store) and hands each stage's result to the next. Every reconcile starts from
scratch (invariant 3): events only decide when one runs, and a reconcile that
finds nothing to do sends no request that writes, dry-run included.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import logs
from reconciler.cluster import ClusterClient, LiveCache, NotSynced
from reconciler.config import DEFAULT_DRY_RUN_CONCURRENCY, ClusterConfig
from reconciler.desired import ClusterDesired
from reconciler.drift import ARGOCD_APPLICATION, AppRules, Differ, Prepared, Rules, prepare
from reconciler.execute import Executor, defined_kind
from reconciler.health import object_health, worst
from reconciler.model import (
    CRD,
    NAMESPACE,
    App,
    GroupKind,
    InventoryItem,
    Manifest,
    Mode,
    ObjectRef,
    Result,
    SyncRequest,
)
from reconciler.pairs import Pair, Pairs, join
from reconciler.plan import (
    DEFAULT_MAX_PRUNE_SHARE,
    Action,
    ActionKind,
    Plan,
    plan,
    refuse_violations,
)
from reconciler.policy import Policies
from reconciler.pruneguard import DEFAULT_PRUNE_FLOOR, Departure, Fate, departure
from reconciler.record import Recorder, api_version
from reconciler.report import ObjectError, Report
from reconciler.store import Store, now
from reconciler.supervise import short
from reconciler.syncpolicy import desired_digest, gate, synced_apps, with_options
from reconciler.waves import Bounds

SYNC_TIMEOUT_S = 60.0
_WROTE = (Result.CREATED, Result.CONFIGURED)


@dataclass(frozen=True)
class Scope:
    """What one reconcile covers: the cluster, or some of its apps (`only` names them).
    `sizes` is every app's inventory size, the scope's or not: the prune guard takes
    the cluster's share of the whole cluster's inventory."""

    prepared: Prepared
    inventory: list[InventoryItem]
    apps: list[App]
    errors: list[ObjectError]
    only: frozenset[str] | None
    sizes: Mapping[str, int]


class ClusterEngine:
    """The long-lived side of one cluster: client, live cache and its reconciles."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        policies: Policies,
        *,
        on_change: Callable[[ObjectRef, str, str], None] | None = None,
        max_prune_share: float = DEFAULT_MAX_PRUNE_SHARE,
        prune_floor: int = DEFAULT_PRUNE_FLOOR,
        bounds: Bounds | None = None,
        dry_run_concurrency: int = DEFAULT_DRY_RUN_CONCURRENCY,
    ) -> None:
        self.config = config
        self.prune_floor = prune_floor
        self.bounds = bounds or Bounds()
        self.max_prune_share = max_prune_share
        self.name = config.name
        self.recorder = Recorder(store, config.name)
        self.policies = policies
        # The mode is the effective one, policies included (reconciler.session.settled).
        self.report_only = config.mode == "report"
        self.log = logs.get(cluster=self.name)
        self.client = ClusterClient(
            config.name,
            config.kubeconfig,
            context=config.context,
            mode=self.mode,
            pinned_identity=self.recorder.pinned_identity(),
            parallel=dry_run_concurrency,
        )
        self.cache = LiveCache(self.client, on_change)
        self.differ = Differ(
            self.name,
            report_only=self.report_only,
            client=self.client,
            cache=self.cache,
            policies=policies,
            recorder=self.recorder,
            contain=self._contain,
            dry_run_concurrency=dry_run_concurrency,
        )
        # The manifests of the last render as they are applied: made once per render.
        self._prepared: tuple[ClusterDesired, Prepared] | None = None
        # Each app's desired digest (reconciler.syncpolicy), with the App it was made
        # for: made once per render, like `_prepared`, not per resync.
        self._digests: dict[str, tuple[App, str]] = {}
        # Told of each step, so a supervisor can tell a long reconcile from a stuck one:
        # the argument is how long the next step may take, beyond the usual.
        self.progress: Callable[[float], None] = _ignore_progress
        # Told of each object written, with the resourceVersion the cluster answered:
        # the watch event carrying it is the echo of this write, not a change.
        self.wrote: Callable[[ObjectRef, str], None] = _ignore_write
        # Told of each unexpected exception that one object raised (it fails alone).
        self.internal_error: Callable[[BaseException], None] = self._log_internal_error
        self._internal_errors_seen: set[tuple[ObjectRef, str]] = set()

    @property
    def mode(self) -> Mode:
        return "report" if self.report_only else "apply"

    def close(self) -> None:
        self.cache.stop()
        self.client.close()

    def pin_identity(self) -> None:
        """Record the cluster's identity on first contact; later contacts are checked
        against it by the client before any write."""
        if self.recorder.pinned_identity() is None:
            self.recorder.pin_identity(self.client.identity())

    # -- the conductor -------------------------------------------------------------

    def drift(
        self, desired: ClusterDesired, apps: Sequence[App], only_app: str | None = None
    ) -> Report:
        """Desired vs live for every object of the cluster (or of one app), from scratch."""
        scope = self._gather(desired, apps, None if only_app is None else {only_app})
        return self._diff(scope, self._pair(scope))[0]

    def reconcile(
        self,
        desired: ClusterDesired,
        apps: Sequence[App],
        *,
        dry_run: bool = False,
        only: Collection[str] | None = None,
        held: Mapping[ObjectRef, str] | None = None,
        requested: Mapping[str, SyncRequest] | None = None,
    ) -> Report:
        """Diff, plan and (on an apply-mode cluster, unless `dry_run`) apply and prune,
        for the whole cluster or the apps `only` names; the outcome is recorded in the
        store, where the other apps keep theirs.
        Objects in `held` (ref -> why) are not written this time (a flapping object).
        Apps in `requested` are synced because a person asked (reconciler.model.SyncRequest)."""
        started_at, started = now(), time.monotonic()
        scope = self._gather(desired, apps, only)
        departed = self._departed(desired, apps, scope.sizes)
        pairs = self._pair(scope)
        found, rules = self._diff(scope, pairs)
        unlisted = self.cache.unlisted()
        unserved = self._unserved(scope.prepared)
        the_plan = plan(
            apps=scope.apps,
            pairs=pairs,
            drift={d.ref: d for _, d in found.drifts},
            mode=self.mode,
            protected=lambda obj: self.policies.prune_protected(self.name, obj),
            render_failed=desired.failed,
            max_prune_share=self.max_prune_share,
            prune_floor=self.prune_floor,
            requested=requested,
            departed=departed,
            unserved=unserved,
            unlisted=unlisted,
            contested=desired.contested,
            cluster_inventory=None if scope.only is None else _managed(scope.sizes, departed),
        )
        digests = self._desired_digests(scope)
        the_plan, policy_held = self._sync_policy(
            the_plan, scope, pairs, requested or {}, digests, unserved
        )
        the_plan = refuse_violations(the_plan, found.violations)
        executor = self._executor(rules, scope.prepared, pairs)
        executed = executor.run(the_plan, scope.prepared.broken, held or {}, dry_run=dry_run)
        if not (self.report_only or dry_run):
            self.recorder.replace_inventory(pairs, executed.steps, scope.only)
            self.recorder.remember_apps(scope.apps, scope.only)
            failed = {*desired.failed, *(e.app for e in found.errors)}
            done = synced_apps(executed.steps, scope.apps, held=policy_held, failed=failed)
            every = None if scope.only is not None else {app.name for app in scope.apps}
            self.recorder.synced({app: digests[app] for app in done}, every)
        outcomes = executed.outcomes
        fixed = {o.ref for o in outcomes if o.result in (*_WROTE, Result.PRUNED)}
        report = Report(
            cluster=self.name,
            mode=self.mode,
            drifts=tuple((app, d) for app, d in found.drifts if d.ref not in fixed),
            violations=found.violations,
            errors=found.errors,
            argocd=found.argocd,
            outcomes=outcomes,
            notes=the_plan.notes,
            duration_s=time.monotonic() - started,
            unreachable=executed.unreachable,
            unlisted=unlisted,
            findings=found.findings + the_plan.findings + executed.findings,
            scope=scope.only,
        )
        if not dry_run:
            healths = self._healths(pairs, {o.ref for o in outcomes if o.result in _WROTE})
            self.recorder.reconciled(report, scope.apps, healths, started_at, scope.only)
            if scope.only is None:
                self.recorder.keep_in_sync({m.ref for m in scope.prepared.manifests})
        return report

    def _sync_policy(
        self,
        the_plan: Plan,
        scope: Scope,
        pairs: Pairs,
        requested: Mapping[str, SyncRequest],
        digests: Mapping[str, str],
        unserved: set[GroupKind],
    ) -> tuple[Plan, frozenset[str]]:
        """The plan as the apps' syncPolicy and sync options let it run
        (reconciler.syncpolicy), and the apps held back."""
        synced = self.recorder.synced_digests()
        changed = {app for app, digest in digests.items() if synced.get(app) != digest}
        gated, held = gate(the_plan, scope.apps, changed=changed, requested=requested)
        live = {ref: pair.live for ref, pair in pairs.items()}
        return with_options(gated, scope.apps, live=live, unserved=unserved), held

    def _desired_digests(self, scope: Scope) -> dict[str, str]:
        """Each app's desired digest, made again only for an app (or a render) that changed."""
        stale = [a for a in scope.apps if self._digests.get(a.name, (None, ""))[0] != a]
        if stale:
            texts: dict[str, list[str]] = defaultdict(list)
            for m in scope.prepared.manifests:
                texts[m.origin.app].append(scope.prepared.text(m))
            for app in stale:
                self._digests[app.name] = (app, desired_digest(app, texts[app.name]))
        return {app.name: self._digests[app.name][1] for app in scope.apps}

    def _departed(
        self, desired: ClusterDesired, apps: Sequence[App], holding: Collection[str]
    ) -> dict[str, Departure]:
        """What became of each app of `holding` (those with objects here) that left the
        cluster's `apps`: in scope or not, the prune guard leaves out what the orphaned
        ones hold."""
        present = {app.name for app in apps}
        traces = self.recorder.app_traces()
        return {
            app: departure(
                app,
                traces.get(app),
                catalogued=desired.catalogue.apps,
                errors=desired.catalogue.errors,
                commits=desired.commits,
            )
            for app in sorted(set(holding) - present)
        }

    # -- gather --------------------------------------------------------------------

    def _gather(
        self, desired: ClusterDesired, apps: Sequence[App], only: Collection[str] | None
    ) -> Scope:
        """Desired objects, inventory, apps and errors of the cluster or of the apps
        `only` names (and those sharing an object with them), with the live cache
        following every kind in play."""
        everything = self.recorder.inventory()
        chosen = None if only is None else entangled(only, desired.manifests, everything)

        def wanted(app: str) -> bool:
            return chosen is None or app in chosen

        prepared = self._prepare(desired).only(wanted)
        inventory = [i for i in everything if wanted(i.app)]
        errors = [ObjectError(e.app, None, str(e)) for e in desired.errors if wanted(e.app)]
        errors += self._follow(prepared, inventory)
        sizes = Counter(i.app for i in everything)
        return Scope(
            prepared, inventory, [a for a in apps if wanted(a.name)], errors, chosen, sizes
        )

    def _pair(self, scope: Scope) -> dict[ObjectRef, Pair]:
        """The one join: desired, inventory and the live object of each (and of each
        app's destination namespace, which CreateNamespace=true needs)."""
        refs = {m.ref for m in scope.prepared.manifests} | {i.ref for i in scope.inventory}
        refs |= {_namespace(app.namespace) for app in scope.apps if app.namespace}
        live: dict[ObjectRef, Mapping[str, Any] | None] = {}
        unknown: set[ObjectRef] = set()
        for ref in refs:
            try:
                live[ref] = self._live(ref)
            except NotSynced:
                live[ref] = None  # its kind cannot be listed: the plan says the object waits
                unknown.add(ref)
        return join(scope.prepared.manifests, live, scope.inventory, unknown=unknown)

    def _prepare(self, desired: ClusterDesired) -> Prepared:
        """The cluster's manifests as they are applied (tracking label on apply-mode
        clusters); made once per render, not per resync."""
        if self._prepared is None or self._prepared[0] is not desired:
            tracked = not self.report_only
            made = prepare(desired.manifests, tracked=tracked, contain=self._contain)
            self._prepared = (desired, made)
            self._digests = {}
        return self._prepared[1]

    def _follow(self, prepared: Prepared, inventory: Sequence[InventoryItem]) -> list[ObjectError]:
        """Make the live cache follow every kind in play and wait for its first list."""
        kinds = {GroupKind(m.ref.group, m.ref.kind) for m in prepared.manifests} | {NAMESPACE}
        kinds |= {GroupKind(i.ref.group, i.ref.kind) for i in inventory}
        if self.report_only:
            kinds.add(ARGOCD_APPLICATION)
        self.cache.track(kinds)
        errors: list[ObjectError] = []
        self.progress(SYNC_TIMEOUT_S)
        if not self.cache.wait_synced(SYNC_TIMEOUT_S):
            for gk, problem in sorted(self.cache.errors().items()):
                errors.append(ObjectError("", None, f"cluster {self.name}: {gk}: {problem}"))
        return errors

    def _diff(self, scope: Scope, pairs: Pairs) -> tuple[Report, Rules]:
        return self.differ.compare(scope.apps, pairs, scope.prepared, scope.errors, self.progress)

    def _live(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        try:
            return self.cache.get(ref)
        except NotSynced:
            if GroupKind(ref.group, ref.kind) in self.cache.unknown_kinds():
                return None  # the kind is not served (CRD not installed): nothing is live
            raise

    def _live_or_none(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        try:
            return self._live(ref)
        except NotSynced:
            return None

    def _unserved(self, prepared: Prepared) -> set[GroupKind]:
        """Kinds the cluster does not serve and no desired CRD defines: their objects
        cannot be created in this reconcile."""
        defined = {
            defined_kind(m.obj)
            for m in prepared.manifests
            if GroupKind(m.ref.group, m.ref.kind) == CRD
        }
        return set(self.cache.unknown_kinds()) - defined

    # -- execute and record ----------------------------------------------------------

    def _executor(self, rules: Rules, prepared: Prepared, pairs: Pairs) -> Executor:
        def applied(action: Action, live: Mapping[str, Any]) -> None:
            # A write that changed nothing is answered with the version it found: no
            # watch event carries that, and a later one that did (a delete the cache
            # made up) must not be taken for its echo.
            answered = _version(live)
            before = pairs.get(action.ref)
            if before is None or before.live is None or _version(before.live) != answered:
                self.wrote(action.ref, answered)
            # What was just applied is in sync: the next reconcile needs no dry-run
            # (a hook is desired state too, and is diffed like the rest).
            if action.manifest is not None and (action.tracked or action.kind is ActionKind.HOOK):
                app_rules = rules.get(action.app, AppRules())
                verdict = self.differ.verdict(action.manifest, live, app_rules, prepared)
                self.recorder.applied(action, verdict, api_version(action.manifest.obj))

        return Executor(
            self.client,
            live=self._live_or_none,
            applied=applied,
            contain=self._contain,
            progress=self.progress,
            log=self.log,
            bounds=self.bounds,
        )

    def _healths(self, pairs: Pairs, just_written: Collection[ObjectRef]) -> dict[str, str | None]:
        """Each app's health, read from the live cache after the writes: that of its least
        healthy object, Missing if one is absent (an object written moments ago, not yet
        seen by the cache, is Progressing)."""
        by_app: dict[str, list[str]] = defaultdict(list)
        for pair in pairs.values():
            if pair.desired is None:
                continue
            live = self._live_or_none(pair.ref)
            if live is not None:
                health = object_health(live)
            else:
                health = "Progressing" if pair.ref in just_written else "Missing"
            by_app[pair.app].append(health)
        return {app: worst(healths) for app, healths in by_app.items()}

    def _contain(self, ref: ObjectRef, exc: BaseException) -> str:
        """Report an unexpected exception one object raised (once per object and
        message); returns the object's error message."""
        message = short(exc)
        if (ref, message) not in self._internal_errors_seen:
            self._internal_errors_seen.add((ref, message))
            self.internal_error(exc)
        return f"internal error: {message}"

    def _log_internal_error(self, exc: BaseException) -> None:
        self.log.error("object.internal_error", error=short(exc))


def owners(
    manifests: Collection[Manifest], inventory: Collection[InventoryItem]
) -> dict[ObjectRef, frozenset[str]]:
    """The apps owning each managed object: the one that renders it and those whose
    inventory holds it (an object moving between apps has both)."""
    found: dict[ObjectRef, set[str]] = defaultdict(set)
    for m in manifests:
        found[m.ref].add(m.origin.app)
    for item in inventory:
        found[item.ref].add(item.app)
    return {ref: frozenset(apps) for ref, apps in found.items()}


def entangled(
    only: Collection[str], manifests: Sequence[Manifest], inventory: Sequence[InventoryItem]
) -> frozenset[str]:
    """`only`, with every app sharing an object with one of them (rendering what its
    inventory holds, or holding what it renders), and so on: a reconcile of some apps
    must see each of their objects whole, or it would take an object moving from one
    app to another for one to prune."""
    shared = [apps for apps in owners(manifests, inventory).values() if len(apps) > 1]
    apps = set(only)
    grown = True
    while grown:
        grown = False
        for together in shared:
            if together & apps and not together <= apps:
                apps |= together
                grown = True
    return frozenset(apps)


def _managed(sizes: Mapping[str, int], departed: Mapping[str, Departure]) -> dict[str, int]:
    """`sizes` (app -> objects) without the orphaned apps': what they left is no longer
    managed, so it is not part of the inventory the prune guard takes a share of."""
    return {
        app: n
        for app, n in sizes.items()
        if app not in departed or departed[app].fate is not Fate.ORPHAN
    }


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _ignore_progress(_within_s: float) -> None:
    pass


def _ignore_write(_ref: ObjectRef, _version: str) -> None:
    pass


def _namespace(name: str) -> ObjectRef:
    return ObjectRef("", "Namespace", "", name)
