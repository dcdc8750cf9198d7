"""The content-addressed chart cache and the helm output cache, with the real
`reconciler render`, the real helm and a real chart repository on loopback: a
cached chart renders with its repository down, an altered archive in the cache
is found (named) and fetched again, an archive that is not what the index's
digest says is refused, and a render whose inputs are all unchanged runs no
helm while a changed value file does."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.config import load_config
from reconciler.daemon import Daemon
from reconciler.desired import Desired
from reconciler.errors import RenderError
from reconciler.render.charts import MAX_CHART_MEMBERS, Chart, chart_archive, unpack
from reconciler.render.tools import Tools
from testenv.gitrepos import commit_files, make_upstream_and_clone, pull
from tests.desired.chart_server import ChartServer, application, errors_of, render
from tests.desired.conftest import HELM, require_helm, write_config

REPO_URL = "https://git.example.invalid/lab/apps.git"


def chart_app(name: str, repo_url: str, version: str = "1.0.0", **helm: Any) -> bytes:
    source = {"repoURL": repo_url, "chart": "hello", "targetRevision": version, "helm": helm}
    return application(name, {"source": source})


def lab_config(
    tmp_path: Path, files: dict[str, bytes], render: str = "", extra: str = ""
) -> tuple[Path, Path]:
    """A repo of `files` and a config over it; the config and the upstream repo."""
    files = {**files, "README.md": b"charts from a repository\n"}
    upstream, clone = make_upstream_and_clone(tmp_path, "lab", files)
    config = write_config(
        tmp_path, {"lab": clone}, urls={"lab": REPO_URL}, render=render, extra=extra
    )
    return config, upstream


@pytest.fixture
def hello_lab(tmp_path: Path) -> Iterator[tuple[ChartServer, Path]]:
    """A chart repository serving hello 1.0.0 and a config of one app `a` using it."""
    require_helm()
    server = ChartServer(tmp_path / "repo")
    try:
        server.add_chart("hello", "1.0.0")
        config, _ = lab_config(
            tmp_path, {"kubernetes/argocd-apps/a.yaml": chart_app("a", server.url)}
        )
        yield server, config
    finally:
        server.stop()


def test_a_cached_chart_renders_while_its_repository_is_down(
    hello_lab: tuple[ChartServer, Path],
) -> None:
    server, config = hello_lab
    first, errors = render(config)
    assert errors == [] and "a/a-hello" in first
    server.stop()
    again, errors = render(config)
    assert errors == []
    assert again == first


def test_an_altered_archive_in_the_cache_is_named_and_fetched_again(
    hello_lab: tuple[ChartServer, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, config = hello_lab
    helm = require_helm()
    first, _ = render(config)
    (archive,) = (tmp_path / "state" / "charts" / "sha256").glob("*.tgz")
    archive.write_bytes(archive.read_bytes()[:100])  # truncated
    fetched = len([p for p, _ in server.seen if p.endswith(".tgz")])

    tools = Tools(None, helm, 60, 1 << 20, tmp_path / "state")
    with caplog.at_level(logging.WARNING, logger="reconciler.render.charts"):
        again, digest = chart_archive(Chart(server.url, "hello", "1.0.0"), helm, tools)
    assert again == archive and digest == archive.stem
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    warning = f"cached chart hello 1.0.0 from {server.url}: its archive {archive} does not "
    assert warning in caplog.text
    assert len([p for p, _ in server.seen if p.endswith(".tgz")]) == fetched + 1

    archive.write_bytes(b"not a chart")  # altered, and read by the real CLI
    rendered, errors = render(config)
    assert errors == [] and rendered == first
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == archive.stem


def test_an_archive_unlike_the_index_digest_is_refused_naming_chart_and_version(
    tmp_path: Path,
) -> None:
    require_helm()
    server = ChartServer(tmp_path / "repo")
    try:
        server.add_chart("hello", "1.0.0")
        package = server.add_chart("hello", "2.0.0")
        package.write_bytes(package.read_bytes() + b"\0")  # served, not what the index says
        config, _ = lab_config(
            tmp_path,
            {
                "kubernetes/argocd-apps/good.yaml": chart_app("good", server.url),
                "kubernetes/argocd-apps/tampered.yaml": chart_app(
                    "tampered", server.url, version="2.0.0"
                ),
            },
        )
        objects, lines = render(config)
    finally:
        server.stop()
    assert set(objects) == {"good/good-hello"}
    message = errors_of(lines, "tampered")
    assert f"chart not available: hello 2.0.0 from {server.url}" in message
    assert "digest mismatch" in message and "refused" in message
    assert len(list((tmp_path / "state" / "charts" / "sha256").glob("*.tgz"))) == 1


def test_helm_output_is_reused_until_a_value_file_changes(tmp_path: Path) -> None:
    require_helm()
    helm = tmp_path / "helm"
    shutil.copy2(HELM, helm)
    server = ChartServer(tmp_path / "repo")
    source = {
        "repoURL": server.url,
        "chart": "hello",
        "targetRevision": "1.0.0",
        "helm": {"valueFiles": ["$values/values/hello.yaml"]},
    }
    app = application(
        "multi",
        {"sources": [source, {"repoURL": REPO_URL, "targetRevision": "HEAD", "ref": "values"}]},
    )
    try:
        server.add_chart("hello", "1.0.0")
        config, upstream = lab_config(
            tmp_path,
            {"kubernetes/argocd-apps/multi.yaml": app, "values/hello.yaml": b"colour: blue\n"},
        )
        config.write_text(config.read_text().replace(f'helm = "{HELM}"', f'helm = "{helm}"'))
        first, errors = render(config)
        assert errors == []
        assert json.loads(first["multi/multi-hello"]["data"]["values"])["colour"] == "blue"

        # helm cannot run now: what renders came from the output cache.
        helm.chmod(0)
        repo = pygit2.Repository(str(upstream))
        commit_files(repo, "refs/heads/main", {"README.md": b"unrelated\n"}, "docs")
        pull(tmp_path / "clones" / "lab")
        again, errors = render(config)
        assert errors == [] and again == first

        commit_files(repo, "refs/heads/main", {"values/hello.yaml": b"colour: red\n"}, "red")
        pull(tmp_path / "clones" / "lab")
        _, lines = render(config)
        assert "helm template of hello failed" in errors_of(lines, "multi")  # it ran helm

        helm.chmod(0o755)
        changed, errors = render(config)
        assert errors == []
        values = yaml.safe_load(changed["multi/multi-hello"]["data"]["values"])
        assert values["colour"] == "red"
    finally:
        server.stop()


def test_a_version_range_takes_the_highest_release_each_render_and_the_last_one_offline(
    tmp_path: Path,
) -> None:
    require_helm()
    server = ChartServer(tmp_path / "repo")
    try:
        for version in ("1.1.0", "1.2.0", "1.2.7", "2.0.0-rc.1", "2.0.0"):
            server.add_chart("hello", version)
        config, _ = lab_config(
            tmp_path,
            {
                "kubernetes/argocd-apps/a.yaml": chart_app("a", server.url, "1.2.*"),
                "kubernetes/argocd-apps/b.yaml": chart_app("b", server.url, ">=1.0 <2.0.0-0"),
            },
        )
        first, errors = render(config)
        assert errors == []
        assert first["a/a-hello"]["data"]["chart"] == "hello-1.2.7"
        assert first["b/b-hello"]["data"]["chart"] == "hello-1.2.7"

        server.add_chart("hello", "1.2.9")
        newer, errors = render(config)
        assert errors == []
        assert newer["a/a-hello"]["data"]["chart"] == "hello-1.2.9", "resolved again"

        server.stop()
        offline, errors = render(config)
        assert errors == []
        assert offline["a/a-hello"]["data"]["chart"] == "hello-1.2.9", "the last resolution"
    finally:
        server.stop()


def test_a_range_no_release_meets_fails_its_app_naming_the_range(tmp_path: Path) -> None:
    require_helm()
    server = ChartServer(tmp_path / "repo")
    try:
        server.add_chart("hello", "1.0.0")
        config, _ = lab_config(
            tmp_path,
            {
                "kubernetes/argocd-apps/a.yaml": chart_app("a", server.url, "^3.1"),
                "kubernetes/argocd-apps/b.yaml": chart_app("b", server.url, "1.0.0"),
            },
        )
        objects, errors = render(config)
        assert "b/b-hello" in objects
        message = errors_of(errors, "a")
        assert "hello ^3.1" in message and "no version in index.yaml is within ^3.1" in message
    finally:
        server.stop()


def test_the_daemon_takes_a_newer_chart_in_range_without_a_commit(tmp_path: Path) -> None:
    require_helm()
    server = ChartServer(tmp_path / "repo")
    daemon = None
    try:
        server.add_chart("hello", "1.2.0")
        config, _ = lab_config(
            tmp_path, {"kubernetes/argocd-apps/a.yaml": chart_app("a", server.url, "~1.2")}
        )
        daemon = Daemon(load_config(config))
        assert "agentic" in daemon.refresh()

        def chart_of(desired: Desired | None) -> str:
            assert desired is not None
            (m,) = [m for m in desired.clusters["agentic"].manifests if m.origin.app == "a"]
            return str(m.obj["data"]["chart"])

        assert chart_of(daemon.desired) == "hello-1.2.0"
        assert daemon.refresh() == {}, "nothing moved"
        server.add_chart("hello", "1.2.3")
        assert set(daemon.refresh()) == {"agentic"}, "the same commits, a newer chart"
        assert chart_of(daemon.desired) == "hello-1.2.3"
    finally:
        server.stop()
        if daemon is not None:
            daemon.stopping.set()
            daemon.session.close()


def test_an_index_naming_its_archive_by_a_file_url_is_refused(tmp_path: Path) -> None:
    require_helm()
    server = ChartServer(tmp_path / "repo")
    try:
        server.add_chart("hello", "1.0.0", archive_url=f"file://{tmp_path / 'repo'}")
        config, _ = lab_config(
            tmp_path, {"kubernetes/argocd-apps/a.yaml": chart_app("a", server.url)}
        )
        objects, errors = render(config)
        assert objects == {}
        assert "only http and https URLs are fetched" in errors_of(errors, "a")
    finally:
        server.stop()


def test_an_archive_of_too_many_entries_is_refused_before_it_is_read_whole(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "bomb.tgz"
    with tarfile.open(bomb, "w:gz") as tar:
        for i in range(MAX_CHART_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"hello/empty-{i}"))
    chart = Chart("https://charts.example", "hello", "1.0.0")
    with pytest.raises(RenderError, match=f"over {MAX_CHART_MEMBERS} files"):
        unpack(bomb, chart, tmp_path / "out", 1 << 20)
