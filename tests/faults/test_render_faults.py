"""A renderer that never returns, and an object another writer keeps changing back.

A hanging kustomize is cut off after `[render] timeout_seconds`: a timeout error on
that app only, the others render and reconcile. A flapping object is backed off and
reported, not fought over forever; the rest of the cluster keeps reconciling."""

from __future__ import annotations

import time

import yaml

from tests.faults.lab import FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import SERVERS, application

HANG = """#!/bin/sh
# A kustomize that never returns; its child keeps the output pipe open too.
sleep 600
"""


def test_a_hanging_render_times_out_that_app_only(fault_lab: FaultLab) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    app = application("hang-agentic", "agentic", "deploy/hang", ns)
    assert app["spec"]["destination"]["server"] == SERVERS["agentic"]
    lab.commit(
        {
            "apps/hang.yaml": yaml.safe_dump(app).encode(),
            "deploy/hang/kustomization.yaml": b"resources: []\n",
        },
        "an app rendered by kustomize",
    )
    hang = lab.tmp / "hanging-kubectl"
    hang.write_text(HANG)
    hang.chmod(0o755)
    lab.render = {"kubectl": str(hang), "timeout_seconds": 2}
    started = time.monotonic()
    daemon = lab.start()
    assert time.monotonic() - started < 60, "the hang cost the timeout, not the hang"
    error = (daemon.app("agentic", "hang-agentic") or {}).get("error") or ""
    assert "timed out after 2s" in error and "kustomize" in error, error
    # The other apps rendered and reconciled, on agentic and elsewhere.
    assert (daemon.app("agentic", "web-agentic") or {}).get("sync") == "Synced"
    assert (daemon.app("monit", "side-monit") or {}).get("sync") == "Synced"
    assert lab.config_map("agentic", ns, "settings") is not None
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_a_flapping_object_is_backed_off_and_reported(fault_lab: FaultLab) -> None:
    lab = fault_lab
    daemon = lab.start()
    ns = lab.namespaces["agentic"]

    def mode() -> str:
        return str((lab.config_map("agentic", ns, "settings") or {})["data"]["mode"])

    # Another writer keeps changing the object back; the daemon reverts it each time
    # until the third revert in the window makes it flap.
    for i in range(3):
        lab.edit("agentic", ns, "settings", {"mode": f"fight-{i}"})
        wait_for(lambda: mode() == "steady", 30, f"revert {i + 1}")
    daemon.wait_event("object.flapping", 30, cluster="agentic")
    wait_for(
        lambda: daemon.metric("reconciler_flapping_objects", cluster="agentic") == 1,
        30,
        "the flapping gauge",
    )
    # Backed off: the next change stands while the backoff lasts ...
    lab.edit("agentic", ns, "settings", {"mode": "fight-3"})
    before = daemon.reconciles("agentic")
    wait_for(lambda: daemon.reconciles("agentic") >= before + 2, 30, "agentic reconciling")
    assert mode() == "fight-3"
    skipped = [
        e
        for e in daemon.events("object")
        if e.get("result") == "skipped" and "flapping" in str(e.get("reason"))
    ]
    assert skipped and skipped[-1]["object"] == f"ConfigMap {ns}/settings"
    # ... while the rest of the cluster, and the other clusters, keep reconciling.
    lab.assert_side_reconciles(30, "monit still reverting edits")
    lab.assert_prod_untouched()
    assert daemon.stop() == 0
