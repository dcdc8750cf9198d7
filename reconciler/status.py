"""`reconciler status`: what the daemon last saw, read from the state store alone.

It never contacts a cluster, so it answers at once and also when the daemon is
down (it then says so). The JSON shape is an interface others' scripts rely on;
the table is for a person, so it leads with what needs attention.

The daemon records the health of each of its parts (worker, watch, job) every
few seconds, and beats only while none is stuck: a process that is up but has
a stuck part is reported `stuck` with the part named, not `running`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from reconciler.config import Config
from reconciler.report import STOPPED_SYNC
from reconciler.store import AppRecord, ComponentRecord, FindingRecord, NotifyHealth, Store
from reconciler.supervise import DEGRADED

# The daemon beats every few seconds; three missed beats mean it is not running.
STALE_AFTER_S = 20.0


def _age_s(stamp: str | None, at: datetime.datetime) -> float | None:
    if not stamp:
        return None
    then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (at - then).total_seconds()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user (the daemon's own)
    return True


def gather(config: Config, store: Store, at: datetime.datetime | None = None) -> dict[str, Any]:
    """The status document: daemon, repos, and per cluster its apps."""
    at = at or datetime.datetime.now(datetime.UTC)
    beat = store.heartbeat()
    age = _age_s(beat.at, at) if beat else None
    alive = beat is not None and _alive(beat.pid)
    running = alive and age is not None and age < STALE_AFTER_S
    parts = store.components()
    # Parts are recorded even while the heartbeat is held back: fresh ones mean "up".
    recorded = max((p.updated_at for p in parts), default=None)
    recorded_age = _age_s(recorded, at)
    up = running or (alive and recorded_age is not None and recorded_age < STALE_AFTER_S)
    clusters = []
    for cluster in config.clusters:
        state = store.cluster_state(cluster.name) or {}
        run = store.last_run(cluster.name)
        apps = store.apps(cluster.name)
        findings = [_finding(f) for f in store.findings(cluster.name)]
        clusters.append(
            {
                "name": cluster.name,
                # The daemon records the effective mode; before its first run, the
                # configured one (an Argo CD cluster is always "report" there).
                "mode": state.get("mode", cluster.mode),
                "reachable": state.get("reachable"),
                "error": state.get("error"),
                "last_reconcile": (
                    {
                        "at": run.started_at,
                        "duration_s": round(run.duration_s, 3),
                        "result": _result(run.result, apps, findings),
                    }
                    if run
                    else None
                ),
                "drift": sum(a.drift for a in apps),
                "errors": sum(1 for a in apps if a.error),
                # Every finding, apps no longer in git included (their orphaned objects).
                "findings": findings,
                "apps": [
                    {
                        "name": a.app,
                        "sync": a.sync,
                        "health": a.health,
                        "drift": a.drift,
                        "error": a.error,
                        "findings": [
                            {k: v for k, v in f.items() if k != "app"}
                            for f in findings
                            if f["app"] == a.app
                        ],
                    }
                    for a in apps
                ],
            }
        )
    components = [_component(p) for p in parts] if up else []
    return {
        "daemon": {
            "running": running,
            "pid": beat.pid if beat else None,
            "heartbeat": beat.at if beat else None,
            "state": _state(up, running, components),
            "components": components,
        },
        "repos": store.repos(),
        "clusters": clusters,
        "notify": _notify(config, store, at),
        # Decisions offered in the Matrix room that wait for a person (not yet expired).
        "approvals": [
            {
                "id": a.id,
                "cluster": a.cluster,
                "app": a.app,
                "action": a.action,
                "detail": a.detail,
                "offered_at": a.offered_at,
                "expires_at": a.expires_at,
            }
            for a in store.approvals({"pending"})
            if (_age_s(a.expires_at, at) or 0.0) < 0
        ],
    }


def _notify(config: Config, store: Store, at: datetime.datetime) -> dict[str, Any] | None:
    """The notification queue's health; None when [notify.matrix] is not configured."""
    if config.notify.matrix is None:
        return None
    pending, oldest = store.notify_backlog()
    health = store.notify_health() or NotifyHealth()
    age = _age_s(oldest, at)
    return {
        "pending": pending,
        "oldest_pending_age_s": None if age is None else round(age, 1),
        "sent_total": health.sent_total,
        "dropped_total": health.dropped_total,
        "failed_total": health.failed_total,
        "last_error": health.last_error,
        "last_error_at": health.last_error_at,
        "last_sent_at": health.last_sent_at,
        "homeserver_reachable": health.reachable,
    }


