"""An Application pinned to a tag on an apply-mode cluster: the tagged content is
what is applied, a later commit on main leaves it alone, moving the tag moves it,
and a revision that does not exist fails that app only."""

from __future__ import annotations

import pygit2

from tests.builders import config_map, yaml_file
from tests.helpers_lab import Lab, application, live


def _pinned(namespace: str, revision: str, name: str = "pinned") -> bytes:
    doc = application(name, "agentic", "deploy/pinned", namespace)
    doc["spec"]["source"]["targetRevision"] = revision
    return yaml_file(doc)


def _release(version: str) -> dict[str, bytes | None]:
    return {"deploy/pinned/cm.yaml": yaml_file(config_map("release", {"version": version}))}


def _tag(lab: Lab, name: str) -> None:
    """The tag at the clone's main, as `git fetch --tags --force` brings a moved one."""
    clone = pygit2.Repository(str(lab.clone))
    head = clone.references["refs/remotes/origin/main"].target
    clone.references.create(f"refs/tags/{name}", head, force=True)


def _version(lab: Lab) -> str:
    ns = lab.namespaces["agentic"]
    found = live(lab.clusters["agentic"], f"/api/v1/namespaces/{ns}/configmaps/release")
    return str(found["data"]["version"])


def test_a_tagged_application_deploys_the_tag_until_the_tag_moves(lab: Lab) -> None:
    ns = lab.namespaces["agentic"]
    lab.commit({"apps/pinned.yaml": _pinned(ns, "v1"), **_release("one")}, "release one")
    _tag(lab, "v1")
    first = lab.run("sync", "--cluster", "agentic")
    assert first.returncode == 0, first.stderr
    assert _version(lab) == "one"

    lab.commit(_release("two"), "work in progress on main")
    second = lab.run("sync", "--cluster", "agentic")
    assert second.returncode == 0, second.stderr
    assert "release" not in second.stdout, second.stdout
    assert _version(lab) == "one"

    _tag(lab, "v1")
    moved = lab.run("sync", "--cluster", "agentic")
    assert moved.returncode == 0, moved.stderr
    assert f"agentic/pinned ConfigMap {ns}/release: configured" in moved.stdout
    assert _version(lab) == "two"


def test_a_revision_that_does_not_exist_fails_only_that_app(lab: Lab) -> None:
    ns = lab.namespaces["agentic"]
    lab.commit(
        {"apps/typo.yaml": _pinned(ns, "v9", name="typo"), **_release("one")},
        "an Application pinned to a tag nobody made",
    )
    synced = lab.run("sync", "--cluster", "agentic")
    assert (
        "app typo (cluster agentic): spec.source.targetRevision: revision 'v9' does not exist "
        "in repo lab"
    ) in synced.stderr, synced.stderr
    assert "Traceback" not in synced.stderr
    web = live(lab.clusters["agentic"], f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert web["metadata"]["labels"]["reconciler.kernow.io/app"] == "web-agentic"
