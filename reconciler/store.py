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
"""


class StoreError(ReconcilerError):
    """The state store cannot be opened or read."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        values it sets, ignore rules). Keyed so that the digest of a desired
        Secret cannot be tested against guesses of its value."""
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

    # -- the desired state each app was last synced at (reconciler.syncpolicy) -----

    def synced_digests(self, cluster: str) -> dict[str, str]:
        rows = self._query("SELECT app, digest FROM synced WHERE cluster = ?", (cluster,))
        return {r["app"]: r["digest"] for r in rows}

    def record_synced(self, cluster: str, digests: Mapping[str, str]) -> None:
        at = now()
        with self._tx() as db:
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
