"""`reconciler status`: what the daemon last saw, read from the state store alone.

It never contacts a cluster, so it answers at once and also when the daemon is
down (it then says so). The JSON shape is an interface others' scripts rely on;
the table is for a person, so it leads with what needs attention.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from reconciler.config import Config
from reconciler.store import Store

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
    running = beat is not None and age is not None and age < STALE_AFTER_S and _alive(beat.pid)
    clusters = []
    for cluster in config.clusters:
        state = store.cluster_state(cluster.name) or {}
        run = store.last_run(cluster.name)
        apps = store.apps(cluster.name)
        clusters.append(
            {
                "name": cluster.name,
                "mode": state.get("mode", "report" if cluster.argocd else cluster.mode),
                "reachable": state.get("reachable"),
                "error": state.get("error"),
                "last_reconcile": (
                    {
                        "at": run.started_at,
                        "duration_s": round(run.duration_s, 3),
                        "result": run.result,
                    }
                    if run
                    else None
                ),
                "drift": sum(a.drift for a in apps),
                "errors": sum(1 for a in apps if a.error),
                "apps": [
                    {
                        "name": a.app,
                        "sync": a.sync,
                        "health": a.health,
                        "drift": a.drift,
                        "error": a.error,
                    }
                    for a in apps
                ],
            }
        )
    return {
        "daemon": {
            "running": running,
            "pid": beat.pid if beat else None,
            "heartbeat": beat.at if beat else None,
        },
        "repos": store.repos(),
        "clusters": clusters,
    }


def healthy(status: dict[str, Any]) -> bool:
    """All apps synced with no errors, and nothing known to be Degraded or Missing."""
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
    if d["running"]:
        head = f"daemon: running (pid {d['pid']}, heartbeat {_ago(d['heartbeat'], at)})"
    elif d["heartbeat"]:
        head = f"daemon: NOT RUNNING (last heartbeat {_ago(d['heartbeat'], at)})"
    else:
        head = "daemon: NOT RUNNING (never started with this state directory)"
    out = [head, ""]
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
        if all_apps or a["sync"] != "Synced" or a["error"] or a["health"] in ("Degraded", "Missing")
    ]
    if attention:
        out += ["", *_grid(["CLUSTER", "APP", "SYNC", "HEALTH", "DRIFT", "ERROR"], attention)]
    return "\n".join(out) + "\n"


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


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows, strict=True)]
    return [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
