"""The daemon's memory: SQLite (WAL) under state_dir.

It holds what must survive a restart or be read by another process: runs,
current drift and its history, the inventory of what the reconciler applied,
per-app state, pinned cluster identities and the heartbeat `reconciler status`
reads while the daemon runs (or after it died). Everything written here has
already been redacted by the diff stage; the store never sees a Secret value.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import statedir
from reconciler.errors import ReconcilerError
from reconciler.model import Drift, InventoryItem, ObjectRef
from reconciler.pruneguard import AppTrace

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL,
    started_at TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    cluster TEXT PRIMARY KEY, uid TEXT NOT NULL, pinned_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clusters (
    cluster TEXT PRIMARY KEY, mode TEXT NOT NULL, reachable INTEGER NOT NULL,
    error TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
    name TEXT PRIMARY KEY, commit_sha TEXT, fetched_at TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, started_at TEXT NOT NULL,
    duration_s REAL NOT NULL, result TEXT NOT NULL, counts TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_cluster ON runs (cluster, id);
CREATE TABLE IF NOT EXISTS apps (
    cluster TEXT NOT NULL, app TEXT NOT NULL, sync TEXT NOT NULL, health TEXT,
    drift INTEGER NOT NULL, error TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (cluster, app));
CREATE TABLE IF NOT EXISTS drift (
    cluster TEXT NOT NULL, app TEXT NOT NULL, grp TEXT NOT NULL, kind TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, changes TEXT NOT NULL,
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    PRIMARY KEY (cluster, grp, kind, namespace, name));
CREATE TABLE IF NOT EXISTS drift_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, cluster TEXT NOT NULL,
    app TEXT NOT NULL, grp TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, type TEXT NOT NULL, changes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (
    cluster TEXT NOT NULL, app TEXT NOT NULL, grp TEXT NOT NULL, kind TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, api_version TEXT NOT NULL,
    PRIMARY KEY (cluster, grp, kind, namespace, name));
CREATE TABLE IF NOT EXISTS app_traces (
    cluster TEXT NOT NULL, app TEXT NOT NULL, repo TEXT NOT NULL, path TEXT NOT NULL,
    prune_on_delete INTEGER NOT NULL, PRIMARY KEY (cluster, app));
CREATE TABLE IF NOT EXISTS in_sync (
    cluster TEXT NOT NULL, grp TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, verdict TEXT NOT NULL,
    PRIMARY KEY (cluster, grp, kind, namespace, name));
CREATE TABLE IF NOT EXISTS components (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT NOT NULL, progress_at TEXT NOT NULL,
    errors INTEGER NOT NULL, last_error TEXT, last_error_at TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS findings (
    cluster TEXT NOT NULL, app TEXT NOT NULL, kind TEXT NOT NULL, object TEXT NOT NULL,
    message TEXT NOT NULL, first_seen TEXT NOT NULL,
    PRIMARY KEY (cluster, app, kind, object, message));
CREATE TABLE IF NOT EXISTS synced (
    cluster TEXT NOT NULL, app TEXT NOT NULL, digest TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (cluster, app));
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, cluster TEXT, user TEXT NOT NULL,
    prune INTEGER NOT NULL, requested_at TEXT NOT NULL, state TEXT NOT NULL,
    updated_at TEXT NOT NULL, exit_code INTEGER, summary TEXT NOT NULL,
    output TEXT NOT NULL, outcomes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, cluster TEXT NOT NULL,
    app TEXT NOT NULL, object TEXT NOT NULL, result TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, cluster TEXT NOT NULL, app TEXT NOT NULL, action TEXT NOT NULL,
    detail TEXT NOT NULL, offered_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    state TEXT NOT NULL, decided_by TEXT, decided_at TEXT, decided_event TEXT, thread TEXT,
    request_id TEXT, result TEXT, objects TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS approvals_by_state ON approvals (state, expires_at);
CREATE TABLE IF NOT EXISTS notify_cursor (room_id TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, key TEXT NOT NULL,
    priority INTEGER NOT NULL, notice TEXT NOT NULL, approval_id TEXT, txn_id TEXT,
    state TEXT NOT NULL, event_id TEXT, sent_at TEXT);
CREATE INDEX IF NOT EXISTS notify_outbox_by_state ON notify_outbox (state, id);
CREATE INDEX IF NOT EXISTS notify_outbox_by_event ON notify_outbox (event_id);
CREATE INDEX IF NOT EXISTS notify_outbox_by_key ON notify_outbox (key, id);
CREATE TABLE IF NOT EXISTS notify_open (
    key TEXT PRIMARY KEY, scope TEXT NOT NULL, fingerprint TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_health (
    id INTEGER PRIMARY KEY CHECK (id = 1), sent_total INTEGER NOT NULL,
    dropped_total INTEGER NOT NULL, failed_total INTEGER NOT NULL, last_error TEXT,
    last_error_at TEXT, last_sent_at TEXT, reachable INTEGER, updated_at TEXT NOT NULL);
"""


