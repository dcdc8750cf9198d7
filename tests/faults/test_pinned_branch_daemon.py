"""The daemon follows a branch an Application pins by targetRevision: when that
branch moves (and the tracked ref does not), it renders again and applies it."""

from __future__ import annotations

from typing import Any

from testenv.gitrepos import commit_files, pull
from tests.builders import config_map, yaml_file
from tests.faults.lab import FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import application

RELEASE = "refs/heads/release"


def _release(version: str) -> dict[str, bytes | None]:
    return {"deploy/pinned/cm.yaml": yaml_file(config_map("release", {"version": version}))}


def _commits(status: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["commit"] for r in status["repos"]}


def test_a_pinned_branch_that_moves_is_applied_though_main_did_not_move(
    fault_lab: FaultLab,
) -> None:
    ns = fault_lab.namespaces["agentic"]
    repo = fault_lab.repos["lab"]
    app = application("pinned", "agentic", "deploy/pinned", ns)
    app["spec"]["source"]["targetRevision"] = "release"
    main = repo.commit({"apps/pinned.yaml": yaml_file(app), **_release("one")}, "pin to release")
    repo.upstream.references.create(RELEASE, repo.upstream[main].id)
    commit_files(repo.upstream, "refs/heads/main", _release("main only"), "main moves on")
    pull(repo.clone)

    def version() -> str | None:
        found = fault_lab.config_map("agentic", ns, "release")
        return None if found is None else str(found["data"]["version"])

    daemon = fault_lab.start()
    wait_for(lambda: version() == "one", 60, "the pinned branch's content applied")
    tracked = _commits(daemon.status())

    commit_files(repo.upstream, RELEASE, _release("two"), "release two")
    pull(repo.clone)  # the operator's `git fetch`: only origin/release moved
    wait_for(lambda: version() == "two", 60, "the moved branch applied")
    assert _commits(daemon.status()) == tracked
