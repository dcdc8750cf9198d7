"""Requests a person hands to the running daemon, as files in `state_dir/requests/`.

Only the daemon writes the state, so a command that must write beside it
(`reconciler sync --app A`) drops a request here instead: a JSON file, written
aside and renamed into place (so the daemon never reads half of one), 0600. The
daemon picks it up within a second, records what became of it in the state
store (table `requests`) and removes the file once the result is on record; the
command reads the store until then. A request the daemon had not finished when
it stopped is still a file, so it is carried out after the restart rather than
lost. The directory is the daemon user's own (0700): whoever may drop a request
may make the reconciler write to a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.catalogue import Catalogue
from reconciler.errors import ReconcilerError
from reconciler.model import ObjectRef, Result, SyncRequest
from reconciler.report import STOPPED_SYNC, FindingKind, Report
from reconciler.store import RequestRecord, now

SPOOL = "requests"
SUFFIX = ".json"
# How often the daemon looks for new requests.
POLL_S = 0.5
FINISHED = frozenset({"done", "refused", "failed"})
EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 2
_ID = re.compile(r"^[0-9a-f]{16,64}$")
_MAX_BYTES = 4096


class SpoolError(ReconcilerError):
    """The request spool cannot be used (missing, not writable)."""


@dataclass(frozen=True)
class Request:
    """A person asked for `reconciler sync --app app [--prune]`."""

    id: str
    app: str
    prune: bool
    requested_at: str
    user: str
    # The cluster the person named (--cluster), if any: an app elsewhere is refused.
    cluster: str | None = None
    # With prune, the only held prunes it confirms (an approval's objects); None: all.
    objects: frozenset[ObjectRef] | None = None

    def record(self, state: str, cluster: str | None = None, **result: Any) -> RequestRecord:
        """The request as the state store keeps it, in `state`."""
        return RequestRecord(
            self.id, self.app, cluster, self.user, self.prune, self.requested_at, state, **result
        )


def wanted(asked: Collection[Request]) -> dict[str, SyncRequest]:
    """The apps asked for: each prunes if any of its requests asked to, confirming
    the objects of every pruning request (all of them if one named none)."""
    pruning: dict[str, frozenset[ObjectRef] | None] = {}
    for request in asked:
        if not request.prune:
            continue
        before = pruning.get(request.app, frozenset())
        both = None if before is None or request.objects is None else before | request.objects
        pruning[request.app] = both
    return {r.app: SyncRequest(r.app in pruning, pruning.get(r.app)) for r in asked}


def spool(state_dir: Path) -> Path:
    return state_dir / SPOOL


def prepare(state_dir: Path) -> Path:
    """The daemon's side: make the spool (0700, its own user's) if needed."""
    path = spool(state_dir)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def submit(state_dir: Path, app: str, prune: bool, cluster: str | None = None) -> Request:
    """The command's side: drop a request for the daemon, atomically."""
    path = spool(state_dir)
    request = Request(secrets.token_hex(16), app, prune, now(), _user(), cluster)
    body = json.dumps(
        {
            "id": request.id,
            "app": request.app,
            "prune": request.prune,
            "requested_at": request.requested_at,
            "user": request.user,
            "cluster": request.cluster,
        }
    ).encode()
    tmp = path / f".{request.id}.tmp"
    try:
        owner = path.stat()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if os.geteuid() == 0 and owner.st_uid != 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)  # root asks; the daemon must read it
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path / f"{request.id}{SUFFIX}")
    except FileNotFoundError:
        raise SpoolError(
            f"{path} does not exist: the running daemon takes no requests (an older version?)"
        ) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SpoolError(
            f"cannot write a request to {path}: {exc.strerror}; run this as the daemon's user"
        ) from None
    return request


def withdraw(state_dir: Path, request_id: str) -> bool:
    """Take back a request the daemon has not picked up yet; False if it has."""
    try:
        (spool(state_dir) / f"{request_id}{SUFFIX}").unlink()
        return True
    except FileNotFoundError:
        return False


def pending(directory: Path) -> list[tuple[Path, Request | str]]:
    """Each request file in the spool, oldest first, read (or why it cannot be)."""
    files = sorted(
        (p for p in directory.glob(f"*{SUFFIX}") if not p.name.startswith(".")), key=_age
    )
    return [(path, _read(path)) for path in files]


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0  # taken away meanwhile: reading it says so


