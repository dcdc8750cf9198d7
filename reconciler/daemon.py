"""`reconciler run`: one process that keeps every cluster converged, driven by events.

Events only decide *when* a cluster is reconciled; each reconcile starts from
scratch (invariant 3). Triggers: a new commit on a tracked ref (watchfiles on
each clone's git directory, and a periodic fetch), a watch event on a managed
live object, and a periodic full resync. Each cluster has its own worker
thread, so a slow or unreachable cluster never delays the others. A trigger
on an idle worker starts a reconcile at once; triggers that arrive while it
runs are coalesced into one follow-up, which starts `daemon.debounce_s` after
the previous reconcile ended. Desired state is rendered once per commit change
and shared.

A reconcile looks at what its triggers concern, from scratch: a commit, the apps
whose desired state it moved; a watch event, the apps owning the object (the echo
of the daemon's own write is no event at all); a resync, a restart or a sync
request, the whole cluster, so nothing a narrower one missed stays missed. What a
reconcile of some apps does not look at keeps its last record.

Every thread and job runs under `reconciler.supervise`: an unexpected exception
is logged (redacted), counted, recorded and the part restarted with backoff;
the heartbeat and systemd's watchdog are fed only while no part is stuck, so a
daemon that stopped reconciling is restarted rather than reported healthy.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import math
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import watchfiles
from apscheduler.schedulers.background import BackgroundScheduler

from reconciler import logs, requests, systemd
from reconciler.catalogue import Catalogue
from reconciler.cluster import ClusterError, NotSynced, Unreachable
from reconciler.config import Config
from reconciler.desired import ClusterDesired, Desired, prune_checkouts
from reconciler.diff.fingerprint import digest
from reconciler.diff.redact import redact_text
from reconciler.engine import ClusterEngine, owners
from reconciler.errors import ReconcilerError
from reconciler.metrics import Metrics, MetricsServer
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
    Violation,
)
from reconciler.notify import inbound
from reconciler.notify.notifier import Notifier, Observe
from reconciler.render.memo import unstamped
from reconciler.report import Finding, Report
from reconciler.session import Session, apps_by_cluster, open_session
from reconciler.shipping import ShippingConfig
from reconciler.store import RequestRecord, Store, now
from reconciler.supervise import Health, Supervisor, formatted, short

HEARTBEAT_S = 5.0
SHUTDOWN_DEADLINE_S = 8.0
# A worker that shows no progress for 3 resync intervals (never less than this) is stuck.
MIN_STALL_S = 30.0
# A reconcile tells of progress per object; the supervisor hears of it when that moves
# the worker's deadline by at least this much (far inside MIN_STALL_S): one Health
# lock per object, taken by three workers and every watch, queued them on each other.
PROGRESS_EVERY_S = 1.0
# Rendering every app (Helm charts included) may take minutes; past this it is stuck.
RENDER_DEADLINE_S = 900.0
# A live object reverted this often within the window is flapping: another writer
# keeps changing it back, so the reconciler backs off instead of fighting forever.
FLAP_REVERTS = 3
FLAP_WINDOW_S = 600.0
FLAP_BACKOFF_S = (60.0, 300.0, 1800.0)
_GIT_TRIGGERS = {"HEAD", "FETCH_HEAD", "ORIG_HEAD", "packed-refs"}
# A follow-up waits at most this long for the watch events of the last reconcile's writes.
ECHO_WAIT_S = 2.0
# A write whose echo has not come by then never will (its watch listed afresh meanwhile).
ECHO_FORGET_S = 60.0
# Kinds other apps' objects live in or are served by: a change to one is the cluster's.
_FOUNDATIONS = frozenset({NAMESPACE, CRD})
_WRITES = (Result.CREATED, Result.CONFIGURED, Result.PRUNED)
# watchfiles yields a batch once no change came for its step (50 ms) or after this
# long: a commit (lock file, ref, reflog) is one batch, and a ref renders at once.
GIT_DEBOUNCE_MS = 50


@dataclass
class _Flapping:
    """Reverts of live edits per object, and the backoff of those that flap."""

    reverts: dict[ObjectRef, list[float]] = field(default_factory=dict)
    held_until: dict[ObjectRef, float] = field(default_factory=dict)
    strikes: dict[ObjectRef, int] = field(default_factory=dict)

    def held(self, at: float) -> dict[ObjectRef, str]:
        return {
            ref: f"flapping: something keeps changing it back; retrying in {until - at:.0f}s"
            for ref, until in self.held_until.items()
            if until > at
        }

    def record_revert(self, ref: ObjectRef, at: float) -> bool:
        """Count a revert; True when this one makes the object flap."""
        recent = [t for t in self.reverts.get(ref, []) if at - t < FLAP_WINDOW_S] + [at]
        self.reverts[ref] = recent
        if len(recent) < FLAP_REVERTS:
            return False
        strike = self.strikes.get(ref, 0)
        self.strikes[ref] = strike + 1
        self.held_until[ref] = at + FLAP_BACKOFF_S[min(strike, len(FLAP_BACKOFF_S) - 1)]
        self.reverts[ref] = []
        return True


class _Echoes:
    """The watch events of the reconciler's own writes, its echoes.

    An echo (the object written, with the resourceVersion the write was answered
    with) is no drift: it triggers nothing. It may come before the answer does, so
    the events seen while a reconcile runs are held and judged when it ends (the
    follow-up could not start sooner anyway). The follow-up still waits for the
    echoes of the writes before it (at most ECHO_WAIT_S): the live cache must hold
    what was written, or the follow-up would take those writes for drift."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._seen: set[ObjectRef] = set()
        self._awaited: set[ObjectRef] = set()
        # (ref, resourceVersion) of each write whose echo has not come, and when written.
        self._own: dict[tuple[ObjectRef, str], float] = {}
        self._held: list[tuple[ObjectRef, str, str, bool]] = []
        self.arrived = threading.Event()
        self.arrived.set()

    def reconciling(self) -> None:
        at = time.monotonic()
        with self._lock:
            self._running, self._seen = True, set()
            self._own = {key: t for key, t in self._own.items() if at - t < ECHO_FORGET_S}

    def wrote(self, ref: ObjectRef, version: str) -> None:
        if version:
            with self._lock:
                self._own[(ref, version)] = time.monotonic()

    def changed(self, ref: ObjectRef, event: str, version: str, whole: bool) -> bool:
        """A watch event: True if it may be drift, False if it is an echo or is held
        until the running reconcile ends. A deletion is never an echo: the cache makes
        some up (a relist, a kind no longer listable) with the last version it held."""
        with self._lock:
            if self._running:
                self._seen.add(ref)
            self._awaited.discard(ref)
            if not self._awaited:
                self.arrived.set()
            if event != "DELETED" and self._own.pop((ref, version), None) is not None:
                return False
            if self._running:
                self._held.append((ref, event, version, whole))
                return False
            return True

    def ended(self, report: Report | None) -> list[tuple[ObjectRef, str, bool]]:
        """The reconcile ended: the events held while it ran that echo none of its
        writes, as (ref, event, whether it concerns the whole cluster)."""
        written = {o.ref for o in report.outcomes if o.result in _WRITES} if report else set()
        with self._lock:
            self._running, self._awaited = False, written - self._seen
            if self._awaited:
                self.arrived.clear()
            else:
                self.arrived.set()
            held, self._held = self._held, []
            return [
                (r, e, w)
                for r, e, v, w in held
                if e == "DELETED" or self._own.pop((r, v), None) is None
            ]


