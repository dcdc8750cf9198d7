"""The daemon killed with SIGKILL in the middle of a large apply, then started again
(what systemd's Restart=on-failure does): it converges, and its inventory (state
store and the tracking labels on the live objects) agrees with git: nothing
duplicated, nothing lost, nothing left behind."""

from __future__ import annotations

from reconciler.model import TRACKING_LABEL, ObjectRef
from reconciler.session import STATE_DB
from reconciler.store import Store
from tests.faults.lab import Daemon, FaultLab, config_maps
from tests.helpers_cluster import wait_for

MANY = 300


def _kill_mid_apply(lab: FaultLab) -> tuple[Daemon, int]:
    daemon = lab.start("first")
    ns = lab.namespaces["agentic"]
    lab.commit(config_maps("deploy/agentic", MANY), f"{MANY} config maps")
    wait_for(lambda: len(lab.config_maps("agentic", ns)) >= 10, 60, "the apply under way")
    daemon.kill()
    created = len(lab.config_maps("agentic", ns))
    assert created < MANY, "killed before the apply ended"
    return daemon, created


def _inventory(lab: FaultLab, cluster: str, app: str) -> list[ObjectRef]:
    store = Store(lab.state / STATE_DB, readonly=True)
    try:
        return [i.ref for i in store.inventory(cluster) if i.app == app]
    finally:
        store.close()


def _labelled(lab: FaultLab, cluster: str, app: str) -> set[ObjectRef]:
    ns = lab.namespaces[cluster]
    found: set[ObjectRef] = set()
    for kind, path in (
        ("ConfigMap", f"/api/v1/namespaces/{ns}/configmaps"),
        ("Secret", f"/api/v1/namespaces/{ns}/secrets"),
    ):
        for item in lab.get(cluster, f"{path}?labelSelector={TRACKING_LABEL}%3D{app}")["items"]:
            found.add(ObjectRef("", kind, ns, item["metadata"]["name"]))
    deployments = lab.get(
        cluster, f"/apis/apps/v1/namespaces/{ns}/deployments?labelSelector={TRACKING_LABEL}"
    )
    found |= {
        ObjectRef("apps", "Deployment", ns, d["metadata"]["name"]) for d in deployments["items"]
    }
    return found


def test_sigkill_mid_apply_then_restart_converges_with_a_consistent_inventory(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    _kill_mid_apply(lab)
    daemon = lab.start("second")
    wait_for(lambda: len(lab.config_maps("agentic", ns)) == MANY, 120, "every object applied")
    wait_for(
        lambda: (daemon.app("agentic", "web-agentic") or {}).get("sync") == "Synced",
        60,
        "agentic synced after the restart",
    )
    expected = {ObjectRef("", "ConfigMap", ns, f"cm-{i:04d}") for i in range(MANY)} | {
        ObjectRef("", "ConfigMap", ns, "settings"),
        ObjectRef("", "Secret", ns, "token"),
        ObjectRef("apps", "Deployment", ns, "web"),
    }
    inventory = _inventory(lab, "agentic", "web-agentic")
    assert len(inventory) == len(set(inventory)), "no object is in the inventory twice"
    assert set(inventory) == expected
    assert _labelled(lab, "agentic", "web-agentic") == expected
    # The inventory is complete: objects removed from git are pruned.
    lab.commit({f"deploy/agentic/cm-{i:04d}.yaml": None for i in range(10)}, "ten fewer")
    wait_for(lambda: len(lab.config_maps("agentic", ns)) == MANY - 10, 60, "ten pruned")
    assert set(_inventory(lab, "agentic", "web-agentic")) == expected - {
        ObjectRef("", "ConfigMap", ns, f"cm-{i:04d}") for i in range(10)
    }
    # The other clusters reconciled throughout, and prod was never written.
    assert (daemon.app("monit", "side-monit") or {}).get("sync") == "Synced"
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_objects_applied_before_a_sigkill_and_dropped_from_git_are_pruned(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    _kill_mid_apply(lab)
    # While the daemon is down, git drops five of the objects it had already created.
    dropped = {f"cm-{i:04d}" for i in range(5)}
    assert dropped <= set(lab.config_maps("agentic", ns))
    lab.commit({f"deploy/agentic/{name}.yaml": None for name in dropped}, "five fewer")
    daemon = lab.start("second")
    wait_for(lambda: len(lab.config_maps("agentic", ns)) >= MANY - 5, 120, "the rest applied")
    wait_for(
        lambda: not dropped & set(lab.config_maps("agentic", ns)),
        20,
        "the dropped objects pruned",
    )
    lab.assert_prod_untouched()
    assert daemon.stop() == 0
