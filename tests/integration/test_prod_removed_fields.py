"""On prod (report mode, Argo CD syncs) a field removed from git is drift, found through
Argo CD's own records of what it applied, and prod is never written to.

Argo CD's part is played by the admin with the real kubectl, both ways Argo CD applies:
client-side (`kubectl apply`, which keeps the last-applied-configuration annotation)
and server-side with Argo CD's field manager (`ServerSideApply=true`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from testenv.clusters import Cluster
from tests.faults.conftest import fault_lab  # noqa: F401 (the fault tests' lab, as a fixture)
from tests.faults.lab import FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import Lab, app_files, drift_json, kubectl, manifests, writes_by_reconciler


def argo_cd_syncs(prod: Cluster, namespace: str, **kw: bool) -> None:
    """Apply the app's objects as Argo CD would: the ConfigMap and Secret client-side,
    the Deployment server-side as `argocd-controller`."""
    files = manifests(namespace, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        for name in ("configmap.yaml", "secret.yaml"):
            kubectl(prod, "-n", namespace, "apply", "-f", str(Path(tmp) / name))
        kubectl(
            prod,
            "-n",
            namespace,
            "apply",
            "--server-side",
            "--field-manager=argocd-controller",
            "-f",
            str(Path(tmp) / "deployment.yaml"),
        )


def changes(lab: Lab) -> dict[str, list[dict[str, object]]]:
    return {row["ref"]["kind"]: row["changes"] for row in drift_json(lab, "prod")}


def test_fields_removed_from_git_show_on_prod_for_both_ways_argo_cd_applies(lab: Lab) -> None:
    prod, ns = lab.clusters["prod"], lab.namespaces["prod"]
    writes_before = len(writes_by_reconciler(prod))
    lab.commit(app_files("prod", ns, extra_label=True), "web on prod, with a tier label")
    kubectl(prod, "create", "namespace", ns)
    argo_cd_syncs(prod, ns, extra_label=True)
    assert changes(lab) == {}, "what Argo CD applied is what git has"

    lab.commit(app_files("prod", ns, extra_label=False, level=False), "tier and level removed")
    assert changes(lab) == {
        "ConfigMap": [{"path": "/data/level", "desired": None, "live": "3"}],
        "Deployment": [{"path": "/metadata/labels/tier", "desired": None, "live": "front"}],
    }

    # Argo CD syncs the commit: the fields are gone, and so is the drift.
    argo_cd_syncs(prod, ns, extra_label=False, level=False)
    assert changes(lab) == {}
    assert writes_by_reconciler(prod)[writes_before:] == [], "prod was never written"


def test_the_daemon_reports_a_removed_field_until_argo_cd_removes_it(
    fault_lab: FaultLab,  # noqa: F811 (the fixture imported above)
) -> None:
    prod, ns = fault_lab.clusters["prod"], fault_lab.namespaces["prod"]
    kubectl(prod, "create", "namespace", ns)
    argo_cd_syncs(prod, ns)
    daemon = fault_lab.start()

    def drift() -> int | None:
        app = daemon.app("prod", "web-prod")
        return None if app is None else int(app["drift"])

    wait_for(lambda: drift() == 0, 60, "prod's first reconcile: in sync")
    fault_lab.commit(app_files("prod", ns, level=False), "level removed")
    wait_for(lambda: drift() == 1, 60, "the removed field reported as drift")
    # Argo CD syncs: the live object changes only where git no longer looks, and the
    # daemon's next resync must see that.
    argo_cd_syncs(prod, ns, level=False)
    wait_for(lambda: drift() == 0, 60, "the drift to end once Argo CD removed the field")
    fault_lab.assert_prod_untouched()
