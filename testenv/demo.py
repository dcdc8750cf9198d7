"""`make demo`: the reconciler's main job on three local clusters, start to finish.

Starts prod, agentic and monit from testenv/, makes real git repositories of
the three homelab fixture repos, serves the Helm charts their Applications
name (stand-ins carrying the CRDs the other apps need, testenv/charts.py) from
a loopback chart repository and a loopback OCI registry, wires the built helm
and the venv's kubectl, and runs `reconciler run` on them. It prints how far
each cluster converged after the first full reconcile, then shows a manual
change reverted on agentic and only reported on prod, and ends by listing
what does not converge here, grouped by cause. A Synapse homeserver on loopback
(testenv/matrix.py) stands in for the homelab's Matrix room: the daemon posts its
notices there ([notify.matrix]), and the demo reads them back as the room's
owner would, among them the one about the edit on prod. Everything lives under
.demo/; the clusters stop when the demo ends (Ctrl-C, or at the end when not on
a tty).

The clusters have no kubelet: no Pod runs, so Deployments and StatefulSets
stay Progressing and hook Jobs never finish. The demo does not play the
kubelet (tests/helpers_kubelet.py does, per namespace, for tests): what it
shows is the reconciler's work (Synced), and Health says honestly that
nothing runs.
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
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testenv.argocd import tracked
from testenv.charts import HELM, CustomKind, crd, serve_charts
from testenv.clusters import Cluster, ClusterSet
from testenv.config import Repo, Room, open_room, targets, write_config
from testenv.gitrepos import FIXTURE_URLS, REPO_ROOT, fixture_files, make_upstream_and_clone
from testenv.matrix import Homeserver
from testenv.pki import make_ca
from testenv.registry import Registry

BASE = REPO_ROOT / ".demo"
# The API URLs the homelab's Applications use for each cluster (see config.toml).
SERVERS = {
    "prod": "https://kubernetes.default.svc",
    "agentic": "https://10.20.0.40:6443",
    "monit": "https://10.10.0.30:6443",
}
BIN = Path(sys.executable).parent
APPLIED = ("agentic", "monit")
ARGOCD_KINDS = (
    CustomKind("argoproj.io", "v1alpha1", "Application", "applications"),
    CustomKind("argoproj.io", "v1alpha1", "AppProject", "appprojects"),
)
# The shipped config.toml's: agentic's arc-controller CRD bundle is ~3 MiB.
MAX_FILE_BYTES = 8388608
# Lines of each room message printed: the first reconcile's notices are long.
ROOM_LINES = 8


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
    then apply prod's desired state as its admin with Argo CD's tracking annotation,
    twice so that custom resources follow their CRDs (the stand-in charts bring them).
    Objects whose Secret values are redacted by `render` stay missing."""
    rows = json.loads(reconciler(config, "render", "--cluster", "prod", "-o", "json").stdout)
    namespaces = sorted({r["object"]["metadata"].get("namespace") for r in rows} - {None})
    admin = [str(BIN / "kubectl"), "--kubeconfig", str(prod.admin_kubeconfig)]
    # Argo CD's own kinds, which prod's app-of-apps render.
    own = "\n".join(json.dumps(crd(kind)) for kind in ARGOCD_KINDS)
    subprocess.run(
        [*admin, "apply", "-f", "-"], input=own, text=True, capture_output=True, timeout=60
    )
    for namespace in namespaces:
        subprocess.run([*admin, "create", "namespace", namespace], capture_output=True, timeout=60)
    documents = "\n".join(json.dumps(tracked(r["object"], r["app"])) for r in rows)
    for _ in range(2):
        subprocess.run(
            [*admin, "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-"],
            input=documents,
            capture_output=True,
            text=True,
            timeout=300,
        )


@dataclass(frozen=True)
class Homelab:
    """The three fixture repos (bare upstream + the clone the daemon reads), the
    config, and the running daemon's log."""

    config: Path
    log: Path
    upstreams: Mapping[str, Path]
    clones: Mapping[str, Path]
    registry: Registry  # serves every second chart repository (ChartRepo.mirrors)


