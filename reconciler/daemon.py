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
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import watchfiles
from apscheduler.schedulers.background import BackgroundScheduler

from reconciler import logs, requests, systemd
from reconciler.catalogue import Catalogue
from reconciler.cluster import ClusterError, NotSynced, Unreachable
from reconciler.config import Config
from reconciler.desired import ClusterDesired, Desired, prune_checkouts
from reconciler.diff.fingerprint import digest
from reconciler.diff.redact import redact_text
from reconciler.engine import ClusterEngine
from reconciler.errors import ReconcilerError
from reconciler.metrics import Metrics, MetricsServer
from reconciler.model import App, GroupKind, Mode, ObjectRef, Result, SyncRequest
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
    """The watch events of a reconcile's own writes. The follow-up waits for them (at
    most ECHO_WAIT_S): the live cache must hold what was written, or the follow-up
    would take the reconciler's own writes for drift and write them again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._seen: set[ObjectRef] = set()
        self._awaited: set[ObjectRef] = set()
        self.arrived = threading.Event()
        self.arrived.set()

    def reconciling(self) -> None:
        with self._lock:
            self._running, self._seen = True, set()

    def seen(self, ref: ObjectRef) -> None:
        with self._lock:
            if self._running:
                self._seen.add(ref)
            self._awaited.discard(ref)
            if not self._awaited:
                self.arrived.set()

    def wrote(self, report: Report | None) -> None:
        """The reconcile ended; an event seen while it ran may be the echo of a write."""
        written = {o.ref for o in report.outcomes if o.result in _WRITES} if report else set()
        with self._lock:
            self._running, self._awaited = False, written - self._seen
            if self._awaited:
                self.arrived.clear()
            else:
                self.arrived.set()


class ClusterRecord:
    """What a worker puts on record about its cluster (the state store's cluster row,
    the metrics), and the objects the store says the reconciler manages there."""

    def __init__(self, cluster: str, mode: Mode, store: Store, metrics: Metrics) -> None:
        self.cluster = cluster
        self.mode = mode
        self._store = store
        self._metrics = metrics

    def inventory(self) -> frozenset[ObjectRef]:
        return frozenset(i.ref for i in self._store.inventory(self.cluster))

    def failed(self, error: str, reachable: bool) -> None:
        self._store.record_cluster(self.cluster, self.mode, reachable, error)
        self._metrics.set_reachable(self.cluster, reachable)
        self._metrics.count_errors(self.cluster, "cluster")

    def request(self, record: RequestRecord) -> None:
        self._store.record_request(record)

    def reconciled(self, report: Report, drift_by_app: Mapping[str, int], flapping: int) -> None:
        reachable = report.unreachable is None
        self._store.record_cluster(self.cluster, self.mode, reachable, report.unreachable)
        self._metrics.set_reachable(self.cluster, reachable)
        self._metrics.observe_reconcile(
            self.cluster, self.mode, report.duration_s, report.counts, drift_by_app, ok=True
        )
        if report.errors:
            self._metrics.count_errors(self.cluster, "object", len(report.errors))
        self._metrics.set_flapping(self.cluster, flapping)
        self._metrics.set_violations(self.cluster, Counter(v.policy for v in report.violations))
        self._metrics.set_findings(
            self.cluster, Counter(f.kind for f in self._store.findings(self.cluster))
        )


class Worker:
    """Reconciles one cluster whenever it is triggered, until stopped: at once when
    idle; the triggers that arrive during a reconcile make one follow-up, which
    starts `gap_s` after that reconcile ended, once the live cache holds its writes.

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
        self._lock = threading.Lock()
        self.managed: frozenset[ObjectRef] = frozenset()
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
        engine.progress = self._progress
        engine.internal_error = functools.partial(supervisor.health.failed, self.name)

    def start(self) -> None:
        self.thread = self._supervisor.thread(self.name, self._loop)

    def _progress(self, within_s: float) -> None:
        self._supervisor.health.busy(self.name, max(self._stall_s, within_s), "reconcile")

    def trigger(self, reason: str) -> None:
        with self._lock:
            self._reasons.add(reason)
        self._wake.set()

    def request(self, request: requests.Request) -> None:
        """A person asked to sync one of this cluster's apps now."""
        with self._lock:
            self._requests.append(request)
        self.trigger(f"sync request {request.app}")

    def on_change(self, ref: ObjectRef, event: str) -> None:
        self._echoes.seen(ref)
        # Watch events on objects the reconciler does not manage are none of its business.
        if ref in self.managed:
            self.trigger(f"watch {event.lower()} {ref}")

    def _loop(self) -> None:
        stopping, health = self._supervisor.stopping, self._supervisor.health
        if self._looped:
            # Restarted by the supervisor: what the failed reconcile was for is still due.
            self.trigger("restart")
        self._looped = True
        while not stopping.is_set():
            health.idle(self.name)
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
                self._wake.clear()
            if not stopping.is_set():
                self._progress(0.0)
                self.reconcile(reasons)

    def reconcile(self, reasons: set[str]) -> Report | None:
        """Reconcile the cluster; the sync requests taken with it get their answer
        whatever happens, so a person waiting for one is never left hanging."""
        with self._lock:
            asked, self._requests = self._requests, []
        for request in asked:
            self._record.request(request.record("running", self.engine.name))
        report: Report | None = None
        self._failure = "the reconcile stopped on an internal error: see the daemon's log"
        self._echoes.reconciling()
        try:
            report = self._reconcile(reasons, asked)
        finally:
            self._ended = time.monotonic()
            self._echoes.wrote(report)
            self._answer(asked, report)
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

    def _reconcile(self, reasons: set[str], asked: list[requests.Request]) -> Report | None:
        desired = self._desired()
        if desired is None or self.engine.name not in desired.clusters:
            self._failure = "no desired state for this cluster: see `reconciler status`"
            return None
        apps = apps_by_cluster(desired).get(self.engine.name, [])
        log = self.log.bind(reasons=sorted(reasons)[:5])
        try:
            self.engine.pin_identity()
            report = self.engine.reconcile(
                desired.clusters[self.engine.name],
                apps,
                held=self.flapping.held(time.monotonic()),
                requested=_requested(asked),
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
        self._observe(report, desired, apps)
        log.info(
            "reconcile.done",
            result=report.result,
            duration_s=round(report.duration_s, 3),
            drift=len(report.drifts),
            errors=len(report.errors),
            **{r.value: n for r, n in report.counts.items() if r is not Result.UNCHANGED},
        )
        return report

    def _observe(self, report: Report, desired: Desired, apps: list[App]) -> None:
        manifests = desired.clusters[self.engine.name].manifests
        self.managed = frozenset(m.ref for m in manifests) | self._record.inventory()
        self._track_reverts(report, {m.ref: digest(m.obj) for m in manifests})
        self._log_findings(report.findings)
        drift_by_app = {app.name: 0 for app in apps}
        for app, _ in report.drifts:
            drift_by_app[app] = drift_by_app.get(app, 0) + 1
        self._record.reconciled(report, drift_by_app, len(self.flapping.held(time.monotonic())))

    def _log_findings(self, findings: Collection[Finding]) -> None:
        """One warning per finding when it appears, not one per resync while it stays."""
        for finding in set(findings) - self._findings:
            self.log.warning(
                "app.finding",
                app=finding.app,
                kind=finding.kind.value,
                object=str(finding.ref) if finding.ref else None,
                message=finding.message,
            )
        self._findings = frozenset(findings)

    def _track_reverts(self, report: Report, digests: Mapping[ObjectRef, str]) -> None:
        """An object configured again with the same desired state was changed by
        someone else: a revert. Too many in a row make it flap."""
        at = time.monotonic()
        for outcome in report.outcomes:
            if outcome.result not in (Result.CREATED, Result.CONFIGURED):
                continue
            digest = digests.get(outcome.ref)
            if digest is None:
                continue
            reverted = self._applied.get(outcome.ref) == digest
            if reverted and self.flapping.record_revert(outcome.ref, at):
                self.log.warning("object.flapping", app=outcome.app, object=str(outcome.ref))
            self._applied[outcome.ref] = digest


def keep_last_good(new: Desired, old: Desired | None, broken: Collection[str]) -> Desired:
    """`new`, with the apps of the `broken` repos (unreadable, corrupt, ref gone) taken
    from `old`, the last desired state rendered: a repo that cannot be read must not
    make its apps vanish (their objects would be left unmanaged, edits no longer
    reverted), nor change them. Apps of those repos that `new` still has are kept."""
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
    return replace(new, clusters=clusters, catalogue=catalogue)


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
            ClusterRecord(engine.name, engine.mode, self.store, self.metrics),
            self.supervisor,
            gap_s=self.config.daemon.debounce_s,
            stall_s=self.stall_s,
        )

    def _on_change(self, cluster: str, ref: ObjectRef, event: str) -> None:
        worker = self.workers.get(cluster)
        if worker is not None:
            worker.on_change(ref, event)

    # -- desired state --------------------------------------------------------------

    def refresh(self, fetch: bool = False) -> frozenset[str]:
        """Render desired state again; the clusters whose desired state moved with a
        tracked commit (or an error): all of them the first time, none when nothing did."""
        with self._render_lock:
            desired = self.session.render(fetch=fetch)
            self.metrics.count_renders(desired.rendered, desired.reused)
            self.session.record_repos(desired)
            pruned = prune_checkouts(self.session.config, desired)
            if pruned:
                self.log.info("checkouts.pruned", removed=pruned)
            for name, problem in sorted(desired.unreadable.items()):
                if self._repo_errors.get(name) != problem:
                    self.log.error("repo.unreadable", repo=name, error=problem)
            self._repo_errors = desired.unreadable
            # Same commits, same errors and the same objects are the same render, and
            # keeping the object keeps the engines' per-render caches. Commits alone do
            # not say it: a destination's capabilities or a chart version range may
            # change what renders, and a chart that could not be fetched may be back.
            if (
                self.desired is not None
                and _same_render(desired, self.desired)
                and not _moved(desired, self.desired)
            ):
                return frozenset()
            # A repo that cannot be read right now keeps its apps' last good desired state.
            desired = keep_last_good(desired, self.desired, desired.unreadable)
            previous, self.desired = self.desired, desired
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
            return _moved(desired, previous)

    def _commit_moved(self, fetch: bool, part: str = "") -> None:
        if part:
            self.health.busy(part, RENDER_DEADLINE_S, "render")
        try:
            # A cluster whose desired state the commit left as it was has nothing to do.
            for name in sorted(self.refresh(fetch=fetch)):
                worker = self.workers.get(name)
                if worker is not None:
                    worker.trigger("commit")
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
        interval = systemd.watchdog_interval() or HEARTBEAT_S
        self._check_health()
        while not self.stopping.wait(min(interval, HEARTBEAT_S)):
            self._check_health()
        return self._shutdown()

    def _check_health(self) -> None:
        """Record every part's health; beat and feed the watchdog only if none is stuck,
        so systemd restarts a daemon that has stopped making progress."""
        parts = self.health.snapshot()
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
            path.unlink(missing_ok=True)
            return
        self._taken.add(request.id)
        self.store.record_request(request.record("queued", worker.engine.name))
        worker.request(request)

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


