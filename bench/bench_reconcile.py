"""Benchmark: the reconciler against three real test clusters, end to end.

Starts `prod`, `agentic` and `monit` from testenv/ in a temporary directory,
builds real git repositories, and measures in one run:

- commit -> applied on agentic, live edit -> drift recorded on prod, live edit
  -> reverted on agentic, all through `reconciler run` as a subprocess, with a
  floor measured the same way: a bare `kubectl get -w` seeing a `kubectl patch`;
- a steady-state full resync of the three clusters at N objects (ConfigMaps
  spread over clusters and namespaces): wall, CPU, peak RSS of the process
  doing it, and the API requests it sent, by verb, from the audit logs;
- `kubectl diff --server-side` and `kubectl apply --server-side --dry-run=server`
  over the same N objects;
- cold start of the daemon (process start -> `daemon.ready`) at N = 5,000, with
  the CPU it used and when (from its log) the render and each first reconcile ended.

Run: .venv/bin/python bench/bench_reconcile.py [--quick] [--only cold-start]
Writes bench/results/latest.json (and a timestamped copy) and prints a table;
`--only cold-start` prepares the N = 5,000 objects, times only the cold starts,
and prints them (with the machine load) without writing any results file.
Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pygit2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.config import DaemonConfig  # noqa: E402
from testenv import config as configs  # noqa: E402
from testenv.argocd import tracked  # noqa: E402
from testenv.clusters import (  # noqa: E402
    RECONCILER_USER,
    WRITE_VERBS,
    Cluster,
    ClusterSet,
)
from testenv.config import Repo, targets, write_config  # noqa: E402
from testenv.gitrepos import commit_files, make_upstream_and_clone, pull  # noqa: E402
from tests.builders import config_map, yaml_file  # noqa: E402

PYTHON = sys.executable
KUBECTL = str(Path(sys.executable).parent / "kubectl")
RESULTS = ROOT / "bench" / "results"
CLUSTERS = ("prod", "agentic", "monit")
SERVERS = {name: f"https://{name}.bench:6443" for name in CLUSTERS}
REPO_URL = "https://git.bench/lab.git"
# The shipped default: the benchmark measures the daemon as the owner runs it.
DEBOUNCE_S = DaemonConfig().debounce_s
STEADY_ROUNDS = 5
NAMESPACES_PER_CLUSTER = 5
OBJECTS_PER_FILE = 200
PAYLOAD = "x" * 200  # a ConfigMap of realistic size, not an empty one
BENCH = {"bench": "true"}  # the label on every object the bench creates

Files = dict[str, bytes | None]
Json = dict[str, Any]


# -- small helpers ---------------------------------------------------------------


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentiles(samples: Sequence[float]) -> Json:
    """p50 / p99 (nearest rank) and n, in seconds rounded to the millisecond."""
    if not samples:
        return {"p50": None, "p99": None, "n": 0}
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1))
    return {
        "p50": round(statistics.median(ordered), 4),
        "p99": round(ordered[rank], 4),
        "n": len(ordered),
    }


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def kubectl(cluster: Cluster, *args: str, check: bool = True, timeout: float = 1800) -> str:
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def machine() -> Json:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kubectl": _kubectl_version(),
        "commit": commit + ("+dirty" if dirty else ""),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def _kubectl_version() -> str:
    out = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True)
    with contextlib.suppress(ValueError, KeyError):
        return str(json.loads(out.stdout)["clientVersion"]["gitVersion"])
    return "unknown"


# -- the GitOps lab: one repo, Applications per (cluster, namespace) -------------------


def application(name: str, cluster: str, path: str, namespace: str) -> Json:
    return configs.application(name, REPO_URL, path, SERVERS[cluster], namespace)


@dataclass
class Lab:
    """A GitOps repo (bare upstream + the operator's clone) and a config for it."""

    base: Path
    upstream: pygit2.Repository
    clone: Path
    clusters: ClusterSet

    @classmethod
    def create(cls, base: Path, clusters: ClusterSet, files: Files) -> Lab:
        upstream_path, clone = make_upstream_and_clone(base, "lab", files)
        return cls(base, pygit2.Repository(str(upstream_path)), clone, clusters)

    def commit(self, files: Files, message: str) -> None:
        commit_files(self.upstream, "refs/heads/main", files, message)
        pull(self.clone)

    def config(
        self, state: Path, *, resync_s: float = 3600.0, dry_run_concurrency: int | None = None
    ) -> Path:
        daemon: Json = {
            "state_dir": state,
            "metrics_address": "",
            "resync_interval_s": resync_s,
            "fetch_interval_s": 3600,
        }
        if dry_run_concurrency is not None:  # None: the shipped default
            daemon["dry_run_concurrency"] = dry_run_concurrency
        return write_config(
            state.with_suffix(".toml"),
            [Repo("lab", self.clone, REPO_URL)],
            targets(self.clusters, SERVERS),
            {"daemon": daemon, "logs": {"level": "info"}},
        )


def argocd_applies(prod: Cluster, namespaces: Sequence[str], files: Sequence[Path]) -> None:
    """Stand in for prod's Argo CD (prod is report-only): apply as admin, with the
    tracking annotation a real one adds (each namespace is the app named after it)."""
    for ns in namespaces:
        kubectl(prod, "create", "namespace", ns, check=False)
    objects = [obj for file in files for obj in yaml.safe_load_all(file.read_bytes()) if obj]
    with tempfile.TemporaryDirectory() as tmp:
        applied = Path(tmp) / "argocd.yaml"
        applied.write_text(
            "\n---\n".join(
                json.dumps(tracked(obj, obj["metadata"]["namespace"].removeprefix("bench-")))
                for obj in objects
            )
        )
        kubectl(
            prod, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(applied)
        )


# -- the daemon as a subprocess, and its JSON log ----------------------------------------


class LogTail:
    """Reads a growing JSON-lines file incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[Json] = []

    def poll(self) -> list[Json]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new: list[Json] = []
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    new.append(json.loads(line))
        self.events += new
        return new


class Daemon:
    def __init__(self, config: Path, log: Path, tree: Path = ROOT) -> None:
        """`reconciler run` from the source `tree` (its `reconciler` package and
        `policies`): this one, or another for an A/B comparison."""
        self.log_path = log
        self._log: TextIO = log.open("w")
        self.started = time.monotonic()
        self.started_at = time.time()  # the log's timestamps are wall-clock
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "reconciler.cli", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=tree,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.tail = LogTail(log)

    def wait_for(self, match: Callable[[Json], bool], timeout: float, what: str) -> Json:
        """The first new log event that matches, waiting at most `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.tail.poll():
                if match(event):
                    return event
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; see {self.log_path}")
            time.sleep(0.005)

    def wait_ready(self, timeout: float) -> float:
        self.wait_for(lambda e: e.get("event") == "daemon.ready", timeout, "daemon.ready")
        return time.monotonic() - self.started

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the daemon used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def phases(self) -> Json:
        """When (seconds after the process started) the first render and each cluster's
        first reconcile ended, from the daemon's own log: where a start spends its time."""
        found: Json = {}
        for event in self.tail.events:
            name, stamp = event.get("event"), event.get("timestamp")
            if not isinstance(stamp, str):
                continue
            at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            key = {"desired.rendered": "rendered", "reconcile.done": "reconciled"}.get(str(name))
            if key == "rendered":
                found.setdefault(key, round(at - self.started_at, 3))
            elif key == "reconciled":
                found.setdefault(key, {}).setdefault(
                    event["cluster"], round(at - self.started_at, 3)
                )
            elif name == "daemon.ready":
                break
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- latency: commits, live edits, and the watch floor -----------------------------------

LAT_NS = {name: f"bench-lat-{name}" for name in CLUSTERS}
LAT_OBJECTS = 40  # edit targets per cluster: each edited once (the daemon backs off flapping)


def latency_files(commit_value: int) -> Files:
    files: Files = {}
    for cluster, ns in LAT_NS.items():
        files[f"apps/lat-{cluster}.yaml"] = yaml_file(
            application(f"lat-{cluster}", cluster, f"deploy/lat/{cluster}", ns)
        )
        objects = [
            config_map("target", {"value": str(commit_value), "payload": PAYLOAD}, ns, BENCH)
        ]
        objects += [
            config_map(f"edit-{i:03d}", {"value": "git", "payload": PAYLOAD}, ns, BENCH)
            for i in range(LAT_OBJECTS)
        ]
        files[f"deploy/lat/{cluster}/objects.yaml"] = yaml_file(*objects)
    return files


def target_file(value: int) -> Files:
    """Only agentic's file changes: one object (the `target` ConfigMap)."""
    ns = LAT_NS["agentic"]
    objects = [config_map("target", {"value": str(value), "payload": PAYLOAD}, ns, BENCH)]
    objects += [
        config_map(f"edit-{i:03d}", {"value": "git", "payload": PAYLOAD}, ns, BENCH)
        for i in range(LAT_OBJECTS)
    ]
    return {"deploy/lat/agentic/objects.yaml": yaml_file(*objects)}


def value_of(cluster: Cluster, namespace: str, name: str) -> str | None:
    try:
        obj = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    except OSError:
        return None
    value = (obj.get("data") or {}).get("value")
    return None if value is None else str(value)


def _has(cluster: Cluster, namespace: str, name: str, value: str) -> Callable[[], bool]:
    return lambda: value_of(cluster, namespace, name) == value


def patch_value(cluster: Cluster, namespace: str, name: str, value: str) -> None:
    """A person's manual edit: `kubectl patch` as admin."""
    patch = json.dumps({"data": {"value": value}})
    kubectl(cluster, "-n", namespace, "patch", "configmap", name, "--type=merge", "-p", patch)


class BareWatch:
    """`kubectl get -w` on one ConfigMap: the floor any watch-driven tool sits on."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                KUBECTL,
                "--kubeconfig",
                str(cluster.admin_kubeconfig),
                "-n",
                namespace,
                "get",
                "configmap",
                name,
                "-w",
                "--no-headers",
                "-o",
                "custom-columns=V:.data.value",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def seen(self, value: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line == value:
                return at

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def bench_latency(clusters: ClusterSet, base: Path, commits: int, edits: int) -> Json:
    prod, agentic = clusters["prod"], clusters["agentic"]
    lab = Lab.create(base / "lat", clusters, latency_files(0))
    prod_file = base / "lat-prod.yaml"
    prod_file.write_bytes(latency_files(0)["deploy/lat/prod/objects.yaml"] or b"")
    argocd_applies(prod, [LAT_NS["prod"]], [prod_file])
    daemon = Daemon(lab.config(base / "lat-state"), base / "lat-daemon.log")
    result: Json = {}
    try:
        ready = daemon.wait_ready(300)
        say(f"latency daemon ready in {ready:.1f}s")
        result["first_reconcile_s"] = round(ready, 3)
        time.sleep(1.0)

        # Floor: a bare watch sees a kubectl patch (same kind of edit as below).
        floor_ns = "bench-floor"
        kubectl(agentic, "create", "namespace", floor_ns)
        kubectl(agentic, "-n", floor_ns, "create", "configmap", "floor", "--from-literal=value=0")
        watch = BareWatch(agentic, floor_ns, "floor")
        watch.seen("0", 30)
        floor: list[float] = []
        patch_cmd: list[float] = []
        for i in range(edits):
            t0 = time.monotonic()
            patch_value(agentic, floor_ns, "floor", f"f{i}")
            patch_cmd.append(time.monotonic() - t0)
            floor.append(watch.seen(f"f{i}", 30) - t0)
            time.sleep(0.05)
        watch.stop()
        result["watch_floor_s"] = percentiles(floor)
        result["kubectl_patch_cmd_s"] = percentiles(patch_cmd)
        say(f"watch floor p50 {result['watch_floor_s']['p50']}s")

        # Commit -> applied on agentic: one object changed per commit.
        ns = LAT_NS["agentic"]
        applied: list[float] = []
        for i in range(1, commits + 1):
            t0 = time.monotonic()
            lab.commit(target_file(i), f"target value {i}")
            wait_until(_has(agentic, ns, "target", str(i)), 60, f"commit {i}")
            applied.append(time.monotonic() - t0)
            time.sleep(0.3)
        result["commit_to_applied_s"] = percentiles(applied)
        say(f"commit -> applied p50 {result['commit_to_applied_s']['p50']}s")

        # Live edit -> reverted on agentic; each edit on another object.
        reverted: list[float] = []
        for i in range(edits):
            name = f"edit-{i % LAT_OBJECTS:03d}"
            t0 = time.monotonic()
            patch_value(agentic, ns, name, f"by-hand-{i}")
            wait_until(_has(agentic, ns, name, "git"), 60, f"revert {i}")
            reverted.append(time.monotonic() - t0)
            time.sleep(0.3)
        result["edit_to_reverted_s"] = percentiles(reverted)
        say(f"edit -> reverted p50 {result['edit_to_reverted_s']['p50']}s")

        # Live edit on prod -> drift recorded (the daemon's reconcile.done, after the store).
        prod_ns = LAT_NS["prod"]
        detected: list[float] = []
        daemon.tail.poll()
        for i in range(edits):
            name = f"edit-{i % LAT_OBJECTS:03d}"
            t0 = time.monotonic()
            patch_value(prod, prod_ns, name, f"by-hand-{i}")

            def recorded(e: Json, n: int = i + 1) -> bool:
                return (
                    e.get("event") == "reconcile.done"
                    and e.get("cluster") == "prod"
                    and int(e.get("drift", 0)) >= n
                )

            daemon.wait_for(recorded, 60, f"prod drift {i}")
            detected.append(time.monotonic() - t0)
            time.sleep(0.3)
        result["edit_to_detected_s"] = percentiles(detected)
        say(f"edit -> detected p50 {result['edit_to_detected_s']['p50']}s")
        writes = [e for e in prod.requests_by(RECONCILER_USER) if e.is_write]
        result["prod_writes_by_reconciler"] = len(writes)
    finally:
        daemon.stop()
    # Leave the clusters light for what follows.
    for c in clusters:
        kubectl(c, "delete", "namespace", LAT_NS[c.name], "--wait=false", check=False)
    kubectl(agentic, "delete", "namespace", "bench-floor", "--wait=false", check=False)
    return result


# -- scale: N ConfigMaps over three clusters ---------------------------------------


def bulk_layout(n: int) -> dict[tuple[str, str], list[Json]]:
    """Object i goes to cluster i % 3, namespace (i // 3) % NAMESPACES_PER_CLUSTER."""
    out: dict[tuple[str, str], list[Json]] = {}
    for i in range(n):
        cluster = CLUSTERS[i % 3]
        ns = f"bench-bulk-{cluster}-{(i // 3) % NAMESPACES_PER_CLUSTER}"
        cm = config_map(f"cm-{i:05d}", {"index": str(i), "payload": PAYLOAD}, ns, BENCH)
        out.setdefault((cluster, ns), []).append(cm)
    return out


def bulk_files(n: int) -> Files:
    """The repo's files: an Application per (cluster, namespace), its objects in parts."""
    files: Files = {}
    for (cluster, ns), objects in sorted(bulk_layout(n).items()):
        app = ns.removeprefix("bench-")
        files[f"apps/{app}.yaml"] = yaml_file(
            application(app, cluster, f"deploy/{cluster}/{ns}", ns)
        )
        for start in range(0, len(objects), OBJECTS_PER_FILE):
            chunk = objects[start : start + OBJECTS_PER_FILE]
            files[f"deploy/{cluster}/{ns}/part-{start // OBJECTS_PER_FILE:03d}.yaml"] = yaml_file(
                *chunk
            )
    return files


def write_cluster_dirs(files: Files, out: Path) -> dict[str, Path]:
    """The desired manifests of each cluster as a directory, for kubectl -R."""
    shutil.rmtree(out, ignore_errors=True)
    dirs = {c: out / c for c in CLUSTERS}
    for path, content in files.items():
        if not path.startswith("deploy/") or content is None:
            continue
        cluster = path.split("/")[1]
        target = dirs[cluster] / path.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return dirs


def time_kubectl(dirs: dict[str, Path], clusters: ClusterSet, *args: str) -> float:
    """Wall time of one kubectl command per cluster over its objects, run one after another."""
    started = time.monotonic()
    for name, directory in dirs.items():
        if not directory.exists():
            continue
        kubeconfig = str(clusters[name].admin_kubeconfig)
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", kubeconfig, *args, "-R", "-f", str(directory)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        # kubectl diff exits 1 when it found differences; more is an error.
        if done.returncode > 1:
            raise RuntimeError(f"kubectl {args} on {name}: {done.stderr.strip()[-2000:]}")
    return time.monotonic() - started


def bench_resync(
    clusters: ClusterSet, base: Path, n: int, lab: Lab | None, *, kubectl_too: bool = True
) -> tuple[Json, Lab]:
    """Commit N objects, let prod's stand-in Argo CD apply prod's share, then run the
    resync child: a first full reconcile (converges), then steady ones, timed; then
    kubectl over the same objects, unless not `kubectl_too`."""
    files = bulk_files(n)
    if lab is None:
        lab = Lab.create(base / "bulk", clusters, files)
    else:
        lab.commit(files, f"{n} objects")
    dirs = write_cluster_dirs(files, base / f"bulk-{n}-manifests")
    prod_namespaces = sorted({ns for (c, ns) in bulk_layout(n) if c == "prod"})
    started = time.monotonic()
    argocd_applies(clusters["prod"], prod_namespaces, sorted(dirs["prod"].glob("*.yaml")))
    say(f"N={n}: prod's share applied by admin in {time.monotonic() - started:.1f}s")

    config = lab.config(base / "bulk-state")
    out = base / f"resync-{n}.json"
    child = subprocess.run(
        [PYTHON, str(Path(__file__).resolve()), "--child-resync", str(config), str(out)]
        + [f"{c.name}={c.audit_log}" for c in clusters],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    if child.returncode != 0:
        raise RuntimeError(f"resync child failed: {child.stderr[-4000:]}")
    row: Json = json.loads(out.read_text())
    row["n"] = n
    say(
        f"N={n}: first reconcile {row['first_wall_s']:.1f}s, steady resync "
        f"{row['wall_s']:.3f}s wall / {row['cpu_s']:.3f}s CPU, "
        f"peak RSS {row['peak_rss_mb']:.0f} MB, requests {row['requests']}"
    )
    if not kubectl_too:
        return row, lab
    diff_s = time_kubectl(dirs, clusters, "diff", "--server-side")
    say(f"N={n}: kubectl diff --server-side {diff_s:.1f}s")
    apply_s = time_kubectl(dirs, clusters, "apply", "--server-side", "--dry-run=server")
    say(f"N={n}: kubectl apply --server-side --dry-run=server {apply_s:.1f}s")
    row["kubectl_diff_s"] = round(diff_s, 3)
    row["kubectl_apply_dry_run_s"] = round(apply_s, 3)
    return row, lab


def compile_bytecode(tree: Path) -> None:
    """Compile the `reconciler` package of `tree`, as `pip install` does on the host
    (systemd/reconciler.service) and `make install` does here: a daemon's start then
    reads bytecode rather than compiling its own sources, whatever
    PYTHONDONTWRITEBYTECODE says (it only stops Python writing bytecode)."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "reconciler")], check=True)


def bench_cold_start(
    lab: Lab,
    base: Path,
    n: int,
    dry_run_concurrency: int | None = None,
    tree: Path = ROOT,
    restart: bool = True,
) -> Json:
    """Daemon start -> daemon.ready with N objects live: with the state kept from
    before (a restart, unless not `restart`), and with an empty state directory
    (first start on a host); the daemon runs from the source `tree`."""
    out: Json = {"n": n}
    if dry_run_concurrency is not None:
        out["dry_run_concurrency"] = dry_run_concurrency
    if tree != ROOT:
        out["tree"] = str(tree)
    cold = Path(tempfile.mkdtemp(prefix="cold-state-", dir=base))  # empty on every run
    starts = [("restart", base / "bulk-state")] if restart else []
    for label, state in [*starts, ("empty_state", cold)]:
        config = lab.config(state, dry_run_concurrency=dry_run_concurrency)
        daemon = Daemon(config, base / f"cold-{label}.log", tree)
        try:
            out[label] = round(daemon.wait_ready(1800), 3)
            out[f"{label}_cpu_s"] = round(daemon.cpu_s(), 2)
            out[f"{label}_phases"] = daemon.phases()
        finally:
            daemon.stop()
        say(f"cold start ({label}) at N={n}: {out[label]:.1f}s")
    return out


# -- the resync child: the engine in-process, as the daemon runs it ---------------------------


def _peak_rss_mb() -> tuple[float, float]:
    hwm = rss = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return hwm, rss


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_resync(config_path: Path, out: Path, audit: dict[str, Path]) -> None:
    """Open the session as the daemon does (engines with live caches), render once,
    reconcile every cluster in parallel until converged, then time steady resyncs."""
    import logging

    from reconciler import logs
    from reconciler.config import load_config
    from reconciler.model import Result
    from reconciler.session import apps_by_cluster, open_session

    # The daemon logs at info to journald; here the lines go to a file nobody reads.
    log_file = (out.parent / (out.stem + ".log")).open("w")
    logs.configure("info", stream=log_file)
    config = load_config(config_path)
    last_event = [time.monotonic()]

    def on_change(_cluster: str, _ref: object, _event: str, _version: str) -> None:
        last_event[0] = time.monotonic()

    session = open_session(config, on_change=on_change)
    started = time.monotonic()
    desired = session.render()
    render_s = time.monotonic() - started
    apps = apps_by_cluster(desired)

    profiling = bool(os.environ.get("BENCH_PROFILE"))

    def round_(label: str) -> Json:
        offsets = {name: path.stat().st_size for name, path in audit.items()}
        reports: dict[str, Any] = {}

        def one(name: str) -> None:
            engine = session.engines[name]
            engine.pin_identity()
            reports[name] = engine.reconcile(desired.clusters[name], apps.get(name, []))

        wall0, cpu0 = time.monotonic(), _cpu_s()
        if profiling:  # cProfile sees only its own thread: one cluster after another
            for name in session.engines:
                one(name)
        threads = (
            [] if profiling else [threading.Thread(target=one, args=(n,)) for n in session.engines]
        )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.monotonic() - wall0, _cpu_s() - cpu0
        requests: Counter[str] = Counter()
        for name, path in audit.items():
            requests += requests_since_path(path, offsets[name])
        summary = {
            name: {
                "result": r.result,
                "drift": len(r.drifts),
                "errors": len(r.errors),
                **{k.value: v for k, v in r.counts.items() if k is not Result.UNCHANGED},
            }
            for name, r in reports.items()
        }
        print(f"{label}: {wall:.3f}s {dict(requests)} {summary}", file=sys.stderr, flush=True)
        return {"wall_s": wall, "cpu_s": cpu, "requests": dict(requests), "clusters": summary}

    first = round_("first")
    # Let the caches take in the watch events of the first round's writes.
    synced = all(e.cache.wait_synced(120) for e in session.engines.values())
    wait_until(lambda: time.monotonic() - last_event[0] > 2.0, 600, "quiet watches", 0.1)
    # Steady resyncs: the first is "the second full reconcile"; more give a median on a
    # small machine where the API servers share the CPUs.
    profile_to = os.environ.get("BENCH_PROFILE")  # a path: cProfile the steady rounds
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    steady = [round_(f"steady {i}") for i in range(STEADY_ROUNDS)]
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    # The same steady resync with the per-object info log lines switched off.
    logging.getLogger().setLevel(logging.WARNING)
    quiet = [round_(f"steady {i}, log level warning") for i in range(2)]
    hwm, rss = _peak_rss_mb()
    session.close()
    all_requests: Counter[str] = Counter()
    for r in steady:
        all_requests.update(r["requests"])
    result = {
        "wall_s": round(statistics.median(r["wall_s"] for r in steady), 4),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in steady), 4),
        "peak_rss_mb": round(hwm, 1),
        "rss_after_mb": round(rss, 1),
        "requests": steady[0]["requests"],
        "requests_all_steady_rounds": dict(all_requests),
        "clusters": steady[0]["clusters"],
        "steady_rounds_wall_s": [round(r["wall_s"], 4) for r in steady],
        "steady_rounds_cpu_s": [round(r["cpu_s"], 4) for r in steady],
        "second_round_wall_s": round(steady[0]["wall_s"], 4),
        "warning_level_wall_s": round(min(r["wall_s"] for r in quiet), 4),
        "warning_level_cpu_s": round(min(r["cpu_s"] for r in quiet), 4),
        "first_wall_s": round(first["wall_s"], 3),
        "first_cpu_s": round(first["cpu_s"], 3),
        "first_requests": first["requests"],
        "first_clusters": first["clusters"],
        "render_s": round(render_s, 3),
        "caches_synced": synced,
    }
    out.write_text(json.dumps(result, indent=2))
    log_file.close()


def requests_since_path(path: Path, offset: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            raw = json.loads(line)
            if raw.get("stage") not in ("ResponseComplete", "Panic"):
                continue
            if raw.get("user", {}).get("username") != RECONCILER_USER:
                continue
            verb = str(raw.get("verb", ""))
            if "dryRun=" in str(raw.get("requestURI", "")):
                verb += "(dryRun)"
            counts[verb] += 1
    return counts


# -- report ----------------------------------------------------------------------------


def _fmt(stat: Json | None) -> str:
    if not stat or stat.get("p50") is None:
        return "-"
    return f"p50 {stat['p50']:.3f}  p99 {stat['p99']:.3f}  (n={stat['n']})"


def table(results: Json) -> str:
    lines = [f"machine: {results['machine']}", ""]
    rows = [
        ("commit -> applied (agentic)", _fmt(results.get("commit_to_applied_s")), "p50 <= 1 s"),
        ("live edit -> detected (prod)", _fmt(results.get("edit_to_detected_s")), "p50 <= 0.5 s"),
        ("live edit -> reverted (agentic)", _fmt(results.get("edit_to_reverted_s")), ""),
        ("floor: bare watch sees kubectl patch", _fmt(results.get("watch_floor_s")), ""),
        ("kubectl patch command itself", _fmt(results.get("kubectl_patch_cmd_s")), ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines += [f"{a:<{width}}  {b:<40} {c}" for a, b, c in rows]
    lines.append("")
    lines.append(
        f"{'N':>6} {'resync s':>9} {'cpu s':>7} {'RSS MB':>7} {'reqs (LIST/dry/write)':>22} "
        f"{'kdiff s':>8} {'x':>6} {'kapply s':>9} {'x':>6} {'first s':>8}"
    )
    for row in results["resync"]:
        req: dict[str, int] = row["requests"]
        lists = req.get("list", 0)
        dry = sum(v for k, v in req.items() if k.endswith("(dryRun)"))
        writes = sum(v for k, v in req.items() if k in WRITE_VERBS)
        wall = max(row["wall_s"], 1e-6)
        kd, ka = row["kubectl_diff_s"], row["kubectl_apply_dry_run_s"]
        lines.append(
            f"{row['n']:>6} {row['wall_s']:>9.3f} {row['cpu_s']:>7.3f} {row['peak_rss_mb']:>7.0f} "
            f"{f'{sum(req.values())} ({lists}/{dry}/{writes})':>22} {kd:>8.1f} "
            f"{kd / wall:>5.0f}x {ka:>9.1f} {ka / wall:>5.0f}x {row['first_wall_s']:>8.1f}"
        )
    cold = results.get("cold_start")
    if cold:
        lines.append("")
        lines.append(
            f"cold start -> daemon.ready at N={cold['n']}: {cold['restart']:.1f}s (state kept), "
            f"{cold['empty_state']:.1f}s (empty state dir)"
        )
    return "\n".join(lines)


def only_cold_start(
    n: int, concurrencies: Sequence[int | None], repeat: int, trees: Sequence[Path]
) -> None:
    """The cold-start scenario alone: N objects committed and converged, then timed
    (once per value of daemon.dry_run_concurrency), `repeat` times. Given source
    `trees` (A/B on a machine whose load changes), their empty-state starts are timed
    one tree after the other in each round, each tree compiled to bytecode first."""
    compare = bool(trees)
    trees = [tree.resolve() for tree in trees] or [ROOT]
    for tree in trees:
        compile_bytecode(tree)
    base = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    clusters = ClusterSet(base / "clusters")
    try:
        say(f"starting clusters in {base}")
        clusters.start(timeout=120)
        _, lab = bench_resync(clusters, base, n, None, kubectl_too=False)
        runs = []
        for _ in range(repeat):
            for tree in trees:
                for concurrency in concurrencies:
                    load = os.getloadavg()
                    run = bench_cold_start(lab, base, n, concurrency, tree, not compare)
                    runs.append({**run, "load_avg": load})
    finally:
        clusters.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"machine": machine(), "cold_start": runs}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, few iterations")
    parser.add_argument("--sizes", help="comma-separated N (default 1000,5000,10000)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--only",
        choices=["cold-start"],
        help="run one scenario (after what it needs) and print it; no results file",
    )
    parser.add_argument(
        "--dry-run-concurrency",
        help="with --only cold-start: comma-separated values of daemon.dry_run_concurrency "
        "to time, one after another (default: the shipped default)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="with --only cold-start: time each start this often"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        default=[],
        help="with --only cold-start, repeatable: a source tree (holding `reconciler` and "
        "`policies`) whose empty-state starts are timed, interleaved with the other trees'",
    )
    parser.add_argument("--child-resync", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_resync:
        config, out, *audits = args.child_resync
        audit = {a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in audits}
        child_resync(Path(config), Path(out), audit)
        return

    sizes = [200, 1000] if args.quick else [1000, 5000, 10000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    cold_n = 1000 if args.quick else 5000
    if args.only == "cold-start":
        values = args.dry_run_concurrency.split(",") if args.dry_run_concurrency else [""]
        concurrencies = [int(v) if v else None for v in values]
        only_cold_start(cold_n, concurrencies, args.repeat, args.tree)
        return
    commits, edits = (20, 10) if args.quick else (30, 30)
    results: Json = {
        "machine": machine(),
        "quick": args.quick,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "debounce_s": DEBOUNCE_S,
    }
    began = time.monotonic()
    compile_bytecode(ROOT)
    base = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    clusters = ClusterSet(base / "clusters")
    try:
        say(f"starting clusters in {base}")
        clusters.start(timeout=120)
        results.update(bench_latency(clusters, base, commits, edits))
        rows: list[Json] = []
        lab: Lab | None = None
        for n in sizes:
            row, lab = bench_resync(clusters, base, n, lab)
            rows.append(row)
            if n == cold_n:
                results["cold_start"] = bench_cold_start(lab, base, n)
        results["resync"] = rows
        results["kubectl_diff_s"] = {str(r["n"]): r["kubectl_diff_s"] for r in rows}
        results["kubectl_apply_dry_run_s"] = {
            str(r["n"]): r["kubectl_apply_dry_run_s"] for r in rows
        }
        results["kubectl_ratio"] = {
            str(r["n"]): {
                "diff_x": round(r["kubectl_diff_s"] / max(r["wall_s"], 1e-6), 1),
                "apply_dry_run_x": round(r["kubectl_apply_dry_run_s"] / max(r["wall_s"], 1e-6), 1),
            }
            for r in rows
        }
        cold = results.get("cold_start")
        results["cold_start_s"] = cold["restart"] if cold else None
        results["total_s"] = round(time.monotonic() - began, 1)
    finally:
        clusters.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    (RESULTS / "latest.json").write_text(text + "\n")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json").write_text(text + "\n")
    print(table(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
