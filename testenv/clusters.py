"""Real Kubernetes control planes on loopback: the clusters every integration test uses.

Each cluster is its own etcd, kube-apiserver and kube-controller-manager, built
from Go modules into ``testenv/bin`` by ``make testenv``. The API server serves
TLS with a CA generated for the run, authenticates bearer tokens, authorizes
with RBAC and writes an audit event for every request, so tests can prove what
an identity did (or was refused) from the server's own record.

Two identities per cluster: ``admin`` (system:masters) for test set-up, and
``reconciler``, the identity the product runs as: read-only on report-mode
clusters, cluster-admin on apply-mode ones.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from testenv.pki import CertAuthority, make_ca, make_service_account_keys, make_serving_cert

BIN_DIR = Path(__file__).resolve().parent / "bin"
RECONCILER_USER = "reconciler"
ADMIN_USER = "admin"

# Which clusters run Argo CD in the homelab and so are report-only for the reconciler.
DEFAULT_CLUSTERS: dict[str, bool] = {"prod": True, "agentic": False, "monit": False}

_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""

# Write verbs as the audit log names them; everything else only reads.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # A SIGKILLed test run cannot run its finalizers; the kernel still kills its servers.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make testenv` to build it")
    return path


@dataclass(frozen=True)
class AuditEvent:
    user: str
    verb: str
    uri: str
    code: int
    resource: str | None
    namespace: str | None
    name: str | None

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


def read_audit_log(path: Path) -> list[AuditEvent]:
    """Completed requests from an API server's JSON audit log."""
    events: list[AuditEvent] = []
    if not path.exists():
        return events
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            raw: dict[str, Any] = json.loads(line)
            if raw.get("stage") not in ("ResponseComplete", "Panic"):
                continue
            obj = raw.get("objectRef") or {}
            events.append(
                AuditEvent(
                    user=raw.get("user", {}).get("username", ""),
                    verb=raw.get("verb", ""),
                    uri=raw.get("requestURI", ""),
                    code=int(raw.get("responseStatus", {}).get("code", 0)),
                    resource=obj.get("resource"),
                    namespace=obj.get("namespace"),
                    name=obj.get("name"),
                )
            )
    return events


