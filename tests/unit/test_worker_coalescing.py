"""When a cluster's worker reconciles: at once on the first trigger, once more for
every trigger that came while it ran (their reasons and scopes merged), never on its
own, never for the watch event of its own write (its echo), and never before the
live cache holds what the last reconcile wrote.

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
from reconciler.cluster.errors import Unreachable
from reconciler.daemon import ClusterRecord, Worker
from reconciler.desired import ClusterDesired, Desired
from reconciler.engine import ClusterEngine
from reconciler.metrics import Metrics
from reconciler.model import App, Manifest, ObjectRef, Origin, Result, Violation
from reconciler.report import Outcome, Report
from reconciler.store import Store
from reconciler.supervise import Health, Supervisor
from tests.builders import config_map
from tests.helpers_cluster import wait_for

CLUSTER = "agentic"
WRITTEN = ObjectRef("", "ConfigMap", "lab", "written")
# An object of another app ("side"), which a person edits.
EDITED = ObjectRef("", "ConfigMap", "lab", "edited")
# The resourceVersion the stand-in's write of WRITTEN is answered with.
ANSWERED = "7"
# A CRD of the "lab" app: other apps' objects may be served by it.
WIDGETS = ObjectRef("apiextensions.k8s.io", "CustomResourceDefinition", "", "widgets.example.com")


def _crd(generation: int) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": WIDGETS.name, "generation": generation},
    }


DESIRED = Desired(
    clusters={
        CLUSTER: ClusterDesired(
            CLUSTER,
            (
                Manifest(WRITTEN, config_map("written", {}), Origin("lab", "c1", "lab", "a.yaml")),
                Manifest(EDITED, config_map("edited", {}), Origin("lab", "c1", "side", "b.yaml")),
                Manifest(WIDGETS, _crd(1), Origin("lab", "c1", "lab", "crd.yaml")),
            ),
            ("lab", "side"),
            (),
        )
    },
    errors=(),
    catalogue=Catalogue((), ()),
)


@dataclass
class _LiveCache:
    """Every kind listed; `objects` are the live objects it holds."""

    objects: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)

    def unlisted(self) -> dict[Any, str]:
        return {}

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return self.objects.get(ref)


@dataclass
class StandInEngine:
    """Records when each reconcile started and ended and the live version of WRITTEN
    it read and what it covered; holds each one until released while `hold` is set. With
    `echo_after`, the first reconcile writes WRITTEN (told to `wrote`, as the real
    engine tells it) and its watch event (`on_change`) arrives that late."""

    name: str = CLUSTER
    report_only: bool = False
    cache: _LiveCache = field(default_factory=_LiveCache)
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    inside: threading.Event = field(default_factory=threading.Event)
    started: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    echo_after: float | None = None
    on_change: Callable[[ObjectRef, str, str], None] = lambda _ref, _event, _version: None
    wrote: Callable[[ObjectRef, str], None] = lambda _ref, _version: None
    scopes: list[frozenset[str] | None] = field(default_factory=list)
    live: str = "before the write"
    read: list[str] = field(default_factory=list)
    watch: threading.Timer | None = None  # delivers the echo
    # Raised by each reconcile while set (the cluster stopped answering).
    fails: Exception | None = None
    # Apps each reconcile takes along (sharing an object with those asked for).
    along: frozenset[str] = frozenset()
    violations: tuple[Violation, ...] = ()

    def pin_identity(self) -> None:
        pass

    def reconcile(
        self,
        desired: ClusterDesired,
        apps: Sequence[App],
        *,
        held: Mapping[Any, str],
        requested: Mapping[str, Any],
        only: frozenset[str] | None,
    ) -> Report:
        self.started.append(time.monotonic())
        self.scopes.append(only)
        self.read.append(self.live)
        self.inside.set()
        if self.hold:
            assert self.release.wait(10), "the test never released the reconcile"
        if self.fails is not None:
            self.ended.append(time.monotonic())
            raise self.fails
        outcomes: tuple[Outcome, ...] = ()
        if self.echo_after is not None and len(self.started) == 1:
            outcomes = (Outcome("lab", WRITTEN, Result.CONFIGURED),)
            self.wrote(WRITTEN, ANSWERED)
            self.watch = threading.Timer(self.echo_after, self._echo)
            self.watch.daemon = True
            self.watch.start()
        self.ended.append(time.monotonic())
        return Report(
            cluster=self.name,
            mode="apply",
            drifts=(),
            violations=self.violations,
            errors=(),
            outcomes=outcomes,
            scope=None if only is None else only | self.along,
        )

    def _echo(self) -> None:
        self.live = "after the write"
        self.on_change(WRITTEN, "MODIFIED", ANSWERED)


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

    def reconcile(self, reasons: set[str], only: frozenset[str] | None = None) -> Report | None:
        self.reasons.append(set(reasons))
        return super().reconcile(reasons, only)


@dataclass
class Rig:
    engine: StandInEngine
    worker: RecordingWorker
    health: LoopCounting
    metrics: Metrics

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
    metrics = Metrics("test")
    worker = RecordingWorker(
        cast(ClusterEngine, engine),
        lambda: DESIRED,
        ClusterRecord(CLUSTER, "apply", store, metrics),
        supervisor,
        gap_s=gap_s,
        stall_s=60.0,
    )
    worker.reasons = []
    engine.on_change = worker.on_change
    worker.start()
    yield Rig(engine, worker, health, metrics)
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


def _after_a_first_reconcile(rig: Rig) -> None:
    """The worker knows which app owns WRITTEN and EDITED once it has reconciled."""
    rig.worker.trigger("resync")
    wait_for(lambda: len(rig.engine.ended) == 1, 5, "the first reconcile")


def test_the_echo_of_its_own_write_triggers_no_reconcile(rig: Rig) -> None:
    rig.engine.echo_after = 0.2
    _after_a_first_reconcile(rig)
    wait_for(lambda: rig.engine.live == "after the write", 5, "the echo")
    rig.after_turns(3)
    assert len(rig.engine.started) == 1, rig.worker.reasons


def test_an_echo_that_comes_before_the_writes_answer_triggers_no_reconcile(rig: Rig) -> None:
    # A loaded client may read the apply's answer after the watch event it caused.
    rig.engine.hold = True
    rig.worker.trigger("resync")
    assert rig.engine.inside.wait(5)
    rig.worker.on_change(WRITTEN, "MODIFIED", ANSWERED)
    rig.engine.echo_after = 30.0  # the answer, which names ANSWERED, is read now
    rig.engine.hold = False
    rig.engine.release.set()
    wait_for(lambda: len(rig.engine.ended) == 1, 5, "the reconcile")
    rig.after_turns(3)
    assert len(rig.engine.started) == 1, rig.worker.reasons


def test_another_version_of_a_written_object_is_a_change_of_its_app_alone(rig: Rig) -> None:
    rig.engine.echo_after = 30.0
    _after_a_first_reconcile(rig)
    rig.worker.on_change(WRITTEN, "MODIFIED", "8")  # a person's edit after the write
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the reconcile of the edit")
    assert rig.engine.scopes == [None, {"lab"}]
    assert rig.worker.reasons[1] == {f"watch modified {WRITTEN}"}


def test_an_edit_during_a_reconcile_makes_a_follow_up_of_its_app(rig: Rig) -> None:
    _after_a_first_reconcile(rig)
    rig.engine.hold = True
    rig.engine.inside.clear()
    rig.worker.trigger("commit", {"lab"})
    assert rig.engine.inside.wait(5)
    rig.worker.on_change(EDITED, "MODIFIED", "9")
    rig.engine.hold = False
    rig.engine.release.set()
    wait_for(lambda: len(rig.engine.ended) == 3, 5, "the follow-up")
    assert rig.engine.scopes == [None, {"lab"}, {"side"}]


def test_an_event_on_an_object_no_app_owns_triggers_nothing(rig: Rig) -> None:
    _after_a_first_reconcile(rig)
    rig.worker.on_change(ObjectRef("", "ConfigMap", "lab", "stranger"), "MODIFIED", "3")
    rig.after_turns(3)
    assert len(rig.engine.started) == 1


def test_triggers_of_some_apps_merge_and_one_of_the_cluster_covers_all(rig: Rig) -> None:
    rig.engine.hold = True
    rig.worker.trigger("start")
    assert rig.engine.inside.wait(5)
    rig.worker.trigger("commit", {"lab"})
    rig.worker.trigger("watch modified x", {"side"})
    rig.engine.hold = False
    rig.engine.release.set()
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the follow-up of two apps")
    rig.worker.trigger("commit", {"lab"})
    rig.worker.trigger("resync")
    wait_for(lambda: len(rig.engine.ended) == 3, 5, "the resync")
    assert rig.engine.scopes == [None, {"lab", "side"}, None]


def test_after_a_failed_reconcile_of_some_apps_the_next_covers_the_whole_cluster(
    rig: Rig,
) -> None:
    # What the commit moved in "lab" was never applied: a later event of another app
    # must not leave it waiting for the resync.
    _after_a_first_reconcile(rig)
    rig.engine.fails = Unreachable(CLUSTER, "connection refused")
    rig.worker.trigger("commit", {"lab"})
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the failed reconcile")
    rig.engine.fails = None
    rig.worker.on_change(EDITED, "MODIFIED", "9")
    wait_for(lambda: len(rig.engine.ended) == 3, 5, "the reconcile of the edit")
    assert rig.engine.scopes == [None, {"lab"}, None]


def test_a_deletion_is_never_taken_for_the_echo_of_a_write(rig: Rig) -> None:
    # The cache makes up deletions (a relist, a kind no longer listable) carrying the
    # last version it held: that of the daemon's write, whose echo never came.
    rig.engine.echo_after = 30.0
    _after_a_first_reconcile(rig)
    rig.worker.on_change(WRITTEN, "DELETED", ANSWERED)
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the reconcile of the deletion")
    assert rig.engine.scopes == [None, {"lab"}]


def test_a_crds_status_reconciles_its_app_and_a_new_spec_the_whole_cluster(rig: Rig) -> None:
    rig.engine.cache.objects[WIDGETS] = _crd(1)
    _after_a_first_reconcile(rig)
    # The API server marks the CRD Established: a new version, the same generation.
    rig.worker.on_change(WIDGETS, "MODIFIED", "20")
    wait_for(lambda: len(rig.engine.ended) == 2, 5, "the reconcile of the status update")
    rig.engine.cache.objects[WIDGETS] = _crd(2)
    rig.worker.on_change(WIDGETS, "MODIFIED", "21")
    wait_for(lambda: len(rig.engine.ended) == 3, 5, "the reconcile of the new spec")
    assert rig.engine.scopes == [None, {"lab"}, None]


def test_the_violations_of_apps_a_reconcile_took_along_are_counted_once(rig: Rig) -> None:
    broken = Violation("no-latest", CLUSTER, EDITED, "side", "image :latest", "desired")
    rig.engine.violations, rig.engine.along = (broken,), frozenset({"side"})
    _after_a_first_reconcile(rig)
    for runs in (2, 3, 4):
        rig.worker.trigger("commit", {"lab"})  # "side" shares an object with "lab"
        wait_for(_reconciled(rig, runs), 5, f"reconcile {runs}")
    rig.after_turns(1)
    assert _violations(rig.metrics) == 1


def _reconciled(rig: Rig, runs: int) -> Callable[[], bool]:
    return lambda: len(rig.engine.ended) >= runs


def _violations(metrics: Metrics) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "reconciler_policy_violations":
                return float(sample.value)
    raise AssertionError("no violations exported")
