"""From a commit to the desired state, one way: rendering returns what it read (each
repo's commit, or why it could not be read), the daemon decides from that value
whether anything moved, and putting it on record is a separate step of the caller.
Real git repos and the real daemon; no cluster is reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.config import Config
from reconciler.daemon import Daemon
from reconciler.session import open_session
from testenv.gitrepos import commit_files, pull
from tests.builders import config_map, yaml_file
from tests.unit.test_config_keys import PLAIN, _config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return _config(tmp_path, PLAIN, daemon={"state_dir": str(tmp_path / "state")})


@pytest.fixture
def daemon(config: Config) -> Iterator[Daemon]:
    running = Daemon(config)
    yield running
    running.stopping.set()
    running.session.close()


def _head(config: Config) -> str:
    return str(pygit2.Repository(str(config.repos[0].path)).head.target)


def _push_and_pull(tmp_path: Path, config: Config) -> str:
    """A new commit upstream, pulled into the clone the daemon reads."""
    upstream = pygit2.Repository(str(tmp_path / "upstream" / "lab.git"))
    files: dict[str, bytes | None] = {"deploy/c.yaml": yaml_file(config_map("c", {}))}
    commit = commit_files(upstream, "refs/heads/main", files, "add c")
    pull(config.repos[0].path)
    return commit


def test_render_returns_the_commit_it_read_and_leaves_recording_to_the_caller(
    config: Config,
) -> None:
    session = open_session(config)
    try:
        desired = session.render()
        assert desired.commits == {"lab": _head(config)}
        assert desired.unreadable == {}
        assert session.store.repos() == []  # rendering wrote nothing
        session.record_repos(desired)
        assert [(r["name"], r["commit"]) for r in session.store.repos()] == [("lab", _head(config))]
    finally:
        session.close()


def test_a_readonly_session_records_no_repo(config: Config) -> None:
    open_session(config).close()  # the state exists, as beside a running daemon
    reader = open_session(config, readonly=True)
    try:
        reader.record_repos(reader.render())
        assert reader.store.repos() == []
    finally:
        reader.close()


def test_the_daemon_renders_again_only_when_a_commit_moved(
    tmp_path: Path, config: Config, daemon: Daemon
) -> None:
    assert daemon.refresh()
    first = daemon.desired
    assert first is not None and first.commits == {"lab": _head(config)}
    # The same commit: the same desired object, so the engines keep their caches.
    assert not daemon.refresh()
    assert daemon.desired is first
    moved = _push_and_pull(tmp_path, config)
    assert daemon.refresh()
    assert daemon.desired is not None and daemon.desired.commits == {"lab": moved}
    names = {m.ref.name for m in daemon.desired.clusters["agentic"].manifests}
    assert names == {"a", "b", "c"}
    assert [r["commit"] for r in daemon.store.repos()] == [moved]


def test_a_repo_that_cannot_be_read_is_recorded_beside_its_last_good_commit(
    config: Config, daemon: Daemon
) -> None:
    assert daemon.refresh()
    good = _head(config)
    # What `git push origin :main` then `git fetch --prune` leave in the clone.
    pygit2.Repository(str(config.repos[0].path)).references.delete("refs/remotes/origin/main")
    assert daemon.refresh()  # the repo's state moved: it is read no longer
    desired = daemon.desired
    assert desired is not None and desired.commits == {}
    assert "repo lab" in desired.unreadable["lab"]
    # Its app is not dropped from the cluster: it failed, so its objects are left alone.
    assert "web" in desired.clusters["agentic"].failed
    (repo,) = daemon.store.repos()
    assert (repo["commit"], repo["error"]) == (good, desired.unreadable["lab"])
    assert not daemon.refresh()  # still unreadable: nothing moved
