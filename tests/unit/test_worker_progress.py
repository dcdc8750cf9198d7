"""A reconcile tells its worker of progress per object; the supervisor hears of it once
per reconcile and then only when the deadline moves by a second or more, since each
telling takes the lock every worker and watch shares.

The worker is the daemon's real one, with a real state store and Health; its engine
is the coalescing tests' stand-in, telling of progress as the real one does."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from reconciler.daemon import PROGRESS_EVERY_S, ClusterRecord, Worker
from reconciler.desired import ClusterDesired
from reconciler.engine import ClusterEngine
from reconciler.metrics import Metrics
from reconciler.model import App
from reconciler.report import Report
from reconciler.store import Store
from reconciler.supervise import Health, Supervisor
from tests.helpers_cluster import wait_for
from tests.unit.test_worker_coalescing import CLUSTER, DESIRED, StandInEngine

OBJECTS = 2000


@dataclass
class PerObjectProgress(StandInEngine):
    """Tells of progress once per object, as the diff and the executor do."""

    progress: Callable[[float], None] = lambda _within_s: None

    def reconcile(
        self,
        desired: ClusterDesired,
        apps: Sequence[App],
        *,
        held: Mapping[Any, str],
        requested: Mapping[str, Any],
        only: frozenset[str] | None,
    ) -> Report:
        for _ in range(OBJECTS):
            self.progress(0.0)
        self.progress(600.0)  # a step that may take long (the first list of a kind)
        self.progress(0.0)  # and back to the usual bound
        return super().reconcile(desired, apps, held=held, requested=requested, only=only)


class CountingHealth(Health):
    def __init__(self) -> None:
        super().__init__()
        self.told: list[float] = []

    def busy(self, name: str, within_s: float, doing: str = "") -> None:
        if doing == "reconcile":
            self.told.append(within_s)
        super().busy(name, within_s, doing)


def _reconciled(engine: StandInEngine, times: int) -> bool:
    return len(engine.ended) == times


def test_per_object_progress_reaches_the_supervisor_once_per_reconcile_and_each_new_bound(
    tmp_path: Path,
) -> None:
    assert PROGRESS_EVERY_S < 30.0, "far inside the shortest stall bound"
    store = Store(tmp_path / "state" / "state.db")
    health = CountingHealth()
    supervisor = Supervisor(health, threading.Event())
    engine = PerObjectProgress()
    worker = Worker(
        cast(ClusterEngine, engine),
        lambda: DESIRED,
        ClusterRecord(CLUSTER, "apply", store, Metrics("test")),
        supervisor,
        gap_s=0.0,
        stall_s=60.0,
    )
    worker.start()
    try:
        for n in (1, 2):
            worker.trigger(f"commit {n}")
            wait_for(functools.partial(_reconciled, engine, n), 10, f"reconcile {n}")
    finally:
        supervisor.stopping.set()
        worker.trigger("stop")
        assert worker.thread is not None
        worker.thread.join(5)
        store.close()
    # Per reconcile: its start (heard although the last reconcile told of progress
    # moments ago: the worker was idle in between), the longer bound and the shorter
    # one after it; the objects move the deadline by less than PROGRESS_EVERY_S.
    assert health.told == [60.0, 600.0, 60.0] * 2
