"""Waves and hooks as Argo CD runs them, on the real agentic test cluster.

One app of the test's own per test, synced by `reconciler sync` as an operator
runs it, while tests/helpers_kubelet.py plays the node and the Job runner the test
clusters lack. The API server's audit log shows what the reconciler wrote and
when; the timings prove the waits.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.model import TRACKING_LABEL
from testenv.clusters import RECONCILER_USER, Cluster, ClusterSet
from testenv.config import Repo, targets, write_config
from testenv.gitrepos import make_upstream_and_clone
from tests.builders import config_map, deployment, yaml_file
from tests.helpers_cluster import unique, wait_for
from tests.helpers_kubelet import RUNNER, Kubelet
from tests.helpers_lab import SERVERS, Lab, application, live

APP = "waves"
HOOK = "argocd.argoproj.io/hook"
DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
CLI = (sys.executable, "-m", "reconciler.cli")


def annotated(obj: dict[str, Any], **annotations: str) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {
        {"hook": HOOK, "policy": DELETE_POLICY, "wave": SYNC_WAVE}[k]: v
        for k, v in annotations.items()
    }
    return obj


def hook_job(name: str, phase: str, policy: str | None = None) -> dict[str, Any]:
    """A Job hook the tests' runner finishes (spec.managedBy), not the Job controller."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "managedBy": RUNNER,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "run", "image": "busybox:1.36"}],
                }
            },
        },
    }
    return annotated(job, hook=phase, **({"policy": policy} if policy else {}))


@pytest.fixture
def make_lab(clusters: ClusterSet, tmp_path: Path) -> Iterator[Any]:
    """A lab whose one app, `waves` on agentic, is made of `objects`; the config's
    wave and hook bounds are `daemon` keys."""
    made: list[Lab] = []

    def make(objects: list[dict[str, Any]], **daemon: float) -> Lab:
        ns = unique("waves")
        files: dict[str, bytes | None] = {
            "apps/waves.yaml": yaml_file(application(APP, "agentic", "deploy/waves", ns)),
            "deploy/waves/objects.yaml": yaml_file(*objects),
        }
        upstream, clone = make_upstream_and_clone(tmp_path, "lab", files)
        config = write_config(
            tmp_path / "config.toml",
            [Repo("lab", clone, "https://git.test/lab.git")],
            targets(clusters, SERVERS),
            {"daemon": {"state_dir": tmp_path / "state", "metrics_address": "", **daemon}},
        )
        lab = Lab(pygit2.Repository(str(upstream)), clone, config, {"agentic": ns}, clusters)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        with contextlib.suppress(urllib.error.HTTPError):
            lab.clusters["agentic"].request(
                "DELETE", f"/api/v1/namespaces/{lab.namespaces['agentic']}"
            )