class ClusterRecord:
    """What a worker puts on record about its cluster (the state store's cluster row,
    the metrics), and the objects the store says the reconciler manages there."""

    def __init__(
        self,
        cluster: str,
        mode: Mode,
        store: Store,
        metrics: Metrics,
        notify: Observe | None = None,
    ) -> None:
        self.cluster = cluster
        self.mode = mode
        self._store = store
        self._metrics = metrics
        self._notify = notify
        # Each app's drifting objects as the store holds them (None: not read yet).
        self._drift: Counter[str] | None = None

    def inventory(self) -> list[InventoryItem]:
        return self._store.inventory(self.cluster)

    def failed(self, error: str, reachable: bool) -> None:
        self._store.record_cluster(self.cluster, self.mode, reachable, error)
        self._metrics.set_reachable(self.cluster, reachable)
        self._metrics.count_errors(self.cluster, "cluster")

    def request(self, record: RequestRecord) -> None:
        self._store.record_request(record)

    def reconciled(
        self,
        report: Report,
        apps: Collection[str],
        violations: Collection[Violation],
        findings: Collection[Finding],
        flapping: int,
    ) -> int:
        """`report` is on record; the metrics show every app of the cluster, `apps`,
        whether this reconcile covered it or not: their drift as the store now holds it
        (a reconcile of some apps leaves the others' as it was), the cluster's
        `violations` and `findings`. Returns the cluster's drifting objects."""
        reachable = report.unreachable is None
        self._store.record_cluster(self.cluster, self.mode, reachable, report.unreachable)
        self._metrics.set_reachable(self.cluster, reachable)
        drift_by_app = dict.fromkeys(apps, 0)
        drift_by_app.update(self._count_drift(report))
        self._metrics.observe_reconcile(
            self.cluster,
            self.mode,
            report.duration_s,
            report.counts,
            drift_by_app,
            ok=True,
            whole=report.scope is None,
        )
        if report.errors:
            self._metrics.count_errors(self.cluster, "object", len(report.errors))
        self._metrics.set_flapping(self.cluster, flapping)
        self._metrics.set_violations(self.cluster, Counter(v.policy for v in violations))
        self._metrics.set_findings(self.cluster, Counter(f.kind.value for f in findings))
        return sum(drift_by_app.values())

    def _count_drift(self, report: Report) -> Counter[str]:
        """Each app's drift after `report`, as the store now holds it: counted afresh
        for the apps it covered, kept for the others (the store is read once, not after
        every reconcile of one app)."""
        fresh = Counter(app for app, _ in report.drifts)
        if report.scope is None:
            self._drift = fresh
        elif self._drift is None:
            self._drift = Counter(d.app for d in self._store.drift(self.cluster))
        else:
            for app in report.scope:
                self._drift.pop(app, None)
            self._drift.update(fresh)
        return self._drift

    def observed(self, report: Report, only: Collection[str] | None) -> None:
        """Hand `report` (of the apps `only`, or all) to the notifier; never waits."""
        if self._notify is not None:
            self._notify(self.cluster, self.mode, report, only)