# How bad each run result is (reconciler.report.Report.result).
_RANK = {"converged": 0, "drift": 1, "failed": 2}


def _result(last_run: str, apps: list[AppRecord], findings: list[dict[str, Any]]) -> str:
    """The cluster's result: the worse of its last run's and its apps' as recorded. The
    last run may have covered some apps only (a watch event's), and each other app
    keeps the row of the run that last covered it."""
    stopped = {kind.value for kind in STOPPED_SYNC}
    if any(a.error for a in apps) or any(f["kind"] in stopped for f in findings):
        rows = "failed"
    else:
        rows = "drift" if any(a.drift for a in apps) else "converged"
    return max(last_run, rows, key=lambda result: _RANK.get(result, 0))


def _finding(finding: FindingRecord) -> dict[str, Any]:
    return {
        "app": finding.app,
        "kind": finding.kind,
        "object": finding.object or None,
        "message": finding.message,
        "since": finding.first_seen,
    }


def _component(part: ComponentRecord) -> dict[str, Any]:
    return {
        "name": part.name,
        "state": part.state,
        "detail": part.detail,
        "progress_at": part.progress_at,
        "errors": part.errors,
        "last_error": part.last_error,
        "last_error_at": part.last_error_at,
    }


def _state(up: bool, running: bool, components: list[dict[str, Any]]) -> str:
    """down | stuck | degraded | running: what the daemon as a whole is doing."""
    if not up:
        return "down"
    states = {c["state"] for c in components}
    if not running or "stuck" in states:
        return "stuck"
    return "degraded" if states & set(DEGRADED) else "running"


def healthy(status: dict[str, Any]) -> bool:
    """All apps synced with no errors, nothing known to be Degraded or Missing, no
    finding that waits for a person, and a daemon that is either down or making
    progress on every part."""
    if status["daemon"].get("state") in ("stuck", "degraded"):
        return False
    if any(c.get("findings") for c in status["clusters"]):
        return False
    if (status.get("notify") or {}).get("homeserver_reachable") is False:
        return False
    return all(
        a["sync"] == "Synced" and not a["error"] and a["health"] not in ("Degraded", "Missing")
        for c in status["clusters"]
        for a in c["apps"]
    ) and all(c["reachable"] is not False for c in status["clusters"])