def _requested(asked: list[requests.Request]) -> dict[str, SyncRequest]:
    """The apps asked for, each pruning if any of its requests asked to."""
    requested: dict[str, SyncRequest] = {}
    for request in asked:
        prune = request.prune or requested.get(request.app, SyncRequest()).prune
        requested[request.app] = SyncRequest(prune=prune)
    return requested


def _same_render(new: Desired, old: Desired) -> bool:
    """The same commits read (tracked, and pinned by targetRevision) and the same
    errors: `new` renders nothing `old` did not."""
    errors = sorted(str(e) for e in new.errors)
    return (new.commits, new.revisions, errors) == (
        old.commits,
        old.revisions,
        sorted(str(e) for e in old.errors),
    )


def _moved(new: Desired, old: Desired | None) -> frozenset[str]:
    """The clusters whose desired state differs in substance between `old` and `new`;
    the commits objects and apps were read at do not count, so a commit that changed
    none of a cluster's objects, apps or errors leaves that cluster alone."""
    if old is None or _unplaced(new) != _unplaced(old):
        return frozenset(new.clusters)
    return frozenset(
        name
        for name, desired in new.clusters.items()
        if name not in old.clusters or _substance(desired) != _substance(old.clusters[name])
    )


def _unplaced(desired: Desired) -> list[str]:
    """Errors of no one cluster (an unreadable Application file): every cluster's."""
    return sorted(str(e) for e in desired.errors if e.cluster is None)


def _substance(desired: ClusterDesired) -> tuple[object, ...]:
    return (
        [(m.ref, m.obj, m.origin.repo, m.origin.app, m.origin.path) for m in desired.manifests],
        desired.apps,
        desired.failed,
        [str(e) for e in desired.errors],
        desired.contested,
        [unstamped(a) for a in desired.catalogue.apps if a.cluster == desired.cluster],
    )


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
