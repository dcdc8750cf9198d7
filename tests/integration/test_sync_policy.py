"""An Application's syncPolicy and sync options, honoured by `reconciler sync` on the
real test clusters (no daemon: the state is free, so the command syncs by itself).

The audit log of the API server says what the reconciler wrote; `reconciler status`
what it reported.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests.builders import yaml_file
from tests.helpers_cluster import create_crd, unique, wait_for
from tests.helpers_kubelet import Kubelet
from tests.helpers_lab import Lab, app_files, application, kubectl, live, writes_by_reconciler


def app_with(lab: Lab, cluster: str, **spec: Any) -> dict[str, bytes | None]:
    """The lab's app on `cluster`, its Application's spec changed by `spec`."""
    app = application(f"web-{cluster}", cluster, f"deploy/{cluster}", lab.namespaces[cluster])
    app["spec"].update(spec)
    return {f"apps/{cluster}.yaml": yaml_file(app)}


def manifests_only(files: dict[str, bytes | None]) -> dict[str, bytes | None]:
    """The app's manifests of `files`, without its Application."""
    return {path: body for path, body in files.items() if path.startswith("deploy/")}


def writes(lab: Lab, cluster: str) -> list[str]:
    """What the reconciler wrote to `cluster` (its diff's server-side dry-runs store nothing)."""
    return [w for w in writes_by_reconciler(lab.clusters[cluster]) if "dryRun=All" not in w]


def status_app(lab: Lab, cluster: str, app: str) -> dict[str, Any]:
    done = lab.run("status", "-o", "json")
    assert done.returncode in (0, 1), done.stderr
    (found,) = [
        a
        for c in json.loads(done.stdout)["clusters"]
        if c["name"] == cluster
        for a in c["apps"]
        if a["name"] == app
    ]
    return dict(found)


def exists(lab: Lab, cluster: str, path: str) -> bool:
    try:
        live(lab.clusters[cluster], path)
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def test_an_app_without_automated_is_reported_not_applied_until_sync_app(lab: Lab) -> None:
    ns = lab.namespaces["agentic"]
    lab.commit(
        app_with(lab, "agentic", syncPolicy={"syncOptions": ["CreateNamespace=true"]}), "manual"
    )
    before = len(writes(lab, "agentic"))

    done = lab.run("sync", "--cluster", "agentic")

    assert done.returncode == 0, done.stderr
    assert "skipped (syncPolicy.automated is not set: run `reconciler sync --app web-agentic`)" in (
        done.stdout
    )
    assert writes(lab, "agentic")[before:] == []
    assert not exists(lab, "agentic", f"/api/v1/namespaces/{ns}")
    app = status_app(lab, "agentic", "web-agentic")
    assert app["sync"] == "OutOfSync"
    assert app["drift"] > 0
    assert [(f["kind"], f["message"]) for f in app["findings"]] == [
        (
            "out-of-sync",
            "syncPolicy.automated is not set: run `reconciler sync --app web-agentic`",
        )
    ]

    synced = lab.run("sync", "--app", "web-agentic")

    assert synced.returncode == 0, synced.stderr
    assert f"agentic/web-agentic Deployment.apps {ns}/web: created" in synced.stdout
    assert exists(lab, "agentic", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert status_app(lab, "agentic", "web-agentic")["sync"] == "Synced"
    assert status_app(lab, "agentic", "web-agentic")["findings"] == []


def test_without_self_heal_git_changes_are_applied_and_live_edits_are_not(lab: Lab) -> None:
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    policy = {"automated": {"prune": True}, "syncOptions": ["CreateNamespace=true"]}
    lab.commit(app_with(lab, "agentic", syncPolicy=policy), "automated, no selfHeal")
    first = lab.run("sync", "--cluster", "agentic")
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout, "no sync on record yet: the desired state is new"

    kubectl(agentic, "-n", ns, "patch", "configmap", "settings", "-p", '{"data":{"mode":"edited"}}')
    before = len(writes(lab, "agentic"))
    edited = lab.run("sync", "--cluster", "agentic")

    assert edited.returncode == 0, edited.stderr
    assert "selfHeal is off: live edits are reported, not reverted" in edited.stdout
    assert writes(lab, "agentic")[before:] == []
    settings = f"/api/v1/namespaces/{ns}/configmaps/settings"
    assert live(agentic, settings)["data"]["mode"] == "edited"
    app = status_app(lab, "agentic", "web-agentic")
    assert app["sync"] == "OutOfSync"
    assert [f["kind"] for f in app["findings"]] == ["out-of-sync"]

    lab.commit(manifests_only(app_files("agentic", ns, replicas=2)), "two replicas")
    changed = lab.run("sync", "--cluster", "agentic")

    assert changed.returncode == 0, changed.stderr
    deployment = live(agentic, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["spec"]["replicas"] == 2
    # A sync applies the whole app, as Argo CD's does: the edit goes with it.
    assert live(agentic, settings)["data"]["mode"] == "steady"


def test_unsupported_sync_options_are_refused_naming_the_file_and_the_key(lab: Lab) -> None:
    options = {"syncOptions": ["CreateNamespace=true", "Replace=true"], "automated": {}}
    lab.commit(
        {
            **app_with(lab, "agentic", syncPolicy=options),
            **app_with(lab, "prod", syncPolicy=options),
        },
        "Replace=true everywhere",
    )
    before = len(writes(lab, "agentic"))

    done = lab.run("sync", "--cluster", "agentic")

    assert done.returncode == 2, done.stdout
    assert (
        "lab:apps/agentic.yaml: spec.syncPolicy.syncOptions[1] 'Replace=true': "
        "replace/create is not supported"
    ) in done.stderr
    assert writes(lab, "agentic")[before:] == []
    # prod's Applications are Argo CD's to sync: the option is none of the reconciler's business.
    diff = lab.run("diff", "--cluster", "prod")
    assert "Replace=true" not in diff.stderr, diff.stderr
    assert diff.returncode in (0, 1), diff.stderr


@pytest.mark.parametrize("respect", [True, False])
def test_respect_ignore_differences_keeps_the_live_value(lab: Lab, respect: bool) -> None:
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    options = ["CreateNamespace=true"] + (["RespectIgnoreDifferences=true"] if respect else [])
    spec = {
        "ignoreDifferences": [
            {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}
        ],
        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}, "syncOptions": options},
    }
    lab.commit(app_with(lab, "agentic", **spec), "replicas left to the cluster")
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    kubectl(agentic, "-n", ns, "scale", "deployment", "web", "--replicas=4")
    wait_for(lambda: live(agentic, path)["spec"]["replicas"] == 4, 30, "scaled to 4")

    lab.commit(manifests_only(app_files("agentic", ns, extra_label=True)), "a new label")
    done = lab.run("sync", "--cluster", "agentic")

    assert done.returncode == 0, done.stderr
    assert f"Deployment.apps {ns}/web: configured" in done.stdout
    deployment = live(agentic, path)
    assert deployment["metadata"]["labels"]["tier"] == "front"
    assert deployment["spec"]["replicas"] == (4 if respect else 1)


