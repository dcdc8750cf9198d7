"""What the attack tests share: reading the CLI's verdict on one poisoned app, and
a loopback HTTP server that records every request a render makes to it."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.security.conftest import HONEST_APP


def chart(data: str, directory: str = "charts/evil") -> dict[str, bytes]:
    """A local Helm chart in `directory` whose one template makes ConfigMap `evil` with
    `data` (template text) as its data."""
    name = directory.rsplit("/", 1)[-1]
    return {
        f"{directory}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n".encode(),
        f"{directory}/templates/cm.yaml": (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}"
        ).encode(),
    }


def rendered_apps(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Apps with at least one object in `render -o json` output."""
    return {row["app"] for row in json.loads(result.stdout)}


def assert_only_app_failed(
    result: subprocess.CompletedProcess[str], app: str, *message: str
) -> list[str]:
    """The run ended with exit 1, an error line for `app` holding every piece of
    `message`, no traceback, and the honest app rendered. Returns the app's lines."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if app in ln]
    assert any(all(m in ln for m in message) for ln in lines), (message, result.stderr)
    assert HONEST_APP in rendered_apps(result), result.stderr
    assert app not in rendered_apps(result)
    return lines


@dataclass
class RecordingServer:
    """Serves fixed bodies by path and remembers every path asked for."""

    bodies: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def recording_server(bodies: dict[str, bytes]) -> Iterator[RecordingServer]:
    record = RecordingServer(bodies)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.requests.append(self.path)
            body = record.bodies.get(self.path.split("?")[0])
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are recorded, not logged."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