@dataclass
class Cluster:
    """One running control plane and everything a test needs to talk to it."""

    name: str
    report_only: bool
    directory: Path
    ca: CertAuthority
    port: int = field(default_factory=free_port)
    tokens: dict[str, str] = field(
        default_factory=lambda: {u: secrets.token_hex(24) for u in (ADMIN_USER, RECONCILER_USER)}
    )
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[TextIO] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._procs.values())

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    def kubeconfig(self, user: str) -> Path:
        return self.directory / f"{user}.kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig(ADMIN_USER)

    @property
    def reconciler_kubeconfig(self) -> Path:
        return self.kubeconfig(RECONCILER_USER)

    def requests_by(self, user: str) -> list[AuditEvent]:
        """Every completed request that ``user`` made on this cluster, in order, except
        SelfSubjectRulesReviews (`reconciler check --connect`): audited as `create`,
        they are questions the server answers and never stores, not writes."""
        return [
            e
            for e in read_audit_log(self.audit_log)
            if e.user == user and e.resource != "selfsubjectrulesreviews"
        ]

    # -- lifecycle ---------------------------------------------------------

    def prepare(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self._cert, self._key = make_serving_cert(self.ca, d, "apiserver")
        self._sa_pub, self._sa_key = make_service_account_keys(d)
        (d / "audit-policy.yaml").write_text(_AUDIT_POLICY)
        rows = [
            f"{self.tokens[ADMIN_USER]},{ADMIN_USER},uid-admin,system:masters",
            f"{self.tokens[RECONCILER_USER]},{RECONCILER_USER},uid-reconciler,reconcilers",
        ]
        tokens_file = d / "tokens.csv"
        tokens_file.write_text("\n".join(rows) + "\n")
        tokens_file.chmod(0o600)
        for user, token in self.tokens.items():
            write_kubeconfig(
                self.kubeconfig(user), self.name, self.server, self.ca.cert_file, token
            )
        self._etcd_port, self._peer_port = free_port(), free_port()

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.directory / f"{name}.log").open("a", encoding="utf-8")
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self._peer_port}"
        client = f"http://127.0.0.1:{self._etcd_port}"
        self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def start_apiserver(self) -> None:
        d = self.directory
        self._spawn(
            "kube-apiserver",
            [
                str(binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self._cert}",
                f"--tls-private-key-file={self._key}",
                f"--client-ca-file={self.ca.cert_file}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                # As on the homelab's clusters: node agents (coroot, cilium ...) run privileged.
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self._sa_pub}",
                f"--service-account-signing-key-file={self._sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--profiling=false",
                "--v=1",
            ],
        )

    def start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={self._sa_key}",
                f"--root-ca-file={self.ca.cert_file}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle",
                "--v=1",
            ],
        )

    def start(self) -> None:
        """etcd and the API server; controller-manager follows once the API is ready, as
        it gives up after a few seconds of waiting for it on a loaded machine."""
        self.start_etcd()
        self.start_apiserver()

    def stop_process(self, name: str, timeout: float = 3.0) -> None:
        """Stop one server (a fault test's API server outage); SIGKILL if it lingers."""
        proc = self._procs.pop(name, None)
        if proc is not None:
            _reap([proc], timeout)

    def stop(self, timeout: float = 3.0) -> None:
        _reap(list(self._procs.values()), timeout)
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    # -- API access for set-up --------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert_file))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """An admin request with the standard library, for set-up before any client exists."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.tokens[ADMIN_USER]}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as resp:
            payload = resp.read()
            if resp.headers.get_content_type() == "application/json":
                return json.loads(payload)
            return payload.decode()

    def wait_ready(self, deadline: float) -> None:
        """The API server serves, and the default ServiceAccount proves controller-manager
        is running too."""
        self._wait(("/readyz", "/api/v1/namespaces/default/serviceaccounts/default"), deadline)

    def wait_apiserver(self, deadline: float) -> None:
        self._wait(("/readyz",), deadline)

    def _wait(self, paths: Sequence[str], deadline: float) -> None:
        last: str = "not contacted"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: {name} exited with {proc.returncode}; "
                        f"see {self.directory / (name + '.log')}"
                    )
            try:
                for path in paths:
                    self.request("GET", path)
                return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: control plane not ready ({last})")

    def grant_reconciler(self) -> None:
        """Bind the reconciler identity: read-only on report-mode clusters, admin elsewhere."""
        role = "reconciler-read-only" if self.report_only else "cluster-admin"
        if self.report_only:
            self.request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": role},
                    "rules": [
                        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                        {"nonResourceURLs": ["*"], "verbs": ["get"]},
                    ],
                },
            )
        self.request(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "reconciler"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": RECONCILER_USER,
                    }
                ],
            },
        )

    def version(self) -> str:
        info: dict[str, str] = self.request("GET", "/version")
        return info["gitVersion"]


def _reap(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM all at once, so shutdowns overlap; SIGKILL whatever outlives the deadline."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_kubeconfig(path: Path, cluster: str, server: str, ca_file: Path, token: str) -> None:
    """A kubeconfig with one context named after the cluster (JSON is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": cluster, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


class ClusterSet:
    """The homelab's three clusters, started together and always stopped together."""

    def __init__(self, base: Path, clusters: dict[str, bool] | None = None) -> None:
        self.base = base
        self.ca = make_ca(base / "pki", "reconciler-testenv")
        self.clusters = {
            name: Cluster(name=name, report_only=report, directory=base / name, ca=self.ca)
            for name, report in (clusters or DEFAULT_CLUSTERS).items()
        }

    def __getitem__(self, name: str) -> Cluster:
        return self.clusters[name]

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self.clusters.values())

    def start(self, timeout: float = 60.0) -> None:
        atexit.register(self.stop)
        try:
            for c in self:
                c.prepare()
                c.start()
            deadline = time.monotonic() + timeout
            for c in self:
                c.wait_apiserver(deadline)
                c.start_controller_manager()
            for c in self:
                c.wait_ready(deadline)
                c.grant_reconciler()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        _reap([p for c in self for p in c.processes], timeout=3.0)
        for c in self:
            c.stop()


@contextlib.contextmanager
def running_clusters(
    base: Path, clusters: dict[str, bool] | None = None, timeout: float = 60.0
) -> Iterator[ClusterSet]:
    """`clusters` (name -> report-only; the homelab's three by default), running for
    the duration of the `with` block, and stopped however it ends."""
    running = ClusterSet(base, clusters)
    running.start(timeout)
    try:
        yield running
    finally:
        running.stop()


def main() -> None:
    """``python -m testenv.clusters DIR``: run the three clusters until interrupted."""
    import sys

    base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/reconciler-testenv").resolve()
    with running_clusters(base) as clusters:
        for c in clusters:
            print(f"{c.name}: {c.server} {c.version()} admin={c.admin_kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