class Worker:
    """Reconciles one cluster whenever it is triggered, until stopped: at once when
    idle; the triggers that arrive during a reconcile make one follow-up, which
    starts `gap_s` after that reconcile ended, once the live cache holds its writes.
    A trigger names the apps it concerns (a watch event: those owning the object; a
    commit: those whose desired state it moved) or the whole cluster (a resync, a
    restart, a sync request); a reconcile covers what its triggers named together.

    It is handed only what it uses: its engine, the current desired state, its
    cluster's record, and the supervisor (whose stopping event ends it)."""

    def __init__(
        self,
        engine: ClusterEngine,
        desired: Callable[[], Desired | None],
        record: ClusterRecord,
        supervisor: Supervisor,
        *,
        gap_s: float,
        stall_s: float,
    ) -> None:
        self.name = f"worker {engine.name}"  # its thread's and its supervised part's
        self.engine = engine
        self._desired = desired
        self._record = record
        self._supervisor = supervisor
        self._gap_s = gap_s
        # When the last reconcile ended: a follow-up starts no sooner than `gap_s` after.
        self._ended = -math.inf
        self._echoes = _Echoes()
        self._stall_s = stall_s
        self.log = logs.get(cluster=engine.name)
        self._wake = threading.Event()
        self._reasons: set[str] = set()
        # What the next reconcile covers: the whole cluster, or these apps.
        self._whole = False
        self._apps: set[str] = set()
        self._lock = threading.Lock()
        # The apps owning each managed object (desired by them or in their inventory).
        self._owners: Mapping[ObjectRef, frozenset[str]] = {}
        # The metadata.generation of each namespace and CRD the apps own (see _founded).
        self._generations: dict[ObjectRef, int | None] = {}
        # The cluster's policy violations; a reconcile of some apps updates theirs.
        self._violations: tuple[Violation, ...] = ()
        self.flapping = _Flapping()
        self._applied: dict[ObjectRef, str] = {}
        # Sync requests (reconciler.requests) the next reconcile carries out, and why
        # the last one failed, for their answer.
        self._requests: list[requests.Request] = []
        self._failure = ""
        self._findings: frozenset[Finding] = frozenset()
        self.reconciles = 0
        # Kinds that could not be listed in the last reconcile: their work waits for them.
        self._waiting: frozenset[GroupKind] = frozenset()
        self.thread: threading.Thread | None = None
        self._looped = False
        # The deadline of the last progress the supervisor heard of (-inf: idle since).
        self._told_until = float("-inf")
        engine.progress = self._progress
        engine.wrote = self._echoes.wrote
        engine.internal_error = functools.partial(supervisor.health.failed, self.name)

    def start(self) -> None:
        self.thread = self._supervisor.thread(self.name, self._loop)

    def _progress(self, within_s: float) -> None:
        until = time.monotonic() + max(self._stall_s, within_s)
        if 0.0 <= until - self._told_until < PROGRESS_EVERY_S:
            return
        self._told_until = until
        self._supervisor.health.busy(self.name, max(self._stall_s, within_s), "reconcile")

    def trigger(self, reason: str, apps: Collection[str] | None = None) -> None:
        """Reconcile soon: the apps named, or the whole cluster (None)."""
        with self._lock:
            self._reasons.add(reason)
            if apps is None:
                self._whole = True
            else:
                self._apps.update(apps)
        self._wake.set()

    def request(self, request: requests.Request) -> None:
        """A person asked to sync one of this cluster's apps now."""
        with self._lock:
            self._requests.append(request)
        self.trigger(f"sync request {request.app}")

    def on_change(self, ref: ObjectRef, event: str, version: str) -> None:
        # Judged as it comes (an echo too), while the cache holds what the event brought.
        whole = GroupKind(ref.group, ref.kind) in _FOUNDATIONS and self._founded(ref, event)
        if self._echoes.changed(ref, event, version, whole):
            self._changed(ref, event, whole)

    def _changed(self, ref: ObjectRef, event: str, whole: bool) -> None:
        owners = self._owners.get(ref)
        # Watch events on objects the reconciler does not manage are none of its business.
        if owners is None:
            return
        self.trigger(f"watch {event.lower()} {ref}", None if whole else owners)

    def _founded(self, ref: ObjectRef, event: str) -> bool:
        """Whether a change of namespace or CRD `ref` concerns the other apps' objects
        (living in it, or served by it): its coming, its going or a new spec (a new
        generation), not the status the API server writes (a CRD's Established)."""
        generation = _generation(self.engine.cache.get(ref))
        before = self._generations.get(ref)
        self._generations[ref] = generation
        return event != "MODIFIED" or before != generation

    def _remember_foundations(self) -> None:
        """The generation of each namespace and CRD the apps own, as the cache holds it
        after a reconcile (its own writes included): the next change is judged by it."""
        for ref in self._owners:
            if GroupKind(ref.group, ref.kind) in _FOUNDATIONS:
                live = self.engine.cache.get(ref)
                if live is not None:
                    self._generations[ref] = _generation(live)

    def _loop(self) -> None:
        stopping, health = self._supervisor.stopping, self._supervisor.health
        if self._looped:
            # Restarted by the supervisor: what the failed reconcile was for is still due.
            self.trigger("restart")
        self._looped = True
        while not stopping.is_set():
            health.idle(self.name)
            self._told_until = float("-inf")
            if self._waiting and not self._waiting & self.engine.cache.unlisted().keys():
                self._waiting = frozenset()
                self.trigger("kinds listable again")
            if not self._wake.wait(timeout=1.0) or stopping.is_set():
                continue
            # A follow-up waits out the gap (so a stream of watch events never makes
            # back-to-back reconciles) and the echoes of the last reconcile's writes.
            stopping.wait(max(0.0, self._ended + self._gap_s - time.monotonic()))
            self._echoes.arrived.wait(max(0.0, self._ended + ECHO_WAIT_S - time.monotonic()))
            with self._lock:
                reasons, self._reasons = self._reasons, set()
                only = None if self._whole else frozenset(self._apps)
                self._whole, self._apps = False, set()
                self._wake.clear()
            if not stopping.is_set():
                self._progress(0.0)
                self.reconcile(reasons, only)

    def reconcile(self, reasons: set[str], only: frozenset[str] | None = None) -> Report | None:
        """Reconcile the cluster (or the apps `only` names); the sync requests taken
        with it get their answer whatever happens, so a person waiting for one is never
        left hanging. Then the watch events held while it ran that were no echo of its
        writes trigger the next."""
        with self._lock:
            asked, self._requests = self._requests, []
        if asked:
            only = None  # a request waits for the cluster's state, not an app's slice of it
        for request in asked:
            self._record.request(request.record("running", self.engine.name))
        report: Report | None = None
        self._failure = "the reconcile stopped on an internal error: see the daemon's log"
        self._echoes.reconciling()
        try:
            report = self._reconcile(reasons, asked, only)
        finally:
            self._ended = time.monotonic()
            if report is None or report.unreachable is not None:
                # What it was for (and what a commit moved meanwhile) is undone: the
                # next reconcile, whatever starts it, covers the whole cluster.
                with self._lock:
                    self._whole = True
            changed = self._echoes.ended(report)
            self._answer(asked, report)
        for ref, event, whole in changed:
            self._changed(ref, event, whole)
        return report

    def _answer(self, asked: list[requests.Request], report: Report | None) -> None:
        for request in asked:
            if report is None:
                why = f"cluster {self.engine.name}: {self._failure}"
                record = request.record(
                    "failed",
                    self.engine.name,
                    exit_code=requests.EXIT_STOPPED,
                    summary=why,
                    output=(f"err: {why}",),
                )
            else:
                output = requests.sync_output(report, request.app)
                outcomes = tuple(
                    {"object": str(o.ref), "result": o.result.value, "message": o.message}
                    for o in report.outcomes
                    if o.app == request.app
                )
                record = request.record(
                    "done",
                    self.engine.name,
                    exit_code=output.exit_code,
                    summary=output.out[-1],
                    output=output.lines,
                    outcomes=outcomes,
                )
            self._record.request(record)
            self.log.info(
                "sync.request.done",
                app=request.app,
                request=request.id,
                user=request.user,
                state=record.state,
                exit_code=record.exit_code,
            )

    def _reconcile(
        self, reasons: set[str], asked: list[requests.Request], only: frozenset[str] | None
    ) -> Report | None:
        desired = self._desired()
        if desired is None or self.engine.name not in desired.clusters:
            self._failure = "no desired state for this cluster: see `reconciler status`"
            return None
        apps = apps_by_cluster(desired).get(self.engine.name, [])
        log = self.log.bind(reasons=sorted(reasons)[:5], scope=_scope(only))
        try:
            self.engine.pin_identity()
            report = self.engine.reconcile(
                desired.clusters[self.engine.name],
                apps,
                held=self.flapping.held(time.monotonic()),
                requested=requests.wanted(asked),
                only=only,
            )
        except ClusterError as exc:
            reachable = not isinstance(exc, Unreachable)
            self._failure = str(exc)
            self._record.failed(str(exc), reachable)
            log.error("reconcile.failed", error=str(exc))
            return None
        except ReconcilerError as exc:
            self._failure = str(exc)
            self._record.failed(str(exc), True)
            log.error("reconcile.failed", error=str(exc))
            return None
        self.reconciles += 1
        self._waiting = frozenset(report.unlisted)
        drift = self._observe(report, desired, apps, only)
        log.info(
            "reconcile.done",
            # What it covered: the apps asked for and those sharing an object with them.
            scope=_scope(report.scope),
            result=report.result,
            duration_s=round(report.duration_s, 3),
            drift=drift,
            errors=len(report.errors),
            **{r.value: n for r, n in report.counts.items() if r is not Result.UNCHANGED},
        )
        return report

    def _observe(
        self, report: Report, desired: Desired, apps: list[App], only: frozenset[str] | None
    ) -> int:
        """Put the reconcile on record; returns the cluster's drifting objects."""
        # The engine widens the scope asked for to the apps sharing an object with them.
        only = report.scope
        manifests = desired.clusters[self.engine.name].manifests
        self._owners = owners(manifests, self._record.inventory())
        self._remember_foundations()
        self._track_reverts(report, manifests)
        self._log_findings(report.findings, only)
        scanned = {GroupKind(m.ref.group, m.ref.kind) for m in manifests if _within(m, only)}
        self._violations = kept_violations(self._violations, report.violations, only, scanned)
        drift = self._record.reconciled(
            report,
            [app.name for app in apps],
            self._violations,
            self._findings,
            len(self.flapping.held(time.monotonic())),
        )
        self._record.observed(report, only)
        return drift

    def _log_findings(self, findings: Collection[Finding], only: frozenset[str] | None) -> None:
        """One warning per finding when it appears, not one per resync while it stays
        (nor when a reconcile of other apps leaves it alone)."""
        if only is not None:
            findings = {f for f in self._findings if f.app not in only} | set(findings)
        for finding in set(findings) - self._findings:
            self.log.warning(
                "app.finding",
                app=finding.app,
                kind=finding.kind.value,
                object=str(finding.ref) if finding.ref else None,
                message=finding.message,
            )
        self._findings = frozenset(findings)

    def _track_reverts(self, report: Report, manifests: Collection[Manifest]) -> None:
        """An object configured again with the same desired state was changed by
        someone else: a revert. Too many in a row make it flap. Only what was written
        is digested: most reconciles write little of a large cluster."""
        at = time.monotonic()
        written = [o for o in report.outcomes if o.result in (Result.CREATED, Result.CONFIGURED)]
        refs = {o.ref for o in written}
        digests = {m.ref: digest(m.obj) for m in manifests if m.ref in refs} if refs else {}
        for outcome in written:
            done = digests.get(outcome.ref)
            if done is None:
                continue
            reverted = self._applied.get(outcome.ref) == done
            if reverted and self.flapping.record_revert(outcome.ref, at):
                self.log.warning("object.flapping", app=outcome.app, object=str(outcome.ref))
            self._applied[outcome.ref] = done


