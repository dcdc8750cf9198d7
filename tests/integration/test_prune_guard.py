"""The prune guard and Applications removed from git, on the real agentic test cluster.

A repo shaped like the owner's (one Application per app under `apps/`, automated
prune, CreateNamespace) is synced with the CLI; `reconciler status -o json` shows
the findings and the API server's audit log shows exactly what was deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.builders import config_map, yaml_file
from tests.helpers_lab import Lab, application, kubectl, writes_by_reconciler
from tests.helpers_lab import app_files as lab_app_files

FINALIZER = "resources-finalizer.argocd.argoproj.io"


@dataclass
class GuardLab:
    """The tests' lab with none of its own apps: only what a test commits."""

    lab: Lab

    @property
    def namespace(self) -> str:
        return self.lab.namespaces["agentic"]

    def commit(self, files: dict[str, bytes | None], message: str) -> None:
        self.lab.commit(files, message)

    def sync(self, *args: str, code: int = 0) -> str:
        done = self.lab.run("sync", *args)
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout + done.stderr

    def findings(self) -> list[dict[str, Any]]:
        done = self.lab.run("status", "-o", "json")
        assert done.returncode in (0, 1), done.stderr
        status = json.loads(done.stdout)
        (agentic,) = [c for c in status["clusters"] if c["name"] == "agentic"]
        found: list[dict[str, Any]] = agentic["findings"]
        return found

    def config_maps(self) -> set[str]:
        path = f"/api/v1/namespaces/{self.namespace}/configmaps"
        items = self.lab.clusters["agentic"].request("GET", path)["items"]
        return {i["metadata"]["name"] for i in items if i["metadata"]["name"] != "kube-root-ca.crt"}

    def deletes(self) -> list[str]:
        writes = writes_by_reconciler(self.lab.clusters["agentic"])
        return sorted(
            w.rsplit("/", 1)[1]
            for w in writes
            if w.startswith("delete ") and f"/namespaces/{self.namespace}/" in w
        )


def app_files(
    name: str, namespace: str, n: int, *, finalizer: bool = True
) -> dict[str, bytes | None]:
    """An Application `name` on agentic and its `n` ConfigMaps, `<name>-<i>`."""
    doc = application(name, "agentic", f"deploy/{name}", namespace)
    if finalizer:
        doc["metadata"]["finalizers"] = [FINALIZER]
    files: dict[str, bytes | None] = {f"apps/{name}.yaml": yaml_file(doc)}
    for i in range(n):
        files[f"deploy/{name}/cm-{i}.yaml"] = yaml_file(config_map(f"{name}-{i}", {"i": str(i)}))
    return files


@pytest.fixture
def guard_lab(lab: Lab) -> GuardLab:
    own: dict[str, bytes | None] = {}
    for cluster, namespace in lab.namespaces.items():
        own.update(dict.fromkeys(lab_app_files(cluster, namespace)))
    lab.commit(own, "the lab's own apps removed before any sync")
    return GuardLab(lab)


def test_a_commit_emptying_most_of_the_cluster_waits_for_confirmation_then_prunes(
    guard_lab: GuardLab,
) -> None:
    lab = guard_lab
    apps = ["guard-a", "guard-b", "guard-c"]
    files: dict[str, bytes | None] = {}
    for app in apps:
        files.update(app_files(app, lab.namespace, 4))
    lab.commit(files, "three apps of four objects")
    lab.sync("--cluster", "agentic")
    assert len(lab.config_maps()) == 12

    # Each app loses 3 of its 4 (within the floor of 5); together 9 of the cluster's 12.
    lab.commit({f"deploy/{app}/cm-{i}.yaml": None for app in apps for i in (1, 2, 3)}, "most of it")
    held = lab.sync("--cluster", "agentic")
    assert held.count("prune blocked: mass-deletion guard: 9 of the cluster's 12 objects") == 9
    assert lab.deletes() == [] and len(lab.config_maps()) == 12
    blocked = {f["app"]: f for f in lab.findings() if f["kind"] == "prune-blocked"}
    assert sorted(blocked) == apps
    for app in apps:
        message = blocked[app]["message"]
        assert message.startswith("3 objects not pruned: mass-deletion guard"), message
        assert f"ConfigMap {lab.namespace}/{app}-1" in message
        assert message.endswith(f"confirm with `reconciler sync --app {app} --prune`")

    confirmed = lab.sync("--app", "guard-a", "--prune")
    assert confirmed.count(": pruned") == 3, confirmed
    assert lab.deletes() == ["guard-a-1", "guard-a-2", "guard-a-3"]
    # 6 of the 9 left still exceed the floor and half the cluster: they wait.
    lab.sync("--cluster", "agentic")
    assert len(lab.deletes()) == 3
    lab.sync("--app", "guard-b", "--prune")
    # guard-c's 3 of the 6 left are within the floor: the next sync prunes them by itself.
    lab.sync("--cluster", "agentic")
    assert lab.deletes() == sorted(f"{app}-{i}" for app in apps for i in (1, 2, 3))
    assert lab.config_maps() == {f"{app}-0" for app in apps}
    assert [f for f in lab.findings() if f["kind"] == "prune-blocked"] == []


