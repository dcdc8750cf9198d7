"""The live state of one cluster, kept current by list+watch, read without API calls.

Every reconcile compares desired state with live state; asking the API server
for each object every time would be slow and load the cluster. Like client-go
informers (and Argo CD's cluster cache), this lists each tracked kind once,
then follows its watch: resourceVersion kept, bookmarks requested, a fresh
list when the version is too old (410 Gone), reconnection with capped,
jittered exponential backoff when the cluster is unreachable.

One LiveCache per cluster, one thread per tracked kind: a slow or unreachable
cluster stalls only its own threads. Kinds the cluster does not serve yet are
reported and watched for: a CRD watch triggers a discovery refresh, and their
objects are picked up when the CRD appears. A watch thread never dies: any
failure, an answer it cannot parse included, is reported to the cache's
monitor, and the kind is listed again after a backoff. A kind that cannot be
listed or followed right now is `unlisted()`: its absent objects are unknown,
not absent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler import logs
from reconciler.cluster.client import REQUEST_TIMEOUT, ClusterClient, WatchStream
from reconciler.cluster.errors import ClusterError, Gone, NotSynced, UnknownKind
from reconciler.model import CRD, GroupKind, ObjectRef

# client-go's choice: spread server-side watch timeouts so watches do not restart together.
WATCH_TIMEOUT_RANGE = (300, 600)
# A watch that ends this fast with no event is treated as a failure, never as a hot loop.
MIN_HEALTHY_WATCH = 1.0

# How long one list may take before its watcher counts as stuck (a page is one request).
LIST_DEADLINE_S = 300.0
# A watch ends by itself after its server-side timeout; past that and the read timeout,
# a watcher that shows nothing is stuck in a call that will not return.
WATCH_DEADLINE_S = WATCH_TIMEOUT_RANGE[1] + REQUEST_TIMEOUT[1] + 30.0

# (ref, event type, the resourceVersion the event carries): the version tells the
# daemon the echo of its own write (the version its apply answered) from other changes.
OnChange = Callable[[ObjectRef, str, str], None]


class Monitor(Protocol):
    """What a watcher tells the daemon's supervisor (reconciler.supervise.Health)."""

    def register(self, name: str, thread: threading.Thread | None = None) -> None: ...

    def busy(self, name: str, within_s: float, doing: str = "") -> None: ...

    def idle(self, name: str) -> None: ...

    def trouble(self, name: str, problem: str | None) -> None: ...

    def failed(self, name: str, exc: BaseException, restart_in: float | None = None) -> None: ...


class _Unmonitored:
    """The monitor of a cache nobody supervises (one-shot CLI commands, tests)."""

    def register(self, name: str, thread: threading.Thread | None = None) -> None:
        pass

    def busy(self, name: str, within_s: float, doing: str = "") -> None:
        pass

    def idle(self, name: str) -> None:
        pass

    def trouble(self, name: str, problem: str | None) -> None:
        pass

    def failed(self, name: str, exc: BaseException, restart_in: float | None = None) -> None:
        # Only the type: the text of an exception may quote what the server sent.
        logs.get(__name__).error("watch failed unexpectedly", watch=name, error=type(exc).__name__)