def _read(path: Path) -> Request | str:
    try:
        if path.stat().st_size > _MAX_BYTES:
            return f"over {_MAX_BYTES} bytes"
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    if not isinstance(raw, dict):
        return "not a JSON object"
    fields = (raw.get("id"), raw.get("app"), raw.get("requested_at"), raw.get("user"))
    if not all(isinstance(f, str) and f for f in fields) or not isinstance(raw.get("prune"), bool):
        return "needs id, app, requested_at and user (strings) and prune (true or false)"
    if not _ID.match(raw["id"]) or path.name != f"{raw['id']}{SUFFIX}":
        return "its id is not the hex token its file is named after"
    cluster = raw.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        return "cluster must be a string or null"
    return Request(raw["id"], raw["app"], raw["prune"], raw["requested_at"], raw["user"], cluster)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def refusal(
    catalogue: Catalogue,
    app: str,
    report_only_clusters: Collection[str],
    cluster: str | None = None,
    departed: Mapping[str, str] | None = None,
) -> str | None:
    """Why `sync --app app [--cluster cluster]` cannot be done (unknown or broken app,
    report-mode cluster, another cluster than named), or None: the same answer
    whether the command or the daemon carries it out. An app removed from git whose
    objects an apply-mode cluster still holds (`departed`: app -> cluster) may be
    synced: that is how its held prunes are confirmed."""
    home = home_cluster(catalogue, app, departed)
    if home is not None and home in report_only_clusters:
        return report_only(home)
    if home is not None:
        elsewhere = cluster not in (None, home)
        return f"app {app} is on cluster {home}, not {cluster}" if elsewhere else None
    broken = [str(e) for e in catalogue.errors if e.app == app]
    if broken:
        return "; ".join(broken)
    return f"unknown app {app!r} ({len(catalogue.apps)} apps in the catalogue)"


def home_cluster(
    catalogue: Catalogue, app: str, departed: Mapping[str, str] | None = None
) -> str | None:
    """The cluster of `app`: its Application's destination, else the cluster whose
    inventory still holds what it left when it was removed from git."""
    found = next((a for a in catalogue.apps if a.name == app), None)
    if found is not None:
        return found.cluster
    return (departed or {}).get(app)


def report_only(cluster: str) -> str:
    return (
        f"cluster {cluster} is report-only (Argo CD owns its sync): "
        "the reconciler never writes to it; use `reconciler diff`"
    )


@dataclass(frozen=True)
class SyncOutput:
    """What `reconciler sync` prints for one cluster (or one app of it) and how it exits:
    the same lines whether it synced by itself or the daemon did it on request."""

    out: tuple[str, ...]
    err: tuple[str, ...]
    stopped: bool
    failed: bool

    @property
    def exit_code(self) -> int:
        return EXIT_STOPPED if self.stopped else EXIT_FAILED if self.failed else EXIT_OK

    @property
    def lines(self) -> tuple[str, ...]:
        """Both streams, in order, each line prefixed "out: " or "err: " (as stored)."""
        return tuple(f"out: {line}" for line in self.out) + tuple(f"err: {e}" for e in self.err)


def sync_output(report: Report, only_app: str | None) -> SyncOutput:
    """The lines of one cluster's sync: each object that did not stay unchanged, the
    summary, the notes and the errors (of `only_app` when given)."""
    name = report.cluster
    errors = [str(e) for e in report.errors if only_app is None or e.app in (only_app, "")]
    outcomes = [o for o in report.outcomes if only_app in (None, o.app)]
    out = [
        f"{name}/{o.app} {o.ref}: {o.result.value}" + (f" ({o.message})" if o.message else "")
        for o in outcomes
        if o.result is not Result.UNCHANGED
    ]
    counts: dict[Result, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    summary = ", ".join(
        f"{n} {r.value}" for r, n in sorted(counts.items(), key=lambda i: i[0].value)
    )
    findings = [f for f in report.findings if only_app in (None, f.app)]
    stopped_sync = any(f.kind in STOPPED_SYNC for f in findings)
    failed = counts.get(Result.FAILED, 0) > 0 or stopped_sync
    drifted = any(only_app in (None, app) for app, _ in report.drifts)
    result = "failed" if errors or failed else "drift" if drifted else "converged"
    out.append(f"{name}: {result} in {report.duration_s:.1f}s ({summary or 'nothing to do'})")
    notes = [
        f"{name}/{app}: {note}"
        for app, app_notes in sorted(report.notes.items())
        if only_app in (None, app)
        for note in app_notes
    ]
    # Violations have lines of their own (violation_lines), as `diff` prints them.
    found = [f"{name}/{f}" for f in findings if f.kind is not FindingKind.VIOLATION]
    err = errors + notes + found + violation_lines(report, only_app)
    return SyncOutput(tuple(out), tuple(err), bool(errors), failed)


def violation_lines(report: Report, only_app: str | None) -> list[str]:
    """The policy violations a `diff` or `sync` prints: those of `only_app` (when given)
    and those of live objects no app is known to own."""
    return [
        f"policy violation: {v}"
        for v in report.violations
        if only_app in (None, v.app) or not v.app
    ]
