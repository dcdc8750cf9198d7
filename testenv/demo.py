"""`make demo`: the reconciler's main job on three local clusters, start to finish.

Starts prod, agentic and monit from testenv/, makes real git repositories of
the three homelab fixture repos, runs `reconciler run` on them, prints
`reconciler status` after the first full reconcile, then shows a manual change
reverted on agentic and only reported on prod. Everything lives under .demo/;
the clusters stop when the demo ends (Ctrl-C, or at the end when not on a tty).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testenv.clusters import Cluster, ClusterSet
from testenv.config import Repo, targets, write_config
from testenv.gitrepos import FIXTURE_URLS, REPO_ROOT, fixture_files, make_upstream_and_clone

BASE = REPO_ROOT / ".demo"
# The API URLs the homelab's Applications use for each cluster (see config.toml).
SERVERS = {
    "prod": "https://kubernetes.default.svc",
    "agentic": "https://10.20.0.40:6443",
    "monit": "https://10.10.0.30:6443",
}
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def kubectl(cluster: Cluster, *args: str) -> str:
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def reconciler(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "reconciler"), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def first_of(config: Path, cluster: str, kind: str) -> dict[str, Any]:
    """A desired object of `cluster`, from `render -o json`."""
    rows = json.loads(reconciler(config, "render", "--cluster", cluster, "-o", "json").stdout)
    found: dict[str, Any] = next(r for r in rows if r["object"]["kind"] == kind)
    return dict(found["object"])


def argocd_syncs_prod(config: Path, prod: Cluster) -> None:
    """Stand in for prod's Argo CD: create the apps' namespaces (CreateNamespace=true),
    then apply prod's desired state as its admin, twice so that custom resources follow
    their CRDs. Objects whose CRDs come from Helm charts (not reachable here) or whose
    Secret values are redacted by `render` stay missing."""
    rows = json.loads(reconciler(config, "render", "--cluster", "prod", "-o", "json").stdout)
    namespaces = sorted({r["object"]["metadata"].get("namespace") for r in rows} - {None})
    for namespace in namespaces:
        subprocess.run(
            [
                str(BIN / "kubectl"),
                "--kubeconfig",
                str(prod.admin_kubeconfig),
                "create",
                "namespace",
                namespace,
            ],
            capture_output=True,
            timeout=60,
        )
    documents = "\n".join(json.dumps(r["object"]) for r in rows)
    for _ in range(2):
        subprocess.run(
            [
                str(BIN / "kubectl"),
                "--kubeconfig",
                str(prod.admin_kubeconfig),
                "apply",
                "--server-side",
                "--field-manager=argocd-controller",
                "-f",
                "-",
            ],
            input=documents,
            capture_output=True,
            text=True,
            timeout=300,
        )


def _reconciled_since(log_path: Path, cluster: str, since: float) -> bool:
    """Whether the daemon logged a finished reconcile of `cluster` after `since`."""
    wall = time.time() - (time.monotonic() - since)
    for line in log_path.read_text().splitlines():
        if '"reconcile.done"' not in line:
            continue
        event = json.loads(line)
        stamp = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        if event.get("cluster") == cluster and stamp.timestamp() > wall:
            return True
    return False


def main() -> int:
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir()
    say("starting three local clusters (etcd, kube-apiserver, kube-controller-manager each)")
    clusters = ClusterSet(BASE / "clusters")
    clusters.start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        for c in clusters:
            mode = "report-only" if c.report_only else "apply"
            print(f"  {c.name:8} {c.server}  {c.version()}  {mode}")
        say("making git repositories of the three homelab repos")
        clones = {}
        for name in FIXTURE_URLS:
            _, clones[name] = make_upstream_and_clone(BASE / "git", name, fixture_files(name))
            print(f"  {name}: {clones[name]}")
        config = write_config(
            BASE / "config.toml",
            [
                Repo(n, clone, FIXTURE_URLS[n], "kubernetes/argocd-apps")
                for n, clone in clones.items()
            ],
            targets(clusters, SERVERS),
            {
                "daemon": {
                    "state_dir": BASE / "state",
                    "metrics_address": "127.0.0.1:0",
                    "resync_interval_s": 30,
                    # The demo's clusters have no kubelet: no Pod runs, so no Deployment
                    # gets healthy and no hook Job completes; a wave or hook waits 10 s
                    # and is then reported, rather than holding a sync for 5 minutes.
                    "wave_timeout_s": 10,
                    "hook_timeout_s": 10,
                }
            },
        )
        say("prod is Argo CD's: standing in for it, applying prod's desired state as admin")
        argocd_syncs_prod(config, clusters["prod"])

        say("starting `reconciler run` (log: .demo/daemon.log)")
        log_path = BASE / "daemon.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                [str(BIN / "reconciler"), "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait(lambda: "daemon.ready" in log_path.read_text(), 600, "the first full reconcile")
        say("reconciler status, after the first full reconcile")
        print(reconciler(config, "status").stdout)

        target = first_of(config, "agentic", "Deployment")
        ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
        replicas = target.get("spec", {}).get("replicas", 1)
        agentic = clusters["agentic"]
        say(f"agentic: scaling deployment {ns}/{name} by hand to 9 replicas (git says {replicas})")
        kubectl(agentic, "-n", ns, "scale", "deployment", name, "--replicas=9")

        def current() -> int:
            out = kubectl(
                agentic, "-n", ns, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}"
            )
            return int(out or 0)

        started = time.monotonic()
        wait(lambda: current() == replicas, 120, "the reconciler to revert the edit")
        print(f"  reverted to {replicas} replicas in {time.monotonic() - started:.1f}s")

        prod = clusters["prod"]
        cm = first_of(config, "prod", "ConfigMap")
        cm_ns, cm_name = cm["metadata"]["namespace"], cm["metadata"]["name"]
        key = sorted(cm.get("data") or {"edited": ""})[0]
        say(f"prod: editing ConfigMap {cm_ns}/{cm_name} by hand; reported, never reverted")
        patch = json.dumps({"data": {key: "edited by hand"}})
        kubectl(prod, "-n", cm_ns, "patch", "configmap", cm_name, "-p", patch)
        edited_at = time.monotonic()
        diff = json.loads(reconciler(config, "diff", "--cluster", "prod", "-o", "json").stdout)
        for row in diff:
            if (row["ref"]["kind"], row["ref"]["name"]) == ("ConfigMap", cm_name):
                paths = [c["path"] for c in row["changes"]]
                print(f"  reconciler diff: app {row['app']}: {row['type']} at {paths}")
        # Seen by the daemon (prod's watch triggers a reconcile) and left as it is.
        wait(lambda: _reconciled_since(log_path, "prod", edited_at), 120, "prod's reconcile")
        live_cm = json.loads(kubectl(prod, "-n", cm_ns, "get", "configmap", cm_name, "-o", "json"))
        value = live_cm["data"][key]
        print(f"  after the daemon's reconcile, prod still has {key}={value!r}")
        print(reconciler(config, "status").stdout)
        if sys.stdin.isatty():
            say("the daemon keeps running; press Ctrl-C to stop it and the clusters")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=15)
        clusters.stop()


if __name__ == "__main__":
    sys.exit(main())
