"""Shared fixtures for desired-state tests: the three homelab repositories as
real git repos (upstream + operator's clone), a real Helm chart repository
served over HTTP on loopback, and config files pointing at them."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testenv.gitrepos import (
    FIXTURE_URLS,
    FIXTURES,
    REPO_ROOT,
    fixture_files,
    make_upstream_and_clone,
)

HELM = REPO_ROOT / "testenv" / "bin" / "helm"
CHART_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
data:
  chart: "{{ .Chart.Name }}-{{ .Chart.Version }}"
  namespace: {{ .Release.Namespace | quote }}
  values: {{ .Values | toJson | quote }}
"""


@dataclass(frozen=True)
class Homelab:
    base: Path
    clones: Mapping[str, Path]
    upstreams: Mapping[str, Path]


@dataclass(frozen=True)
class ChartRepo:
    url: str
    charts: frozenset[tuple[str, str, str]]  # (repoURL as Applications name it, chart, version)


def fixture_applications() -> list[dict[str, Any]]:
    """Every Application document in the fixture repos, read directly from the files."""
    apps = []
    for name in FIXTURE_URLS:
        for path in sorted((FIXTURES / name / "kubernetes" / "argocd-apps").rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Application":
                    apps.append(doc)
    return apps


def chart_sources(app: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = app["spec"]
    return [s for s in spec.get("sources") or [spec["source"]] if "chart" in s]


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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: stderr belongs to the command under test."""


def _serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def package_chart(helm: str, work: Path, chart: str, version: str, destination: Path) -> Path:
    """A tiny chart (one ConfigMap of CHART_TEMPLATE), packaged into `destination` by the
    real helm; its .tgz."""
    source = work / f"{chart}-{version}" / chart
    (source / "templates").mkdir(parents=True)
    (source / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": chart, "version": version})
    )
    (source / "values.yaml").write_text("fromChartDefaults: true\n")
    (source / "templates" / "configmap.yaml").write_text(CHART_TEMPLATE)
    subprocess.run(
        [helm, "package", str(source), "--destination", str(destination)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return destination / f"{chart}-{version}.tgz"


@pytest.fixture(scope="session")
def chart_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """A Helm repository holding a tiny chart for every chart+version the fixture
    Applications ask for, packaged by the real helm."""
    helm = require_helm()
    work = tmp_path_factory.mktemp("charts")
    served = work / "served"
    served.mkdir()
    wanted = {
        (s["repoURL"], s["chart"], str(s["targetRevision"]))
        for app in fixture_applications()
        for s in chart_sources(app)
    }
    for chart, version in sorted({(c, v) for _, c, v in wanted}):
        package_chart(helm, work / "src", chart, version, served)
    for url in _serve(served):
        subprocess.run(
            [helm, "repo", "index", str(served), "--url", url],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield ChartRepo(url, frozenset(wanted))


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
