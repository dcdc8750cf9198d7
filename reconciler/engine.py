"""One reconcile of one cluster: desired + live -> drift -> plan -> apply -> store.

The stages it calls (diff, policy, plan) are pure; this module gathers their
inputs from the edges (live cache, cluster client, state store) and carries out
and records what they decide. Every reconcile starts from scratch (invariant
3): events only decide when one runs, and a reconcile that finds nothing to do
sends no request that writes, dry-run included.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reconciler import logs
from reconciler.cluster import (
    ClusterClient,
    ClusterError,
    Conflict,
    LiveCache,
    NotFound,
    NotSynced,
    UnknownKind,
    Unreachable,
)
from reconciler.config import ClusterConfig
from reconciler.desired import ClusterDesired
from reconciler.diff import diff_object, parse_ignore_rules
from reconciler.diff.fingerprint import canonical, project
from reconciler.diff.ignore import IgnoreRule
from reconciler.errors import ReconcilerError
from reconciler.health import object_health, worst
from reconciler.model import (
    App,
    Drift,
    GroupKind,
    Manifest,
    ObjectRef,
    Result,
    Violation,
    object_ref,
)
from reconciler.plan import (
    DEFAULT_MAX_PRUNE_SHARE,
    WAITING,
    Action,
    ActionKind,
    DeletePolicy,
    Plan,
    next_inventory,
    plan,
)
from reconciler.policy import Policies
from reconciler.store import AppRecord, InventoryItem, RunRecord, Store, now
from reconciler.supervise import short

# Marks what the reconciler applied, so its inventory can be read back from the
# cluster itself (as Flux's and ApplySet's labels allow) and not only from the store.
TRACKING_LABEL = "reconciler.kernow.io/app"
# The label is part of every apply but never drift by itself: an object that matches
# git in everything else is adopted as it is, without a write (invariant 3).
_TRACKING_RULE = parse_ignore_rules(
    [{"group": "*", "kind": "*", "jsonPointers": ["/metadata/labels/reconciler.kernow.io~1app"]}],
    "the tracking label",
)
ARGOCD_APPLICATION = GroupKind("argoproj.io", "Application")
NAMESPACE = GroupKind("", "Namespace")
SYNC_TIMEOUT_S = 60.0
# Field managers whose writes are manual edits: the reconciler takes their fields back.
TAKEOVER_MANAGERS = re.compile(r"^(kubectl(-.+)?|before-first-apply)$")
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')
_RETRIES = (0.5, 1.0, 2.0)
_CRD_SETTLE_S = 10.0
_WROTE = (Result.CREATED, Result.CONFIGURED)
_HOOK_DELETE_S = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class AppRules:
    """An app's ignore rules, with the text a verdict is keyed by (made once per app)."""

    rules: tuple[IgnoreRule, ...] = ()
    key: str = "()"


Rules = dict[str, AppRules]


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
    mode: str
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