def sync(lab: Lab) -> subprocess.Popen[str]:
    """`reconciler sync --cluster agentic`, running while the test plays the kubelet."""
    return subprocess.Popen(
        [*CLI, "sync", "--cluster", "agentic", "--config", str(lab.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def writes(cluster: Cluster, ns: str) -> list[tuple[datetime.datetime, str, str, str]]:
    """The reconciler's writes in `ns` from the audit log (dry runs left out): (when,
    verb, resource, name)."""
    found = []
    for line in cluster.audit_log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        obj = event.get("objectRef") or {}
        if (
            event.get("stage") != "ResponseComplete"
            or event.get("user", {}).get("username") != RECONCILER_USER
            or event.get("verb") not in ("create", "update", "patch", "delete")
            or obj.get("namespace") != ns
            or "dryRun=All" in event.get("requestURI", "")
        ):
            continue
        at = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])
        found.append((at, event["verb"], obj.get("resource", ""), obj.get("name", "")))
    return found


def first_write(
    found: list[tuple[datetime.datetime, str, str, str]], name: str
) -> datetime.datetime:
    return next(at for at, verb, _, n in found if n == name and verb == "patch")


def status_findings(lab: Lab) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*CLI, "status", "-o", "json", "--config", str(lab.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    clusters = {c["name"]: c for c in json.loads(done.stdout)["clusters"]}
    app = next(a for a in clusters["agentic"]["apps"] if a["name"] == APP)
    findings: list[dict[str, Any]] = app["findings"]
    return findings


def test_presync_then_each_wave_waits_for_the_hook_and_for_health(make_lab: Any) -> None:
    lab = make_lab(
        [
            hook_job("migrate", "PreSync", "HookSucceeded"),
            annotated(config_map("first", {"a": "1"}), wave="0"),
            annotated(deployment("slow", "nginx:1.27"), wave="1"),
            annotated(config_map("last", {"a": "1"}), wave="2"),
        ]
    )
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    kubelet = Kubelet(agentic, ns, pod_delay_s=3.0, job_delay_s=3.0)

    with kubelet.running():
        code, out, err = finished(sync(lab))

    assert code == 0, out + err + "\n".join(kubelet.refused)
    found = writes(agentic, ns)
    job_created = first_write(found, "migrate")
    job_done = kubelet.when("job-complete", "migrate")
    pod_ready = next(at for what, _, at in kubelet.done if what == "pod-ready")
    wave0, wave1, wave2 = (first_write(found, n) for n in ("first", "slow", "last"))
    assert job_created < job_done <= wave0, "wave 0 waited for the PreSync Job to complete"
    assert (job_done - job_created).total_seconds() >= 2.5
    assert wave0 <= wave1 < pod_ready <= wave2, "wave 2 waited for the Deployment"
    assert (wave2 - wave1).total_seconds() >= 2.5
    # HookSucceeded: the Job is deleted once the sync is over, and only then.
    deleted = [at for at, verb, _, n in found if (verb, n) == ("delete", "migrate")]
    assert len(deleted) == 1 and deleted[0] >= wave2, found
    with pytest.raises(urllib.error.HTTPError):
        live(agentic, f"/apis/batch/v1/namespaces/{ns}/jobs/migrate")
    assert live(agentic, f"/api/v1/namespaces/{ns}/configmaps/last")

    # In sync now: the next sync runs no hook, waits for nothing and writes nothing.
    before = len(writes(agentic, ns))
    code, out, err = finished(sync(lab), timeout=60)
    assert code == 0, out + err
    assert writes(agentic, ns)[before:] == []


def test_a_failing_presync_hook_stops_the_sync_and_runs_the_syncfail_hook(make_lab: Any) -> None:
    lab = make_lab(
        [
            hook_job("migrate", "PreSync", "HookFailed"),
            hook_job("notify", "SyncFail"),
            config_map("settings", {"a": "1"}),
        ]
    )
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    kubelet = Kubelet(agentic, ns, failing={"migrate"})

    with kubelet.running():
        code, out, _ = finished(sync(lab))

    assert code == 1, out
    assert f"Job.batch {ns}/migrate: failed (hook failed: the test's runner failed it)" in out
    assert f"ConfigMap {ns}/settings: skipped (waiting: wave 0 not applied: hook Job.batch" in out
    assert "failed" in out.split(f"ConfigMap {ns}/settings", 1)[1].splitlines()[0]
    with pytest.raises(urllib.error.HTTPError):
        live(agentic, f"/api/v1/namespaces/{ns}/configmaps/settings")
    found = writes(agentic, ns)
    assert first_write(found, "migrate") < first_write(found, "notify"), found
    assert live(agentic, f"/apis/batch/v1/namespaces/{ns}/jobs/notify")
    # HookFailed: the failed Job is deleted.
    assert [n for _, verb, _, n in found if verb == "delete"] == ["migrate"], found
    assert [(f["kind"], f["object"]) for f in status_findings(lab)] == [
        ("hook", f"Job.batch {ns}/migrate")
    ]


def test_a_hook_never_deletes_a_live_object_of_its_name_that_the_app_does_not_own(
    make_lab: Any,
) -> None:
    seed = annotated(config_map("seed-data", {"rows": "precious"}), hook="PreSync")
    lab = make_lab([seed, config_map("settings", {"a": "1"})])
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    agentic.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    taken = agentic.request(
        "POST", f"/api/v1/namespaces/{ns}/configmaps", config_map("seed-data", {"rows": "live"})
    )

    code, out, _ = finished(sync(lab), timeout=60)

    assert code == 1, out
    line = next(line for line in out.splitlines() if f"ConfigMap {ns}/seed-data" in line)
    assert f"does not carry {TRACKING_LABEL}={APP}" in line, line
    now = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/seed-data")
    assert now["metadata"]["uid"] == taken["metadata"]["uid"]
    assert now["data"] == {"rows": "live"}
    assert [verb for _, verb, _, n in writes(agentic, ns) if n == "seed-data"] == []
    assert f"ConfigMap {ns}/settings: skipped (waiting: wave 0 not applied:" in out


# (objects, bounds, the object that never gets ready, what is skipped and why)
NEVER_READY = {
    "wave": (
        [
            annotated(deployment("never", "nginx:1.27"), wave="0"),
            annotated(config_map("after", {"a": "1"}), wave="1"),
        ],
        {"wave_timeout_s": 2, "hook_timeout_s": 60},
        "Deployment.apps {ns}/never",
        "ConfigMap {ns}/after: skipped (waiting: wave 1 not applied: "
        "Deployment.apps {ns}/never not healthy (Progressing) after 2s)",
    ),
    "hook": (
        [hook_job("migrate", "PreSync"), config_map("after", {"a": "1"})],
        {"wave_timeout_s": 60, "hook_timeout_s": 2},
        "Job.batch {ns}/migrate",
        "ConfigMap {ns}/after: skipped (waiting: wave 0 not applied: "
        "hook Job.batch {ns}/migrate not completed after 2s)",
    ),
}


def timed_out(make_lab: Any, kind: str) -> None:
    """A step that never gets ready stops the app's sync at the configured bound: what
    follows is skipped, and a finding of `kind` names the object."""
    objects, bounds, stuck, skipped = NEVER_READY[kind]
    lab = make_lab(objects, **bounds)
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]

    code, out, err = finished(sync(lab), timeout=60)

    assert code == 1, out  # the sync stopped before its end: it failed
    assert "agentic: failed in" in out
    assert f"agentic/app {APP} {stuck.format(ns=ns)}: {kind}: " in err, err
    assert skipped.format(ns=ns) in out
    with pytest.raises(urllib.error.HTTPError):
        live(agentic, f"/api/v1/namespaces/{ns}/configmaps/after")
    findings = status_findings(lab)
    assert [(f["kind"], f["object"]) for f in findings] == [(kind, stuck.format(ns=ns))]
    assert findings[0]["message"].endswith("after 2s")


def test_a_wave_that_never_becomes_healthy_times_out_with_a_finding(make_lab: Any) -> None:
    timed_out(make_lab, "wave")


def test_a_hook_that_never_completes_times_out_and_stops_the_sync(make_lab: Any) -> None:
    timed_out(make_lab, "hook")


def test_the_daemon_logs_each_step_in_order_with_its_wait(make_lab: Any, tmp_path: Path) -> None:
    lab = make_lab(
        [
            hook_job("migrate", "PreSync"),
            annotated(config_map("first", {"a": "1"}), wave="0"),
            annotated(config_map("second", {"a": "1"}), wave="1"),
        ]
    )
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]
    log = tmp_path / "daemon.log"

    def steps() -> list[dict[str, Any]]:
        lines = log.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e.get("event") == "sync.step" and e.get("app") == APP]

    with Kubelet(agentic, ns, job_delay_s=2.0).running(), log.open("w") as out:
        daemon = subprocess.Popen(
            [*CLI, "run", "--config", str(lab.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_for(lambda: len(steps()) >= 3, 90, "three sync.step events in the daemon's log")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)

    logged = steps()
    assert [(e["phase"], e["wave"], e["objects"]) for e in logged] == [
        ("PreSync", 0, 1),
        ("Sync", 0, 1),
        ("Sync", 1, 1),
    ]
    assert logged[1]["waited_s"] >= 1.5, "wave 0 waited for the PreSync Job"
    # Before its PreSync hook the app waits only for the namespace it has just created
    # (CreateNamespace=true) to show in the live view: a moment, never the Job's 2 s.
    assert logged[0]["waited_s"] < 1.0, logged[0]


def test_an_apply_the_cluster_refuses_stops_the_later_waves_and_runs_the_syncfail_hook(
    make_lab: Any,
) -> None:
    bad_port = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "bad-port"},
        "spec": {"ports": [{"port": 99999}], "selector": {"app": "x"}},
    }
    lab = make_lab(
        [
            hook_job("notify", "SyncFail"),
            annotated(config_map("first", {"a": "1"}), wave="0"),
            annotated(bad_port, wave="0"),
            annotated(config_map("later", {"a": "1"}), wave="1"),
        ]
    )
    agentic, ns = lab.clusters["agentic"], lab.namespaces["agentic"]

    with Kubelet(agentic, ns).running():
        code, out, _ = finished(sync(lab))

    assert code == 1, out
    assert f"Service {ns}/bad-port: failed" in out, out
    stopped = f"ConfigMap {ns}/later: skipped (waiting: wave 1 not applied: Service {ns}/bad-port"
    assert stopped in out, out
    # The rest of the failed wave is sent, as Argo CD sends a whole wave.
    assert live(agentic, f"/api/v1/namespaces/{ns}/configmaps/first")
    with pytest.raises(urllib.error.HTTPError):
        live(agentic, f"/api/v1/namespaces/{ns}/configmaps/later")
    assert live(agentic, f"/apis/batch/v1/namespaces/{ns}/jobs/notify")
    assert [(f["kind"], f["object"]) for f in status_findings(lab)] == [
        ("wave", f"Service {ns}/bad-port")
    ]