class StoreError(ReconcilerError):
    """The state store cannot be opened or read."""


def now() -> str:
    return stamp(datetime.datetime.now(datetime.UTC))


def stamp(at: datetime.datetime) -> str:
    """The store's form of a time, which sorts as it compares."""
    return at.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DriftRecord:
    app: str
    ref: ObjectRef
    type: str
    changes: list[dict[str, Any]]
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class RunRecord:
    cluster: str
    started_at: str
    duration_s: float
    result: str
    counts: dict[str, int]


@dataclass(frozen=True)
class AppRecord:
    cluster: str
    app: str
    sync: str
    health: str | None
    drift: int
    error: str | None


@dataclass(frozen=True)
class FindingRecord:
    """A Finding as stored: `object` is the object's text ("" for the app as a whole)."""

    app: str
    kind: str
    object: str
    message: str
    first_seen: str


@dataclass(frozen=True)
class RequestRecord:
    """A person's sync request (reconciler.requests) and what became of it: `state` is
    queued, running, done, refused or failed; `output` the lines a direct sync prints,
    each prefixed "out: " or "err: "; `outcomes` one {object, result, message} each."""

    id: str
    app: str
    cluster: str | None
    user: str
    prune: bool
    requested_at: str
    state: str
    exit_code: int | None = None
    summary: str = ""
    output: tuple[str, ...] = ()
    outcomes: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class ApprovalRecord:
    """A decision offered in the Matrix room (reconciler.notify.approvals): `action` is
    prune or sync; `state` pending, approved, expired, superseded (its condition changed
    or closed), done or failed; `decided_event` the Matrix event that decided it,
    `thread` the event its answers go under, `request_id` the sync request it became,
    `result` that request's summary, `objects` what a prune approval covers (each
    `str(ObjectRef)`, as its message showed them)."""

    id: str
    cluster: str
    app: str
    action: str
    detail: str
    offered_at: str
    expires_at: str
    state: str = "pending"
    decided_by: str | None = None
    decided_at: str | None = None
    decided_event: str | None = None
    thread: str | None = None
    request_id: str | None = None
    result: str | None = None
    objects: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboxNotice:
    """A notice waiting for, or past, the Matrix room (reconciler.notify): `notice` its
    redacted content as reconciler.notify.notices encodes it, `key` what it is about
    (its dedup key), `txn_id` the message it went into once grouped (so a message
    resent after a restart is the same one to the homeserver)."""

    key: str
    priority: int
    notice: dict[str, Any]
    approval_id: str | None = None
    id: int = 0
    created_at: str = ""
    txn_id: str | None = None


@dataclass(frozen=True)
class NotifyHealth:
    """How sending to the room goes (reachable None: not tried yet)."""

    sent_total: int = 0
    dropped_total: int = 0
    failed_total: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_sent_at: str | None = None
    reachable: bool | None = None


@dataclass(frozen=True)
class ComponentRecord:
    """One supervised part of the daemon (see reconciler.supervise), as last recorded."""

    name: str
    state: str
    detail: str
    progress_at: str
    errors: int
    last_error: str | None
    last_error_at: str | None
    updated_at: str = ""


@dataclass(frozen=True)
class Heartbeat:
    pid: int
    started_at: str
    at: str


def _ref(row: sqlite3.Row) -> ObjectRef:
    return ObjectRef(row["grp"], row["kind"], row["namespace"], row["name"])


