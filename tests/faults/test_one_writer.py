"""One writer per state directory, and a state only its service may read.

A second daemon on the same state exits 78 naming the lock and its holder while
the first keeps reconciling; a CLI `sync` (or `check --repin`) beside the daemon
is refused and leaves the inventory alone; after a daemon run, whatever its
umask, the state is private: the directory 0710, the SQLite files 0640, the
rest owner-only; and a member of the service's group can read `status` (and
nothing else) with the daemon down, as a real second uid.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.model import ObjectRef
from reconciler.session import STATE_DB
from reconciler.store import Store
from tests.faults.lab import FaultLab, config_maps
from tests.helpers_cluster import wait_for

# A uid and gid no account uses: the group member and an outsider, for status.
MEMBER_UID, SERVICE_GID, OUTSIDER_GID = 64711, 64712, 64713


def _cli(
    lab: FaultLab, *args: str, user: tuple[int, int] | None = None
) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if user is not None:
        uid, gid = user
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "reconciler.cli", *args, "--config", str(lab.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _inventory(lab: FaultLab) -> dict[str, list[ObjectRef]]:
    store = Store(lab.state / STATE_DB, readonly=True)
    try:
        return {c: [i.ref for i in store.inventory(c)] for c in ("agentic", "monit")}
    finally:
        store.close()


def test_a_second_daemon_exits_78_naming_the_lock_and_the_first_keeps_reconciling(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    first = lab.start("first")
    second = _cli(lab, "run")
    assert second.returncode == 78, second.stderr
    lock = lab.state / "lock"
    assert f"{lock} is held by pid {first.proc.pid}" in second.stderr
    assert "one daemon per state directory" in second.stderr
    assert "Traceback" not in second.stderr
    # The first is still the daemon, and still applies commits.
    ns = lab.namespaces["agentic"]
    lab.commit(config_maps("deploy/agentic", 1, "after"), "a change for the first daemon")
    wait_for(
        lambda: (lab.config_map("agentic", ns, "cm-0000") or {}).get("data") == {"value": "after"},
        60,
        "the first daemon applies the commit",
    )
    status = first.status()["daemon"]
    assert status["running"] and status["pid"] == first.proc.pid
    lab.assert_prod_untouched()


def test_a_cli_sync_beside_the_daemon_is_refused_and_leaves_the_inventory_alone(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    daemon = lab.start()
    before = _inventory(lab)
    assert before["agentic"], "the daemon's first reconcile filled the inventory"
    # A new commit, so the daemon is reconciling (or about to) while the sync is tried.
    lab.commit(config_maps("deploy/agentic", 1), "a change that wakes the daemon")
    sync = _cli(lab, "sync", "--cluster", "agentic")
    assert sync.returncode == 2, sync.stderr
    assert sync.stdout == "", "nothing was planned or applied"
    assert f"sync refused: {lab.state / 'lock'} is held by pid {daemon.proc.pid}" in sync.stderr
    repin = _cli(lab, "check", "--repin", "agentic")
    assert repin.returncode == 2 and "check --repin refused" in repin.stderr
    # Readers are not writers: diff and status work beside the daemon.
    diff = _cli(lab, "diff", "--cluster", "agentic")
    assert diff.returncode in (0, 1), diff.stderr
    assert _cli(lab, "status").returncode in (0, 1)
    # The inventory holds what the daemon alone made of it: the commit's one new object.
    ns = lab.namespaces["agentic"]
    added = ObjectRef("", "ConfigMap", ns, "cm-0000")
    wait_for(lambda: added in _inventory(lab)["agentic"], 60, "the daemon applies the commit")
    after = _inventory(lab)
    assert sorted(after["agentic"]) == sorted([*before["agentic"], added])
    assert after["monit"] == before["monit"]
    assert daemon.alive()


def _modes(state: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(state.stat().st_mode)}
    for path in state.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(state))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_the_state_is_private_after_a_daemon_run_whatever_the_umask(
    fault_lab: FaultLab, umask: int
) -> None:
    lab = fault_lab
    previous = os.umask(umask)
    try:
        daemon = lab.start()
    finally:
        os.umask(previous)
    assert daemon.stop() == 0
    modes = _modes(lab.state)
    assert modes["."] == 0o710
    assert modes[STATE_DB] == 0o640
    assert modes["hmac.key"] == 0o600
    assert modes["lock"] == 0o600
    assert modes["git"] == 0o700, "the fetch cache"
    shared = {k: oct(m) for k, m in modes.items() if m & 0o077 and k != "."}
    assert set(shared) <= {STATE_DB, f"{STATE_DB}-wal", f"{STATE_DB}-shm"}, shared
    assert all(m & 0o037 == 0 for k, m in modes.items() if k.startswith(STATE_DB))


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state dir another uid can reach (pytest's own tmp is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="reconciler-group-"))
    os.chmod(base, 0o755)
    monkeypatch.setattr(FaultLab, "state", property(lambda self: base / "state"))
    monkeypatch.setattr(FaultLab, "config", property(lambda self: base / "config.toml"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_member_of_the_services_group_reads_status_and_nothing_else_with_the_daemon_down(
    fault_lab: FaultLab, shared_tmp: Path
) -> None:
    lab = fault_lab
    daemon = lab.start()
    assert daemon.stop() == 0
    os.chmod(lab.config, 0o644)
    # The service's group owns its state, as when the daemon runs as its own user.
    for path in [lab.state, *lab.state.iterdir()]:
        os.chown(path, -1, SERVICE_GID)
    before = {p.name: p.stat().st_mtime_ns for p in lab.state.iterdir()}

    member = _cli(lab, "status", "-o", "json", user=(MEMBER_UID, SERVICE_GID))
    assert member.returncode in (0, 1), member.stderr
    document = json.loads(member.stdout)
    assert document["daemon"]["running"] is False
    agentic = next(c for c in document["clusters"] if c["name"] == "agentic")
    assert agentic["last_reconcile"] is not None, "the state was read, not an empty one"
    assert {p.name: p.stat().st_mtime_ns for p in lab.state.iterdir()} == before

    for secret in ("hmac.key", "lock"):
        cat = subprocess.run(
            [
                "setpriv",
                f"--reuid={MEMBER_UID}",
                f"--regid={SERVICE_GID}",
                "--clear-groups",
                "cat",
                str(lab.state / secret),
            ],
            capture_output=True,
            text=True,
        )
        assert cat.returncode != 0 and "Permission denied" in cat.stderr, secret
    outsider = _cli(lab, "status", user=(MEMBER_UID, OUTSIDER_GID))
    assert outsider.returncode == 2
    assert "state unreadable" in outsider.stderr and "Traceback" not in outsider.stderr
