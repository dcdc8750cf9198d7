"""Session-wide fixtures: the three real test clusters, started once per run.

The clusters start lazily, on the first test that asks for them, so unit-test
runs stay fast; they are stopped at the end of the run, when a test fails, and
when the run is interrupted (the servers also die with the test process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testenv.clusters import ClusterSet, running_clusters
from testenv.victorialogs import VictoriaLogs

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(
    os.environ.get(
        "RECONCILER_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures" / "homelab-repos"
    )
)

_versions: dict[str, str] = {}
NAMESPACE_SMOKE_TEST = "tests/integration/test_testenv_smoke.py::test_deleting_a_namespace_finishes"


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    timeout = float(os.environ.get("RECONCILER_TESTENV_TIMEOUT", "120"))
    with running_clusters(tmp_path_factory.mktemp("clusters"), timeout=timeout) as cluster_set:
        for c in cluster_set:
            _versions[c.name] = c.version()
        yield cluster_set


@pytest.fixture(scope="session")
def victorialogs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaLogs]:
    # Lazy like the clusters: only the log-shipping tests start it.
    server = VictoriaLogs(tmp_path_factory.mktemp("victorialogs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The smoke test of namespace deletion runs first, on clusters no other test has
    put through an outage yet: after the fault and daemon tests' API server restarts,
    monit's namespace controller can take over a minute to catch up. (The other smoke
    tests keep their place: one makes the deliberate refused write on prod, which the
    tests before it must not see.)"""
    items.sort(key=lambda item: not item.nodeid.startswith(NAMESPACE_SMOKE_TEST))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _versions:
        terminalreporter.section("test clusters")
        for name, version in _versions.items():
            terminalreporter.write_line(f"{name}: kube-apiserver {version}")
