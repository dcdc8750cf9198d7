"""Benchmark: the owner's homelab as the owner runs it (issue 14's acceptance scenario).

The three fixture repositories (../shared/fixtures) as real git repositories,
three local clusters from testenv/, the Helm charts their Applications name
served as stand-ins (testenv/charts.py) from a loopback chart repository and
the loopback OCI registry, the real daemon (`reconciler run`) with the shipped
defaults; only what the clusters lack is bounded: they run no kubelet, so a
wave or hook that waits for Pods gives up after 10 s instead of 300 s (see
testenv/demo.py, whose set-up this shares). Measures:

- commit -> applied: one-line commits (an annotation added to an object),
  each to a different app, alternating agentic_lab (agentic) and monit_homelab
  (monit) apps, from the commit to the value seen in the cluster (apps with hook
  Jobs are left out: no kubelet runs them, so their syncs wait hook_timeout_s);
- commit -> reported on prod: the same kind of commit to prod apps, until the
  daemon's `reconcile.done` for prod counts the drift (prod is report-only);
- live edit -> reverted: a `kubectl patch` by the admin on agentic and monit,
  until the value is back;
- a commit that touches no rendered file (a README in each repo): how many apps
  the daemon rendered and reused for it, from its `desired.rendered` log event
  (`rendered=`, `reused=`) and `reconciler_app_renders_total{outcome=...}`.

`--notify-down` (issue 15's acceptance: a homeserver that is down delays messages,
loses none, and does not move these figures) runs it twice on fresh clusters:
once without notifications (the baseline), then with `[notify.matrix]` posting to
a real Synapse (testenv/matrix.py) that is stopped from the first commit until
the edits are measured and at least DOWN_S have passed, then started again. It
reports the notices still pending and those delivered afterwards, read back from
the room: each prod app the measured commits made drift must be told there.

Run: .venv/bin/python bench/bench_homelab.py [--quick] [--notify-down] [--write] [--keep]
Prints {"homelab": {...}} (and "homelab_notify_down" with --notify-down); `--write`
adds (or replaces) those keys of bench/results/latest.json and keeps every other
key. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_reconcile import (  # noqa: E402
    LogTail,
    kubectl,
    machine,
    percentiles,
    say,
    wait_until,
)

from reconciler.cluster.client import CAPABILITIES_MAX_AGE  # noqa: E402
from testenv.clusters import Cluster, ClusterSet, free_port  # noqa: E402
from testenv.config import Room, open_room  # noqa: E402
from testenv.demo import APPLIED, Homelab, reconciler, running_homelab  # noqa: E402
from testenv.gitrepos import FIXTURES, commit_files, pull  # noqa: E402
from testenv.matrix import Homeserver  # noqa: E402
from testenv.pki import make_ca  # noqa: E402

Json = dict[str, Any]
RESULTS = ROOT / "bench" / "results"
REPO_OF = {"prod": "prod_homelab", "agentic": "agentic_lab", "monit": "monit_homelab"}
MARKER = "bench.kernow.io/marker"
# Kinds a commit can annotate: kind -> (API path, plural).
KINDS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
}
HOOKS = {"argocd.argoproj.io/hook", "helm.sh/hook"}
# How long the homeserver stays down with --notify-down, at least (issue 15).
DOWN_S = 30.0
# After it is back: the notifier's retry backoff reaches 60 s, and at most
# max_per_minute messages go out a minute.
DELIVERY_TIMEOUT_S = 240.0
DOCUMENT_START = re.compile(r"^---[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Target:
    """One object of one app, and the file in its repo that a one-line commit edits
    (an annotations line added under the object's `metadata:`)."""

    cluster: str
    app: str
    kind: str
    namespace: str
    name: str
    repo: str
    file: str  # path in the repo

    @property
    def url(self) -> str:
        api, plural = KINDS[self.kind]
        return f"{api}/namespaces/{self.namespace}/{plural}/{self.name}"


def annotated(text: str, kind: str, name: str, value: str) -> str | None:
    """`text` (a YAML file) with one line added: `annotations: {MARKER: value}` under
    the `metadata:` of its document `kind`/`name`, which has no annotations yet (None
    when there is no such document, or its metadata is not laid out as expected)."""
    parts = DOCUMENT_START.split(text)
    for i, part in enumerate(parts):
        try:
            doc = yaml.safe_load(part)
        except yaml.YAMLError:
            return None
        if not isinstance(doc, dict) or doc.get("kind") != kind:
            continue
        metadata = doc.get("metadata") or {}
        if metadata.get("name") != name or "annotations" in metadata:
            continue
        found = re.search(r"^metadata:[ \t]*\n(?=  [a-z])", part, re.MULTILINE)
        if found is None:
            return None
        line = f"  annotations: {{{MARKER}: {json.dumps(value)}}}\n"
        parts[i] = part[: found.end()] + line + part[found.end() :]
        return "---".join(parts) if len(parts) > 1 else parts[0]
    return None


def _file_of(repo: str, where: str, kind: str, name: str) -> str | None:
    """The file under `where` of the fixture `repo` holding `kind`/`name`, editable."""
    root = FIXTURES / repo
    start = root / where
    files = [start] if start.is_file() else sorted(start.rglob("*.y*ml")) if start.is_dir() else []
    for path in files:
        text = path.read_text(errors="replace")
        if f"name: {name}" in text and annotated(text, kind, name, "x") is not None:
            return str(path.relative_to(root))
    return None


def declared_in(repo: str) -> set[str]:
    """The apps whose Application the fixture `repo` declares (an app that another
    repo declares, such as prod's Argo CD apps deployed to agentic, is reported only)."""
    names = set()
    for path in (FIXTURES / repo / "kubernetes" / "argocd-apps").rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Application":
                names.add(str(doc["metadata"]["name"]))
    return names


def find_targets(lab: Homelab, clusters: ClusterSet) -> dict[str, list[Target]]:
    """Per cluster, one editable object of each app that the cluster's own repo declares
    and sources, has no hooks, and that the cluster holds now."""
    found: dict[str, list[Target]] = {}
    for cluster in REPO_OF:
        own = declared_in(REPO_OF[cluster])
        out = reconciler(lab.config, "render", "--cluster", cluster, "-o", "json").stdout
        rows = json.loads(out)
        found[cluster] = []
        # No kubelet runs hook Jobs here: a sync of such an app waits hook_timeout_s.
        seen = {
            r["app"] for r in rows if HOOKS & set(r["object"]["metadata"].get("annotations") or {})
        }
        for row in rows:
            obj = row["object"]
            ns = obj["metadata"].get("namespace")
            if obj["kind"] not in KINDS or not ns or row["app"] in seen:
                continue
            if row["repo"] != REPO_OF[cluster] or row["app"] not in own:
                continue
            name = obj["metadata"]["name"]
            file = _file_of(row["repo"], row["path"], obj["kind"], name)
            target = Target(cluster, row["app"], obj["kind"], ns, name, row["repo"], file or "")
            if file and value_of(clusters[cluster], target) is not None:
                seen.add(row["app"])
                found[cluster].append(target)
    return found


def value_of(cluster: Cluster, target: Target) -> str | None:
    """The target's MARKER annotation ("" without one); None if the object is missing."""
    try:
        obj = cluster.request("GET", target.url)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return str((obj["metadata"].get("annotations") or {}).get(MARKER, ""))


def has(cluster: Cluster, target: Target, value: str | None) -> Callable[[], bool]:
    """Whether the target holds `value` as its MARKER annotation now."""
    return lambda: value_of(cluster, target) == value


def timed(act: Callable[[], object], done: Callable[[], bool], what: str) -> float | None:
    """Seconds from the start of `act` until `done`; None (and said) after 30 s."""
    t0 = time.monotonic()
    act()
    try:
        wait_until(done, 30, what)
    except TimeoutError:
        say(f"{what}: not within 30 s")
        return None
    return time.monotonic() - t0


def commit_marker(lab: Homelab, target: Target, value: str) -> None:
    """The one-line commit (see `annotated`), then the operator's clone pulls it."""
    text = (FIXTURES / target.repo / target.file).read_text()
    edited = (annotated(text, target.kind, target.name, value) or "").encode()
    upstream = pygit2.Repository(str(lab.upstreams[target.repo]))
    commit_files(upstream, "refs/heads/main", {target.file: edited}, f"bench {value}")
    pull(lab.clones[target.repo])


def metric(metrics_url: str, name: str) -> dict[str, float]:
    """Every sample of `name` on the daemon's /metrics, by its label string."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if match:
            samples[match.group(1) or ""] = samples.get(match.group(1) or "", 0) + float(
                match.group(2)
            )
    return samples


def _by_outcome(samples: Mapping[str, float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in samples.items():
        outcome = re.search(r'outcome="([^"]*)"', labels)
        if outcome:
            totals[outcome.group(1)] = totals.get(outcome.group(1), 0) + value
    return totals


def bench_commits(
    lab: Homelab, clusters: ClusterSet, targets: list[Target], tail: LogTail
) -> dict[str, float | None]:
    """commit -> applied for each target (agentic/monit), by "cluster/app"; None for a
    target not applied within 30 s."""
    took: dict[str, float | None] = {}
    for i, target in enumerate(targets):
        cluster, value = clusters[target.cluster], f"c{i}"
        took[f"{target.cluster}/{target.app}"] = timed(
            functools.partial(commit_marker, lab, target, value),
            has(cluster, target, value),
            f"commit to {target.cluster}/{target.app} applied",
        )
        tail.poll()
        time.sleep(0.3)
    return took


def bench_prod_reports(lab: Homelab, targets: list[Target], tail: LogTail) -> list[float]:
    """commit -> prod's reconcile.done reporting more drift than before."""
    reported: list[float] = []
    for i, target in enumerate(targets):
        tail.poll()
        before = max(
            (int(e.get("drift", 0)) for e in tail.events if _prod_done(e)),
            default=0,
        )
        t0 = time.monotonic()
        commit_marker(lab, target, f"p{i}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(_prod_done(e) and int(e.get("drift", 0)) > before for e in tail.poll()):
                reported.append(time.monotonic() - t0)
                break
            time.sleep(0.005)
        time.sleep(0.3)
    return reported


def _prod_done(event: Json) -> bool:
    return event.get("event") == "reconcile.done" and event.get("cluster") == "prod"


def bench_edits(clusters: ClusterSet, targets: list[Target], edits: int) -> list[float]:
    """kubectl patch by the admin -> the committed value back, on agentic and monit."""
    reverted: list[float] = []
    for i in range(edits):
        target = targets[i % len(targets)]
        cluster = clusters[target.cluster]
        committed = value_of(cluster, target)
        plural = KINDS[target.kind][1]
        patch = ["-n", target.namespace, "patch", plural, target.name, "--type=merge", "-p"]
        edit = json.dumps({"metadata": {"annotations": {MARKER: f"by-hand-{i}"}}})
        took = timed(
            functools.partial(kubectl, cluster, *patch, edit),
            has(cluster, target, committed),
            f"edit of {target.cluster}/{target.app} reverted",
        )
        if took is not None:
            reverted.append(took)
        time.sleep(0.3)
    return reverted


def bench_untouched(lab: Homelab, tail: LogTail, metrics_url: str, text: bytes) -> Json:
    """A README commit to each repo: what the daemon rendered for it."""
    name = "reconciler_app_renders_total"
    before = _by_outcome(metric(metrics_url, name))
    tail.poll()
    start = len(tail.events)
    for repo, upstream_path in lab.upstreams.items():
        upstream = pygit2.Repository(str(upstream_path))
        commit_files(
            upstream, "refs/heads/main", {"README.bench.md": b"no app reads this, " + text}, "doc"
        )
        pull(lab.clones[repo])
    deadline = time.monotonic() + 30
    events: list[Json] = []
    while time.monotonic() < deadline and len(events) < len(lab.upstreams):
        tail.poll()
        events = [e for e in tail.events[start:] if e.get("event") == "desired.rendered"]
        time.sleep(0.05)
    time.sleep(1.0)  # any reconcile the commits started has finished by now
    tail.poll()
    events = [e for e in tail.events[start:] if e.get("event") == "desired.rendered"]
    after = _by_outcome(metric(metrics_url, name))
    fields_present = any("rendered" in e and "reused" in e for e in events)
    return {
        "commits": len(lab.upstreams),
        "desired_rendered_events": len(events),
        "log_fields_present": fields_present,
        "rendered_from_log": sum(int(e.get("rendered", 0)) for e in events)
        if fields_present
        else None,
        "reused_from_log": sum(int(e.get("reused", 0)) for e in events) if fields_present else None,
        "metric_present": bool(before or after),
        "rendered_from_metric": after.get("rendered", 0) - before.get("rendered", 0)
        if after
        else None,
        "reused_from_metric": after.get("reused", 0) - before.get("reused", 0) if after else None,
    }


class Outage:
    """The room's homeserver, stopped from now until `end` (DOWN_S at least)."""

    def __init__(self, homeserver: Homeserver) -> None:
        self.homeserver = homeserver
        homeserver.stop()
        self.since = time.monotonic()
        say("homeserver stopped")

    def end(self) -> float:
        """Start the homeserver again once DOWN_S have passed; how long it was down."""
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - self.since)))
        self.homeserver.start()
        down = time.monotonic() - self.since
        say(f"homeserver back after {down:.1f}s")
        return down