def _scope(only: Collection[str] | None) -> str | list[str]:
    return "cluster" if only is None else sorted(only)


def _generation(obj: Mapping[str, Any] | None) -> int | None:
    generation = ((obj or {}).get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def kept_violations(
    before: Collection[Violation],
    found: Collection[Violation],
    only: Collection[str] | None,
    scanned: Collection[GroupKind],
) -> tuple[Violation, ...]:
    """The cluster's violations after a reconcile `found` some: all of them for the
    whole cluster; for some apps (`only`), which looked at their desired objects and at
    the live objects of the kinds `scanned`, the others' stay as they were."""
    if only is None:
        return tuple(found)
    kept = [
        v
        for v in before
        if not (v.source == "desired" and v.app in only)
        and not (v.source == "live" and GroupKind(v.ref.group, v.ref.kind) in scanned)
    ]
    return (*kept, *found)


def _within(manifest: Manifest, only: Collection[str] | None) -> bool:
    return only is None or manifest.origin.app in only


def keep_last_good(new: Desired, old: Desired | None, broken: Collection[str]) -> Desired:
    """`new`, with the apps of the `broken` repos (unreadable, corrupt, ref gone) taken
    from `old`, the last desired state rendered: a repo that cannot be read must not
    make its apps vanish (their objects would be left unmanaged, edits no longer
    reverted), nor change them. Apps of those repos that `new` still has are kept.
    The commits those repos were last read at stay among those in use, so their
    checkouts are not pruned (prune_checkouts) while the apps are rendered from them."""
    if old is None or not broken:
        return new
    present = {app.name for app in new.catalogue.apps}
    kept = [a for a in old.catalogue.apps if a.origin.repo in broken and a.name not in present]
    if not kept:
        return new
    names = {app.name for app in kept}
    clusters = {}
    for name, now_ in new.clusters.items():
        before = old.clusters.get(name)
        if before is None:
            clusters[name] = now_
            continue
        taken = {m.ref for m in now_.manifests}
        clusters[name] = replace(
            now_,
            manifests=now_.manifests
            + tuple(m for m in before.manifests if m.origin.app in names and m.ref not in taken),
            apps=now_.apps + tuple(a for a in before.apps if a in names),
            failed=now_.failed + tuple(a for a in before.failed if a in names),
            errors=now_.errors + tuple(e for e in before.errors if e.app in names),
        )
    catalogue = Catalogue(new.catalogue.apps + tuple(kept), new.catalogue.errors)
    commits = {**{r: c for r, c in old.commits.items() if r in broken}, **new.commits}
    revisions = {
        **{k: c for k, c in old.revisions.items() if k.partition("@")[0] in broken},
        **new.revisions,
    }
    return replace(
        new, clusters=clusters, catalogue=catalogue, commits=commits, revisions=revisions
    )


class Daemon:
    """The running reconciler: desired state, one worker per cluster, the triggers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.log = logs.get()
        self.metrics = Metrics(version=_version())
        self.health = Health(on_failure=self._internal_error, redact=self._redact)
        self.supervisor = Supervisor(self.health, self.stopping)
        self.stall_s = max(3 * config.daemon.resync_interval_s, MIN_STALL_S)
        self._stuck: tuple[str, ...] = ()
        # Watch events may arrive as soon as the caches start, before the workers exist.
        self.workers: dict[str, Worker] = {}
        self.desired: Desired | None = None
        self.session: Session = open_session(config, on_change=self._on_change)
        self.store = self.session.store
        self.notifier = Notifier(config.notify.matrix, self.store, self.metrics, self.supervisor)
        for engine in self.session.engines.values():
            engine.cache.supervise(self.health)
        self._repo_errors: Mapping[str, str] = {}
        self._render_lock = threading.Lock()
        # Sync requests handed to a worker and not yet answered.
        self._taken: set[str] = set()
        self.workers.update(
            {name: self._worker(engine) for name, engine in self.session.engines.items()}
        )
        self.started_at = now()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._metrics_server: MetricsServer | None = None

    def _worker(self, engine: ClusterEngine) -> Worker:
        return Worker(
            engine,
            lambda: self.desired,
            ClusterRecord(
                engine.name, engine.mode, self.store, self.metrics, self.notifier.observe
            ),
            self.supervisor,
            gap_s=self.config.daemon.debounce_s,
            stall_s=self.stall_s,
        )

    def _on_change(self, cluster: str, ref: ObjectRef, event: str, version: str) -> None:
        worker = self.workers.get(cluster)
        if worker is not None:
            worker.on_change(ref, event, version)

    # -- desired state --------------------------------------------------------------

    def refresh(self, fetch: bool = False) -> dict[str, frozenset[str] | None]:
        """Render desired state again; the clusters whose desired state moved with a
        tracked commit (or an error), each with the apps that moved (None: all of them,
        see `_moved`): every cluster the first time, none when nothing did."""
        with self._render_lock:
            desired = self.session.render(fetch=fetch)
            self.metrics.count_renders(desired.rendered, desired.reused)
            self.session.record_repos(desired)
            for name, problem in sorted(desired.unreadable.items()):
                if self._repo_errors.get(name) != problem:
                    self.log.error("repo.unreadable", repo=name, error=problem)
            self._repo_errors = desired.unreadable
            # A repo that cannot be read right now keeps its apps' last good desired state.
            desired = keep_last_good(desired, self.desired, desired.unreadable)
            # After keep_last_good: the commits it keeps in use keep their checkouts.
            pruned = prune_checkouts(self.session.config, desired, self.desired)
            if pruned:
                self.log.info("checkouts.pruned", removed=pruned)
            moved = _moved(desired, self.desired)
            # Same commits, same errors and the same objects are the same render, and
            # keeping the object keeps the engines' per-render caches. Commits alone do
            # not say it: a destination's capabilities or a chart version range may
            # change what renders, and a chart that could not be fetched may be back.
            if self.desired is not None and _same_render(desired, self.desired) and not moved:
                return {}
            self.desired = desired
            self.log.info(
                "desired.rendered",
                commits=desired.commits,
                errors=len(desired.errors),
                rendered=desired.rendered,
                reused=desired.reused,
            )
            for error in desired.errors:
                self.log.warning(
                    "app.error", app=error.app, cluster=error.cluster, error=error.message
                )
            return moved

    def _commit_moved(self, fetch: bool, part: str = "") -> None:
        if part:
            self.health.busy(part, RENDER_DEADLINE_S, "render")
        try:
            # A cluster (an app) whose desired state the commit left as it was has
            # nothing to do.
            moved = self.refresh(fetch=fetch)
            for name in sorted(moved):
                worker = self.workers.get(name)
                if worker is not None:
                    worker.trigger("commit", moved[name])
        except ReconcilerError as exc:
            self.log.error("desired.failed", error=str(exc))

    def trigger_all(self, reason: str) -> None:
        for worker in self.workers.values():
            worker.trigger(reason)

    # -- life cycle -----------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for name, problem in self.session.broken.items():
            self.log.error("cluster.unusable", cluster=name, error=problem)
        self._serve_metrics()
        self._commit_moved(fetch=False)
        self._first_reconcile()
        systemd.ready(f"watching {len(self.workers)} clusters")
        self.log.info("daemon.ready", clusters=sorted(self.workers))
        for worker in self.workers.values():
            worker.start()
        self._schedule()
        self.supervisor.thread("git-watch", self._watch_repos)
        spool = requests.prepare(self.config.state_dir)
        self.supervisor.thread("requests", functools.partial(self._serve_requests, spool))
        self.notifier.start()
        report_only = {c.name for c in self.session.config.clusters if c.mode == "report"}
        inbound.start(
            self.config.notify.matrix,
            self.store,
            self.supervisor,
            self.metrics,
            report_only,
            self._hand_request,
        )
        interval = systemd.watchdog_interval() or HEARTBEAT_S
        self._check_health()
        while not self.stopping.wait(min(interval, HEARTBEAT_S)):
            self._check_health()
        return self._shutdown()

    def _check_health(self) -> None:
        """Record every part's health; beat and feed the watchdog only if none is stuck,
        so systemd restarts a daemon that has stopped making progress."""
        parts = self.health.snapshot()
        self.notifier.daemon_health(parts)
        self.store.replace_components(parts)
        stuck = {p.name: p.detail for p in parts if p.state == "stuck"}
        if tuple(stuck) != self._stuck:
            self._stuck = tuple(stuck)
            if stuck:
                self.log.error("daemon.stuck", parts=stuck)
                systemd.status("stuck: " + "; ".join(f"{n}: {d}" for n, d in stuck.items()))
            else:
                self.log.info("daemon.progressing")
                systemd.status(f"watching {len(self.workers)} clusters")
        if not stuck:
            systemd.watchdog()
            self.store.beat(self.started_at)

    def _internal_error(self, part: str, exc: BaseException, repeated: bool) -> None:
        """Count an unexpected exception and log it, with its traceback unless the part
        failed the same way last time; Secret values it may quote are redacted first."""
        self.metrics.count_internal_error(part)
        if repeated:
            self.log.warning("internal.error.again", component=part, error=self._redact(short(exc)))
            return
        self.log.error(
            "internal.error",
            component=part,
            error=self._redact(short(exc)),
            traceback=self._redact(formatted(exc)),
        )

    def _redact(self, text: str) -> str:
        """`text` with the value of every Secret the daemon knows (desired or live) redacted."""
        secrets = [
            m.obj
            for cluster in (self.desired.clusters.values() if self.desired else ())
            for m in cluster.manifests
            if (m.ref.group, m.ref.kind) == ("", "Secret")
        ]
        for engine in self.session.engines.values():
            with contextlib.suppress(NotSynced):
                secrets.extend(engine.cache.objects("", "Secret"))
        return redact_text(text, secrets)

    def _first_reconcile(self) -> None:
        """Reconcile every cluster once, in parallel, before telling systemd we are ready."""
        self.store.beat(self.started_at)
        threads = [
            threading.Thread(
                target=self.supervisor.call,
                args=(w.name, functools.partial(w.reconcile, {"start"}), self.stall_s),
                daemon=True,
            )
            for w in self.workers.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive() and not self.stopping.is_set():
                t.join(HEARTBEAT_S)
                self.store.beat(self.started_at)

    def _schedule(self) -> None:
        d = self.config.daemon
        jobs = {
            "fetch": (d.fetch_interval_s, functools.partial(self._commit_moved, True)),
            "resync": (d.resync_interval_s, functools.partial(self.trigger_all, "resync")),
            "retention": (
                3600.0,
                functools.partial(
                    self.store.drop_history, datetime.timedelta(days=d.retention_days)
                ),
            ),
        }
        for job, (every_s, work) in jobs.items():
            part = f"job {job}"
            self.health.idle(part)
            self.scheduler.add_job(
                self.supervisor.call,
                "interval",
                seconds=every_s,
                args=(part, work, RENDER_DEADLINE_S),
                id=job,
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.start()

    def _watch_repos(self) -> None:
        """A local commit, a pull or a fetch moves a ref in the clone's git directory."""
        paths = [r.path / ".git" for r in self.config.repos if (r.path / ".git").is_dir()]
        paths += [r.path for r in self.config.repos if (r.path / "refs").is_dir()]  # bare
        if not paths:
            return
        watching = False
        self.health.idle("git-watch")
        for changes in watchfiles.watch(
            *paths,
            watch_filter=_git_ref_filter,
            stop_event=self.stopping,
            debounce=GIT_DEBOUNCE_MS,
            rust_timeout=1000,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            # The first (possibly empty) yield comes once the watch is in place: look
            # again then, or a commit made after the first render but before the
            # watch began would wait for the next periodic fetch.
            if changes or not watching:
                watching = True
                self._commit_moved(fetch=False, part="git-watch")
            self.health.idle("git-watch")

    def _serve_requests(self, spool: Path) -> None:
        """Take each sync request dropped in the spool to its app's cluster worker
        (reconciler.requests); a request's file goes once its answer is on record."""
        self.health.idle("requests")
        while not self.stopping.wait(requests.POLL_S):
            for path, request in requests.pending(spool):
                self._take_request(path, request)
            self.health.idle("requests")

    def _take_request(self, path: Path, request: requests.Request | str) -> None:
        if isinstance(request, str):
            self.log.warning("sync.request.invalid", file=path.name, error=request)
            path.unlink(missing_ok=True)
            return
        known = self.store.request(request.id)
        if known is not None and known.state in requests.FINISHED:
            path.unlink(missing_ok=True)
            self._taken.discard(request.id)
            return
        if request.id in self._taken:
            return
        if self._hand_request(request) is None:
            self._taken.add(request.id)
        else:
            path.unlink(missing_ok=True)

    def _hand_request(self, request: requests.Request) -> str | None:
        """Hand `request` (spooled, or approved in the Matrix room: reconciler.notify.
        inbound) to its app's worker; None once taken, else why it is refused (on record)."""
        log = self.log.bind(app=request.app, request=request.id, user=request.user)
        log.info("sync.requested", prune=request.prune)
        worker, refusal = self._route(request)
        if worker is None:
            log.warning("sync.request.refused", reason=refusal)
            self.store.record_request(
                request.record(
                    "refused",
                    exit_code=requests.EXIT_STOPPED,
                    summary=refusal,
                    output=(f"err: {refusal}",),
                )
            )
            return refusal
        self.store.record_request(request.record("queued", worker.engine.name))
        worker.request(request)
        return None

    def _route(self, request: requests.Request) -> tuple[Worker | None, str]:
        """The worker of the requested app's cluster, or why the request is refused."""
        app = request.app
        desired = self.desired
        if desired is None:
            return None, "the daemon has no desired state yet: see `reconciler status`"
        report_only = {c.name for c in self.session.config.clusters if c.mode == "report"}
        departed = self.session.departed(desired.catalogue)
        refusal = requests.refusal(desired.catalogue, app, report_only, request.cluster, departed)
        if refusal is not None:
            return None, refusal
        cluster = requests.home_cluster(desired.catalogue, app, departed)
        assert cluster is not None, "an app that is not refused has a cluster"
        worker = self.workers.get(cluster)
        if worker is None or worker.engine.report_only:
            why = self.session.broken.get(cluster, "not set up")
            return None, f"cluster {cluster} is not usable: {why}"
        return worker, ""

    def _serve_metrics(self) -> None:
        address = self.config.daemon.metrics_address
        if not address:
            return
        host, _, port = address.rpartition(":")
        self._metrics_server = self.metrics.serve(host.strip("[]"), int(port))
        for name, engine in self.session.engines.items():
            self.metrics.read_watch_stats(name, engine.cache.stats)
        self.log.info("metrics.serving", address=f"{host}:{self._metrics_server.port}")

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.log.info("daemon.stopping", signal=signal.Signals(signum).name)
        systemd.stopping()
        self.stopping.set()

    def _shutdown(self) -> int:
        """Let in-flight reconciles end (each apply is one request), then flush and close."""
        deadline = time.monotonic() + SHUTDOWN_DEADLINE_S
        self.scheduler.shutdown(wait=False)
        for worker in self.workers.values():
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        if self._metrics_server is not None:
            self._metrics_server.close(timeout=1.0)
        self.store.beat(self.started_at)
        self.session.close()
        self.log.info("daemon.stopped")
        return 0


def _same_render(new: Desired, old: Desired) -> bool:
    """The same commits read (tracked, and pinned by targetRevision) and the same
    errors: `new` renders nothing `old` did not."""
    errors = sorted(str(e) for e in new.errors)
    return (new.commits, new.revisions, errors) == (
        old.commits,
        old.revisions,
        sorted(str(e) for e in old.errors),
    )


def _moved(new: Desired, old: Desired | None) -> dict[str, frozenset[str] | None]:
    """The clusters whose desired state differs in substance between `old` and `new`,
    each with the apps whose part of it moved (added, changed or gone); the commits
    objects and apps were read at do not count, so a commit that changed none of a
    cluster's objects, apps or errors leaves that cluster alone. None stands for all
    of a cluster's apps: on the first render, for an error of no one cluster, a new
    cluster, or when a moved app's namespaces or CRDs moved (other apps' objects need
    them)."""
    if old is None or _unplaced(new) != _unplaced(old):
        return dict.fromkeys(new.clusters)
    moved: dict[str, frozenset[str] | None] = {}
    for name, desired in new.clusters.items():
        before = old.clusters.get(name)
        if before is None:
            moved[name] = None
            continue
        now_, then = _substance(desired), _substance(before)
        apps = frozenset(a for a in now_.keys() | then.keys() if now_.get(a) != then.get(a))
        if apps:
            same = _foundations(desired, apps) == _foundations(before, apps)
            moved[name] = apps if same else None
    return moved


def _foundations(desired: ClusterDesired, apps: Collection[str]) -> list[object]:
    """The namespaces and CRDs `apps` render: other apps' objects may need them."""
    return [
        (m.ref, m.obj)
        for m in desired.manifests
        if m.origin.app in apps and GroupKind(m.ref.group, m.ref.kind) in _FOUNDATIONS
    ]


def _unplaced(desired: Desired) -> list[str]:
    """Errors of no one cluster (an unreadable Application file): every cluster's."""
    return sorted(str(e) for e in desired.errors if e.cluster is None)


def _substance(desired: ClusterDesired) -> dict[str, list[object]]:
    """Each app's part of a cluster's desired state: its objects, whether it is listed,
    failed or shares an object, its errors and its Application."""
    parts: dict[str, list[object]] = defaultdict(list)
    for m in desired.manifests:
        parts[m.origin.app].append((m.ref, m.obj, m.origin.repo, m.origin.path))
    for name in desired.apps:
        parts[name].append("listed")
    for name in desired.failed:
        parts[name].append("failed")
    for error in desired.errors:
        parts[error.app].append(str(error))
    for ref, renders in desired.contested.items():
        for name in renders:
            parts[name].append((ref, dict(renders)))
    for app in desired.catalogue.apps:
        if app.cluster == desired.cluster:
            parts[app.name].append(unstamped(app))
    return parts


def _git_ref_filter(_change: watchfiles.Change, path: str) -> bool:
    parts = Path(path).parts
    return Path(path).name in _GIT_TRIGGERS or "refs" in parts


def _version() -> str:
    try:
        return importlib.metadata.version("reconciler")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run(config: Config) -> int:
    """Configure logging (and shipping) and run the daemon until SIGTERM."""
    ship = (
        ShippingConfig(url=config.logs.ship_url, ca_file=config.logs.ship_ca_file)
        if config.logs.ship_url
        else None
    )
    shipper = logs.configure(config.logs.level, ship_to=ship)
    daemon = Daemon(config)
    if shipper is not None:
        daemon.metrics.read_dropped_log_entries(lambda: shipper.dropped)
        # The shipper restarts its own sends with backoff; a thread that died is stuck.
        daemon.health.register("log-shipper", shipper.thread)
    try:
        return daemon.run()
    finally:
        if shipper is not None:
            shipper.close()
