"""The kubelet and the Job runner the test clusters lack, played through the real API.

The test clusters run kube-apiserver and kube-controller-manager only: Pods never
run, so Deployments never become available and Jobs never finish by themselves.
`Kubelet` does what the node would, from a thread, through the status subresource:
it marks a namespace's Pods Running and Ready (the ReplicaSet and Deployment
controllers then count them available), and finishes Jobs that name the tests as
their runner (`spec.managedBy: RUNNER`, so the built-in Job controller leaves them
alone), each once it has existed for a chosen delay. What it did, and when, is kept
for the tests to compare with the reconciler's writes.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
import urllib.error
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from testenv.clusters import Cluster

RUNNER = "tests.kernow.io/job-runner"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _stamp(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Kubelet:
    """Plays the node and the Job runner in `namespace` (see the module docstring).
    Pods become Ready `pod_delay_s` after they are first seen, Jobs finish `job_delay_s`
    after; Jobs named in `failing` fail instead of completing."""

    cluster: Cluster
    namespace: str
    pod_delay_s: float = 0.0
    job_delay_s: float = 0.0
    failing: Collection[str] = ()
    # (what, name, when): "pod-ready", "job-complete" or "job-failed".
    done: list[tuple[str, str, datetime.datetime]] = field(default_factory=list)
    # What the API server refused, for a test's failure message.
    refused: list[str] = field(default_factory=list)
    _first_seen: dict[str, float] = field(default_factory=dict)
    _handled: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def running(self) -> Iterator[Kubelet]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)

    def when(self, what: str, name: str) -> datetime.datetime:
        return next(at for w, n, at in self.done if (w, n) == (what, name))

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._pods()
                self._jobs()
            except urllib.error.HTTPError as exc:
                self.refused.append(f"{exc.url}: {exc.code} {exc.read().decode(errors='replace')}")
            except OSError as exc:  # the cluster is busy or shutting down: try again
                self.refused.append(str(exc))

    def _due(self, uid: str, delay: float) -> bool:
        first = self._first_seen.setdefault(uid, time.monotonic())
        return uid not in self._handled and time.monotonic() - first >= delay

    def _pods(self) -> None:
        pods = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        for pod in pods["items"]:
            if not self._due(pod["metadata"]["uid"], self.pod_delay_s):
                continue
            at = now()
            ready = {"type": "Ready", "status": "True", "lastTransitionTime": _stamp(at)}
            pod["status"] = {
                "phase": "Running",
                "startTime": _stamp(at),
                "conditions": [ready, {**ready, "type": "ContainersReady"}],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": _stamp(at)}},
                    }
                    for c in pod["spec"]["containers"]
                ],
            }
            self._put_status("api/v1", "pods", pod)
            self._handled.add(pod["metadata"]["uid"])
            self.done.append(("pod-ready", pod["metadata"]["name"], at))

    def _jobs(self) -> None:
        jobs = self.cluster.request("GET", f"/apis/batch/v1/namespaces/{self.namespace}/jobs")
        for job in jobs["items"]:
            if job["spec"].get("managedBy") != RUNNER:
                continue
            if not self._due(job["metadata"]["uid"], self.job_delay_s):
                continue
            name, at = job["metadata"]["name"], now()
            job["status"] = self._job_status(name in self.failing, at)
            self._put_status("apis/batch/v1", "jobs", job)
            self._handled.add(job["metadata"]["uid"])
            self.done.append(("job-failed" if name in self.failing else "job-complete", name, at))

    @staticmethod
    def _job_status(failed: bool, at: datetime.datetime) -> dict[str, Any]:
        def condition(kind: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": "True",
                "reason": "BackoffLimitExceeded" if failed else "Completed",
                "message": "the test's runner failed it" if failed else "done",
                "lastProbeTime": _stamp(at),
                "lastTransitionTime": _stamp(at),
            }

        if failed:
            return {
                "startTime": _stamp(at),
                "failed": 1,
                "conditions": [condition("FailureTarget"), condition("Failed")],
            }
        return {
            "startTime": _stamp(at),
            "completionTime": _stamp(at),
            "succeeded": 1,
            "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
        }

    def _put_status(self, api: str, plural: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        path = f"/{api}/namespaces/{self.namespace}/{plural}/{name}/status"
        self.cluster.request("PUT", path, obj)
