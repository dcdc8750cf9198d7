"""Fixtures of the integration tests: the tests' own GitOps lab on the test clusters."""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from testenv.clusters import ClusterSet
from testenv.config import Repo, targets, write_config
from testenv.gitrepos import make_upstream_and_clone
from tests.helpers_cluster import unique
from tests.helpers_lab import SERVERS, Lab, app_files


@pytest.fixture
def lab(clusters: ClusterSet, tmp_path: Path) -> Iterator[Lab]:
    namespaces = {name: unique(f"lab-{name}") for name in SERVERS}
    files: dict[str, bytes | None] = {}
    for cluster, namespace in namespaces.items():
        files.update(app_files(cluster, namespace))
    upstream_path, clone = make_upstream_and_clone(tmp_path, "lab", files)
    config = write_config(
        tmp_path / "config.toml",
        [Repo("lab", clone, "https://git.test/lab.git")],
        targets(clusters, SERVERS),
        {"daemon": {"state_dir": tmp_path / "state", "metrics_address": ""}},
    )
    yield Lab(pygit2.Repository(str(upstream_path)), clone, config, namespaces, clusters)
    for c in clusters:
        with contextlib.suppress(urllib.error.HTTPError):
            c.request("DELETE", f"/api/v1/namespaces/{namespaces[c.name]}")
