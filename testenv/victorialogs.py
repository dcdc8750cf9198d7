"""A real VictoriaLogs on loopback: the log store the monitoring cluster runs.

Built from its Go module into ``testenv/bin`` by ``make testenv``. Tests ship
logs to it and read them back with LogsQL, so what they assert is what an
operator would find on monit. It can be stopped and started again on the same
port and data directory, which is how tests take the sink down and bring it
back. With a CA it serves HTTPS only, to prove the shipper verifies the server.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from testenv.clusters import binary
from testenv.pki import CertAuthority, make_serving_cert
from testenv.served import LoopbackServer


class VictoriaLogs(LoopbackServer):
    """One single-node VictoriaLogs with its data in ``directory``."""

    def __init__(self, directory: Path, ca: CertAuthority | None = None) -> None:
        super().__init__(directory, "victoria-logs")
        self.ca = ca

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca.cert_file)) if self.ca else None

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary("victoria-logs")),
            f"-storageDataPath={self.directory / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=WARN",
        ]
        if self.ca is not None:
            cert, key = make_serving_cert(self.ca, self.directory, "victoria-logs")
            argv += ["-tls", f"-tlsCertFile={cert}", f"-tlsKeyFile={key}"]
        self._launch(argv, self.url + "/health", self._ssl_context(), timeout)

    def query(self, logsql: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries matching a LogsQL query, one dict per entry as VictoriaLogs returns them."""
        params = {"query": logsql}
        if limit is not None:
            params["limit"] = str(limit)
        req = urllib.request.Request(
            self.url + "/select/logsql/query",
            data=urllib.parse.urlencode(params).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10, context=self._ssl_context()) as resp:
            body: bytes = resp.read()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def wait_for(self, logsql: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll until ``logsql`` matches ``count`` entries: ingested lines show after a moment."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.query(logsql)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise TimeoutError(f"{logsql!r}: {len(found)} of {count} entries after {timeout:.0f} s")
