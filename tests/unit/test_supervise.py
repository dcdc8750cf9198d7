"""The supervisor's bookkeeping: which part is stuck, which is restarting, and that a
unit that raises is reported and started again rather than lost (invariant 9)."""

from __future__ import annotations

import threading
import time

from reconciler.store import ComponentRecord
from reconciler.supervise import Health, Supervisor, short
from tests.helpers_cluster import wait_for


def _states(health: Health) -> dict[str, ComponentRecord]:
    return {c.name: c for c in health.snapshot()}


def test_a_part_past_its_deadline_is_stuck_and_progress_clears_it() -> None:
    health = Health()
    health.busy("worker agentic", 0.05, "reconcile")
    assert _states(health)["worker agentic"].state == "busy"
    wait_for(lambda: _states(health)["worker agentic"].state == "stuck", 5, "the deadline")
    assert "no progress for" in _states(health)["worker agentic"].detail
    assert "(reconcile)" in _states(health)["worker agentic"].detail
    health.busy("worker agentic", 60, "reconcile")
    assert _states(health)["worker agentic"].state == "busy"
    health.idle("worker agentic")
    assert _states(health)["worker agentic"].state == "ok"


def test_trouble_is_degraded_not_stuck_until_it_is_over() -> None:
    health = Health()
    health.idle("watch agentic ConfigMap")
    health.trouble("watch agentic ConfigMap", "list ConfigMap: Forbidden (HTTP 403)")
    part = _states(health)["watch agentic ConfigMap"]
    assert (part.state, part.detail) == ("trouble", "list ConfigMap: Forbidden (HTTP 403)")
    health.trouble("watch agentic ConfigMap", None)
    assert _states(health)["watch agentic ConfigMap"].state == "ok"


def test_a_dead_thread_makes_its_part_stuck() -> None:
    health = Health()
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    health.register("log-shipper", thread)
    assert _states(health)["log-shipper"].state == "stuck"


def test_failures_are_counted_redacted_and_reported_once_each() -> None:
    told: list[tuple[str, str, bool]] = []
    health = Health(
        on_failure=lambda name, exc, repeated: told.append((name, short(exc), repeated)),
        redact=lambda text: text.replace("hunter2", "<redacted>"),
    )
    health.failed("worker agentic", ValueError("password hunter2 rejected"))
    part = _states(health)["worker agentic"]
    assert part.errors == 1
    assert part.last_error == "ValueError: password <redacted> rejected"
    assert part.last_error_at is not None
    assert part.state == "ok", "a failure contained by its caller does not restart the part"
    health.failed("worker agentic", ValueError("password hunter2 rejected"))
    health.failed("worker agentic", KeyError("type"))
    assert [(name, repeated) for name, _, repeated in told] == [
        ("worker agentic", False),
        ("worker agentic", True),
        ("worker agentic", False),
    ], "a repeat is told as one, so its traceback is not logged again"
    assert told[0][1] == "ValueError: password hunter2 rejected", "redaction is the caller's"


def test_a_unit_that_raises_is_restarted_with_backoff_and_reported() -> None:
    health = Health()
    stopping = threading.Event()
    runs: list[float] = []

    def unit() -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise KeyError("type")
        stopping.wait()

    supervisor = Supervisor(health, stopping, backoff=(0.05, 0.2))
    thread = supervisor.thread("watch agentic ConfigMap", unit)
    try:
        wait_for(lambda: len(runs) == 3, 10, "two restarts")
        part = _states(health)["watch agentic ConfigMap"]
        assert part.errors == 2
        assert part.last_error == "KeyError: 'type'"
        assert thread.is_alive()
    finally:
        stopping.set()
        thread.join(5)
    # Jittered doubling from 0.05 s: at least half of 0.05, then half of 0.1.
    assert runs[1] - runs[0] >= 0.025 and runs[2] - runs[1] >= 0.05, "no hot loop"


def test_a_unit_that_ends_by_itself_is_no_longer_followed() -> None:
    health = Health()
    thread = Supervisor(health, threading.Event()).thread("git-watch", lambda: None)
    thread.join(5)
    assert "git-watch" not in _states(health)


def test_a_part_started_as_the_daemon_stops_is_not_reported_dead() -> None:
    # SIGTERM just after daemon.ready: the git watcher and the request server are
    # started with `stopping` already set, and end before their first turn.
    health = Health()
    stopping = threading.Event()
    stopping.set()
    ran: list[str] = []
    thread = Supervisor(health, stopping).thread("git-watch", lambda: ran.append("ran"))
    thread.join(5)
    assert not thread.is_alive() and ran == []
    assert "git-watch" not in _states(health), "a stopping daemon's part is not stuck"


def test_a_part_waiting_to_restart_when_the_daemon_stops_is_not_reported_dead() -> None:
    health = Health()
    stopping = threading.Event()
    failed = threading.Event()

    def unit() -> None:
        failed.set()
        raise KeyError("type")

    thread = Supervisor(health, stopping, backoff=(30.0, 60.0)).thread("requests", unit)
    assert failed.wait(5)
    wait_for(lambda: _states(health)["requests"].state == "restarting", 5, "the backoff")
    stopping.set()
    thread.join(5)
    assert not thread.is_alive()
    assert "requests" not in _states(health)


def test_a_part_whose_thread_has_not_started_yet_is_not_stuck() -> None:
    health = Health()
    health.register("requests", threading.Thread(target=lambda: None))
    assert _states(health)["requests"].state == "ok"


def test_a_job_that_raises_is_reported_and_left_idle_for_its_next_turn() -> None:
    health = Health()
    supervisor = Supervisor(health, threading.Event())

    def job() -> None:
        raise RuntimeError("boom")

    supervisor.call("job fetch", job, 60)
    part = _states(health)["job fetch"]
    assert (part.state, part.errors, part.last_error) == ("ok", 1, "RuntimeError: boom")
