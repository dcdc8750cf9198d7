"""The daemon reconciles only what moved, as a subprocess against the real clusters at
the shipped defaults. A person's edit of one app's object reconciles that app (its
`reconcile.done` line names the scope) and is reverted; the watch events of the
daemon's own writes (their echoes) reconcile nothing; a commit to one app reconciles
that app alone and still prunes the object removed from it, while the other app
keeps its records, and takes the prune guard's share of what the whole cluster
manages, orphaned apps' objects left out; a resync covers the whole cluster; prod
is never written.

Echoes are shown absent by order: one kind's watch delivers events in the order of
their writes, so the echo of a revert reaches the daemon before a later edit of
another ConfigMap does, and a reconcile for that echo would come between the two."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.store import Store
from tests.builders import config_map, yaml_file
from tests.helpers_cluster import wait_for
from tests.helpers_lab import Lab, application, kubectl, writes_by_reconciler
from tests.integration.test_daemon import Daemon, _ready, app_state
from tests.integration.test_prune_guard import app_files as guard_files

EXTRA = "extra-agentic"


def _extra_files(namespace: str, value: str, *names: str) -> dict[str, bytes | None]:
    """A second app on agentic: ConfigMaps `names` (of extra-one, extra-two) holding `value`."""
    files: dict[str, bytes | None] = {
        "apps/extra.yaml": yaml_file(application(EXTRA, "agentic", "deploy/extra", namespace))
    }
    for name in ("extra-one", "extra-two"):
        made = yaml_file(config_map(name, {"value": value})) if name in names else None
        files[f"deploy/extra/{name}.yaml"] = made
    return files


def _done(d: Daemon, cluster: str) -> list[dict[str, Any]]:
    return [
        e for e in d.events() if e.get("event") == "reconcile.done" and e.get("cluster") == cluster
    ]


def _data(lab: Lab, name: str) -> dict[str, str] | None:
    """The data of agentic's ConfigMap `name`, None when there is none."""
    ns = lab.namespaces["agentic"]
    out = kubectl(lab.clusters["agentic"], "-n", ns, "get", "configmap", "-o", "json")
    found = {i["metadata"]["name"]: i.get("data", {}) for i in json.loads(out)["items"]}
    return found.get(name)


def _edit(lab: Lab, name: str, data: dict[str, str]) -> None:
    """A person's edit (kubectl patch, as admin)."""
    ns = lab.namespaces["agentic"]
    patch = json.dumps({"data": data})
    kubectl(lab.clusters["agentic"], "-n", ns, "patch", "configmap", name, "-p", patch)


def _start(lab: Lab, tmp_path: Path, **daemon: int) -> Daemon:
    """The daemon on the lab with a second agentic app, once its start-up is over (the
    first reconcile, and each cluster's for the start-up render's commit trigger). agentic's
    web app has no Deployment here: the Deployment controller's status writes are
    changes by another writer, which reconcile web-agentic whenever they come."""
    files = _extra_files(lab.namespaces["agentic"], "one", "extra-one", "extra-two")
    lab.commit({**files, "deploy/agentic/deployment.yaml": None}, "extra, and no Deployment")
    settings = "".join(f"{key} = {value}\n" for key, value in daemon.items())
    lab.config.write_text(lab.config.read_text().replace("[daemon]\n", "[daemon]\n" + settings, 1))
    running = Daemon(lab, tmp_path / "daemon.log", tmp_path / "state")
    wait_for(lambda: _ready(running), 120, "the daemon's first full reconcile")
    for cluster in ("agentic", "monit", "prod"):
        wait_for(
            _started_up(running, cluster), 60, f"{cluster}'s reconcile for the start-up render"
        )
    return running


def _started_up(d: Daemon, cluster: str) -> Callable[[], bool]:
    return lambda: any("commit" in e["reasons"] for e in _done(d, cluster))


@pytest.fixture
def running(lab: Lab, tmp_path: Path) -> Iterator[Daemon]:
    started = _start(lab, tmp_path)
    prod_writes = len(writes_by_reconciler(lab.clusters["prod"]))
    try:
        yield started
        assert writes_by_reconciler(lab.clusters["prod"])[prod_writes:] == []
        assert started.stop() == 0
    finally:
        if started.proc.poll() is None:
            started.proc.kill()
            started.proc.wait()


def _edit_settings_and_see_it_reverted(d: Daemon) -> None:
    _edit(d.lab, "settings", {"mode": "edited"})
    wait_for(lambda: (_data(d.lab, "settings") or {}).get("mode") == "steady", 30, "the revert")


def test_a_live_edit_reconciles_its_app_alone_and_the_revert_echoes_nothing(
    running: Daemon,
) -> None:
    lab, ns = running.lab, running.lab.namespaces["agentic"]
    since = len(_done(running, "agentic"))
    _edit(lab, "extra-one", {"value": "edited"})
    wait_for(lambda: _data(lab, "extra-one") == {"value": "one"}, 30, "extra-one reverted")
    _edit_settings_and_see_it_reverted(running)
    wait_for(lambda: len(_done(running, "agentic")) >= since + 2, 30, "both reconciles logged")

    after = _done(running, "agentic")[since:]
    assert [(e["reasons"], e["scope"]) for e in after[:2]] == [
        ([f"watch modified ConfigMap {ns}/extra-one"], [EXTRA]),
        ([f"watch modified ConfigMap {ns}/settings"], ["web-agentic"]),
    ], after
    assert after[0].get("configured") == after[1].get("configured") == 1
    # Each app's status is its own reconcile's: neither dropped the other's.
    assert (app_state(running, "agentic", EXTRA) or {}).get("sync") == "Synced"
    assert (app_state(running, "agentic", "web-agentic") or {}).get("sync") == "Synced"


