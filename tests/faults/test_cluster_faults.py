"""Faults of a cluster's control plane while the daemon runs: the API server restarted
in the middle of a large apply, a watch expired (410) by etcd compaction, etcd
itself restarted. Each ends converged, the other clusters keep reconciling, and
prod's audit log shows no write by the reconciler."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

from testenv.clusters import Cluster
from tests.faults.lab import FaultLab, config_maps, wait_ready
from tests.helpers_cluster import wait_for

MANY = 300


def _etcd(cluster: Cluster, call: str, body: dict[str, Any]) -> dict[str, Any]:
    """etcd's v3 HTTP gateway on the cluster's etcd client port."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster._etcd_port}/v3/{call}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def compact_etcd(cluster: Cluster) -> int:
    """Compact etcd to its current revision (what etcdctl compact --physical does)."""
    key = base64.b64encode(b"/registry/").decode()
    revision = int(_etcd(cluster, "kv/range", {"key": key, "limit": 1})["header"]["revision"])
    _etcd(cluster, "kv/compaction", {"revision": revision, "physical": True})
    return revision


def test_an_api_server_restarted_mid_reconcile_converges(fault_lab: FaultLab) -> None:
    lab = fault_lab
    daemon = lab.start()
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    lab.commit(config_maps("deploy/agentic", MANY), f"{MANY} config maps")
    # The apply is in flight: some of the objects exist, not all.
    wait_for(lambda: len(lab.config_maps("agentic", ns)) >= 10, 60, "the apply under way")
    agentic.stop_process("kube-apiserver")
    try:
        monit_before = daemon.reconciles("monit")
        stopped = time.monotonic()
        # While agentic is down, monit keeps reconciling on its own worker.
        lab.assert_side_reconciles(30, "monit reverting an edit while agentic's API server is down")
        wait_for(lambda: daemon.reconciles("monit") > monit_before, 30, "monit reconciling")
        wait_for(lambda: time.monotonic() - stopped >= 3, 10, "a 3 s outage")
    finally:
        agentic.start_apiserver()
        wait_ready(agentic)
    present = lab.config_maps("agentic", ns)
    assert len(present) < MANY, "the outage began before the apply ended (mid-reconcile)"
    wait_for(
        lambda: len(lab.config_maps("agentic", ns)) == MANY, 120, "every object applied at last"
    )
    wait_for(
        lambda: (daemon.app("agentic", "web-agentic") or {}).get("sync") == "Synced",
        120,
        "agentic's app synced again",
    )
    assert all(cm["data"] == {"value": "1"} for cm in lab.config_maps("agentic", ns).values())
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_a_watch_expired_by_etcd_compaction_relists_and_keeps_detecting(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    daemon = lab.start()
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    relists = daemon.metric("reconciler_watch_relists_total", cluster="agentic")
    # Move etcd's revision past the config maps' watch (another kind changes), then
    # compact it away: the watch's resourceVersion no longer exists anywhere.
    for i in range(3):
        agentic.request(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": f"bump-{i}"}, "stringData": {"k": "v"}},
        )
    # etcd cancels only watchers behind the compacted revision, and the API server's own
    # watch on etcd is caught up, so compaction alone ends no watch: the daemon's watches
    # must reconnect. With the API server down, etcd is compacted to its current revision;
    # the restarted server lists from etcd afresh and answers every watch resumed from an
    # older resourceVersion with 410 Gone: the cache must list again.
    agentic.stop_process("kube-apiserver")
    try:
        compact_etcd(agentic)
    finally:
        agentic.start_apiserver()
        wait_ready(agentic)
    wait_for(
        lambda: daemon.metric("reconciler_watch_relists_total", cluster="agentic") > relists,
        60,
        "the live cache relisting after 410 Gone",
    )
    # A live edit after the relist is still seen and reverted.
    lab.edit("agentic", ns, "settings", {"mode": "edited"})
    wait_for(
        lambda: (lab.config_map("agentic", ns, "settings") or {})["data"]["mode"] == "steady",
        30,
        "the edit reverted after the relist",
    )
    lab.assert_side_reconciles(30, "monit still reconciling")
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_etcd_restarted_the_daemon_recovers(fault_lab: FaultLab) -> None:
    lab = fault_lab
    daemon = lab.start()
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    agentic.stop_process("etcd")
    try:
        monit_before = daemon.reconciles("monit")
        wait_for(lambda: daemon.reconciles("monit") > monit_before, 30, "monit reconciling")
    finally:
        agentic.start_etcd()
        wait_ready(agentic)
    lab.edit("agentic", ns, "settings", {"mode": "edited"})
    wait_for(
        lambda: (lab.config_map("agentic", ns, "settings") or {})["data"]["mode"] == "steady",
        60,
        "agentic's edit reverted after etcd came back",
    )
    lab.commit(config_maps("deploy/agentic", 3), "three more objects")
    wait_for(lambda: len(lab.config_maps("agentic", ns)) == 3, 60, "a commit applied")
    lab.assert_prod_untouched()
    assert daemon.stop() == 0