class Store:
    """One SQLite database; safe to share between the daemon's per-cluster workers."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        try:
            if readonly:
                self._db = _open_readonly(path)
            else:
                statedir.prepare(path.parent)
                self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
                self._db.commit()
                statedir.secure_database(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"state store {path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._db:
                    yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

    # -- heartbeat ------------------------------------------------------------

    def beat(self, started_at: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO heartbeat VALUES (1, ?, ?, ?)",
                (os.getpid(), started_at, now()),
            )

    def heartbeat(self) -> Heartbeat | None:
        rows = self._query("SELECT pid, started_at, at FROM heartbeat")
        return Heartbeat(rows[0]["pid"], rows[0]["started_at"], rows[0]["at"]) if rows else None

    # -- supervised parts of the daemon ------------------------------------------

    def replace_components(self, components: Iterable[ComponentRecord]) -> None:
        """The daemon's parts as its supervisor sees them now (written every few
        seconds, also while the heartbeat is held back because one is stuck)."""
        at = now()
        with self._tx() as db:
            db.execute("DELETE FROM components")
            db.executemany(
                "INSERT INTO components VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c.name,
                        c.state,
                        c.detail,
                        c.progress_at,
                        c.errors,
                        c.last_error,
                        c.last_error_at,
                        at,
                    )
                    for c in components
                ],
            )

    def components(self) -> list[ComponentRecord]:
        try:
            rows = self._query("SELECT * FROM components ORDER BY name")
        except StoreError:
            return []  # a state directory written before the daemon recorded its parts
        return [
            ComponentRecord(
                r["name"],
                r["state"],
                r["detail"],
                r["progress_at"],
                r["errors"],
                r["last_error"],
                r["last_error_at"],
                r["updated_at"],
            )
            for r in rows
        ]

    # -- cluster identity -----------------------------------------------------

    def pinned_identity(self, cluster: str) -> str | None:
        rows = self._query("SELECT uid FROM identities WHERE cluster = ?", (cluster,))
        return str(rows[0]["uid"]) if rows else None

    def pin_identity(self, cluster: str, uid: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO identities VALUES (?, ?, ?)", (cluster, uid, now()))

    # -- cluster reachability ---------------------------------------------------

    def record_cluster(self, cluster: str, mode: str, reachable: bool, error: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO clusters VALUES (?, ?, ?, ?, ?)",
                (cluster, mode, int(reachable), error, now()),
            )

    def cluster_state(self, cluster: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM clusters WHERE cluster = ?", (cluster,))
        if not rows:
            return None
        return {
            "mode": rows[0]["mode"],
            "reachable": bool(rows[0]["reachable"]),
            "error": rows[0]["error"],
            "updated_at": rows[0]["updated_at"],
        }

    # -- repositories ---------------------------------------------------------

    def record_repo(self, name: str, commit: str | None, error: str | None) -> None:
        with self._tx() as db:
            if commit is None:
                # A failed fetch keeps the last good commit on record beside the error.
                db.execute(
                    "INSERT INTO repos (name, error) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET error = excluded.error",
                    (name, error),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO repos VALUES (?, ?, ?, ?)", (name, commit, now(), error)
                )

    def repos(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r["name"],
                "commit": r["commit_sha"],
                "fetched_at": r["fetched_at"],
                "error": r["error"],
            }
            for r in self._query("SELECT * FROM repos ORDER BY name")
        ]

    # -- runs -----------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (cluster, started_at, duration_s, result, counts) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.cluster, run.started_at, run.duration_s, run.result, json.dumps(run.counts)),
            )

    def last_run(self, cluster: str) -> RunRecord | None:
        rows = self._query(
            "SELECT * FROM runs WHERE cluster = ? ORDER BY id DESC LIMIT 1", (cluster,)
        )
        if not rows:
            return None
        r = rows[0]
        return RunRecord(
            r["cluster"], r["started_at"], r["duration_s"], r["result"], json.loads(r["counts"])
        )

    # -- per-app state --------------------------------------------------------

    def replace_apps(
        self, cluster: str, apps: Iterable[AppRecord], scope: Collection[str] | None = None
    ) -> None:
        at = now()
        with self._tx() as db:
            _clear(db, "apps", cluster, scope)
            db.executemany(
                "INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(a.cluster, a.app, a.sync, a.health, a.drift, a.error, at) for a in apps],
            )

    def apps(self, cluster: str) -> list[AppRecord]:
        return [
            AppRecord(r["cluster"], r["app"], r["sync"], r["health"], r["drift"], r["error"])
            for r in self._query("SELECT * FROM apps WHERE cluster = ? ORDER BY app", (cluster,))
        ]

    # -- findings -------------------------------------------------------------

    def replace_findings(
        self,
        cluster: str,
        findings: Iterable[tuple[str, str, str, str]],
        scope: Collection[str] | None = None,
    ) -> None:
        """Make `findings` (app, kind, object, message) the current findings of `cluster`
        (of its apps in `scope` only, when given); one still present keeps its first_seen."""
        at = now()
        seen = {
            (f.app, f.kind, f.object, f.message): f.first_seen
            for f in self.findings(cluster)
            if scope is None or f.app in scope
        }
        rows = [(cluster, *key, seen.get(key, at)) for key in dict.fromkeys(findings)]
        with self._tx() as db:
            _clear(db, "findings", cluster, scope)
            db.executemany("INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?)", rows)

    def findings(self, cluster: str) -> list[FindingRecord]:
        return [
            FindingRecord(r["app"], r["kind"], r["object"], r["message"], r["first_seen"])
            for r in self._query(
                "SELECT * FROM findings WHERE cluster = ? ORDER BY app, kind, object, message",
                (cluster,),
            )
        ]

    # -- drift ----------------------------------------------------------------

    def replace_drift(
        self,
        cluster: str,
        drifts: Iterable[tuple[str, Drift]],
        scope: Collection[str] | None = None,
    ) -> None:
        """Make `drifts` (app, drift) the current drift of `cluster` (of its apps in
        `scope` only, when given).

        History gets a row only when an object's drift appears, changes or is
        resolved, so a steady state adds nothing however often it is reconciled."""
        at = now()
        before = {d.ref: d for d in self.drift(cluster) if scope is None or d.app in scope}
        rows, history = [], []
        for app, drift in drifts:
            changes = [
                {"path": c.path, "desired": c.desired, "live": c.live} for c in drift.changes
            ]
            encoded = json.dumps(changes, default=str, sort_keys=True)
            previous = before.pop(drift.ref, None)
            rows.append(
                (
                    cluster,
                    app,
                    *_key(drift.ref),
                    drift.type.value,
                    encoded,
                    previous.first_seen if previous else at,
                    at,
                )
            )
            if previous is None or (previous.type, previous.changes) != (
                drift.type.value,
                json.loads(encoded),
            ):
                history.append((at, cluster, app, *_key(drift.ref), drift.type.value, encoded))
        history.extend(
            (at, cluster, gone.app, *_key(ref), "resolved", "[]") for ref, gone in before.items()
        )
        with self._tx() as db:
            _clear(db, "drift", cluster, scope)
            db.executemany("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO drift_history (at, cluster, app, grp, kind, namespace, name, type, "
                "changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                history,
            )

    def drift_history(self, cluster: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query(
                "SELECT at, app, grp, kind, namespace, name, type, changes FROM drift_history "
                "WHERE cluster = ? ORDER BY id",
                (cluster,),
            )
        ]

    def drift(self, cluster: str) -> list[DriftRecord]:
        return [
            DriftRecord(
                r["app"],
                _ref(r),
                r["type"],
                json.loads(r["changes"]),
                r["first_seen"],
                r["last_seen"],
            )
            for r in self._query(
                "SELECT * FROM drift WHERE cluster = ? ORDER BY app, grp, kind, namespace, name",
                (cluster,),
            )
        ]

    # -- inventory ------------------------------------------------------------

    def inventory(self, cluster: str) -> list[InventoryItem]:
        return [
            InventoryItem(r["app"], _ref(r), r["api_version"])
            for r in self._query(
                "SELECT * FROM inventory WHERE cluster = ? "
                "ORDER BY app, grp, kind, namespace, name",
                (cluster,),
            )
        ]

    def add_inventory(self, cluster: str, items: Iterable[InventoryItem]) -> None:
        """Record objects the moment they are applied, so a reconcile killed halfway
        still leaves them in the inventory (and prunable) for the next one."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO inventory VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(cluster, i.app, *_key(i.ref), i.api_version) for i in items],
            )

    def replace_inventory(
        self, cluster: str, items: Iterable[InventoryItem], scope: Collection[str] | None = None
    ) -> None:
        with self._tx() as db:
            _clear(db, "inventory", cluster, scope)
            db.executemany(
                "INSERT OR REPLACE INTO inventory VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(cluster, i.app, *_key(i.ref), i.api_version) for i in items],
            )

    # -- apps once their Application is gone ----------------------------------

    def app_traces(self, cluster: str) -> dict[str, AppTrace]:
        return {
            r["app"]: AppTrace(r["app"], r["repo"], r["path"], bool(r["prune_on_delete"]))
            for r in self._query("SELECT * FROM app_traces WHERE cluster = ?", (cluster,))
        }

    def remember_apps(
        self, cluster: str, traces: Iterable[AppTrace], scope: Collection[str] | None = None
    ) -> None:
        """Keep where each app is declared and whether it has the resources finalizer,
        to judge it once its Application is gone; an app (of `scope`) that is neither
        in `traces` nor in the inventory any more is forgotten."""
        rows = [(cluster, t.app, t.repo, t.path, int(t.prune_on_delete)) for t in traces]
        present = {row[1] for row in rows}
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO app_traces VALUES (?, ?, ?, ?, ?)", rows)
            unowned = db.execute(
                "SELECT app FROM app_traces WHERE cluster = ? AND app NOT IN "
                "(SELECT app FROM inventory WHERE cluster = ?)",
                (cluster, cluster),
            ).fetchall()
            gone = [(cluster, r[0]) for r in unowned if r[0] not in present]
            gone = [(c, app) for c, app in gone if scope is None or app in scope]
            db.executemany("DELETE FROM app_traces WHERE cluster = ? AND app = ?", gone)

    # -- in-sync verdicts ------------------------------------------------------

    def verdict(self, *parts: str) -> str:
        """A keyed digest of what a verdict depends on (desired object, live
        values it sets, ignore rules, the cluster's mode, the diff's version).
        Keyed so that the digest of a desired Secret cannot be tested against
        guesses of its value."""
        digest = hmac.new(self._verdict_key(), digestmod=hashlib.sha256)
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def _verdict_key(self) -> bytes:
        if self._key is None:
            rows = self._query("SELECT value FROM meta WHERE key = 'verdict_key'")
            legacy = bytes.fromhex(rows[0]["value"]) if rows else None
            if self.readonly:
                # Without the key (a reader in the service's group) no stored verdict
                # matches, so every object is compared in full: slower, never wrong.
                key = statedir.read_key(self.path.parent) or legacy
                self._key = key or secrets.token_bytes(statedir.KEY_BYTES)
            else:
                try:
                    self._key = statedir.load_key(self.path.parent, legacy)
                except OSError as exc:
                    raise StoreError(f"verdict key in {self.path.parent}: {exc}") from None
                if legacy is not None:
                    # Moved out of the database it protects, once.
                    with self._tx() as db:
                        db.execute("DELETE FROM meta WHERE key = 'verdict_key'")
        return self._key

    def in_sync(self, cluster: str) -> dict[ObjectRef, str]:
        """The verdict digest under which each object of `cluster` was last in sync."""
        return {
            _ref(r): r["verdict"]
            for r in self._query("SELECT * FROM in_sync WHERE cluster = ?", (cluster,))
        }

    def remember_in_sync(self, cluster: str, verdicts: Iterable[tuple[ObjectRef, str]]) -> None:
        if self.readonly:
            return  # a reader beside the daemon (`diff`) keeps no verdicts of its own
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO in_sync VALUES (?, ?, ?, ?, ?, ?)",
                [(cluster, *_key(ref), verdict) for ref, verdict in verdicts],
            )

    def keep_in_sync(self, cluster: str, desired: Collection[ObjectRef]) -> None:
        """Forget the verdicts of `cluster`'s objects that are not `desired` any more:
        an object gone from git (pruned, orphaned, deleted by hand) leaves no row
        behind, so the table is bounded by what the cluster desires."""
        if self.readonly:
            return
        with self._tx() as db:
            stored = db.execute(
                "SELECT grp, kind, namespace, name FROM in_sync WHERE cluster = ?", (cluster,)
            ).fetchall()
            keep = {_key(ref) for ref in desired}
            gone = [(cluster, *row) for row in map(tuple, stored) if row not in keep]
            db.executemany(
                "DELETE FROM in_sync WHERE cluster = ? AND grp = ? AND kind = ? "
                "AND namespace = ? AND name = ?",
                gone,
            )

    # -- the desired state each app was last synced at (reconciler.syncpolicy) -----

    def synced_digests(self, cluster: str) -> dict[str, str]:
        rows = self._query("SELECT app, digest FROM synced WHERE cluster = ?", (cluster,))
        return {r["app"]: r["digest"] for r in rows}

    def record_synced(
        self, cluster: str, digests: Mapping[str, str], apps: Collection[str] | None = None
    ) -> None:
        """Record the apps just synced; given every app of the `cluster`, forget the
        others, so an app removed and later added again is synced anew."""
        at = now()
        with self._tx() as db:
            if apps is not None:
                rows = db.execute("SELECT app FROM synced WHERE cluster = ?", (cluster,))
                gone = [(cluster, app) for (app,) in rows.fetchall() if app not in apps]
                db.executemany("DELETE FROM synced WHERE cluster = ? AND app = ?", gone)
            db.executemany(
                "INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?)",
                [(cluster, app, digest, at) for app, digest in sorted(digests.items())],
            )

    # -- sync requests (reconciler.requests) -----------------------------------

    def record_request(self, request: RequestRecord) -> None:
        """Insert or update a person's sync request as the daemon handles it."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.app,
                    request.cluster,
                    request.user,
                    int(request.prune),
                    request.requested_at,
                    request.state,
                    now(),
                    request.exit_code,
                    request.summary,
                    json.dumps(list(request.output)),
                    json.dumps(list(request.outcomes)),
                ),
            )

    def request(self, request_id: str) -> RequestRecord | None:
        try:
            rows = self._query("SELECT * FROM requests WHERE id = ?", (request_id,))
        except StoreError:
            return None  # a state written before requests were recorded
        if not rows:
            return None
        r = rows[0]
        return RequestRecord(
            r["id"],
            r["app"],
            r["cluster"],
            r["user"],
            bool(r["prune"]),
            r["requested_at"],
            r["state"],
            r["exit_code"],
            r["summary"],
            tuple(json.loads(r["output"])),
            tuple(json.loads(r["outcomes"])),
        )

    # -- approvals offered in the Matrix room (reconciler.notify.approvals) -----

    def offer_approval(self, offered: ApprovalRecord) -> ApprovalRecord:
        """Record `offered`, unless an approval of the same cluster, app, action, detail
        and objects is still pending and unexpired at `offered.offered_at`: that one is
        returned instead, so a message posted again carries the same ID."""
        objects = json.dumps(list(offered.objects))
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM approvals WHERE cluster = ? AND app = ? AND action = ? "
                "AND detail = ? AND objects = ? AND state = 'pending' AND expires_at > ? "
                "ORDER BY offered_at LIMIT 1",
                (
                    offered.cluster,
                    offered.app,
                    offered.action,
                    offered.detail,
                    objects,
                    offered.offered_at,
                ),
            ).fetchall()
            if rows:
                return _approval(rows[0])
            db.execute(
                "INSERT INTO approvals (id, cluster, app, action, detail, offered_at, "
                "expires_at, state, objects) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    offered.id,
                    offered.cluster,
                    offered.app,
                    offered.action,
                    offered.detail,
                    offered.offered_at,
                    offered.expires_at,
                    offered.state,
                    objects,
                ),
            )
        return offered

    def retire_approvals(self, cluster: str, app: str, action: str) -> list[ApprovalRecord]:
        """Mark `superseded` the pending approvals of `action` on `app` of `cluster`
        (what they were offered for changed or is over); those it marked."""
        with self._tx() as db:
            rows = db.execute(
                "UPDATE approvals SET state = 'superseded' WHERE state = 'pending' "
                "AND cluster = ? AND app = ? AND action = ? RETURNING *",
                (cluster, app, action),
            ).fetchall()
        return [_approval(r) for r in rows]

    def approval(self, approval_id: str) -> ApprovalRecord | None:
        try:
            rows = self._query("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        except StoreError:
            return None  # a state written before approvals were recorded
        return _approval(rows[0]) if rows else None

    def approvals(self, states: Collection[str]) -> list[ApprovalRecord]:
        """The approvals in any of `states`, oldest offer first."""
        marks = ", ".join("?" * len(states))
        try:
            rows = self._query(
                f"SELECT * FROM approvals WHERE state IN ({marks}) ORDER BY offered_at, id",
                tuple(states),
            )
        except StoreError:
            return []
        return [_approval(r) for r in rows]

    def decide_approval(self, decided: ApprovalRecord, was: str) -> bool:
        """Move an approval to `decided` (its state, who, when, which event, the request)
        if it is still in state `was`: False when another decision came first, which
        is what makes an approval single-use."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, "
                "decided_event = ?, thread = ?, request_id = ? WHERE id = ? AND state = ?",
                (
                    decided.state,
                    decided.decided_by,
                    decided.decided_at,
                    decided.decided_event,
                    decided.thread,
                    decided.request_id,
                    decided.id,
                    was,
                ),
            ).rowcount
        return changed == 1

    def finish_approval(self, approval_id: str, state: str, result: str) -> None:
        """An approved approval's request is over: `state` done or failed, with its summary."""
        with self._tx() as db:
            db.execute(
                "UPDATE approvals SET state = ?, result = ? WHERE id = ? AND state = 'approved'",
                (state, result, approval_id),
            )

    def expire_approvals(self, at: str) -> list[ApprovalRecord]:
        """Mark every pending approval whose time is up at `at` expired; those it marked."""
        with self._tx() as db:
            rows = db.execute(
                "UPDATE approvals SET state = 'expired' WHERE state = 'pending' "
                "AND expires_at <= ? RETURNING *",
                (at,),
            ).fetchall()
        return [_approval(r) for r in rows]

    def notify_cursor(self, room_id: str) -> str | None:
        """Where reading `room_id` stopped (a Matrix sync token), or None before the first read."""
        try:
            rows = self._query("SELECT since FROM notify_cursor WHERE room_id = ?", (room_id,))
        except StoreError:
            return None
        return str(rows[0]["since"]) if rows else None

    def set_notify_cursor(self, room_id: str, since: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO notify_cursor VALUES (?, ?)", (room_id, since))

    # -- notifications (reconciler.notify) ---------------------------------------

    def notify_open(self, scope: str) -> dict[str, str]:
        """What is open (posted as opened, not yet as closed) in `scope`: key -> fingerprint."""
        rows = self._query("SELECT key, fingerprint FROM notify_open WHERE scope = ?", (scope,))
        return {r["key"]: r["fingerprint"] for r in rows}

    def enqueue_notices(
        self,
        scope: str,
        opened: Mapping[str, str],
        closed: Collection[str],
        notices: Sequence[OutboxNotice],
        queue_size: int,
    ) -> int:
        """In one transaction: record what is now open (key -> fingerprint) and closed in
        `scope`, and add `notices` as pending; past `queue_size` pending notices, the
        oldest not yet in a message go: first those a later notice of the same key
        supersedes, then the least important. How many went.

        A dropped notice that was the last word on its key is taken back from what is
        open, so the next reconcile tells it again: a dropped "opened" forgets the
        key, a dropped "closed" leaves it open under a fingerprint nothing matches."""
        at = now()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO notify_open VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE "
                "SET fingerprint = excluded.fingerprint",
                [(key, scope, fingerprint, at) for key, fingerprint in opened.items()],
            )
            db.executemany("DELETE FROM notify_open WHERE key = ?", [(k,) for k in closed])
            db.executemany(
                "INSERT INTO notify_outbox (created_at, key, priority, notice, approval_id, "
                "state) VALUES (?, ?, ?, ?, ?, 'pending')",
                [
                    (at, n.key, n.priority, json.dumps(n.notice, sort_keys=True), n.approval_id)
                    for n in notices
                ],
            )
            (pending,) = db.execute(
                "SELECT count(*) FROM notify_outbox WHERE state = 'pending'"
            ).fetchone()
            excess = max(0, pending - queue_size)
            if excess:
                dropped = db.execute(
                    "UPDATE notify_outbox SET state = 'dropped' WHERE id IN (SELECT o.id FROM "
                    "notify_outbox o WHERE o.state = 'pending' AND o.txn_id IS NULL "
                    "ORDER BY NOT EXISTS (SELECT 1 FROM notify_outbox n WHERE n.key = o.key "
                    "AND n.id > o.id AND n.state = 'pending'), o.priority, o.id LIMIT ?) "
                    f"RETURNING {_DROPPED}",
                    (excess,),
                ).fetchall()
                _forget_dropped(db, dropped, at)
        return int(excess)

    def pending_notices(self, limit: int) -> list[OutboxNotice]:
        """The first `limit` notices not yet sent: those already grouped into a message
        first, then oldest first."""
        rows = self._query(
            "SELECT * FROM notify_outbox WHERE state = 'pending' "
            "ORDER BY txn_id IS NULL, id LIMIT ?",
            (limit,),
        )
        return [_outbox(r) for r in rows]

    def superseded_notice(self, notice: OutboxNotice) -> bool:
        """Whether a later notice of the same key waits too (this one is out of date)."""
        rows = self._query(
            "SELECT 1 FROM notify_outbox WHERE key = ? AND id > ? AND state = 'pending' LIMIT 1",
            (notice.key, notice.id),
        )
        return bool(rows)

    def group_notices(
        self, ids: Collection[int], txn_id: str, approval_id: str | None = None
    ) -> None:
        """Make the pending notices `ids` one message, `txn_id`, before it is first sent
        (again, when what it carries changed), carrying `approval_id` if given."""
        with self._tx() as db:
            db.executemany(
                "UPDATE notify_outbox SET txn_id = ?, approval_id = coalesce(?, approval_id) "
                "WHERE id = ? AND state = 'pending'",
                [(txn_id, approval_id, i) for i in ids],
            )

    def expired_offers(self, at: str) -> list[OutboxNotice]:
        """The last notice sent of each key still open whose approval expired by `at`
        (unused): what to post again with a fresh one."""
        try:
            rows = self._query(
                "SELECT o.* FROM notify_open p JOIN notify_outbox o ON o.id = "
                "(SELECT max(id) FROM notify_outbox WHERE key = p.key) "
                "JOIN approvals a ON a.id = o.approval_id WHERE o.state = 'sent' "
                "AND (a.state = 'expired' OR (a.state = 'pending' AND a.expires_at <= ?)) "
                "ORDER BY o.id",
                (at,),
            )
        except StoreError:
            return []
        return [_outbox(r) for r in rows]

    def notices_sent(self, txn_id: str, event_id: str) -> None:
        at = now()
        with self._tx() as db:
            db.execute(
                "UPDATE notify_outbox SET state = 'sent', event_id = ?, sent_at = ? "
                "WHERE txn_id = ? AND state = 'pending'",
                (event_id, at, txn_id),
            )

    def notices_dropped(self, txn_id: str) -> int:
        """The message `txn_id` will never be delivered (the homeserver refused it for
        good); what its notices told is taken back as in `enqueue_notices`."""
        at = now()
        with self._tx() as db:
            dropped = db.execute(
                "UPDATE notify_outbox SET state = 'dropped' WHERE txn_id = ? "
                f"AND state = 'pending' RETURNING {_DROPPED}",
                (txn_id,),
            ).fetchall()
            _forget_dropped(db, dropped, at)
        return len(dropped)

    def approval_for_event(self, event_id: str) -> str | None:
        """The approval the message `event_id` carries, if it carries one."""
        try:
            rows = self._query(
                "SELECT approval_id FROM notify_outbox WHERE event_id = ? "
                "AND approval_id IS NOT NULL LIMIT 1",
                (event_id,),
            )
        except StoreError:
            return None  # a state written before notifications were recorded
        return str(rows[0]["approval_id"]) if rows else None

    def record_notify_health(self, health: NotifyHealth) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO notify_health VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    health.sent_total,
                    health.dropped_total,
                    health.failed_total,
                    health.last_error,
                    health.last_error_at,
                    health.last_sent_at,
                    None if health.reachable is None else int(health.reachable),
                    now(),
                ),
            )

    def notify_health(self) -> NotifyHealth | None:
        """As last recorded; None when notifications never ran on this state."""
        try:
            rows = self._query("SELECT * FROM notify_health")
        except StoreError:
            return None
        if not rows:
            return None
        r = rows[0]
        return NotifyHealth(
            r["sent_total"],
            r["dropped_total"],
            r["failed_total"],
            r["last_error"],
            r["last_error_at"],
            r["last_sent_at"],
            None if r["reachable"] is None else bool(r["reachable"]),
        )

    def notify_backlog(self) -> tuple[int, str | None]:
        """How many notices wait for the room, and since when the oldest does."""
        try:
            rows = self._query(
                "SELECT count(*) AS n, min(created_at) AS oldest FROM notify_outbox "
                "WHERE state = 'pending'"
            )
        except StoreError:
            return 0, None
        return int(rows[0]["n"]), rows[0]["oldest"]

    # -- events and retention -------------------------------------------------

    def record_events(self, cluster: str, events: Iterable[tuple[str, str, str, str]]) -> None:
        """(app, object, result, message) per action, in the result vocabulary."""
        at = now()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (at, cluster, app, object, result, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(at, cluster, *e) for e in events],
            )

    def events(self, cluster: str, limit: int = 100) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query(
                "SELECT at, app, object, result, message FROM events WHERE cluster = ? "
                "ORDER BY id DESC LIMIT ?",
                (cluster, limit),
            )
        ]

    def drop_history(self, older_than: datetime.timedelta) -> None:
        """Retention: history, events and runs older than `older_than` are deleted."""
        cutoff = (datetime.datetime.now(datetime.UTC) - older_than).isoformat(timespec="seconds")
        cutoff = cutoff.replace("+00:00", "Z")
        with self._tx() as db:
            for table, column in (
                ("drift_history", "at"),
                ("events", "at"),
                ("runs", "started_at"),
                ("requests", "requested_at"),
            ):
                db.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))
            # Notices that were delivered (or given up) go; pending ones wait for the room.
            db.execute(
                "DELETE FROM notify_outbox WHERE created_at < ? AND state != 'pending'",
                (cutoff,),
            )
            # Decided approvals go, and any whose expiry is that old (an approved one is
            # then long past its carry-out deadline: reconciler.notify.approvals).
            db.execute(
                "DELETE FROM approvals WHERE offered_at < ? "
                "AND (state NOT IN ('pending', 'approved') OR expires_at < ?)",
                (cutoff, cutoff),
            )


