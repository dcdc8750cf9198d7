"""Nothing stops silently (invariant 9), on the real clusters with the daemon as a
subprocess: a poisoned object, a watch answered with garbage, a kind denied by RBAC
and a worker stuck in a hanging request. In each the daemon recovers by itself,
`status` tells the truth during the fault, the other clusters keep reconciling,
no pending work is lost, and prod is never written."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.model import ObjectRef
from reconciler.session import STATE_DB
from reconciler.store import Store
from testenv.clusters import RECONCILER_USER, Cluster
from tests.faults.apiproxy import api_proxy
from tests.faults.lab import Daemon, FaultLab
from tests.helpers_cluster import wait_for

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _config_map(name: str, data: str) -> bytes:
    # `data` is spliced in as YAML text, so a test can write what a person mistypes.
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: {data}\n"
    ).encode()


def _status(lab: FaultLab) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "status",
            "-o",
            "json",
            "--config",
            str(lab.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, document


def _part(lab: FaultLab, name: str) -> dict[str, Any]:
    parts = {c["name"]: c for c in _status(lab)[1]["daemon"]["components"]}
    assert name in parts, sorted(parts)
    part: dict[str, Any] = parts[name]
    return part


def _daemon_state(lab: FaultLab) -> str:
    return str(_status(lab)[1]["daemon"]["state"])


def _app_error(daemon: Daemon, cluster: str, app: str) -> str:
    return str((daemon.app(cluster, app) or {}).get("error") or "")


def _inventory(lab: FaultLab, cluster: str) -> set[ObjectRef]:
    store = Store(lab.state / STATE_DB, readonly=True)
    try:
        return {i.ref for i in store.inventory(cluster)}
    finally:
        store.close()


def test_a_poisoned_object_fails_alone_and_its_worker_keeps_reconciling(
    fault_lab: FaultLab,
) -> None:
    lab = fault_lab
    daemon = lab.start()
    ns = lab.namespaces["agentic"]
    # An unquoted date is a YAML date, not a string: valid YAML that the engine meets
    # as a value it cannot send. The rest of the app, and of the cluster, goes on.
    lab.commit(
        {
            "deploy/agentic/poisoned.yaml": _config_map("poisoned", "2024-01-01"),
            "deploy/agentic/fine.yaml": _config_map("fine", "'1'"),
        },
        "a poisoned object beside a fine one",
    )
    wait_for(lambda: lab.config_map("agentic", ns, "fine") is not None, 60, "the fine object")
    wait_for(
        lambda: "poisoned" in _app_error(daemon, "agentic", "web-agentic"),
        60,
        "the poisoned object's error in status",
    )
    assert "internal error" in _app_error(daemon, "agentic", "web-agentic")
    assert lab.config_map("agentic", ns, "poisoned") is None
    wait_for(
        lambda: daemon.metric("reconciler_internal_errors_total", component="worker agentic") >= 1,
        30,
        "the internal error counted",
    )
    # Status reads the parts' health the daemon stores at each heartbeat (HEARTBEAT_S).
    wait_for(lambda: _part(lab, "worker agentic")["errors"] >= 1, 30, "the error in status's parts")
    worker = _part(lab, "worker agentic")
    assert worker["last_error"] and worker["last_error_at"]
    assert worker["state"] in ("ok", "busy"), "the worker is alive, not restarting"
    # The worker lives on: a live edit is still reverted, and monit keeps reconciling.
    lab.edit("agentic", ns, "settings", {"mode": "edited"})
    wait_for(
        lambda: (lab.config_map("agentic", ns, "settings") or {})["data"]["mode"] == "steady",
        60,
        "agentic reverting an edit after the poisoned object",
    )
    lab.assert_side_reconciles(60, "monit reverting an edit during the fault")
    # Logged once with its traceback, however many resyncs met it since.
    logged = [e for e in daemon.events("internal.error") if e["component"] == "worker agentic"]
    assert len(logged) == 1 and "Traceback" in logged[0]["traceback"]
    # Fixed in git, it converges.
    lab.commit({"deploy/agentic/poisoned.yaml": _config_map("poisoned", "'2024-01-01'")}, "fix")
    wait_for(lambda: lab.config_map("agentic", ns, "poisoned") is not None, 60, "the fixed object")
    wait_for(
        lambda: (daemon.app("agentic", "web-agentic") or {}).get("sync") == "Synced",
        60,
        "agentic synced",
    )
    assert _daemon_state(lab) == "running"
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


def test_a_watch_answered_with_garbage_is_retried_and_nothing_is_lost(
    fault_lab: FaultLab, tmp_path: Path
) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    with api_proxy(lab.clusters["agentic"], tmp_path) as proxy:
        lab.kubeconfigs["agentic"] = proxy.kubeconfig
        daemon = lab.start()
        lab.commit({"deploy/agentic/doomed.yaml": _config_map("doomed", "'1'")}, "doomed")
        wait_for(lambda: lab.config_map("agentic", ns, "doomed") is not None, 60, "doomed")
        doomed = ObjectRef("", "ConfigMap", ns, "doomed")
        wait_for(lambda: doomed in _inventory(lab, "agentic"), 30, "doomed in the inventory")
        restarts = daemon.metric("reconciler_watch_restarts_total", cluster="agentic")

        proxy.answer_garbage("/configmaps")
        lab.commit(
            {
                "deploy/agentic/doomed.yaml": None,
                "deploy/agentic/added.yaml": _config_map("added", "'1'"),
            },
            "one ConfigMap out, one in",
        )
        wait_for(
            lambda: (
                "waiting: kind ConfigMap cannot be listed"
                in _app_error(daemon, "agentic", "web-agentic")
            ),
            90,
            "status saying the ConfigMaps wait",
        )
        assert proxy.garbage_answers > 0
        assert daemon.metric("reconciler_watch_restarts_total", cluster="agentic") > restarts
        # The part health is recorded every few seconds: status catches up within them.
        wait_for(
            lambda: _part(lab, "watch agentic ConfigMap")["state"] in ("trouble", "restarting"),
            30,
            "status naming the ConfigMap watch",
        )
        assert _part(lab, "watch agentic ConfigMap")["errors"] >= 1
        code, document = _status(lab)
        assert (code, document["daemon"]["state"]) == (1, "degraded")
        # Nothing sent blindly (`doomed`, still in the cache's last view, may be pruned
        # by uid: a prune of what is known is safe); the other clusters carry on.
        assert lab.config_map("agentic", ns, "added") is None
        lab.assert_side_reconciles(60, "monit reverting an edit during the fault")

        proxy.answer_garbage(None)
        wait_for(lambda: lab.config_map("agentic", ns, "added") is not None, 90, "added created")
        wait_for(lambda: lab.config_map("agentic", ns, "doomed") is None, 60, "doomed pruned")
        wait_for(lambda: doomed not in _inventory(lab, "agentic"), 30, "doomed out of inventory")
        wait_for(
            lambda: (daemon.app("agentic", "web-agentic") or {}).get("sync") == "Synced",
            60,
            "agentic synced",
        )
        wait_for(lambda: _daemon_state(lab) == "running", 60, "the daemon healthy again")
        lab.assert_prod_untouched()
        assert daemon.stop() == 0


def _unbind_reconciler(cluster: Cluster) -> None:
    cluster.request("DELETE", f"{RBAC}/clusterrolebindings/reconciler")
    wait_for(lambda: "reconciler" not in _binding_names(cluster), 30, "the binding deleted")


def _binding_names(cluster: Cluster) -> set[str]:
    items = cluster.request("GET", f"{RBAC}/clusterrolebindings")["items"]
    return {i["metadata"]["name"] for i in items}


@contextlib.contextmanager
def _config_maps_unlistable(cluster: Cluster) -> Iterator[None]:
    """The reconciler may read, write and delete ConfigMaps one by one, but neither
    list nor watch them; everything else it needs stays allowed."""
    role = "reconciler-no-configmap-list"
    with contextlib.suppress(OSError):
        cluster.request(
            "POST",
            f"{RBAC}/clusterroles",
            {
                "metadata": {"name": role},
                "rules": [
                    {
                        "apiGroups": ["", "apps", "apiextensions.k8s.io"],
                        "resources": [
                            "namespaces",
                            "secrets",
                            "deployments",
                            "customresourcedefinitions",
                        ],
                        "verbs": ["*"],
                    },
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "verbs": ["get", "create", "update", "patch", "delete"],
                    },
                    {"nonResourceURLs": ["*"], "verbs": ["get"]},
                ],
            },
        )
    _unbind_reconciler(cluster)
    cluster.request(
        "POST",
        f"{RBAC}/clusterrolebindings",
        {
            "metadata": {"name": "reconciler"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "User", "name": RECONCILER_USER}],
        },
    )
    try:
        yield
    finally:
        _unbind_reconciler(cluster)
        cluster.grant_reconciler()  # back to the binding the test clusters start with


def test_a_kind_denied_by_rbac_keeps_its_pending_prune_until_allowed(fault_lab: FaultLab) -> None:
    lab = fault_lab
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    first = lab.start("first")
    lab.commit({"deploy/agentic/doomed.yaml": _config_map("doomed", "'1'")}, "doomed")
    wait_for(lambda: lab.config_map("agentic", ns, "doomed") is not None, 60, "doomed")
    doomed = ObjectRef("", "ConfigMap", ns, "doomed")
    wait_for(lambda: doomed in _inventory(lab, "agentic"), 30, "doomed in the inventory")
    with _config_maps_unlistable(agentic):
        # Restarted meanwhile (an upgrade, a crash): its new live cache cannot list
        # ConfigMaps, and git then drops one of them.
        assert first.stop() == 0
        daemon = lab.start("second")
        lab.commit({"deploy/agentic/doomed.yaml": None}, "doomed removed from git")
        wait_for(
            lambda: (
                "waiting: kind ConfigMap cannot be listed"
                in _app_error(daemon, "agentic", "web-agentic")
            ),
            90,
            "status saying the prune waits",
        )
        assert "Forbidden" in _app_error(daemon, "agentic", "web-agentic")
        watch = _part(lab, "watch agentic ConfigMap")
        assert watch["state"] == "trouble" and "Forbidden" in watch["detail"], watch
        code, document = _status(lab)
        assert (code, document["daemon"]["state"]) == (1, "degraded")
        # The pending prune waits: still in the inventory, still on the cluster.
        assert doomed in _inventory(lab, "agentic")
        assert lab.config_map("agentic", ns, "doomed") is not None
        lab.assert_side_reconciles(60, "monit reverting an edit during the fault")
    wait_for(lambda: lab.config_map("agentic", ns, "doomed") is None, 120, "doomed pruned")
    wait_for(lambda: doomed not in _inventory(lab, "agentic"), 30, "doomed out of the inventory")
    wait_for(lambda: _daemon_state(lab) == "running", 60, "the daemon healthy again")
    lab.assert_prod_untouched()
    assert daemon.stop() == 0


class _NotifySocket:
    """systemd's end of sd_notify: a unix datagram socket, every datagram kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.datagrams: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while data := self._sock.recv(4096):
                self.datagrams.append((time.monotonic(), data.decode()))

    def times(self, assignment: str) -> list[float]:
        return [at for at, text in self.datagrams if assignment in text.split("\n")]

    def texts(self) -> list[str]:
        return [text for _, text in self.datagrams]

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def test_a_worker_stuck_in_a_hanging_request_stops_the_watchdog_and_is_named(
    fault_lab: FaultLab, tmp_path: Path
) -> None:
    lab = fault_lab
    ns = lab.namespaces["agentic"]
    with (
        tempfile.TemporaryDirectory(dir="/tmp") as short,  # a socket path fits in 108 bytes
        api_proxy(lab.clusters["agentic"], tmp_path) as proxy,
    ):
        notify = _NotifySocket(Path(short) / "notify")
        try:
            lab.kubeconfigs["agentic"] = proxy.kubeconfig
            env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
            daemon = lab.start(env=env)
            wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 2, 30, "watchdog pings")
            assert notify.times("READY=1")

            proxy.hang(True)
            lab.commit({"deploy/agentic/held.yaml": _config_map("held", "'1'")}, "held")
            wait_for(lambda: proxy.held >= 1, 60, "the worker's apply held by the proxy")
            wait_for(
                lambda: any("STATUS=stuck: worker agentic" in t for t in notify.texts()),
                120,
                "the daemon telling systemd the agentic worker is stuck",
            )
            # No more pings: with WatchdogSec=2s, systemd would restart the daemon now.
            wait_for(
                lambda: time.monotonic() - notify.times("WATCHDOG=1")[-1] > 6,
                30,
                "six seconds without a watchdog ping",
            )
            code, document = _status(lab)
            assert code == 1 and document["daemon"]["state"] == "stuck"
            parts = {c["name"]: c for c in document["daemon"]["components"]}
            assert parts["worker agentic"]["state"] == "stuck"
            assert "no progress" in parts["worker agentic"]["detail"]
            table = subprocess.run(
                [sys.executable, "-m", "reconciler.cli", "status", "--config", str(lab.config)],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            assert table.splitlines()[0].startswith("daemon: STUCK")
            assert "worker agentic" in table.splitlines()[0]
            lab.assert_side_reconciles(60, "monit reverting an edit during the fault")

            released = time.monotonic()
            proxy.hang(False)
            wait_for(
                lambda: any(at > released for at in notify.times("WATCHDOG=1")),
                90,
                "watchdog pings again once the request is answered",
            )
            wait_for(lambda: lab.config_map("agentic", ns, "held") is not None, 60, "applied")
            wait_for(lambda: _daemon_state(lab) == "running", 60, "the daemon healthy again")
            lab.assert_prod_untouched()
            assert daemon.stop() == 0
        finally:
            notify.close()
