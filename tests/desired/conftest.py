"""Shared fixtures for desired-state tests: the three homelab repositories as
real git repos (upstream + operator's clone), a real Helm chart repository
served over HTTP on loopback, and config files pointing at them."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from testenv.charts import (
    HELM,
    ChartRepo,
    chart_sources,
    fixture_applications,
    package_chart,
    serve_charts,
)
from testenv.gitrepos import FIXTURE_URLS, fixture_files, make_upstream_and_clone

# Imported by the desired-state tests from here.
__all__ = ["HELM", "ChartRepo", "chart_sources", "fixture_applications", "package_chart"]


@dataclass(frozen=True)
class Homelab:
    base: Path
    clones: Mapping[str, Path]
    upstreams: Mapping[str, Path]


def require_helm() -> str:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: build the test environment first (testenv/)")
    return str(HELM)


@pytest.fixture(scope="session")
def homelab(tmp_path_factory: pytest.TempPathFactory) -> Homelab:
    base = tmp_path_factory.mktemp("homelab")
    clones, upstreams = {}, {}
    for name in FIXTURE_URLS:
        upstreams[name], clones[name] = make_upstream_and_clone(base, name, fixture_files(name))
    return Homelab(base, clones, upstreams)


@pytest.fixture(scope="session")
def chart_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """A Helm repository holding a stand-in chart for every chart+version the fixture
    Applications ask for (testenv/charts.py), packaged by the real helm."""
    require_helm()
    with serve_charts(tmp_path_factory.mktemp("charts")) as repo:
        yield repo


def unused_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: Path,
    repos: Mapping[str, Path],
    urls: Mapping[str, str] | None = None,
    mirror: str | None = None,
    chart_urls: set[str] | frozenset[str] = frozenset(),
    extra: str = "",
    ref: str | None = None,
    render: str = "",
) -> Path:
    """A config for the three homelab clusters over `repos` (name -> clone path);
    every chart repository in `chart_urls` is mirrored to `mirror`; `render` is
    added to the [render] table."""
    urls = urls if urls is not None else FIXTURE_URLS
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        "[render]",
        f'helm = "{HELM}"',
        "timeout_seconds = 60",
        render,
    ]
    if mirror:
        lines.append("[render.chart_mirrors]")
        lines += [f'"{u}" = "{mirror}"' for u in sorted(chart_urls)]
    for name, path in repos.items():
        lines += [
            "[[repos]]",
            f'name = "{name}"',
            f'path = "{path}"',
            'apps = ["kubernetes/argocd-apps"]',
        ]
        if name in urls:
            lines.append(f'url = "{urls[name]}"')
        if ref:
            lines.append(f'ref = "{ref}"')
    lines += [
        "[[clusters]]",
        'name = "prod"',
        "argocd = true",
        'kubeconfig = "prod.kubeconfig"',
        'servers = ["https://kubernetes.default.svc"]',
        "[[clusters]]",
        'name = "agentic"',
        'mode = "apply"',
        'kubeconfig = "agentic.kubeconfig"',
        'servers = ["https://10.20.0.40:6443"]',
        "[[clusters]]",
        'name = "monit"',
        'mode = "apply"',
        'kubeconfig = "monit.kubeconfig"',
        'servers = ["https://10.10.0.30:6443"]',
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