class ClusterEngine:
    """The long-lived side of one cluster: client, live cache and its reconciles."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        policies: Policies,
        *,
        on_change: Callable[[ObjectRef, str], None] | None = None,
        max_prune_share: float = DEFAULT_MAX_PRUNE_SHARE,
    ) -> None:
        self.config = config
        self.max_prune_share = max_prune_share
        self.name = config.name
        self.store = store
        self.policies = policies
        self.report_only = config.mode == "report" or policies.forced_report_mode(config)
        self.log = logs.get(cluster=self.name)
        self.client = ClusterClient(
            config.name,
            config.kubeconfig,
            context=config.context,
            mode="report" if self.report_only else "apply",
            pinned_identity=store.pinned_identity(config.name),
        )
        self.cache = LiveCache(self.client, on_change)
        # The last diff of each object and the verdict digest it was made under: a
        # resync of an unchanged object costs a digest, not a diff.
        self._memo: dict[ObjectRef, tuple[str, Drift | None]] = {}
        self._policy_memo: dict[tuple[str, ObjectRef, str], list[Violation]] = {}
        self._prepared: tuple[ClusterDesired, list[Manifest], dict[ObjectRef, str]] | None = None
        # Desired objects that could not be prepared for apply (ref -> why): they fail alone.
        self._broken: dict[ObjectRef, str] = {}
        # Told of each step, so a supervisor can tell a long reconcile from a stuck one:
        # the argument is how long the next step may take, beyond the usual.
        self.progress: Callable[[float], None] = _ignore_progress
        # Told of each unexpected exception that one object raised (it fails alone).
        self.internal_error: Callable[[BaseException], None] = self._log_internal_error
        self._internal_errors_seen: set[tuple[ObjectRef, str]] = set()

    @property
    def mode(self) -> str:
        return "report" if self.report_only else "apply"

    def close(self) -> None:
        self.cache.stop()
        self.client.close()

    def pin_identity(self) -> None:
        """Record the cluster's identity on first contact; later contacts are checked
        against it by the client before any write."""
        if self.store.pinned_identity(self.name) is None:
            self.store.pin_identity(self.name, self.client.identity())

    # -- drift ------------------------------------------------------------------

    def drift(
        self, desired: ClusterDesired, apps: Sequence[App], only_app: str | None = None
    ) -> Report:
        """Desired vs live for every object of the cluster (or of one app), from scratch."""
        manifests, inventory, apps, failed = self._scoped(desired, apps, only_app)
        return self._compare(manifests, inventory, apps, failed)[0]

    def _scoped(
        self, desired: ClusterDesired, apps: Sequence[App], only_app: str | None
    ) -> tuple[list[Manifest], list[InventoryItem], list[App], list[ObjectError]]:
        """Desired objects, inventory, apps and render errors of the cluster or one app."""

        def wanted(app: str) -> bool:
            return only_app is None or app == only_app

        manifests = [m for m in self._desired(desired) if wanted(m.origin.app)]
        inventory = [i for i in self.store.inventory(self.name) if wanted(i.app)]
        failed = [ObjectError(e.app, None, str(e)) for e in desired.errors if wanted(e.app)]
        return manifests, inventory, [a for a in apps if wanted(a.name)], failed

    def _compare(
        self,
        manifests: Sequence[Manifest],
        inventory: Sequence[InventoryItem],
        apps: Sequence[App],
        render_errors: Sequence[ObjectError],
    ) -> tuple[Report, Rules]:
        """The drift report, and the ignore rules per app it was computed with."""
        started = time.monotonic()
        errors = [*render_errors, *self._follow(manifests, inventory)]
        rules = self._ignore_rules(apps, errors)
        drifts: list[tuple[str, Drift]] = []
        in_sync: list[tuple[ObjectRef, str]] = []
        verdicts = self.store.in_sync(self.name)
        for m in manifests:
            self.progress(0.0)
            if m.ref in self._broken:
                errors.append(ObjectError(m.origin.app, m.ref, self._broken[m.ref]))
                continue
            try:
                found = self._diff(m, rules.get(m.origin.app, AppRules()), verdicts, in_sync)
            except Unreachable:
                raise  # the whole reconcile waits for the cluster, not each object in turn
            except NotSynced:
                continue  # its kind cannot be listed: the plan says that the object waits
            except ReconcilerError as exc:
                errors.append(ObjectError(m.origin.app, m.ref, str(exc)))
                continue
            except Exception as exc:  # a bug met by one object stays with that object
                errors.append(ObjectError(m.origin.app, m.ref, self._contain(m.ref, exc)))
                continue
            if found is not None:
                drifts.append((m.origin.app, found))
        wanted = {m.ref for m in manifests}
        for item in inventory:
            if item.ref in wanted:
                continue
            live = self._live_or_none(item.ref)
            extra = diff_object(item.ref, None, live) if live is not None else None
            if extra is not None:
                drifts.append((item.app, extra))
        self.store.remember_in_sync(self.name, in_sync)
        violations = self._violations(manifests, self._live_objects(manifests), errors)
        report = Report(
            cluster=self.name,
            mode=self.mode,
            drifts=tuple(drifts),
            violations=tuple(violations),
            errors=tuple(errors),
            argocd=self._argocd_status() if self.report_only else {},
            duration_s=time.monotonic() - started,
        )
        return report, rules

    def _desired(self, desired: ClusterDesired) -> list[Manifest]:
        """The cluster's manifests as they are applied (tracking label on apply-mode
        clusters), with their canonical text; made once per render, not per resync."""
        if self._prepared is None or self._prepared[0] is not desired:
            manifests: list[Manifest] = []
            texts: dict[ObjectRef, str] = {}
            self._broken = {}
            for m in desired.manifests:
                try:
                    prepared = m if self.report_only else _tracked(m)
                    texts[m.ref] = canonical(prepared.obj)
                except Exception as exc:  # e.g. labels that are not a mapping
                    # Kept as desired (so never pruned) but failed, without a write.
                    prepared = m
                    self._broken[m.ref] = f"cannot be prepared: {self._contain(m.ref, exc)}"
                manifests.append(prepared)
            self._prepared = (desired, manifests, texts)
        return self._prepared[1]

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

    def _text(self, m: Manifest) -> str:
        texts = self._prepared[2] if self._prepared else {}
        text = texts.get(m.ref)
        return text if text is not None else canonical(m.obj)

    def _verdict(self, m: Manifest, live: Mapping[str, Any], rules: AppRules) -> str:
        """The digest an in-sync verdict for `m` against `live` is remembered under."""
        return self.store.verdict(self._text(m), canonical(project(live, m.obj)), rules.key)

    def _follow(
        self, manifests: Sequence[Manifest], inventory: Sequence[InventoryItem]
    ) -> list[ObjectError]:
        """Make the live cache follow every kind in play and wait for its first list."""
        kinds = {GroupKind(m.ref.group, m.ref.kind) for m in manifests} | {NAMESPACE}
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

    def _ignore_rules(self, apps: Sequence[App], errors: list[ObjectError]) -> Rules:
        shared = (*self.policies.ignore_rules(self.name), *_TRACKING_RULE)
        rules: Rules = {}
        for app in apps:
            try:
                own = parse_ignore_rules(app.ignore_differences, f"app {app.name}")
            except ReconcilerError as exc:
                errors.append(ObjectError(app.name, None, str(exc)))
                own = ()
            rules[app.name] = AppRules(own + shared, repr(own + shared))
        return rules

    def _live(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        try:
            return self.cache.get(ref)
        except NotSynced:
            if GroupKind(ref.group, ref.kind) in self.cache.unknown_kinds():
                return None  # the kind is not served (CRD not installed): nothing is live
            raise

    def _diff(
        self,
        m: Manifest,
        app_rules: AppRules,
        verdicts: Mapping[ObjectRef, str],
        in_sync: list[tuple[ObjectRef, str]],
    ) -> Drift | None:
        rules = app_rules.rules
        live = self._live(m.ref)
        if live is None:
            return diff_object(m.ref, m.obj, None, ignore=rules)
        verdict = self._verdict(m, live, app_rules)
        remembered = self._memo.get(m.ref)
        if remembered is not None and remembered[0] == verdict:
            return remembered[1]
        if self.report_only:
            # A report-mode cluster gets no dry-run: it is a PATCH, audited as a write.
            found = diff_object(m.ref, m.obj, live, ignore=rules)
        elif verdicts.get(m.ref) == verdict:
            found = None
        else:
            # force: the diff shows what the reconciler's apply would make, takeovers included.
            dry_run = _retrying(lambda: self.client.apply(m.obj, force=True, dry_run=True))
            found = diff_object(m.ref, m.obj, live, dry_run=dry_run, ignore=rules)
            if found is None:
                in_sync.append((m.ref, verdict))
        self._memo[m.ref] = (verdict, found)
        return found

    def _violations(
        self,
        manifests: Sequence[Manifest],
        live: Sequence[Mapping[str, Any]],
        errors: list[ObjectError],
    ) -> list[Violation]:
        """Policy violations of desired and live objects; an object evaluated before in
        the same state (desired digest, live resourceVersion) is not evaluated again.
        An object whose evaluation fails is an error of that object (in `errors`)."""
        memo: dict[tuple[str, ObjectRef, str], list[Violation]] = {}
        found: list[Violation] = []
        checks: list[tuple[tuple[str, ObjectRef, str], str, Callable[[], list[Violation]]]] = []
        for m in manifests:
            if m.ref not in self._broken:
                desired = functools.partial(self.policies.evaluate, self.name, [m])
                checks.append((("desired", m.ref, self._text(m)), m.origin.app, desired))
        for obj in live:
            meta = obj.get("metadata") or {}
            key = ("live", object_ref(obj), f"{meta.get('uid')}/{meta.get('resourceVersion')}")
            checks.append(
                (key, "", functools.partial(self.policies.evaluate, self.name, live=[obj]))
            )
        for key, app, evaluate in checks:
            hit = self._policy_memo.get(key)
            try:
                memo[key] = hit if hit is not None else evaluate()
            except Exception as exc:
                errors.append(ObjectError(app, key[1], self._contain(key[1], exc)))
                continue
            found += memo[key]
        self._policy_memo = memo
        return found

    def _live_objects(self, manifests: Sequence[Manifest]) -> list[Mapping[str, Any]]:
        kinds = sorted({(m.ref.group, m.ref.kind) for m in manifests})
        objects: list[Mapping[str, Any]] = []
        for group, kind in kinds:
            try:
                objects.extend(self.cache.objects(group, kind))
            except NotSynced:
                continue
        return objects

    def _argocd_status(self) -> dict[str, ArgoStatus]:
        try:
            applications = self.cache.objects(ARGOCD_APPLICATION.group, ARGOCD_APPLICATION.kind)
        except NotSynced:
            return {}
        status: dict[str, ArgoStatus] = {}
        for obj in applications:
            st = obj.get("status") or {}
            status[str(obj["metadata"]["name"])] = ArgoStatus(
                (st.get("sync") or {}).get("status"), (st.get("health") or {}).get("status")
            )
        return status

    # -- reconcile ----------------------------------------------------------------

    def reconcile(
        self,
        desired: ClusterDesired,
        apps: Sequence[App],
        *,
        dry_run: bool = False,
        only_app: str | None = None,
        held: Mapping[ObjectRef, str] | None = None,
    ) -> Report:
        """Diff, plan and (on an apply-mode cluster, unless `dry_run`) apply and prune,
        for the whole cluster or `only_app`; the outcome is recorded in the store.
        Objects in `held` (ref -> why) are not written this time (a flapping object)."""
        started_at, started = now(), time.monotonic()
        manifests, inventory, apps, failed = self._scoped(desired, apps, only_app)
        scope = None if only_app is None else {only_app}
        found, rules = self._compare(manifests, inventory, apps, failed)
        unlisted = self.cache.unlisted()
        by_app: dict[str, set[ObjectRef]] = defaultdict(set)
        for item in inventory:
            by_app[item.app].add(item.ref)
        refs = {m.ref for m in manifests} | {i.ref for i in inventory}
        # CreateNamespace=true needs to know whether each destination namespace exists.
        refs |= {_namespace(app.namespace) for app in apps if app.namespace}
        the_plan = plan(
            apps=apps,
            desired=manifests,
            live={ref: self._live_or_none(ref) for ref in refs},
            inventory=by_app,
            drift={d.ref: d for _, d in found.drifts},
            mode="report" if self.report_only or dry_run else "apply",
            protected=lambda obj: self.policies.prune_protected(self.name, obj),
            render_failed=desired.failed,
            max_prune_share=self.max_prune_share,
            unserved=self._unserved(manifests),
            unlisted=unlisted,
        )
        executed, unreachable = self._execute(the_plan, rules, held or {})
        outcomes = tuple(o for _, o in executed)
        if not (self.report_only or dry_run):
            self._record_inventory(inventory, by_app, executed, manifests, scope)
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
            unreachable=unreachable,
            unlisted=unlisted,
        )
        if not dry_run:
            healths = self._healths(manifests, {o.ref for o in outcomes if o.result in _WROTE})
            self._record(report, apps, healths, started_at, scope)
        return report

    def _unserved(self, manifests: Sequence[Manifest]) -> set[GroupKind]:
        """Kinds the cluster does not serve and no desired CRD defines: their objects
        cannot be created in this reconcile."""
        defined = {
            _defined_kind(m.obj) for m in manifests if m.ref.kind == "CustomResourceDefinition"
        }
        return set(self.cache.unknown_kinds()) - defined

    def _live_or_none(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        try:
            return self._live(ref)
        except NotSynced:
            return None

    def _execute(
        self, the_plan: Plan, rules: Rules, held: Mapping[ObjectRef, str]
    ) -> tuple[list[tuple[Action, Outcome]], str | None]:
        """Carry out the plan in order; also says why the cluster stopped answering."""
        executed: list[tuple[Action, Outcome]] = []
        failed_apps: set[str] = set()
        # Kinds whose CRD this reconcile applied: they may take a moment to be served.
        new_kinds: set[GroupKind] = set()
        # Once the cluster stops answering, the rest of the plan waits for the next
        # reconcile rather than spending the retries of every object on a dead server.
        unreachable: str | None = None
        for action in the_plan.actions:
            self.progress(0.0)
            if action.ref in self._broken and action.kind is not ActionKind.PRUNE:
                outcome = Outcome(action.app, action.ref, Result.FAILED, self._broken[action.ref])
                failed_apps.add(action.app)
            elif action.writes and unreachable is not None:
                reason = f"not attempted: {unreachable}"
                outcome = Outcome(action.app, action.ref, Result.SKIPPED, reason)
            elif not action.writes:
                outcome = Outcome(action.app, action.ref, action.result, action.reason)
                if outcome.result is Result.FAILED:
                    failed_apps.add(action.app)
            elif action.ref in held:
                outcome = Outcome(action.app, action.ref, Result.SKIPPED, held[action.ref])
            elif action.kind is ActionKind.PRUNE and action.app in failed_apps:
                # Prune only after a successful apply of the whole app.
                reason = "not pruned: an apply of this app failed in this reconcile"
                outcome = Outcome(action.app, action.ref, Result.SKIPPED, reason)
            else:
                settle = GroupKind(action.ref.group, action.ref.kind) in new_kinds
                try:
                    outcome = self._write(action, settle, rules.get(action.app, AppRules()))
                except Unreachable as exc:
                    unreachable = str(exc)
                    outcome = Outcome(action.app, action.ref, Result.FAILED, unreachable)
                if outcome.result is Result.FAILED:
                    failed_apps.add(action.app)
                elif action.manifest is not None and action.ref.kind == "CustomResourceDefinition":
                    new_kinds.add(_defined_kind(action.manifest.obj))
            executed.append((action, outcome))
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
        return executed, unreachable

    def _write(self, action: Action, settle: bool, rules: AppRules) -> Outcome:
        try:
            if action.kind is ActionKind.PRUNE:
                live = self._live_or_none(action.ref)
                uid = (live or {}).get("metadata", {}).get("uid")
                with contextlib.suppress(NotFound):  # gone already: pruned all the same
                    _retrying(lambda: self.client.delete(action.ref, uid=uid))
                return Outcome(action.app, action.ref, Result.PRUNED)
            assert action.manifest is not None, "a create, update or hook carries a manifest"
            obj = action.manifest.obj
            if action.kind is ActionKind.HOOK and DeletePolicy.BEFORE_HOOK_CREATION in (
                action.delete_policies
            ):
                self._delete_if_present(action.ref)
            applied = self._apply(obj, _CRD_SETTLE_S if settle else 0.0)
            if action.tracked or action.kind is ActionKind.HOOK:
                # What was just applied is in sync: the next reconcile needs no dry-run
                # (a hook is desired state too, and is diffed like the rest).
                verdict = self._verdict(action.manifest, applied, rules)
                self.store.remember_in_sync(self.name, [(action.ref, verdict)])
            if action.tracked:
                api_version = str(obj.get("apiVersion", ""))
                self.store.add_inventory(
                    self.name, [InventoryItem(action.app, action.ref, api_version)]
                )
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
            return Outcome(action.app, action.ref, Result.FAILED, self._contain(action.ref, exc))

    def _apply(self, obj: Mapping[str, Any], settle: float) -> dict[str, Any]:
        """Server-side apply; fields last written by hand (kubectl edit, client-side
        apply) are taken back, while a conflict with another controller is reported."""
        deadline = time.monotonic() + settle
        while True:
            try:
                try:
                    return _retrying(lambda: self.client.apply(obj))
                except Conflict as conflict:
                    managers = set(_CONFLICT_MANAGER.findall(" ".join(conflict.fields)))
                    if not managers or not all(TAKEOVER_MANAGERS.match(m) for m in managers):
                        raise
                    return _retrying(lambda: self.client.apply(obj, force=True))
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
            _retrying(lambda: self.client.delete(ref, propagation="Foreground"))
            while time.monotonic() < deadline:
                self.client.get(ref)
                time.sleep(0.25)
        except NotFound:
            return
        raise ClusterError(self.name, f"{ref}: the previous hook run is still being deleted", ref)

    def _healths(
        self, manifests: Sequence[Manifest], just_written: Collection[ObjectRef]
    ) -> dict[str, str | None]:
        """Each app's health: that of its least healthy object, Missing if one is absent
        (an object written moments ago, not yet seen by the cache, is Progressing)."""
        by_app: dict[str, list[str]] = defaultdict(list)
        for m in manifests:
            live = self._live_or_none(m.ref)
            if live is not None:
                health = object_health(live)
            else:
                health = "Progressing" if m.ref in just_written else "Missing"
            by_app[m.origin.app].append(health)
        return {app: worst(healths) for app, healths in by_app.items()}

    def _record_inventory(
        self,
        previous: Sequence[InventoryItem],
        by_app: Mapping[str, set[ObjectRef]],
        executed: Iterable[tuple[Action, Outcome]],
        manifests: Sequence[Manifest],
        scope: Collection[str] | None,
    ) -> None:
        versions = {i.ref: i.api_version for i in previous}
        versions.update({m.ref: str(m.obj.get("apiVersion", "")) for m in manifests})
        after = next_inventory(by_app, ((a, o.result) for a, o in executed))
        self.store.replace_inventory(
            self.name,
            [
                InventoryItem(app, ref, versions.get(ref, ""))
                for app, refs in sorted(after.items())
                for ref in sorted(refs)
            ],
            scope,
        )

    def _record(
        self,
        report: Report,
        apps: Sequence[App],
        healths: Mapping[str, str | None],
        started_at: str,
        scope: Collection[str] | None,
    ) -> None:
        drift_by_app = Counter(app for app, _ in report.drifts)
        errors_by_app: dict[str, str] = {}
        for error in report.errors:
            errors_by_app.setdefault(error.app, str(error))
        for o in report.outcomes:
            # Work that waits for the live view is not done: the app says why.
            if o.result is Result.FAILED or o.message.startswith(WAITING):
                errors_by_app.setdefault(o.app, f"{o.ref}: {o.message}")
        records = []
        for app in apps:
            argo = report.argocd.get(app.name)
            # Argo CD's own verdict wins where it has one (report-mode clusters).
            health = argo.health if argo and argo.health else healths.get(app.name)
            synced = not drift_by_app[app.name] and app.name not in errors_by_app
            records.append(
                AppRecord(
                    self.name,
                    app.name,
                    "Synced" if synced else "OutOfSync",
                    health,
                    drift_by_app[app.name],
                    errors_by_app.get(app.name),
                )
            )
        self.store.replace_apps(self.name, records, scope)
        self.store.replace_drift(self.name, report.drifts, scope)
        self.store.record_events(
            self.name,
            [
                (o.app, str(o.ref), o.result.value, o.message)
                for o in report.outcomes
                if o.result is not Result.UNCHANGED
            ],
        )
        self.store.record_run(
            RunRecord(
                self.name,
                started_at,
                report.duration_s,
                report.result,
                {r.value: n for r, n in report.counts.items()},
            )
        )


def _ignore_progress(_within_s: float) -> None:
    pass


def _defined_kind(crd: Mapping[str, Any]) -> GroupKind:
    spec = crd.get("spec") or {}
    return GroupKind(str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", "")))


def _namespace(name: str) -> ObjectRef:
    return ObjectRef("", "Namespace", "", name)


def _tracked(m: Manifest) -> Manifest:
    """The manifest with the reconciler's tracking label for its app."""
    metadata = dict(m.obj.get("metadata") or {})
    labels = dict(metadata.get("labels") or {})
    labels[TRACKING_LABEL] = m.origin.app
    metadata["labels"] = labels
    return Manifest(m.ref, {**m.obj, "metadata": metadata}, m.origin)


def _retrying(call: Callable[[], T]) -> T:
    """`call`, retried with backoff while the cluster reports a transient failure."""
    for pause in _RETRIES:
        try:
            return call()
        except ClusterError as exc:
            if not exc.transient:
                raise
            time.sleep(pause)
    return call()