def table(
    status: dict[str, Any], at: datetime.datetime | None = None, all_apps: bool = False
) -> str:
    """The status as a person reads it: daemon, repos, clusters, then apps that need attention."""
    at = at or datetime.datetime.now(datetime.UTC)
    d = status["daemon"]
    trouble = [c for c in d["components"] if c["state"] != "ok" and c["state"] != "busy"]
    if d["state"] == "stuck":
        stuck = ", ".join(c["name"] for c in trouble if c["state"] == "stuck") or "the main loop"
        head = f"daemon: STUCK (pid {d['pid']}, no progress in: {stuck})"
    elif d["running"]:
        word = "DEGRADED" if d["state"] == "degraded" else "running"
        head = f"daemon: {word} (pid {d['pid']}, heartbeat {_ago(d['heartbeat'], at)})"
    elif d["heartbeat"]:
        head = f"daemon: NOT RUNNING (last heartbeat {_ago(d['heartbeat'], at)})"
    else:
        head = "daemon: NOT RUNNING (never started with this state directory)"
    out = [head, ""]
    if trouble:
        out += _grid(
            ["PART", "STATE", "PROGRESS", "DETAIL"],
            [[c["name"], c["state"], _ago(c["progress_at"], at), c["detail"]] for c in trouble],
        )
        out.append("")
    errors = [c for c in d["components"] if c["last_error"]]
    if errors:
        out += _grid(
            ["PART", "ERRORS", "LAST ERROR"],
            [
                [c["name"], str(c["errors"]), f"{_ago(c['last_error_at'], at)}: {c['last_error']}"]
                for c in errors
            ],
        )
        out.append("")
    if status.get("notify") is not None:
        out += [_notify_line(status["notify"], at), ""]
    out += _grid(
        ["REPO", "COMMIT", "FETCHED", "ERROR"],
        [
            [r["name"], (r["commit"] or "-")[:12], _ago(r["fetched_at"], at), r["error"] or "-"]
            for r in status["repos"]
        ],
    )
    out.append("")
    rows = []
    for c in status["clusters"]:
        last = c["last_reconcile"]
        rows.append(
            [
                c["name"],
                c["mode"],
                {True: "yes", False: "NO", None: "?"}[c["reachable"]],
                f"{_ago(last['at'], at)} ({last['duration_s']:.1f}s)" if last else "never",
                last["result"] if last else "-",
                str(c["drift"]),
                str(c["errors"]),
                f"{sum(a['sync'] == 'Synced' for a in c['apps'])}/{len(c['apps'])}",
            ]
        )
    out += _grid(
        ["CLUSTER", "MODE", "REACHABLE", "LAST RECONCILE", "RESULT", "DRIFT", "ERRORS", "SYNCED"],
        rows,
    )
    attention = [
        [
            c["name"],
            a["name"],
            a["sync"],
            a["health"] or "-",
            str(a["drift"]),
            _short(a["error"]) if a["error"] else "-",
        ]
        for c in status["clusters"]
        for a in c["apps"]
        if all_apps
        or a["sync"] != "Synced"
        or a["error"]
        or a["findings"]
        or a["health"] in ("Degraded", "Missing")
    ]
    if attention:
        out += ["", *_grid(["CLUSTER", "APP", "SYNC", "HEALTH", "DRIFT", "ERROR"], attention)]
    findings = [
        [c["name"], f["app"], f["kind"], f["object"] or "-", _short(f["message"])]
        for c in status["clusters"]
        for f in c["findings"]
    ]
    if findings:
        out += ["", *_grid(["CLUSTER", "APP", "FINDING", "OBJECT", "MESSAGE"], findings)]
    pending = [
        [
            a["id"],
            a["cluster"],
            a["app"],
            a["action"],
            _until(a["expires_at"], at),
            _short(a["detail"]) or "-",
        ]
        for a in status.get("approvals", [])
    ]
    if pending:
        header = ["APPROVAL", "CLUSTER", "APP", "ACTION", "EXPIRES", "DETAIL"]
        out += ["", *_grid(header, pending)]
    return "\n".join(out) + "\n"


def _notify_line(n: dict[str, Any], at: datetime.datetime) -> str:
    reachable = {True: "reachable", False: "UNREACHABLE", None: "not tried yet"}
    line = f"notify: homeserver {reachable[n['homeserver_reachable']]}, {n['pending']} pending"
    if n["oldest_pending_age_s"] is not None:
        line += f" (oldest {_ago_s(n['oldest_pending_age_s'])})"
    line += (
        f", {n['sent_total']} sent ({_ago(n['last_sent_at'], at)}), {n['dropped_total']} dropped"
    )
    if n["last_error"]:
        line += f"; last error {_ago(n['last_error_at'], at)}: {_short(n['last_error'])}"
    return line


def _ago_s(age: float) -> str:
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m"


def _short(text: str, width: int = 70) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _ago(stamp: str | None, at: datetime.datetime) -> str:
    age = _age_s(stamp, at)
    if age is None:
        return "never"
    if age < 120:
        return f"{age:.0f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    return f"{age / 3600:.1f}h ago"


def _until(stamp: str, at: datetime.datetime) -> str:
    left = -(_age_s(stamp, at) or 0.0)
    return f"in {left / 60:.0f}m" if left >= 120 else f"in {max(left, 0):.0f}s"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows, strict=True)]
    return [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
