"""When a cluster's worker reconciles: at once on the first trigger, once more for
every trigger that came while it ran (their reasons merged), never on its own, and
never before the live cache holds what the last reconcile wrote.

The worker is the daemon's real one, with a real state store and metrics; only its
engine is a stand-in that records each reconcile and can be held inside one, so a
test decides what arrives while a reconcile runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from reconciler import daemon
from reconciler.catalogue import Catalogue
from reconciler.daemon import ClusterRecord, Worker
from reconciler.desired import ClusterDesired, Desired
from reconciler.engine import ClusterEngine
from reconciler.metrics import Metrics
from reconciler.model import App, ObjectRef, Result
from reconciler.report import Outcome, Report
from reconciler.store import Store
from reconciler.supervise import Health, Supervisor
from tests.helpers_cluster import wait_for

CLUSTER = "agentic"
WRITTEN = ObjectRef("", "ConfigMap", "lab", "written")
DESIRED = Desired(
    clusters={CLUSTER: ClusterDesired(CLUSTER, (), (), ())},
    errors=(),
    catalogue=Catalogue((), ()),
)


class _NoKindsMissing:
    def unlisted(self) -> dict[Any, str]:
        return {}


@dataclass
class StandInEngine:
    """Records when each reconcile started and ended and the live version of WRITTEN
    it read; holds each one until released while `hold` is set. With `echo_after`, the
    first reconcile writes WRITTEN and its watch event (`on_change`) arrives that late."""

    name: str = CLUSTER
    report_only: bool = False
    cache: _NoKindsMissing = field(default_factory=_NoKindsMissing)
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    inside: threading.Event = field(default_factory=threading.Event)
    started: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    echo_after: float | None = None
    on_change: Callable[[ObjectRef, str], None] = lambda _ref, _event: None
    live: str = "before the write"
    read: list[str] = field(default_factory=list)
    watch: threading.Timer | None = None  # delivers the echo

    def pin_identity(self) -> None:
        pass

    def reconcile(
        self,
        desired: ClusterDesired,
        apps: Sequence[App],
        *,
        held: Mapping[Any, str],
        requested: Mapping[str, Any],
    ) -> Report:
        self.started.append(time.monotonic())
        self.read.append(self.live)
        self.inside.set()
        if self.hold:
            assert self.release.wait(10), "the test never released the reconcile"
        outcomes: tuple[Outcome, ...] = ()
        if self.echo_after is not None and len(self.started) == 1:
            outcomes = (Outcome("lab", WRITTEN, Result.CONFIGURED),)
            self.watch = threading.Timer(self.echo_after, self._echo)
            self.watch.daemon = True
            self.watch.start()
        self.ended.append(time.monotonic())
        return Report(
            cluster=self.name, mode="apply", drifts=(), violations=(), errors=(), outcomes=outcomes
        )

    def _echo(self) -> None:
        self.live = "after the write"
        self.on_change(WRITTEN, "MODIFIED")


class LoopCounting(Health):
    """Counts the worker loop's turns: each one begins by reporting the worker idle."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    def idle(self, name: str) -> None:
        self.turns += 1
        super().idle(name)


class RecordingWorker(Worker):
    """The real worker, keeping the reasons each reconcile was started for."""

    reasons: list[set[str]]

    def reconcile(self, reasons: set[str]) -> Report | None:
        self.reasons.append(set(reasons))
        return super().reconcile(reasons)


@dataclass
class Rig:
    engine: StandInEngine
    worker: RecordingWorker
    health: LoopCounting

    def after_turns(self, n: int) -> None:
        """Wait until the worker's loop has come round `n` more times (each turn waits
        up to a second for a trigger): what it would do unasked, it has done."""
        target = self.health.turns + n
        wait_for(lambda: self.health.turns >= target, 10, f"{n} turns of the worker loop")


@pytest.fixture
def rig(tmp_path: Path, gap_s: float) -> Iterator[Rig]:
    store = Store(tmp_path / "state" / "state.db")
    health = LoopCounting()
    supervisor = Supervisor(health, threading.Event())
    engine = StandInEngine()
    worker = RecordingWorker(
        cast(ClusterEngine, engine),
        lambda: DESIRED,
        ClusterRecord(CLUSTER, "apply", store, Metrics("test")),
        supervisor,
        gap_s=gap_s,
        stall_s=60.0,
    )
    worker.reasons = []
    engine.on_change = worker.on_change
    worker.start()
    yield Rig(engine, worker, health)
    engine.release.set()
    if engine.watch is not None:
        engine.watch.cancel()
    supervisor.stopping.set()
    worker.trigger("stop")  # wakes the loop, which sees it is stopping
    assert worker.thread is not None
    worker.thread.join(5)
    store.close()


