"""A cold diff sends its server-side dry-runs side by side, and backs off when the API
server throttles it: shown by the real kube-apiserver's audit log, and under its real
API Priority and Fairness (a FlowSchema that gives the reconciler's identity a tiny
share of the server and rejects the rest with 429). Objects the reconciler's own
apply left as git says need no dry-run at all (reconciler.diff.noop)."""

from __future__ import annotations

import contextlib
import datetime
import json
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.model import TRACKING_LABEL
from reconciler.store import Store
from testenv.argocd import tracked
from testenv.clusters import RECONCILER_USER, Cluster
from testenv.config import Repo, targets, write_config
from tests.builders import config_map, yaml_file
from tests.helpers_cluster import unique, wait_for
from tests.helpers_lab import SERVERS, Lab, application, kubectl, reconciler_cli

OBJECTS = 240
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"


@dataclass(frozen=True)
class DryRun:
    """One dry-run request as the API server audited it."""

    received: datetime.datetime
    completed: datetime.datetime
    code: int


def dry_runs(cluster: Cluster, namespace: str, offset: int) -> list[DryRun]:
    """The reconciler's dry-run requests in `namespace` audited after byte `offset`."""
    found = []
    with cluster.audit_log.open(encoding="utf-8") as f:
        f.seek(offset)
        for line in f:
            event: dict[str, Any] = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                event.get("stage") == "ResponseComplete"
                and event["user"]["username"] == RECONCILER_USER
                and event["verb"] == "patch"
                and ref.get("namespace") == namespace
                and "dryRun=All" in event["requestURI"]
            ):
                found.append(
                    DryRun(
                        datetime.datetime.fromisoformat(event["requestReceivedTimestamp"]),
                        datetime.datetime.fromisoformat(event["stageTimestamp"]),
                        int(event["responseStatus"]["code"]),
                    )
                )
    return found


