"""Faults of a repository while the daemon runs: its objects corrupted, its tracked
ref deleted, its history rewritten upstream (force-push, then pulled). A broken
repo is a clear error naming it; the last good desired state of its apps is kept
(nothing pruned, edits still reverted, invariant 4); the other repo keeps
reconciling; prod is never written."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from testenv.gitrepos import commit_files, pull
from tests.faults.lab import FaultLab, side_files
from tests.helpers_cluster import wait_for
from tests.helpers_lab import app_files


def _corrupt(clone: Path) -> None:
    """Overwrite every object (loose and packed) of the clone with garbage."""
    for file in (clone / ".git" / "objects").rglob("*"):
        if file.is_file() and file.parent.name != "info":
            file.chmod(0o644)
            file.write_bytes(b"\0garbage" * 64)


def _delete_ref(clone: Path) -> None:
    """What `git push origin :main` then `git fetch --prune` leave in the clone."""
    pygit2.Repository(str(clone)).references.delete("refs/remotes/origin/main")


def _repo_error(lab: FaultLab, daemon_status: dict[str, object], name: str) -> str:
    repos = daemon_status["repos"]
    assert isinstance(repos, list)
    return str(next(r for r in repos if r["name"] == name)["error"] or "")


@pytest.mark.parametrize("fault", ["corrupt", "ref-deleted"])
def test_a_broken_repo_keeps_its_last_good_state_and_stops_no_other(
    fault_lab: FaultLab, fault: str
) -> None:
    lab = fault_lab
    daemon = lab.start()
    ns = lab.namespaces["agentic"]
    clone = lab.repos["lab"].clone
    (_corrupt if fault == "corrupt" else _delete_ref)(clone)
    # A commit to the other repo makes the daemon read every repo again.
    lab.commit(side_files(lab.side_namespace, mode="second"), "side moves on", repo="side")
    wait_for(
        lambda: (
            (lab.config_map("monit", lab.side_namespace, "side") or {})["data"]["mode"] == "second"
        ),
        60,
        "the other repo's commit applied",
    )
    wait_for(lambda: "repo lab" in _repo_error(lab, daemon.status(), "lab"), 30, "repo error")
    error = _repo_error(lab, daemon.status(), "lab")
    assert ("corrupt" in error) if fault == "corrupt" else ("not found" in error), error
    # Nothing of the broken repo's apps is pruned, and their last good state still holds.
    before = daemon.reconciles("agentic")
    wait_for(lambda: daemon.reconciles("agentic") >= before + 2, 30, "agentic reconciling")
    assert lab.config_map("agentic", ns, "settings") is not None
    lab.edit("agentic", ns, "settings", {"mode": "edited"})
    wait_for(
        lambda: (lab.config_map("agentic", ns, "settings") or {})["data"]["mode"] == "steady",
        30,
        "an edit reverted from the last good desired state",
    )
    assert not [e for e in daemon.events("object") if e.get("result") == "pruned"]
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_a_force_pushed_history_is_followed(fault_lab: FaultLab) -> None:
    lab = fault_lab
    daemon = lab.start()
    repo = lab.repos["lab"]
    ns = lab.namespaces["agentic"]
    # Upstream history rewritten: main now points at an unrelated root commit.
    files: dict[str, bytes | None] = {}
    for cluster, namespace in lab.namespaces.items():
        files.update(app_files(cluster, namespace, replicas=2 if cluster == "agentic" else 1))
    rewritten = commit_files(repo.upstream, "refs/heads/rewritten", files, "history rewritten")
    repo.upstream.references.create("refs/heads/main", pygit2.Oid(hex=rewritten), force=True)
    pull(repo.clone)
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    wait_for(
        lambda: lab.get("agentic", deployment)["spec"]["replicas"] == 2,
        60,
        "the rewritten history applied",
    )
    wait_for(
        lambda: any(r["commit"] == rewritten for r in daemon.status()["repos"]),
        30,
        "status naming the rewritten commit",
    )
    assert not [e for e in daemon.events("object") if e.get("result") == "pruned"]
    lab.assert_prod_untouched()
    assert daemon.stop() == 0