def notify_status(lab: Homelab) -> Json:
    """`notify` of `reconciler status -o json`: the notices pending, sent, dropped."""
    status: Json = json.loads(reconciler(lab.config, "status", "-o", "json").stdout)["notify"]
    return status


def delivered(lab: Homelab, room: Room, apps: list[str], metrics_url: str, outage: Outage) -> Json:
    """The notices pending while the homeserver is down; then, once it is back, how
    long until none is and each of `apps` (prod apps the commits made drift while it
    was down) is told in the room, read back from the homeserver."""
    pending_while_down = notify_status(lab)["pending"]
    down_s = outage.end()
    back = time.monotonic()

    def untold() -> list[str]:
        messages = room.messages()
        return [app for app in apps if not any(f"prod/{app}:" in m for m in messages)]

    try:
        wait_until(
            lambda: not untold() and notify_status(lab)["pending"] == 0,
            DELIVERY_TIMEOUT_S,
            "every notice delivered",
            every=1.0,
        )
        took: float | None = round(time.monotonic() - back, 1)
    except TimeoutError:
        say(f"notices still pending after {DELIVERY_TIMEOUT_S:.0f}s")
        took = None
    status = notify_status(lab)
    outcomes = _by_outcome(metric(metrics_url, "reconciler_notify_messages_total"))
    return {
        "down_s": round(down_s, 1),
        "pending_while_down": pending_while_down,
        "delivered_after_s": took,
        "pending_after": status["pending"],
        "dropped_total": status["dropped_total"],
        "messages_total": outcomes,
        "messages_read_back": len(room.messages()),
        "prod_drifts_committed": len(apps),
        "prod_drifts_untold": untold(),
    }