def test_prune_propagation_policy_orphan_leaves_the_dependants(lab: Lab) -> None:
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    options = ["CreateNamespace=true", "PrunePropagationPolicy=orphan"]
    policy = {"automated": {"prune": True, "selfHeal": True}, "syncOptions": options}
    lab.commit(app_with(lab, "agentic", syncPolicy=policy), "prunes orphan their dependants")
    replicasets = f"/apis/apps/v1/namespaces/{ns}/replicasets"
    with Kubelet(agentic, ns).running():
        assert lab.run("sync", "--cluster", "agentic").returncode == 0
        wait_for(lambda: live(agentic, replicasets)["items"], 60, "the Deployment's ReplicaSet")
        lab.commit({"deploy/agentic/deployment.yaml": None}, "drop the Deployment")
        done = lab.run("sync", "--cluster", "agentic")

    assert done.returncode == 0, done.stderr
    assert f"Deployment.apps {ns}/web: pruned" in done.stdout
    assert not exists(lab, "agentic", f"/apis/apps/v1/namespaces/{ns}/deployments/web")

    # Orphaned, not deleted: the garbage collector only drops the owner reference.
    def owners() -> list[Any]:
        return [rs["metadata"].get("ownerReferences") for rs in live(agentic, replicasets)["items"]]

    wait_for(lambda: owners() == [None], 60, "the ReplicaSet orphaned")


def assert_sync_app_refusals(run: Callable[..., CompletedProcess[str]]) -> None:
    """`sync --app` for an app on prod, an unknown app, an app on another cluster than
    --cluster, and --prune without --app: each refused (exit 2), saying why."""
    refused = {
        "cluster prod is report-only (Argo CD owns its sync)": ("--app", "web-prod"),
        "unknown app 'nope'": ("--app", "nope"),
        "app web-monit is on cluster monit, not agentic": (
            "--app",
            "web-monit",
            "--cluster=agentic",
        ),
        "--prune confirms the prunes of one app: give --app": ("--prune",),
    }
    for why, args in refused.items():
        done = run("sync", *args, "--timeout", "60")
        assert done.returncode == 2, done.stdout
        assert why in done.stderr, done.stderr


def test_sync_app_refuses_unknown_apps_and_report_mode_apps_and_writes_nothing(lab: Lab) -> None:
    before = {name: len(writes(lab, name)) for name in ("prod", "agentic", "monit")}
    assert_sync_app_refusals(lab.run)
    assert {name: len(writes(lab, name)) for name in before} == before


@pytest.mark.parametrize("skip_dry_run", [True, False])
def test_skip_dry_run_on_missing_resource_waits_for_the_crd(lab: Lab, skip_dry_run: bool) -> None:
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    group = f"{unique('widgets')}.test.io"
    options = ["CreateNamespace=true"] + (
        ["SkipDryRunOnMissingResource=true"] if skip_dry_run else []
    )
    policy = {"automated": {"prune": True, "selfHeal": True}, "syncOptions": options}
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": ns},
        "spec": {"size": 3},
    }
    lab.commit(
        app_with(lab, "agentic", syncPolicy=policy)
        | {"deploy/agentic/widget.yaml": yaml_file(widget)},
        "a Widget, whose CRD a controller will install",
    )

    first = lab.run("sync", "--cluster", "agentic")

    assert exists(lab, "agentic", f"/api/v1/namespaces/{ns}/configmaps/settings")
    if not skip_dry_run:
        assert first.returncode == 1, first.stdout
        assert f"Widget.{group} {ns}/w: failed (the cluster does not serve Widget" in first.stdout
        return
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Widget.{group} {ns}/w: skipped (waiting: the cluster does not serve Widget" in (
        first.stdout
    )
    plural = create_crd(agentic, group, "Widget")
    try:
        widgets = f"/apis/{group}/v1/namespaces/{ns}/{plural}"

        def served() -> bool:
            try:
                return exists(lab, "agentic", widgets)
            except urllib.error.HTTPError:  # 429 while the new kind is being set up
                return False

        wait_for(served, 30, "the Widget CRD served")
        second = lab.run("sync", "--cluster", "agentic")
        assert second.returncode == 0, second.stdout + second.stderr
        assert live(agentic, f"{widgets}/w")["spec"] == {"size": 3}
    finally:
        agentic.request(
            "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{group}"
        )