class Backoff:
    """Capped exponential delays with jitter; `reset()` after a success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self._attempt)
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True)
class CacheStats:
    """Counters for metrics: watches re-established after an error, and lists after the first."""

    watch_restarts: int
    relists: int


@dataclass
class _KindState:
    listed: bool = False
    unknown: bool = False
    error: str | None = None


class LiveCache:
    """List+watch mirror of the kinds asked for, on one cluster.

    Objects are the raw dicts the API returned, managedFields included (the
    diff needs them); they are shared, so callers must not modify them.
    `on_change(ref, event_type, resource_version)` is called from watch threads for each change
    after the initial list (ADDED, MODIFIED, DELETED; a relist reports what
    changed while the watch was down); it must be quick and thread-safe, e.g.
    put the ref on a queue. CRDs are always tracked, to notice kinds appearing,
    so the identity needs list and watch on them as on every tracked kind.
    """

    def __init__(
        self,
        client: ClusterClient,
        on_change: OnChange | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.client = client
        self._on_change = on_change
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._objects: dict[GroupKind, dict[ObjectRef, dict[str, Any]]] = {}
        self._states: dict[GroupKind, _KindState] = {}
        self._watchers: dict[GroupKind, _KindWatcher] = {}
        self._discovery_generation = 0
        self._watch_restarts = 0
        self._relists = 0
        self.monitor: Monitor = _Unmonitored()
        self.track([CRD])

    # -- control -------------------------------------------------------------------

    def track(self, kinds: Iterable[GroupKind]) -> None:
        """Start following each kind not followed yet; following never stops before `stop()`."""
        with self._lock:
            if self._stopped.is_set():
                raise ClusterError(self.client.name, "the live cache is stopped")
            for gk in kinds:
                if gk in self._watchers:
                    continue
                self._states[gk] = _KindState()
                self._objects[gk] = {}
                watcher = self._watchers[gk] = _KindWatcher(self, gk)
                watcher.start()
                self.monitor.register(watcher.name, watcher)

    def supervise(self, monitor: Monitor) -> None:
        """Report every watcher, those running already included, to `monitor`."""
        with self._lock:
            self.monitor = monitor
            watchers = list(self._watchers.values())
        for watcher in watchers:
            monitor.register(watcher.name, watcher)
            monitor.idle(watcher.name)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        with self._lock:
            watchers = list(self._watchers.values())
            self._changed.notify_all()
        for watcher in watchers:
            watcher.interrupt()
        deadline = time.monotonic() + timeout
        for watcher in watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))

    # -- state -------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every tracked kind has been listed, or is known not to be served."""
        with self._lock:
            return self._synced_locked()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every kind is listed, or has failed to be; False unless all are
        listed (or not served): `unlisted()` then says which are not and why."""
        with self._lock:
            self._changed.wait_for(self._settled_locked, timeout)
            return self._synced_locked()

    def unlisted(self) -> dict[GroupKind, str]:
        """Kinds whose live state is not known right now, with why: never listed, or
        their list or watch failing. An object of such a kind that the cache does not
        hold may exist all the same."""
        with self._lock:
            return {
                gk: s.error or "not listed yet"
                for gk, s in self._states.items()
                if not s.unknown and (not s.listed or s.error is not None)
            }

    def unknown_kinds(self) -> set[GroupKind]:
        """Tracked kinds the cluster does not serve (CRD not installed)."""
        with self._lock:
            return {gk for gk, state in self._states.items() if state.unknown}

    def errors(self) -> dict[GroupKind, str]:
        """The last error of each kind that is not being followed right now."""
        with self._lock:
            return {gk: s.error for gk, s in self._states.items() if s.error is not None}

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._watch_restarts, self._relists)

    def get(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        """The live object, or None if it does not exist; raises NotSynced for a kind
        not listed yet, so "not known yet" is never mistaken for "absent"."""
        gk = GroupKind(ref.group, ref.kind)
        with self._lock:
            self._require_listed(gk)
            return self._objects[gk].get(ref)

    def objects(self, group: str, kind: str) -> list[Mapping[str, Any]]:
        gk = GroupKind(group, kind)
        with self._lock:
            self._require_listed(gk)
            return list(self._objects[gk].values())

    def _synced_locked(self) -> bool:
        return all(s.listed or s.unknown for s in self._states.values())

    def _settled_locked(self) -> bool:
        # A kind that failed is not waited for: the caller treats it as unknown.
        return all(s.listed or s.unknown or s.error is not None for s in self._states.values())

    def _require_listed(self, gk: GroupKind) -> None:
        state = self._states.get(gk)
        if state is None:
            raise NotSynced(self.client.name, f"{gk} is not tracked by the live cache")
        if not (state.listed or state.unknown):
            raise NotSynced(self.client.name, f"{gk} has not been listed yet")

    # -- updates from watchers -------------------------------------------------------

    def _replace(self, gk: GroupKind, items: list[dict[str, Any]], relist: bool) -> None:
        """Install a fresh list; on a relist, report what changed since the last state."""
        fresh = {_ref(gk, item): item for item in items}
        with self._lock:
            old = self._objects[gk]
            self._objects[gk] = fresh
            state = self._states[gk]
            state.listed, state.unknown, state.error = True, False, None
            if relist:
                self._relists += 1
            self._changed.notify_all()
        if not relist:
            return
        for ref, obj in fresh.items():
            before = old.get(ref)
            if before is None:
                self._notify(ref, "ADDED", obj)
            elif _version(before) != _version(obj):
                self._notify(ref, "MODIFIED", obj)
        for ref in old.keys() - fresh.keys():
            self._notify(ref, "DELETED", old[ref])
        if gk == CRD:
            self._discovery_changed()

    def _apply_event(self, gk: GroupKind, event_type: str, obj: dict[str, Any]) -> None:
        ref = _ref(gk, obj)
        with self._lock:
            if event_type == "DELETED":
                self._objects[gk].pop(ref, None)
            else:
                self._objects[gk][ref] = obj
        self._notify(ref, event_type, obj)
        if gk == CRD:
            self._discovery_changed()

    def _mark_unknown(self, gk: GroupKind) -> None:
        with self._lock:
            gone = self._objects[gk]
            self._objects[gk] = {}
            state = self._states[gk]
            state.unknown, state.listed, state.error = True, False, None
            self._changed.notify_all()
        for ref, obj in gone.items():
            self._notify(ref, "DELETED", obj)

    def _mark_watching(self, gk: GroupKind) -> None:
        with self._lock:
            self._states[gk].error = None

    def _mark_error(self, gk: GroupKind, error: str) -> None:
        with self._lock:
            self._states[gk].error = error
            self._watch_restarts += 1
            self._changed.notify_all()

    def _discovery_changed(self) -> None:
        with self._lock:
            self._discovery_generation += 1
            self._changed.notify_all()

    def _wait_for_discovery(self, generation: int, timeout: float) -> int:
        """Sleep until a CRD changes, the timeout passes or the cache stops."""
        with self._lock:
            self._changed.wait_for(
                lambda: self._discovery_generation != generation or self._stopped.is_set(),
                timeout,
            )
            return self._discovery_generation

    def _notify(self, ref: ObjectRef, event_type: str, obj: Mapping[str, Any]) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(ref, event_type, _version(obj))
        except Exception:
            # A failing subscriber must not stop the watch that feeds every other reader.
            logs.get(__name__).exception(
                "live cache change callback failed", cluster=self.client.name, ref=str(ref)
            )


class _KindWatcher(threading.Thread):
    """Follows one kind: list, watch from the list's version, repeat as needed."""

    def __init__(self, cache: LiveCache, gk: GroupKind) -> None:
        super().__init__(name=f"watch {cache.client.name} {gk}", daemon=True)
        self._cache = cache
        self._gk = gk
        self._stream: WatchStream | None = None
        self._stream_lock = threading.Lock()

    def interrupt(self) -> None:
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()

    def run(self) -> None:
        cache, gk = self._cache, self._gk
        backoff = Backoff(cap=cache.max_backoff)
        resource_version: str | None = None
        listed_once = False
        generation = cache._discovery_generation
        while not cache._stopped.is_set():
            monitor = cache.monitor
            try:
                if resource_version is None:
                    monitor.busy(self.name, LIST_DEADLINE_S, "listing")
                    listing = cache.client.list(gk.group, gk.kind)
                    cache._replace(gk, listing.items, relist=listed_once)
                    listed_once = True
                    resource_version = listing.resource_version
                    backoff.reset()
                    monitor.trouble(self.name, None)
                resource_version = self._follow(resource_version, backoff)
            except Gone:
                resource_version = None
            except UnknownKind:
                resource_version = None
                # Whatever is listed once the kind is served is news to subscribers.
                listed_once = True
                cache._mark_unknown(gk)
                monitor.idle(self.name)
                seen = cache._wait_for_discovery(generation, backoff.next())
                if seen != generation:
                    # A CRD changed: look again soon, as discovery may lag the CRD a little.
                    generation = seen
                    backoff.reset()
            except ClusterError as exc:
                if cache._stopped.is_set():
                    break
                cache._mark_error(gk, str(exc))
                # Handled and retried: trouble to report, not a stuck watcher.
                monitor.trouble(self.name, str(exc))
                monitor.idle(self.name)
                logs.get(__name__).warning(
                    "watch failed", cluster=cache.client.name, kind=str(gk), error=str(exc)
                )
                cache._stopped.wait(backoff.next())
            except Exception as exc:  # an answer that cannot be parsed, or a bug
                if cache._stopped.is_set():
                    break
                # Nothing of what this watch saw can be trusted: list the kind afresh.
                resource_version = None
                cache._mark_error(gk, f"internal error: {type(exc).__name__}")
                delay = backoff.next()
                monitor.failed(self.name, exc, restart_in=delay)
                cache._stopped.wait(delay)

    def _follow(self, resource_version: str, backoff: Backoff) -> str:
        """Watch until the stream ends; returns the last resourceVersion seen."""
        cache, gk = self._cache, self._gk
        stream = cache.client.watch(
            gk.group, gk.kind, resource_version, random.randint(*WATCH_TIMEOUT_RANGE)
        )
        with self._stream_lock:
            self._stream = stream
        if cache._stopped.is_set():
            stream.close()
        cache._mark_watching(gk)
        cache.monitor.trouble(self.name, None)
        cache.monitor.busy(self.name, WATCH_DEADLINE_S, "watching")
        started, events = time.monotonic(), 0
        try:
            for event in stream:
                cache.monitor.busy(self.name, WATCH_DEADLINE_S, "watching")
                events += 1
                version = _version(event.object)
                if version:
                    resource_version = version
                if event.type != "BOOKMARK":
                    cache._apply_event(gk, event.type, event.object)
                backoff.reset()
        finally:
            with self._stream_lock:
                self._stream = None
        if not events and time.monotonic() - started < MIN_HEALTHY_WATCH:
            cache._stopped.wait(backoff.next())
        return resource_version


def _ref(gk: GroupKind, obj: Mapping[str, Any]) -> ObjectRef:
    metadata = obj.get("metadata") or {}
    return ObjectRef(gk.group, gk.kind, metadata.get("namespace") or "", metadata.get("name", ""))


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