def run(base: Path, commits: int, edits: int, notify_down: bool = False) -> Json:
    started = time.monotonic()
    clusters = ClusterSet(base / "clusters")
    homeserver = Homeserver(base / "matrix" / "synapse", make_ca(base / "matrix", "bench-ca"))
    clusters.start(timeout=180)  # a busy machine starts three control planes slowly
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    daemon = {"state_dir": base / "state", "metrics_address": f"127.0.0.1:{port}"}
    # No kubelet: bound what waits for Pods (see the module docstring).
    daemon |= {"wave_timeout_s": 10, "hook_timeout_s": 10}
    result: Json = {"machine": machine(), "quick": commits < 20, "notify_down": notify_down}
    room: Room | None = None
    try:
        if notify_down:
            homeserver.start()
            room = open_room(homeserver)
        ready_at = time.monotonic()
        notify = room.table(base / "matrix-token") if room is not None else None
        with running_homelab(base, clusters, daemon, notify=notify) as lab:
            result["first_reconcile_s"] = round(time.monotonic() - ready_at, 3)
            ready = time.monotonic()
            say(f"daemon ready after {result['first_reconcile_s']}s (incl. charts, repos)")
            tail = LogTail(lab.log)
            found = find_targets(lab, clusters)
            say("targets: " + ", ".join(f"{c}={len(t)}" for c, t in found.items()))
            pairs = itertools.zip_longest(*(found[c] for c in APPLIED))
            targets = [t for pair in pairs for t in pair if t is not None][:commits]
            outage = Outage(homeserver) if room is not None else None
            took = bench_commits(lab, clusters, targets, tail)
            result["commit_to_applied_s"] = percentiles([t for t in took.values() if t is not None])
            result["commit_to_applied_by_app_s"] = {
                app: None if t is None else round(t, 3) for app, t in took.items()
            }
            say(f"commit -> applied {result['commit_to_applied_s']}")
            prod = found["prod"][: max(3, commits // 4)]
            result["commit_to_reported_prod_s"] = percentiles(bench_prod_reports(lab, prod, tail))
            say(f"commit -> reported (prod) {result['commit_to_reported_prod_s']}")
            result["edit_to_reverted_s"] = percentiles(bench_edits(clusters, targets, edits))
            say(f"edit -> reverted {result['edit_to_reverted_s']}")
            if outage is not None and room is not None:
                apps = sorted({t.app for t in prod})
                result["notify"] = delivered(lab, room, apps, metrics_url, outage)
                say(f"notify {result['notify']}")
            # The first render read the clusters' capabilities before the first sync
            # installed the charts' CRDs; the render after the capabilities' cache
            # expires sees them and re-renders the chart apps, as it must. Commit past
            # that first, then measure the steady state.
            time.sleep(max(0.0, ready + CAPABILITIES_MAX_AGE - time.monotonic()))
            first = bench_untouched(lab, tail, metrics_url, b"after the CRDs\n")
            result["untouched_commit_capabilities_changed"] = first
            say(f"untouched commit, capabilities changed since the first render {first}")
            result["untouched_commit"] = bench_untouched(lab, tail, metrics_url, b"steady\n")
            say(f"untouched commit {result['untouched_commit']}")
    finally:
        homeserver.stop()
        clusters.stop()
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 commits, 6 edits")
    parser.add_argument(
        "--notify-down",
        action="store_true",
        help=f"a baseline run, then one notifying a homeserver down for {DOWN_S:.0f} s",
    )
    parser.add_argument("--commits", type=int, default=24)
    parser.add_argument("--edits", type=int, default=24)
    parser.add_argument("--write", action="store_true", help="set `homelab` in latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    commits, edits = (6, 6) if args.quick else (args.commits, args.edits)
    base = Path(tempfile.mkdtemp(prefix="bench-homelab-"))
    try:
        result = {"homelab": run(base / "baseline", commits, edits)}
        if args.notify_down:
            down = run(base / "notify-down", commits, edits, notify_down=True)
            result["homelab_notify_down"] = down
    finally:
        if args.keep:
            say(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        latest = RESULTS / "latest.json"
        merged = json.loads(latest.read_text()) if latest.is_file() else {}
        merged |= result
        latest.write_text(json.dumps(merged, indent=2) + "\n")
        say(f"wrote the {', '.join(result)} key(s) of {latest}")


if __name__ == "__main__":
    main()
