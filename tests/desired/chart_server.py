"""A Helm chart repository on loopback that can ask for a password, be stopped and
started again, and tells which requests reached it with which Authorization header:
charts packaged by the real helm, index.yaml written by the real `helm repo index`.
Also how the chart tests read `reconciler render -o json`."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

from testenv.charts import HELM, package_chart
from tests.builders import yaml_file
from tests.helpers_lab import reconciler_cli

AGENTIC = "https://10.20.0.40:6443"  # the agentic cluster's server in tests' configs


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        header = self.headers.get("Authorization")
        self.server.seen.append((self.path, header))
        wanted = self.server.basic_auth
        if wanted is not None and header != wanted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Not logged: stderr belongs to the command under test."""


class _Server(http.server.ThreadingHTTPServer):
    basic_auth: str | None
    seen: list[tuple[str, str | None]]


class ChartServer:
    """`directory` served as a chart repository on a fixed loopback port."""

    def __init__(self, directory: Path, user: str | None = None, password: str = "") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self._server: _Server | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        handler = functools.partial(_Handler, directory=str(self.directory))
        server = _Server(("127.0.0.1", self.port), handler)
        server.basic_auth, server.seen = self._auth, self.seen
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add_chart(self, chart: str, version: str, archive_url: str | None = None) -> Path:
        """Package `chart` `version` here and index the repository; the index names the
        archive at `archive_url` (another server's base URL) when given. The archive."""
        package = package_chart(
            str(HELM),
            self.directory.with_name(f"{self.directory.name}-src"),
            chart,
            version,
            self.directory,
        )
        subprocess.run(
            [str(HELM), "repo", "index", str(self.directory), "--url", archive_url or self.url],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return package


def render(config: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`reconciler render -o json`: the objects by app/name, and the stderr lines."""
    result = reconciler_cli(config, "render", "-o", "json")
    assert "Traceback" not in result.stderr, result.stderr
    objects = {
        f"{row['app']}/{row['object']['metadata']['name']}": row["object"]
        for row in json.loads(result.stdout)
    }
    return objects, result.stderr.splitlines()


def errors_of(lines: list[str], app: str) -> str:
    """The one error line of `app`."""
    found = [line for line in lines if line.startswith(f"app {app} ")]
    assert len(found) == 1, lines
    return found[0]


def application(name: str, spec: dict[str, Any]) -> bytes:
    """An Application of `spec` (its source or sources) for agentic, namespace `name`."""
    return yaml_file(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {
                "project": "default",
                **spec,
                "destination": {"server": AGENTIC, "namespace": name},
            },
        }
    )


def reconciler_check(config: Path) -> subprocess.CompletedProcess[str]:
    """`reconciler check` of a config of write_config, its kubeconfig files present (empty:
    the clusters are not reached)."""
    for cluster in ("prod", "agentic", "monit"):
        (config.parent / f"{cluster}.kubeconfig").write_text("apiVersion: v1\n")
    return reconciler_cli(config, "check")