@contextlib.contextmanager
def running_homelab(
    base: Path,
    clusters: Iterable[Cluster],
    daemon: Mapping[str, Any],
    ready_timeout: float = 600,
    notify: Mapping[str, Any] | None = None,
) -> Iterator[Homelab]:
    """Charts served (HTTP repository and OCI registry), the fixture repos committed,
    a config for `clusters` with `daemon` as its [daemon] table, `notify` (when
    given) as its [notify.matrix] and the built tools, prod (when among them)
    synced by the Argo CD stand-in, and `reconciler run` started and through its
    first full reconcile; the daemon and the chart servers stop on exit."""
    by_name = {c.name: c for c in clusters}
    ca = make_ca(base / "ca", "demo-charts-ca")
    registry = Registry(base / "registry", ca)
    registry.start()
    process: subprocess.Popen[bytes] | None = None
    try:
        with serve_charts(base / "charts", registry) as charts:
            upstreams, clones = {}, {}
            for name in FIXTURE_URLS:
                upstreams[name], clones[name] = make_upstream_and_clone(
                    base / "git", name, fixture_files(name)
                )
            config = write_config(
                base / "config.toml",
                [
                    Repo(n, clone, FIXTURE_URLS[n], "kubernetes/argocd-apps")
                    for n, clone in clones.items()
                ],
                targets(by_name.values(), SERVERS),
                {
                    "daemon": daemon,
                    "render": {
                        "helm": HELM,
                        "kubectl": BIN / "kubectl",
                        "chart_ca_file": ca.cert_file,
                        "max_file_bytes": MAX_FILE_BYTES,
                    },
                    "render.chart_mirrors": charts.mirrors(),
                    **({"notify.matrix": notify} if notify is not None else {}),
                },
            )
            if "prod" in by_name:
                argocd_syncs_prod(config, by_name["prod"])
            log_path = base / "daemon.log"
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    [str(BIN / "reconciler"), "run", "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            daemon_process = process

            def ready() -> bool:
                if daemon_process.poll() is not None:
                    raise SystemExit(f"demo: the daemon exited; see {log_path}")
                return "daemon.ready" in log_path.read_text()

            wait(ready, ready_timeout, "the first full reconcile")
            yield Homelab(config, log_path, upstreams, clones, registry)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        registry.stop()


@dataclass(frozen=True)
class Convergence:
    """Per cluster: its apps, how many are Synced and Healthy, and the apps that are not
    Synced grouped by cause."""

    apps: Mapping[str, int]
    synced: Mapping[str, int]
    healthy: Mapping[str, int]
    unsupported: Mapping[str, list[str]]  # cause -> ["cluster/app", ...]

    def synced_share(self, clusters: tuple[str, ...] = APPLIED) -> float:
        total = sum(self.apps[c] for c in clusters)
        return sum(self.synced[c] for c in clusters) / total if total else 0.0


def _cause(app: Mapping[str, Any]) -> str:
    if app["error"]:
        return str(app["error"]).splitlines()[0][:240]
    messages = sorted({f["message"].splitlines()[0][:240] for f in app["findings"]})
    drift = f"{app['drift']} object(s) differ from git" if app["drift"] else ""
    return "; ".join(messages) or drift or f"{app['sync']} (no error, finding or drift)"


def convergence(config: Path) -> Convergence:
    """What `reconciler status --all -o json` says now."""
    document = json.loads(reconciler(config, "status", "--all", "-o", "json").stdout)
    apps, synced, healthy = {}, {}, {}
    unsupported: dict[str, list[str]] = defaultdict(list)
    for cluster in document["clusters"]:
        name = cluster["name"]
        apps[name] = len(cluster["apps"])
        synced[name] = sum(1 for a in cluster["apps"] if a["sync"] == "Synced")
        healthy[name] = sum(1 for a in cluster["apps"] if a["health"] == "Healthy")
        for app in cluster["apps"]:
            if app["sync"] != "Synced" or app["error"]:
                unsupported[_cause(app)].append(f"{name}/{app['name']}")
    return Convergence(apps, synced, healthy, dict(unsupported))


def print_convergence(state: Convergence) -> None:
    for cluster, total in state.apps.items():
        print(
            f"  {cluster:8} {state.synced[cluster]:3}/{total} apps Synced, "
            f"{state.healthy[cluster]:3}/{total} Healthy"
        )
    print(
        "  (Health: no kubelet runs here, so workloads stay Progressing; Synced is what the "
        "reconciler did.)"
    )


def print_unsupported(state: Convergence) -> None:
    if not state.unsupported:
        print("  every app is Synced")
    for cause, apps in sorted(state.unsupported.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"  {len(apps):3} app(s): {cause}")
        print(f"        {', '.join(sorted(apps))}")


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


def show_revert(config: Path, agentic: Cluster) -> None:
    target = first_of(config, "agentic", "Deployment")
    ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
    replicas = target.get("spec", {}).get("replicas", 1)
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


def show_report_only(config: Path, log_path: Path, prod: Cluster) -> str:
    """Edit a prod ConfigMap by hand; returns how the room's notices name it."""
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
    print(f"  after the daemon's reconcile, prod still has {key}={live_cm['data'][key]!r}")
    return f"ConfigMap {cm_ns}/{cm_name}"


def show_room(room: Room, edited: str) -> None:
    """Wait for the notice about `edited` (it goes out a batch window after prod's
    reconcile, later if the first reconcile's notices fill the minute's messages),
    then print what the room received, as its owner reads it from the homeserver."""
    say(f"the Matrix room {room.room_id}, read back from the homeserver as {room.owner.user_id}")
    wait(lambda: any(edited in m for m in room.messages()), 180, f"a message about {edited}")
    for body in room.messages():
        lines = body.splitlines()
        print("\n".join(f"  {line}".rstrip() for line in lines[:ROOM_LINES]))
        if len(lines) > ROOM_LINES:
            print(f"  … ({len(lines) - ROOM_LINES} more lines)")
        print()


def main() -> int:
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir()
    say(
        "starting three local clusters (etcd, kube-apiserver, kube-controller-manager each) "
        "and a Matrix homeserver (Synapse)"
    )
    clusters = ClusterSet(BASE / "clusters")
    matrix = Homeserver(BASE / "matrix" / "synapse", make_ca(BASE / "matrix" / "ca", "demo-ca"))
    try:
        clusters.start(timeout=180)  # a busy machine starts three control planes slowly
        # Not started in a thread beside the clusters: the kernel kills it when the
        # thread that started it ends (PR_SET_PDEATHSIG, testenv/served.py).
        matrix.start()
        room = open_room(matrix)
        for c in clusters:
            mode = "report-only" if c.report_only else "apply"
            print(f"  {c.name:8} {c.server}  {c.version()}  {mode}")
        print(f"  matrix   {matrix.url}  room {room.room_id}: bot {room.bot.user_id}")
        say(
            "serving stand-in charts (loopback Helm repository + OCI registry), making git "
            "repositories of the three homelab repos, standing in for prod's Argo CD, "
            "starting `reconciler run` (log: .demo/daemon.log)"
        )
        daemon = {
            "state_dir": BASE / "state",
            "metrics_address": "127.0.0.1:0",
            "resync_interval_s": 30,
            # No kubelet: no Pod runs, so no Deployment gets healthy and no hook Job
            # completes; a wave or hook waits 10 s and is then reported, rather than
            # holding a sync for 5 minutes.
            "wave_timeout_s": 10,
            "hook_timeout_s": 10,
        }
        notify = room.table(BASE / "matrix-token")
        with running_homelab(BASE, clusters, daemon, notify=notify) as lab:
            say("after the first full reconcile")
            print_convergence(convergence(lab.config))
            show_revert(lab.config, clusters["agentic"])
            edited = show_report_only(lab.config, lab.log, clusters["prod"])
            say("reconciler status")
            print(reconciler(lab.config, "status").stdout)
            state = convergence(lab.config)
            say("how far the homelab converged")
            print_convergence(state)
            say("not Synced here, by cause (prod is report-only: Argo CD's stand-in synced it)")
            print_unsupported(state)
            show_room(room, edited)
            if sys.stdin.isatty():
                say("the daemon keeps running; press Ctrl-C to stop it and the clusters")
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
        return 0
    finally:
        matrix.stop()
        clusters.stop()


if __name__ == "__main__":
    sys.exit(main())