def test_an_application_removed_from_git_prunes_with_the_finalizer_and_orphans_without(
    guard_lab: GuardLab,
) -> None:
    lab = guard_lab
    files: dict[str, bytes | None] = {
        **app_files("with-finalizer", lab.namespace, 3),
        **app_files("without-finalizer", lab.namespace, 3, finalizer=False),
        **app_files("stays", lab.namespace, 3),
    }
    lab.commit(files, "three apps")
    lab.sync("--cluster", "agentic")
    assert len(lab.config_maps()) == 9

    lab.commit(
        {"apps/with-finalizer.yaml": None, "apps/without-finalizer.yaml": None},
        "two Applications removed",
    )
    lab.sync("--cluster", "agentic")
    assert lab.deletes() == ["with-finalizer-0", "with-finalizer-1", "with-finalizer-2"]
    left = {f"without-finalizer-{i}" for i in range(3)}
    assert lab.config_maps() == left | {f"stays-{i}" for i in range(3)}
    orphans = [f for f in lab.findings() if f["kind"] == "orphaned"]
    assert sorted(f["object"] for f in orphans) == sorted(
        f"ConfigMap {lab.namespace}/{name}" for name in left
    )
    assert {(f["app"], f["message"]) for f in orphans} == {
        (
            "without-finalizer",
            "left by Application without-finalizer removed from git "
            "without the resources finalizer",
        )
    }

    # Listed while they exist: one deleted by hand leaves the list; none is ever pruned.
    kubectl(
        lab.lab.clusters["agentic"],
        "-n",
        lab.namespace,
        "delete",
        "configmap",
        "without-finalizer-0",
    )
    lab.sync("--cluster", "agentic")
    orphans = [f for f in lab.findings() if f["kind"] == "orphaned"]
    assert sorted(f["object"] for f in orphans) == [
        f"ConfigMap {lab.namespace}/without-finalizer-{i}" for i in (1, 2)
    ]
    assert len(lab.deletes()) == 3


def test_a_yaml_error_in_an_application_file_prunes_nothing(guard_lab: GuardLab) -> None:
    lab = guard_lab
    lab.commit(app_files("broken-later", lab.namespace, 3), "one app")
    lab.sync("--cluster", "agentic")
    assert len(lab.config_maps()) == 3

    lab.commit({"apps/broken-later.yaml": b"metadata: [unclosed\n"}, "a YAML error")
    out = lab.sync("--cluster", "agentic", code=2)
    assert "apps/broken-later.yaml" in out
    assert lab.deletes() == [] and len(lab.config_maps()) == 3
    assert [f for f in lab.findings() if f["kind"] == "orphaned"] == []


def test_a_removed_application_held_by_the_guard_is_confirmed_by_name(
    guard_lab: GuardLab,
) -> None:
    lab = guard_lab
    files = {**app_files("retired", lab.namespace, 8), **app_files("stays", lab.namespace, 1)}
    lab.commit(files, "an app of eight objects, and one that stays")
    lab.sync("--cluster", "agentic")
    assert len(lab.config_maps()) == 9

    lab.commit({"apps/retired.yaml": None}, "its Application removed, with the finalizer")
    lab.sync("--cluster", "agentic")
    assert lab.deletes() == [] and len(lab.config_maps()) == 9  # 8 is past the floor of 5
    (blocked,) = [f for f in lab.findings() if f["kind"] == "prune-blocked"]
    assert blocked["app"] == "retired"
    assert blocked["message"].endswith("confirm with `reconciler sync --app retired --prune`")

    # The app is no longer in git, yet its name is what confirms the prune.
    confirmed = lab.sync("--app", "retired", "--prune")
    assert confirmed.count(": pruned") == 8, confirmed
    assert lab.deletes() == sorted(f"retired-{i}" for i in range(8))
    assert lab.config_maps() == {"stays-0"}
    assert lab.findings() == []
    # A name neither in git nor in any inventory is still unknown.
    assert "unknown app 'retired'" in lab.sync("--app", "retired", "--prune", code=2)
