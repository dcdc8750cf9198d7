"""Fixtures of the fault tests: a two-repo lab on the session's clusters, cleaned up after."""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from testenv.clusters import ClusterSet
from tests.faults.lab import FaultLab, build_lab
from tests.helpers_cluster import unique


@pytest.fixture
def fault_lab(clusters: ClusterSet, tmp_path: Path) -> Iterator[FaultLab]:
    namespaces = {c.name: unique(f"fault-{c.name}") for c in clusters}
    side = unique("fault-side")
    lab = build_lab(clusters, tmp_path, namespaces, side)
    yield lab
    for daemon in lab.daemons:
        daemon.kill()
    for c in clusters:
        for ns in (namespaces[c.name], side):
            with contextlib.suppress(urllib.error.URLError, OSError):
                c.request("DELETE", f"/api/v1/namespaces/{ns}")
