"""The daemon at the shipped defaults, as a subprocess against the real clusters: the
watch events of its own writes (their echoes) come back while it reconciles and after;
they are no drift and make no follow-up reconcile, so each object a commit changes is
diffed and written once (invariant 3), however many there are. The echoes are shown
absent by order: the ConfigMap watch delivers them before a later edit of another
ConfigMap, so a reconcile for them would come before the one for that edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testenv.clusters import RECONCILER_USER
from tests.builders import config_map, yaml_file
from tests.helpers_cluster import wait_for
from tests.helpers_lab import Lab, kubectl, live
from tests.integration.test_daemon import Daemon, _ready

MANY = 30


def _done(d: Daemon, cluster: str) -> list[dict[str, Any]]:
    return [
        e for e in d.events() if e.get("event") == "reconcile.done" and e.get("cluster") == cluster
    ]


def _many(value: str) -> list[dict[str, Any]]:
    return [config_map(f"many-{i:02d}", {"value": value}) for i in range(MANY)]


def _ending(d: Daemon, result: str) -> list[dict[str, Any]]:
    """The agentic reconciles that wrote all MANY objects with `result`."""
    return [e for e in _done(d, "agentic") if e.get(result) == MANY]


def test_a_commit_changing_many_objects_writes_each_once_and_its_echoes_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    # The lab's config sets no debounce_s: the shipped defaults.
    assert "debounce_s" not in lab.config.read_text()
    daemon = Daemon(lab, tmp_path / "daemon.log", tmp_path / "state")
    try:
        wait_for(lambda: _ready(daemon), 120, "the daemon's first full reconcile")
        lab.commit({"deploy/agentic/many.yaml": yaml_file(*_many("one"))}, "many objects")
        wait_for(lambda: bool(_ending(daemon, "created")), 60, f"the reconcile creating {MANY}")
        # Now they are managed: the watch events of their next apply make a follow-up.
        seen = len(agentic.requests_by(RECONCILER_USER))
        lab.commit({"deploy/agentic/many.yaml": yaml_file(*_many("two"))}, "all changed")
        wait_for(lambda: bool(_ending(daemon, "configured")), 60, f"the reconcile changing {MANY}")
        listed = live(agentic, f"/api/v1/namespaces/{ns}/configmaps")["items"]
        assert {i["metadata"]["name"] for i in listed if i["data"] == {"value": "two"}} >= {
            f"many-{i:02d}" for i in range(MANY)
        }

        def follow_ups() -> list[dict[str, Any]]:
            done = _done(daemon, "agentic")
            return done[done.index(_ending(daemon, "configured")[0]) + 1 :]

        kubectl(agentic, "-n", ns, "patch", "configmap", "settings", "-p", '{"data":{"a":"b"}}')
        edited = f"watch modified ConfigMap {ns}/settings"
        wait_for(
            lambda: any(edited in e["reasons"] for e in follow_ups()),
            30,
            "the reconcile of a person's edit",
        )
        # (The Deployment controller's status writes to web may reconcile web as well.)
        assert not [r for e in follow_ups() for r in e["reasons"] if "many-" in r], follow_ups()

        # The commit's reconcile diffs each object (a dry-run) and applies it; their
        # echoes send nothing more.
        writes = [e for e in agentic.requests_by(RECONCILER_USER)[seen:] if e.is_write]
        writes = [e for e in writes if e.name != "settings"]
        names = [f"many-{i:02d}" for i in range(MANY)]
        dry_runs = sorted(e.name or "" for e in writes if "dryRun" in e.uri)
        applies = sorted(e.name or "" for e in writes if "dryRun" not in e.uri)
        assert (dry_runs, applies) == (names, names), [f"{e.verb} {e.uri}" for e in writes]
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