def test_a_commit_to_one_app_reconciles_it_alone_and_prunes_what_left_it(
    running: Daemon, tmp_path: Path
) -> None:
    lab, ns = running.lab, running.lab.namespaces["agentic"]
    since = {c: len(_done(running, c)) for c in ("agentic", "monit", "prod")}
    lab.commit(_extra_files(ns, "two", "extra-one"), "extra-two leaves, extra-one changes")
    wait_for(
        lambda: _data(lab, "extra-two") is None and _data(lab, "extra-one") == {"value": "two"},
        60,
        "the commit applied and extra-two pruned",
    )
    _edit_settings_and_see_it_reverted(running)
    wait_for(lambda: len(_done(running, "agentic")) >= since["agentic"] + 2, 30, "both logged")

    after = _done(running, "agentic")[since["agentic"] :]
    assert [(e["reasons"], e["scope"]) for e in after[:2]] == [
        (["commit"], [EXTRA]),
        ([f"watch modified ConfigMap {ns}/settings"], ["web-agentic"]),
    ], after
    assert (after[0].get("configured"), after[0].get("pruned")) == (1, 1)
    for cluster in ("monit", "prod"):
        assert not [
            e for e in _done(running, cluster)[since[cluster] :] if "commit" in e["reasons"]
        ]
    store = Store(tmp_path / "state" / "state.db", readonly=True)
    try:
        held = {(i.app, i.ref.kind, i.ref.name) for i in store.inventory("agentic")}
    finally:
        store.close()
    assert {(kind, name) for app, kind, name in held if app == EXTRA} == {
        ("ConfigMap", "extra-one")
    }
    assert {(kind, name) for app, kind, name in held if app == "web-agentic"} == {
        ("ConfigMap", "settings"),
        ("Secret", "token"),
    }


def test_a_resync_reconciles_the_whole_cluster(lab: Lab, tmp_path: Path) -> None:
    prod_writes = len(writes_by_reconciler(lab.clusters["prod"]))
    running = _start(lab, tmp_path, resync_interval_s=2)
    try:
        for cluster in ("agentic", "prod"):

            def resyncs(c: str = cluster) -> list[dict[str, Any]]:
                return [e for e in _done(running, c) if e["reasons"] == ["resync"]]

            wait_for(lambda: bool(resyncs()), 30, f"a resync of {cluster}")
            assert {e["scope"] for e in resyncs()} == {"cluster"}
        assert writes_by_reconciler(lab.clusters["prod"])[prod_writes:] == []
        assert running.stop() == 0
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def _config_maps(lab: Lab) -> set[str]:
    ns = lab.namespaces["agentic"]
    out = kubectl(lab.clusters["agentic"], "-n", ns, "get", "configmap", "-o", "json")
    return {i["metadata"]["name"] for i in json.loads(out)["items"]}


def _commit_done(d: Daemon, since: int, scope: list[str]) -> dict[str, Any] | None:
    done = [e for e in _done(d, "agentic")[since:] if "commit" in e["reasons"]]
    return next((e for e in done if e["scope"] == scope), None)


def test_a_commit_to_some_apps_takes_the_prune_share_without_orphaned_apps(
    running: Daemon,
) -> None:
    # guard-a and guard-b each lose 4 of their 5 (within the floor of 5): 8 of what the
    # cluster manages, 14 (web-agentic's 2, extra-agentic's 2, theirs 10), is too many.
    # The 20 objects guard-gone left when its Application went (orphaned: no
    # finalizer) are no longer managed: counted, they would let all 8 go.
    lab, ns = running.lab, running.lab.namespaces["agentic"]
    files = {**guard_files("guard-a", ns, 5), **guard_files("guard-b", ns, 5)}
    lab.commit({**files, **guard_files("guard-gone", ns, 20, finalizer=False)}, "three apps")
    wanted = {f"guard-{app}-{i}" for app, n in (("a", 5), ("b", 5), ("gone", 20)) for i in range(n)}
    wait_for(lambda: wanted <= _config_maps(lab), 90, "the three apps applied")
    since = len(_done(running, "agentic"))
    lab.commit({"apps/guard-gone.yaml": None}, "guard-gone removed from git, no finalizer")
    wait_for(
        lambda: _commit_done(running, since, ["guard-gone"]) is not None, 60, "guard-gone orphaned"
    )

    since = len(_done(running, "agentic"))
    lab.commit(
        {f"deploy/guard-{app}/cm-{i}.yaml": None for app in "ab" for i in range(1, 5)},
        "most of guard-a and guard-b",
    )
    wait_for(
        lambda: _commit_done(running, since, ["guard-a", "guard-b"]) is not None,
        60,
        "their reconcile",
    )
    assert "pruned" not in (_commit_done(running, since, ["guard-a", "guard-b"]) or {})
    assert wanted <= _config_maps(lab)