@pytest.fixture
def gap_s() -> float:
    return 0.05


def test_an_idle_worker_reconciles_nothing(rig: Rig) -> None:
    rig.after_turns(3)
    assert rig.engine.started == []
    assert rig.worker.reasons == []


@pytest.mark.parametrize("gap_s", [0.05, 5.0])
def test_the_first_trigger_reconciles_at_once_whatever_the_gap(rig: Rig) -> None:
    triggered = time.monotonic()
    rig.worker.trigger("commit")
    wait_for(lambda: len(rig.engine.ended) == 1, 5, "the reconcile")
    assert rig.engine.started[0] - triggered < 0.1
    assert rig.worker.reasons == [{"commit"}]


def test_a_trigger_long_after_the_last_reconcile_does_not_wait_either(rig: Rig) -> None:
    rig.worker.trigger("commit")
    wait_for(lambda: len(rig.engine.ended) == 1, 5, "the first reconcile")
    rig.after_turns(2)
    triggered = time.monotonic()
    rig.worker.trigger("watch modified ConfigMap/lab/a")
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the second reconcile")
    assert rig.engine.started[1] - triggered < 0.1


def test_triggers_during_a_reconcile_make_exactly_one_follow_up_with_every_reason(
    rig: Rig,
) -> None:
    rig.engine.hold = True
    rig.worker.trigger("commit")
    assert rig.engine.inside.wait(5)
    during = {f"watch modified ConfigMap/lab/cm-{i}" for i in range(20)} | {"resync"}
    for reason in sorted(during):
        rig.worker.trigger(reason)
    rig.engine.hold = False
    rig.engine.release.set()
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the follow-up")
    rig.after_turns(2)
    assert rig.worker.reasons == [{"commit"}, during]
    assert len(rig.engine.started) == 2


@pytest.mark.parametrize("gap_s", [0.3])
def test_a_stream_of_events_never_makes_back_to_back_reconciles(rig: Rig) -> None:
    # A controller writing status (or the reconciler's own writes echoing back) sends
    # watch events all the time: each reconcile waits the gap after the one before.
    stop = threading.Event()

    def stream() -> None:
        while not stop.wait(0.005):
            rig.worker.trigger("watch modified Deployment/lab/web")

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_for(lambda: len(rig.engine.ended) >= 4, 10, "four reconciles")
    finally:
        stop.set()
        streamer.join(5)
    starts, ends = rig.engine.started, rig.engine.ended
    gaps = [start - end for start, end in zip(starts[1:], ends, strict=False)]
    assert gaps and min(gaps) >= 0.3, gaps


def _first_writes_and_a_commit_comes_during_it(rig: Rig, echo_after: float) -> None:
    rig.engine.hold, rig.engine.echo_after = True, echo_after
    rig.worker.trigger("resync")
    assert rig.engine.inside.wait(5)
    rig.worker.trigger("commit")
    rig.engine.hold = False
    rig.engine.release.set()
    wait_for(lambda: len(rig.engine.ended) == 2, 10, "the follow-up")


def test_a_follow_up_reads_the_live_cache_after_the_echo_of_the_last_writes(rig: Rig) -> None:
    # The watch event of the first reconcile's write comes 0.3 s after it (a loaded API
    # server): a follow-up started before would read the object as it was before the
    # write, take the reconciler's own write for drift and write it again.
    _first_writes_and_a_commit_comes_during_it(rig, echo_after=0.3)
    assert rig.engine.read == ["before the write", "after the write"]
    assert rig.engine.started[1] - rig.engine.ended[0] < 1.0


def test_a_follow_up_waits_for_an_echo_that_never_comes_only_so_long(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "ECHO_WAIT_S", 0.5)
    _first_writes_and_a_commit_comes_during_it(rig, echo_after=30.0)
    waited = rig.engine.started[1] - rig.engine.ended[0]
    assert 0.5 <= waited < 1.5
