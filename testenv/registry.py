"""A real OCI registry on loopback: the CNCF distribution registry, the server
behind most registries that host Helm charts.

Built from its Go module into ``testenv/bin`` by ``make testenv``. It serves
HTTPS only, with a certificate from the test's CA, so a pull that skipped
verification or fell back to plain HTTP would not work. Charts get into it the
way a chart author puts them there, with the real ``helm push``; its access log
tells which requests reached it. Given `users`, it asks for their passwords
(htpasswd, bcrypt as the registry requires) on every request.
"""

from __future__ import annotations

import ssl
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from testenv.clusters import binary, free_port
from testenv.pki import CertAuthority, make_serving_cert
from testenv.served import LoopbackServer


class Registry(LoopbackServer):
    """One registry with its storage, config and log in ``directory``."""

    def __init__(
        self, directory: Path, ca: CertAuthority, users: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(directory, "registry")
        self.ca = ca
        self.users = dict(users or {})  # user name -> password

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = make_serving_cert(self.ca, self.directory, "registry")
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "data")}},
            "http": {"addr": self.host, "tls": {"certificate": str(cert), "key": str(key)}},
        }
        ready = f"https://{self.host}/v2/"
        context: ssl.SSLContext | None = ssl.create_default_context(cafile=str(self.ca.cert_file))
        if self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "testenv", "path": str(htpasswd)}}
            # /v2/ now answers 401: readiness is asked of the plain-HTTP debug server.
            debug = f"127.0.0.1:{free_port()}"
            config["http"]["debug"] = {"addr": debug}
            ready, context = f"http://{debug}/debug/health", None
        config_file = self.directory / "config.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._launch(
            [str(binary("registry")), "serve", str(config_file)],
            ready,
            context,
            timeout,
            # No tracing exporter: it would try to reach a collector.
            env={"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"},
        )

    def push_chart(self, helm: Path, package: Path, repository: str) -> None:
        """`helm push` a packaged chart to oci://<host>/<repository>, trusting the CA
        (logged in as the first user, if any)."""
        homes = self.directory / "helm"
        env = {
            f"HELM_{kind}_HOME": str(homes / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")
        }
        env = {"HOME": str(homes), "PATH": "/usr/bin:/bin", **env}
        for user, password in list(self.users.items())[:1]:
            subprocess.run(
                [
                    str(helm),
                    "registry",
                    "login",
                    self.host,
                    f"--username={user}",
                    "--password-stdin",
                    f"--ca-file={self.ca.cert_file}",
                ],
                input=password.encode(),
                check=True,
                capture_output=True,
                env=env,
                timeout=60,
            )
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
            env=env,
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


def _bcrypt(password: str) -> str:
    """A bcrypt hash from the C library's crypt(3) (libxcrypt), as no htpasswd tool or
    bcrypt package is at hand; Python's `crypt` module is deprecated, not gone, in 3.11."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
