"""The running daemon renders a commit incrementally and reconciles only the clusters
whose desired state it changed: a commit to agentic's app renders that app alone
(counted in the log and the metrics), agentic converges, and neither monit nor prod
is reconciled for it."""

from __future__ import annotations

from typing import Any

from tests.builders import config_map, yaml_file
from tests.faults.lab import Daemon, FaultLab
from tests.helpers_cluster import wait_for

OTHERS = ("monit", "prod")


def _reconciled_for_commit(events: list[dict[str, Any]], cluster: str) -> bool:
    return any(
        e.get("cluster") == cluster and "commit" in e.get("reasons", ())
        for e in events
        if e.get("event") == "reconcile.done"
    )


def _reconciles(daemon: Daemon, since: int, cluster: str) -> list[dict[str, Any]]:
    return [
        e
        for e in daemon.events()[since:]
        if e.get("event") == "reconcile.done" and e.get("cluster") == cluster
    ]


def test_a_commit_to_one_clusters_app_renders_and_reconciles_that_cluster_alone(
    fault_lab: FaultLab,
) -> None:
    daemon = fault_lab.start()
    # The start-up render triggers every cluster once: let those reconciles pass.
    wait_for(
        lambda: all(_reconciled_for_commit(daemon.events(), c) for c in ("agentic", *OTHERS)),
        60,
        "every cluster's reconcile for the first render",
    )
    first = daemon.events("desired.rendered")[0]
    apps = first["rendered"]  # web-<cluster> for three clusters, and side-monit
    assert (apps, first["reused"]) == (4, 0)
    since = len(daemon.events())

    fault_lab.commit(
        {"deploy/agentic/configmap.yaml": yaml_file(config_map("settings", {"mode": "moved"}))},
        "agentic's settings",
    )
    namespace = fault_lab.namespaces["agentic"]
    wait_for(
        lambda: (
            ((fault_lab.config_map("agentic", namespace, "settings") or {}).get("data", {})).get(
                "mode"
            )
            == "moved"
        ),
        60,
        "agentic applies the commit",
    )
    rendered = daemon.wait_event("desired.rendered", 30, rendered=1)
    assert rendered["reused"] == apps - 1
    assert daemon.metric("reconciler_app_renders_total", outcome="rendered") == apps + 1
    assert daemon.metric("reconciler_app_renders_total", outcome="reused") >= apps - 1

    # The others still reconcile on their resync (every 5 s here), never for the commit.
    wait_for(
        lambda: all(_reconciles(daemon, since, c) for c in OTHERS),
        60,
        "a resync of monit and prod after the commit",
    )
    after = daemon.events()[since:]
    assert [c for c in OTHERS if _reconciled_for_commit(after, c)] == []
    assert _reconciled_for_commit(after, "agentic")
    fault_lab.assert_prod_untouched()