def most_at_once(requests: list[DryRun]) -> int:
    """The most requests the server was serving at the same moment."""
    edges = sorted(
        [(r.received, 1) for r in requests] + [(r.completed, -1) for r in requests],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@contextlib.contextmanager
def bulk_app(lab: Lab, tmp_path: Path, synced: bool = False) -> Iterator[str]:
    """An app of OBJECTS ConfigMaps on agentic, as git says them; yields its namespace.
    Put there by the reconciler's sync when `synced`, else by a person's server-side
    apply (so the reconciler owns no field and must ask the server what its apply
    would do)."""
    ns = unique("bulk")
    objects = [
        config_map(f"cm-{i:04d}", {"index": str(i)}, ns, {TRACKING_LABEL: "bulk"})
        for i in range(OBJECTS)
    ]
    files: dict[str, bytes | None] = {
        "apps/bulk.yaml": yaml_file(application("bulk", "agentic", "deploy/bulk", ns)),
        "deploy/bulk/objects.yaml": yaml_file(*objects),
    }
    lab.commit(files, "bulk app")
    try:
        if synced:
            done = lab.run("sync", "--cluster", "agentic", "--app", "bulk")
            assert done.returncode == 0, done.stderr
        else:
            manifest = tmp_path / f"{ns}.yaml"
            manifest.write_bytes(yaml_file(*objects))
            kubectl(lab.clusters["agentic"], "create", "namespace", ns)
            kubectl(lab.clusters["agentic"], "apply", "--server-side", "-f", str(manifest))
        yield ns
    finally:
        with contextlib.suppress(urllib.error.HTTPError):
            lab.clusters["agentic"].request("DELETE", f"/api/v1/namespaces/{ns}")


def cold_diff(
    lab: Lab, tmp_path: Path, concurrency: int, state: Path | None = None, app: str = "bulk"
) -> tuple[int, str, str]:
    """`reconciler diff` of the bulk app (or `app`) from an empty state directory (or
    `state`), sending at most `concurrency` dry-runs at once; its exit code, stdout
    and stderr."""
    state = state or tmp_path / f"state-{concurrency}-{unique('cold')}"
    config = write_config(
        state.with_suffix(".toml"),
        [Repo("lab", lab.clone, "https://git.test/lab.git")],
        targets(lab.clusters, SERVERS),
        {"daemon": {"state_dir": state, "metrics_address": "", "dry_run_concurrency": concurrency}},
    )
    done = reconciler_cli(config, "diff", "--app", app, "-o", "json")
    return done.returncode, done.stdout, done.stderr


def remembered(state: Path, cluster: str, namespace: str) -> set[str]:
    """The objects of `namespace` the state holds an in-sync verdict for."""
    store = Store(state / "state.db", readonly=True)
    try:
        return {ref.name for ref in store.in_sync(cluster) if ref.namespace == namespace}
    finally:
        store.close()


def test_objects_found_in_sync_without_a_dry_run_are_remembered_for_the_next_start(
    lab: Lab, tmp_path: Path
) -> None:
    """The local no-op test (apply-mode) and the diff of what Argo CD applied
    server-side (report-mode) leave in-sync verdicts, as a dry-run does: a restart
    does not look at those objects again. Drift is never remembered as in sync."""
    agentic, prod = lab.clusters["agentic"], lab.clusters["prod"]
    state = tmp_path / f"state-{unique('kept')}"
    with bulk_app(lab, tmp_path, synced=True) as ns:
        kubectl(agentic, "-n", ns, "patch", "configmap", "cm-0017", "-p", '{"data":{"index":"x"}}')
        offset = agentic.audit_log.stat().st_size
        code, out, err = cold_diff(lab, tmp_path, 4, state)
        assert len(dry_runs(agentic, ns, offset)) == 1, "only the edited object is asked"
        assert code == 1 and [row["ref"]["name"] for row in json.loads(out)] == ["cm-0017"], err
        expected = {f"cm-{i:04d}" for i in range(OBJECTS)} - {"cm-0017"}
        assert remembered(state, "agentic", ns) == expected

    ns = unique("argo")
    objects = [config_map(f"cm-{i:03d}", {"index": str(i)}, ns) for i in range(20)]
    lab.commit(
        {
            "apps/argo.yaml": yaml_file(application("argo", "prod", "deploy/argo", ns)),
            "deploy/argo/objects.yaml": yaml_file(*objects),
        },
        "an app Argo CD syncs on prod",
    )
    manifest = tmp_path / f"{ns}.yaml"
    manifest.write_bytes(yaml_file(*(tracked(o, "argo") for o in objects)))  # as Argo CD does
    kubectl(prod, "create", "namespace", ns)
    kubectl(
        prod, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(manifest)
    )
    kubectl(prod, "-n", ns, "patch", "configmap", "cm-007", "-p", '{"data":{"index":"x"}}')
    code, out, err = cold_diff(lab, tmp_path, 4, state, app="argo")
    assert code == 1 and [row["ref"]["name"] for row in json.loads(out)] == ["cm-007"], err
    assert remembered(state, "prod", ns) == {f"cm-{i:03d}" for i in range(20)} - {"cm-007"}


def test_a_cold_diff_sends_dry_runs_side_by_side_and_reports_as_one_at_a_time(
    lab: Lab, tmp_path: Path
) -> None:
    agentic = lab.clusters["agentic"]
    with bulk_app(lab, tmp_path) as ns:
        # Some drift and one object the server refuses, so the reports have content.
        kubectl(agentic, "-n", ns, "patch", "configmap", "cm-0017", "-p", '{"data":{"index":"x"}}')
        kubectl(agentic, "-n", ns, "patch", "configmap", "cm-0201", "-p", '{"data":{"index":"y"}}')
        objects = [config_map(f"cm-{i:04d}", {"index": str(i)}, ns) for i in range(OBJECTS)]
        objects[99]["data"] = {"not a valid key!": "v"}
        lab.commit({"deploy/bulk/objects.yaml": yaml_file(*objects)}, "one bad object")

        reports = {}
        for concurrency in (1, 16):
            offset = agentic.audit_log.stat().st_size
            reports[concurrency] = cold_diff(lab, tmp_path, concurrency)
            sent = dry_runs(agentic, ns, offset)
            assert len(sent) == OBJECTS, "a cold diff dry-runs every object once"
            if concurrency == 1:
                assert most_at_once(sent) == 1
            else:
                assert 2 <= most_at_once(sent) <= concurrency

    code, out, err = reports[16]
    assert reports[1] == reports[16], "the same report, in the same order, at any concurrency"
    assert [row["ref"]["name"] for row in json.loads(out)] == ["cm-0017", "cm-0201"]
    assert "cm-0099" in err and "Invalid" in err, err
    assert code != 0


def test_a_throttling_server_gets_fewer_dry_runs_at_once_and_its_retry_after_is_waited(
    lab: Lab, tmp_path: Path
) -> None:
    agentic = lab.clusters["agentic"]
    with bulk_app(lab, tmp_path) as ns, throttled(agentic, ns):
        offset = agentic.audit_log.stat().st_size
        code, out, err = cold_diff(lab, tmp_path, 16)
        sent = dry_runs(agentic, ns, offset)

    assert code == 0 and json.loads(out) == [], err
    refused = [r for r in sent if r.code == 429]
    assert refused, "the server's API Priority and Fairness refused some dry-runs"
    assert len([r for r in sent if r.code == 200]) == OBJECTS, "each one succeeded in the end"
    # After a 429, no dry-run leaves before the Retry-After (APF says at least 1 s):
    # those received soon after it were already on their way.
    first = min(r.completed for r in refused)
    soon, wait = datetime.timedelta(seconds=0.3), datetime.timedelta(seconds=0.9)
    assert not [r for r in sent if first + soon < r.received < first + wait]
    assert len(refused) < len(sent) // 4, "the reconciler slowed down rather than hammering"


def test_objects_the_reconciler_applied_as_git_says_need_no_dry_run_on_a_cold_diff(
    lab: Lab, tmp_path: Path
) -> None:
    agentic = lab.clusters["agentic"]
    with bulk_app(lab, tmp_path, synced=True) as ns:
        offset = agentic.audit_log.stat().st_size
        code, out, err = cold_diff(lab, tmp_path, 4)
        assert dry_runs(agentic, ns, offset) == [], "nothing to ask: each apply is a no-op"
        assert code == 0 and json.loads(out) == [], err

        # A person's edit takes the field from the reconciler; a git change moves the
        # desired value: both are asked of the server again, and both are drift.
        kubectl(agentic, "-n", ns, "patch", "configmap", "cm-0017", "-p", '{"data":{"index":"x"}}')
        objects = [
            config_map(f"cm-{i:04d}", {"index": str(i)}, ns, {TRACKING_LABEL: "bulk"})
            for i in range(OBJECTS)
        ]
        objects[42]["data"]["added"] = "in git"
        lab.commit({"deploy/bulk/objects.yaml": yaml_file(*objects)}, "cm-0042 grows a key")
        offset = agentic.audit_log.stat().st_size
        code, out, err = cold_diff(lab, tmp_path, 4)
        assert len(dry_runs(agentic, ns, offset)) == 2, "only the two that may change"
    assert sorted(row["ref"]["name"] for row in json.loads(out)) == ["cm-0017", "cm-0042"], err


@contextlib.contextmanager
def throttled(cluster: Cluster, namespace: str) -> Iterator[None]:
    """API Priority and Fairness on `cluster` gives the reconciler's patches of ConfigMaps
    in `namespace` the smallest share of the server and rejects what does not fit."""
    name = unique("reconciler-tiny")
    cluster.request(
        "POST",
        f"{FLOWCONTROL}/prioritylevelconfigurations",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 1,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
    )
    cluster.request(
        "POST",
        f"{FLOWCONTROL}/flowschemas",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": name},
                "matchingPrecedence": 100,
                "rules": [
                    {
                        "subjects": [{"kind": "User", "user": {"name": RECONCILER_USER}}],
                        "resourceRules": [
                            {
                                "verbs": ["patch"],
                                "apiGroups": [""],
                                "resources": ["configmaps"],
                                "namespaces": [namespace],
                            }
                        ],
                    }
                ],
            },
        },
    )
    try:

        def in_force() -> bool:
            status = cluster.request("GET", f"{FLOWCONTROL}/flowschemas/{name}").get("status")
            conditions = (status or {}).get("conditions") or []
            return any(c["type"] == "Dangling" and c["status"] == "False" for c in conditions)

        wait_for(in_force, 30, "the API server to take the FlowSchema in")
        yield
    finally:
        for kind in ("flowschemas", "prioritylevelconfigurations"):
            with contextlib.suppress(urllib.error.HTTPError):
                cluster.request("DELETE", f"{FLOWCONTROL}/{kind}/{name}")