def _outbox(r: sqlite3.Row) -> OutboxNotice:
    return OutboxNotice(
        r["key"],
        r["priority"],
        json.loads(r["notice"]),
        r["approval_id"],
        r["id"],
        r["created_at"],
        r["txn_id"],
    )


# What a dropped notice is, to take back what it told (_forget_dropped).
_DROPPED = "id, key, json_extract(notice, '$.state')"


def _forget_dropped(db: sqlite3.Connection, dropped: Iterable[Sequence[Any]], at: str) -> None:
    """Undo, in `notify_open`, what each key's latest `dropped` notice (id, key, state)
    told (see Store.enqueue_notices), unless a later notice of the key says more."""
    forgotten: set[str] = set()
    for notice_id, key, told in sorted((tuple(r) for r in dropped), reverse=True):
        if key in forgotten:
            continue
        forgotten.add(key)
        later = db.execute(
            "SELECT 1 FROM notify_outbox WHERE key = ? AND id > ? AND state != 'dropped' LIMIT 1",
            (key, notice_id),
        ).fetchone()
        if later:
            continue
        if told == "closed":
            db.execute(
                "INSERT INTO notify_open VALUES (?, ?, '', ?) ON CONFLICT(key) DO NOTHING",
                (key, key.partition("/")[0], at),
            )
        else:
            db.execute("DELETE FROM notify_open WHERE key = ?", (key,))


def _open_readonly(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5)
    try:
        db.execute("SELECT count(*) FROM meta").fetchone()
        return db
    except sqlite3.Error:
        db.close()
        if not os.access(path, os.R_OK):
            raise
    # A reader who may not write the WAL index (a member of the service's group, the
    # daemon down) reads the database file as it is: complete once the daemon has
    # stopped, since closing checkpoints the WAL into it.
    return sqlite3.connect(
        f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False, timeout=5
    )


def _approval(row: sqlite3.Row) -> ApprovalRecord:
    fields = dict(row)
    return ApprovalRecord(**{**fields, "objects": tuple(json.loads(fields["objects"]))})


def _clear(db: sqlite3.Connection, table: str, cluster: str, apps: Collection[str] | None) -> None:
    """Delete a cluster's rows of `table`, or only those of `apps` when given."""
    if apps is None:
        db.execute(f"DELETE FROM {table} WHERE cluster = ?", (cluster,))
    else:
        db.executemany(
            f"DELETE FROM {table} WHERE cluster = ? AND app = ?", [(cluster, a) for a in apps]
        )


def _key(ref: ObjectRef) -> tuple[str, str, str, str]:
    return (ref.group, ref.kind, ref.namespace, ref.name)
