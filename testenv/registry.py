"""A real OCI registry on loopback: the CNCF distribution registry, the server
behind most registries that host Helm charts.

Built from its Go module into ``testenv/bin`` by ``make testenv``. It serves
HTTPS only, with a certificate from the test's CA, so a pull that skipped
verification or fell back to plain HTTP would not work. Charts get into it the
way a chart author puts them there, with the real ``helm push``; its access log
tells which requests reached it.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import yaml

from testenv.clusters import binary
from testenv.pki import CertAuthority, make_serving_cert
from testenv.served import LoopbackServer


class Registry(LoopbackServer):
    """One registry with its storage, config and log in ``directory``."""

    def __init__(self, directory: Path, ca: CertAuthority) -> None:
        super().__init__(directory, "registry")
        self.ca = ca

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = make_serving_cert(self.ca, self.directory, "registry")
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "data")}},
            "http": {"addr": self.host, "tls": {"certificate": str(cert), "key": str(key)}},
        }
        config_file = self.directory / "config.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._launch(
            [str(binary("registry")), "serve", str(config_file)],
            f"https://{self.host}/v2/",
            ssl.create_default_context(cafile=str(self.ca.cert_file)),
            timeout,
            # No tracing exporter: it would try to reach a collector.
            env={"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"},
        )

    def push_chart(self, helm: Path, package: Path, repository: str) -> None:
        """`helm push` a packaged chart to oci://<host>/<repository>, trusting the CA."""
        homes = self.directory / "helm"
        env = {
            f"HELM_{kind}_HOME": str(homes / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")
        }
        subprocess.run(
            [
                str(helm),
                "push",
                str(package),
                f"oci://{self.host}/{repository}",
                f"--ca-file={self.ca.cert_file}",
            ],
            check=True,
            capture_output=True,
            env={"HOME": str(homes), "PATH": "/usr/bin:/bin", **env},
            timeout=60,
        )

    def requests(self, method: str, path_part: str) -> list[str]:
        """Access-log lines of `method` requests whose path contains `path_part`."""
        if self._log is not None:
            self._log.flush()
        return [
            line
            for line in self.log_file.read_text(encoding="utf-8").splitlines()
            if f'"{method} ' in line and path_part in line
        ]
