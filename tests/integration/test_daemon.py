"""`reconciler run` as the homelab runs it: a subprocess, against the real clusters.

It must apply commits with no manual step, revert manual edits on apply-mode
clusters, only report them on prod, keep reconciling the other clusters while
one API server is down, recover by itself, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_cluster import wait_for
from tests.helpers_lab import (
    Lab,
    app_files,
    kubectl,
    live,
    no_canary,
    writes_by_reconciler,
)

FAST = """
[daemon]
state_dir = "{state}"
metrics_address = "127.0.0.1:0"
debounce_s = 0.2
resync_interval_s = 5
fetch_interval_s = 3600
"""


class Daemon:
    def __init__(self, lab: Lab, log: Path, state_dir: Path) -> None:
        self.lab = lab
        self.log_path = log
        self.state_dir = state_dir
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "run", "--config", str(lab.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def status(self) -> dict[str, Any]:
        done = self.lab.run("status", "-o", "json")
        assert done.returncode in (0, 1), done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._log.close()
        return code


@pytest.fixture
def daemon(lab: Lab, tmp_path: Path) -> Iterator[Daemon]:
    config = lab.config.read_text()
    config = config.replace(config[: config.index("[[repos]]")], "")
    lab.config.write_text(FAST.format(state=tmp_path / "state") + config)
    running = Daemon(lab, tmp_path / "daemon.log", tmp_path / "state")
    try:
        wait_for(lambda: _ready(running), 120, "the daemon's first full reconcile")
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def _ready(d: Daemon) -> bool:
    if d.proc.poll() is not None:
        raise AssertionError(f"daemon exited {d.proc.returncode}: {d.log_path.read_text()[-3000:]}")
    return any(e.get("event") == "daemon.ready" for e in d.events())


def app_state(d: Daemon, cluster: str, app: str) -> dict[str, Any] | None:
    for c in d.status()["clusters"]:
        if c["name"] == cluster:
            return next((a for a in c["apps"] if a["name"] == app), None)
    return None


def reconciles(d: Daemon, cluster: str) -> int:
    return sum(
        1 for e in d.events() if e.get("event") == "reconcile.done" and e.get("cluster") == cluster
    )


def eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    wait_for(check, timeout, what)


def test_commits_are_applied_and_edits_reverted_on_agentic_but_only_reported_on_prod(
    daemon: Daemon,
) -> None:
    lab = daemon.lab
    agentic, prod = lab.clusters["agentic"], lab.clusters["prod"]
    ns = lab.namespaces["agentic"]
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert live(agentic, deployment)["spec"]["replicas"] == 1, "applied by the first reconcile"

    status = daemon.status()
    assert status["daemon"]["running"] is True
    assert {c["name"]: c["mode"] for c in status["clusters"]} == {
        "prod": "report",
        "agentic": "apply",
        "monit": "apply",
    }

    # A commit reaches agentic with no manual step.
    lab.commit(app_files("agentic", ns, replicas=3), "three replicas")
    eventually(lambda: live(agentic, deployment)["spec"]["replicas"] == 3, "the commit applied")

    # A manual edit on agentic is reverted.
    kubectl(agentic, "-n", ns, "scale", "deployment", "web", "--replicas=7")
    eventually(lambda: live(agentic, deployment)["spec"]["replicas"] == 3, "the edit reverted")

    # A manual edit on prod is reported and left alone.
    prod_ns = lab.namespaces["prod"]
    kubectl(prod, "create", "namespace", prod_ns)
    kubectl(
        prod,
        "-n",
        prod_ns,
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=edited",
        "--from-literal=level=3",
    )
    eventually(
        lambda: (app_state(daemon, "prod", "web-prod") or {}).get("drift", 0) >= 2,
        "prod's drift in status",
    )
    cm = live(prod, f"/api/v1/namespaces/{prod_ns}/configmaps/settings")
    assert cm["data"]["mode"] == "edited"
    assert writes_by_reconciler(prod) == []

    table = lab.run("status")
    assert table.returncode == 1, "prod is out of sync"
    assert "daemon: running" in table.stdout
    assert "web-prod" in table.stdout and "OutOfSync" in table.stdout

    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 10
    assert daemon.status()["daemon"]["running"] is False
    # The lab's Secret holds a canary: never in the daemon's logs or its state store.
    state = b"".join(p.read_bytes() for p in daemon.state_dir.glob("state.db*"))
    no_canary(daemon.log_path.read_text(), state.decode("utf-8", "replace"))


def test_metrics_are_served(daemon: Daemon) -> None:
    serving = next(e for e in daemon.events() if e.get("event") == "metrics.serving")
    with urllib.request.urlopen(f"http://{serving['address']}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'reconciler_last_success_timestamp_seconds{cluster="agentic"}' in text
    assert 'reconciler_drift_objects{app="web-prod",cluster="prod",mode="report"}' in text
    assert daemon.stop() == 0


def test_an_api_server_outage_delays_no_other_cluster_and_heals_by_itself(
    daemon: Daemon,
) -> None:
    lab = daemon.lab
    monit, agentic = lab.clusters["monit"], lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    monit.stop_process("kube-apiserver")
    try:
        outage_started = time.monotonic()
        before = reconciles(daemon, "agentic")
        lab.commit(app_files("agentic", ns, replicas=2), "two replicas during monit's outage")
        eventually(
            lambda: live(agentic, deployment)["spec"]["replicas"] == 2,
            "agentic reconciled during the outage",
            timeout=30,
        )
        # Keep the outage at least 30 s while agentic keeps reconciling on resync.
        wait_for(lambda: time.monotonic() - outage_started >= 30, 40, "30 s of outage")
        assert reconciles(daemon, "agentic") >= before + 3
    finally:
        monit.start_apiserver()
    monit.wait_ready(time.monotonic() + 60)
    monit_ns = lab.namespaces["monit"]
    kubectl(monit, "-n", monit_ns, "scale", "deployment", "web", "--replicas=4")
    eventually(
        lambda: (
            live(monit, f"/apis/apps/v1/namespaces/{monit_ns}/deployments/web")["spec"]["replicas"]
            == 1
        ),
        "monit healed after its API server came back",
        timeout=90,
    )
    assert daemon.stop() == 0
