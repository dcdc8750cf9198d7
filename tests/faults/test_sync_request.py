"""`reconciler sync --app A` beside the running daemon: handed to it as a request
(reconciler.requests), carried out by the app's cluster worker, answered with the
lines and exit code of a direct sync. An app without `syncPolicy.automated` is
reported by the daemon and written only on such a request."""

from __future__ import annotations

import functools

from tests.builders import yaml_file
from tests.faults.lab import FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import application, reconciler_cli, writes_by_reconciler
from tests.integration.test_sync_policy import assert_sync_app_refusals


def writes(lab: FaultLab, cluster: str) -> list[str]:
    """What the reconciler wrote to `cluster` (its diff's server-side dry-runs store nothing)."""
    return [w for w in writes_by_reconciler(lab.clusters[cluster]) if "dryRun=All" not in w]


def test_a_manual_app_is_reported_by_the_daemon_and_synced_on_request(fault_lab: FaultLab) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    app = application("web-agentic", "agentic", "deploy/agentic", ns)
    app["spec"]["syncPolicy"] = {"syncOptions": ["CreateNamespace=true"]}
    lab.commit({"apps/agentic.yaml": yaml_file(app)}, "web-agentic is synced by hand")
    before = len(writes(lab, "agentic"))
    daemon = lab.start()

    wait_for(
        lambda: (daemon.app("agentic", "web-agentic") or {}).get("sync") == "OutOfSync",
        60,
        "web-agentic reported OutOfSync",
    )
    found = daemon.app("agentic", "web-agentic")
    assert found is not None
    assert [f["kind"] for f in found["findings"]] == ["out-of-sync"]
    assert writes(lab, "agentic")[before:] == []
    assert lab.config_map("agentic", ns, "settings") is None

    done = reconciler_cli(lab.config, "sync", "--app", "web-agentic", "--timeout", "120")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "requested from the running daemon" in done.stderr
    assert f"agentic/web-agentic ConfigMap {ns}/settings: created" in done.stdout
    assert "agentic: converged" in done.stdout
    assert lab.config_map("agentic", ns, "settings") is not None
    event = daemon.wait_event("sync.request.done", 10, app="web-agentic")
    assert event["state"] == "done"
    assert event["exit_code"] == 0
    # The spool thread removes an answered request's file on its next poll.
    wait_for(
        lambda: not list((lab.state / "requests").glob("*.json")),
        10,
        "the answered request's file removed from the spool",
    )
    lab.assert_prod_untouched()


def test_requests_the_daemon_must_refuse(fault_lab: FaultLab) -> None:
    lab = fault_lab
    daemon = lab.start()

    assert_sync_app_refusals(functools.partial(reconciler_cli, lab.config))
    whole = reconciler_cli(lab.config, "sync")

    assert whole.returncode == 2
    assert "sync refused" in whole.stderr
    assert daemon.wait_event("sync.request.refused", 10, app="web-prod")["user"]
    assert daemon.wait_event("sync.request.refused", 10, app="nope")
    lab.assert_prod_untouched()
    daemon.alive()
