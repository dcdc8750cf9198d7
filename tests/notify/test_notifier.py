"""The notify.send thread against a real Synapse: notices batched into messages, the
same condition never posted twice, the rate limit holding messages back (and later
notices joining them), a bounded queue while the room cannot be reached, and a
hand-off that never makes a reconcile wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler import status
from reconciler.config import MatrixConfig
from reconciler.metrics import Metrics
from reconciler.model import Drift, DriftType, ObjectRef, Result
from reconciler.notify import notices, notifier
from reconciler.notify.notifier import HANDOFF_SIZE, Notifier
from reconciler.plan import PRUNE_HELD
from reconciler.pruneguard import blocked
from reconciler.report import Outcome, Report
from reconciler.store import ComponentRecord, NotifyHealth, Store, now
from reconciler.supervise import Health, Supervisor
from tests.builders import agentic_config
from tests.helpers_cluster import wait_for
from tests.notify.conftest import MatrixRoom


def _report(*apps: str) -> Report:
    """prod's report with one missing ConfigMap in each of `apps`."""
    drifts = tuple(
        (app, Drift(DriftType.MISSING, ObjectRef("", "ConfigMap", app, "settings"), "v1"))
        for app in apps
    )
    return Report("prod", "report", drifts, (), ())


def _config(tmp_path: Path, room: MatrixRoom | None, **settings: float) -> MatrixConfig:
    token = tmp_path / "matrix-token"
    token.write_text((room.bot.token if room else "syt_unused") + "\n")
    token.chmod(0o600)
    base = MatrixConfig(
        homeserver=room.server.url if room else "https://127.0.0.1:9",
        room_id=room.room_id if room else "!none:testenv",
        token_file=token,
        ca_file=room.server.ca_file if room else None,
        batch_s=1.0,
    )
    return replace(base, **settings)  # type: ignore[arg-type]


class Running:
    """A Notifier with its own store, metrics and supervisor, stopped after the test."""

    def __init__(self, tmp_path: Path, config: MatrixConfig) -> None:
        self.store = Store(tmp_path / "state" / "state.db")
        self.metrics = Metrics(version="test")
        self.stopping = threading.Event()
        self.notifier = Notifier(
            config, self.store, self.metrics, Supervisor(Health(), self.stopping)
        )

    def pending(self) -> int:
        return self.store.notify_backlog()[0]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Running]]:
    made: list[Running] = []
    yield made
    for r in made:
        r.stopping.set()
        if r.notifier.thread is not None:
            r.notifier.thread.join(5)


def _start(made: list[Running], tmp_path: Path, config: MatrixConfig) -> Running:
    r = Running(tmp_path, config)
    made.append(r)
    r.notifier.start()
    return r


def _messages(room: MatrixRoom) -> list[str]:
    return [
        str(e["content"]["body"])
        for e in room.server.messages(room.owner.token, room.room_id)
        if e["sender"] == room.bot.user_id
    ]


def test_notices_are_batched_and_the_same_condition_is_never_posted_twice(
    tmp_path: Path, running: list[Running], matrix_room: MatrixRoom
) -> None:
    r = _start(running, tmp_path, _config(tmp_path, matrix_room, batch_s=2.0))
    apps = [f"app-{i:02d}" for i in range(12)]
    r.notifier.observe("prod", "report", _report(*apps[:6]))
    r.notifier.observe("prod", "report", _report(*apps))  # within batch_s of the first
    wait_for(lambda: len(_messages(matrix_room)) >= 2, 60, "the batched messages")
    first, second = _messages(matrix_room)
    # Ten notices make a message; the rest follow in the next, none twice.
    assert [first.count("drift opened"), second.count("drift opened")] == [10, 2]
    assert all(sum(f"prod/{a}:" in m for m in (first, second)) == 1 for a in apps)

    # The same drift again, and one app more: only that app is told.
    r.notifier.observe("prod", "report", _report(*apps, "app-new"))
    wait_for(lambda: len(_messages(matrix_room)) >= 3, 60, "the new app's message")
    assert _messages(matrix_room)[2].count("drift opened") == 1
    assert "prod/app-new: drift opened" in _messages(matrix_room)[2]
    assert r.store.notify_health() is not None
    assert (
        r.metrics.registry.get_sample_value("reconciler_notify_messages_total", {"outcome": "sent"})
        == 3
    )


def test_the_rate_limit_holds_messages_back_and_later_notices_join_them(
    tmp_path: Path, running: list[Running], matrix_room: MatrixRoom
) -> None:
    r = _start(running, tmp_path, _config(tmp_path, matrix_room, max_per_minute=1, batch_s=0.0))
    r.notifier.observe("prod", "report", _report(*(f"app-{i:02d}" for i in range(11))))
    wait_for(lambda: len(_messages(matrix_room)) == 1, 60, "the first message")
    first_at = time.monotonic()
    assert r.pending() == 1
    r.notifier.observe("prod", "report", _report(*(f"app-{i:02d}" for i in range(11)), "late"))
    wait_for(lambda: r.pending() == 2, 30, "the late notice waiting with the held one")
    wait_for(lambda: len(_messages(matrix_room)) == 2, 120, "the held message, a minute on")
    assert time.monotonic() - first_at > 50
    held = _messages(matrix_room)[1]
    assert "prod/app-10: drift opened" in held and "prod/late: drift opened" in held


def test_a_room_that_cannot_be_reached_keeps_at_most_queue_size_notices(
    tmp_path: Path, running: list[Running]
) -> None:
    r = _start(running, tmp_path, _config(tmp_path, None, queue_size=3, batch_s=0.0))
    r.notifier.observe("prod", "report", _report("a", "b", "c", "d", "e"))

    def dropped() -> float | None:
        return r.metrics.registry.get_sample_value(
            "reconciler_notify_messages_total", {"outcome": "dropped"}
        )

    wait_for(lambda: dropped() == 2, 30, "two notices dropped past the queue size")
    health = r.store.notify_health()
    assert health is not None and health.dropped_total == 2
    wait_for(lambda: (r.store.notify_health() or health).reachable is False, 30, "the failed send")
    assert r.pending() == 3
    # The two dropped openings are not on record as told: the next report tells them again.
    assert r.store.notify_open("prod").keys() == {f"prod/{a}/drift" for a in "cde"}


def test_the_hand_off_never_waits_and_counts_what_it_drops(
    tmp_path: Path, running: list[Running]
) -> None:
    # Not started: nothing takes the reports, as with a notifier stuck on the network.
    r = Running(tmp_path, _config(tmp_path, None))
    running.append(r)
    report = _report("web")
    started = time.monotonic()
    for _ in range(HANDOFF_SIZE + 100):
        r.notifier.observe("prod", "report", report)
    assert time.monotonic() - started < 1.0

    def counted(outcome: str) -> float | None:
        return r.metrics.registry.get_sample_value(
            "reconciler_notify_messages_total", {"outcome": outcome}
        )

    assert counted("superseded") == 100
    # Reports let go lose nothing (the later ones say what is open): no notice dropped.
    r.notifier.start()
    wait_for(lambda: r.store.notify_open("prod") != {}, 30, "the reports taken")
    assert counted("superseded") == 100 and counted("dropped") == 0
    assert (r.store.notify_health() or NotifyHealth()).dropped_total == 0
    assert r.pending() == 1, "the same drift in 64 reports is one notice"


def test_the_daemons_health_is_never_lost_in_a_full_hand_off(
    tmp_path: Path, running: list[Running]
) -> None:
    r = Running(tmp_path, _config(tmp_path, None))
    running.append(r)
    r.notifier.daemon_health([_part("worker agentic", "stuck", "no progress for 900s")])
    for _ in range(HANDOFF_SIZE + 10):  # reports pile up behind it while nothing takes them
        r.notifier.observe("prod", "report", _report("web"))
    r.notifier.start()
    wait_for(lambda: r.store.notify_open("daemon") != {}, 30, "the daemon's trouble taken")
    assert r.store.notify_open("prod").keys() == {"prod/web/drift"}


def test_without_the_section_nothing_starts_and_nothing_is_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    notifier = Notifier(
        None, store, Metrics(version="test"), Supervisor(Health(), threading.Event())
    )
    notifier.start()
    notifier.observe("prod", "report", _report("web"))
    assert notifier.thread is None
    assert store.notify_backlog() == (0, None) and store.notify_health() is None


def _part(name: str, state: str, detail: str = "") -> ComponentRecord:
    return ComponentRecord(name, state, detail, "", 0, None, None)


def test_the_daemon_degraded_and_back_is_told_once_each(
    tmp_path: Path, running: list[Running], matrix_room: MatrixRoom
) -> None:
    r = _start(running, tmp_path, _config(tmp_path, matrix_room, batch_s=0.0))
    stuck = [_part("worker prod", "ok"), _part("worker agentic", "stuck", "no progress for 900s")]
    for _ in range(3):  # the daemon records its parts every few seconds
        r.notifier.daemon_health(stuck)
    wait_for(lambda: len(_messages(matrix_room)) == 1, 60, "the degraded message")
    (degraded,) = _messages(matrix_room)
    assert "daemon STUCK: 1 part not progressing" in degraded
    assert "worker agentic — stuck: no progress for 900s" in degraded
    r.notifier.daemon_health([_part("worker prod", "ok"), _part("worker agentic", "ok")])
    wait_for(lambda: len(_messages(matrix_room)) == 2, 60, "the back message")
    assert "daemon back: every part is making progress" in _messages(matrix_room)[1]
    assert r.store.notify_open("daemon") == {}


def test_a_rotated_token_file_is_read_again_once_the_homeserver_refuses_the_old_token(
    tmp_path: Path, running: list[Running], matrix_room: MatrixRoom
) -> None:
    config = _config(tmp_path, matrix_room, batch_s=0.0)
    config.token_file.write_text("syt_revoked_long_ago\n")
    r = _start(running, tmp_path, config)
    r.notifier.observe("prod", "report", _report("web"))

    def refused() -> bool:
        error = (r.store.notify_health() or NotifyHealth()).last_error or ""
        return "M_UNKNOWN_TOKEN" in error

    wait_for(refused, 60, "the homeserver refusing the old token")
    config.token_file.write_text(matrix_room.bot.token + "\n")  # the operator rotates it
    wait_for(lambda: len(_messages(matrix_room)) == 1, 90, "the message, with the new token")
    assert "prod/web: drift opened" in _messages(matrix_room)[0]


def _held_prune(app: str, count: int) -> Report:
    """agentic's report: `count` ConfigMaps of `app` the prune guard held back."""
    held = [ObjectRef("", "ConfigMap", app, f"cm-{i}") for i in range(count)]
    why = f"{count} of the app's {count} objects is more than 50%"
    return Report(
        "agentic",
        "apply",
        (),
        (),
        (),
        outcomes=tuple(Outcome(app, ref, Result.SKIPPED, f"{PRUNE_HELD}{why}") for ref in held),
        findings=(blocked(app, why, held),),
    )


def _approval_ids(room: MatrixRoom) -> list[str]:
    return [m.split("approve ", 1)[1].split("`", 1)[0] for m in _messages(room) if "approve " in m]


def test_an_approval_runs_from_its_message_and_an_expired_one_is_offered_again(
    tmp_path: Path, running: list[Running], matrix_room: MatrixRoom
) -> None:
    r = _start(running, tmp_path, _config(tmp_path, matrix_room, batch_s=6.0, approval_ttl_s=3.0))
    r.store.record_cluster("agentic", "apply", True, None)
    r.notifier.observe("agentic", "apply", _held_prune("old", 3))
    wait_for(lambda: r.pending() == 1, 30, "the held prune's notice waiting out its batch")
    # Queued is not offered: the approval's time starts when the room can see it.
    assert r.store.approvals(["pending"]) == []
    wait_for(lambda: len(_approval_ids(matrix_room)) == 1, 60, "the message with its approval")
    (first,) = _approval_ids(matrix_room)
    record = r.store.approval(first)
    assert record is not None and record.state == "pending"
    # Unused past its time, with the prune still held: posted again with a new ID.
    wait_for(lambda: len(_approval_ids(matrix_room)) == 2, 90, "the condition offered again")
    again = _approval_ids(matrix_room)[1]
    assert again != first
    assert notices.EXPIRED_LINE in _messages(matrix_room)[-1]
    assert "prune held by the guard (3 objects)" in _messages(matrix_room)[-1]


def test_a_stuck_send_shows_in_status_and_a_failing_one_restarts_counted(
    tmp_path: Path, running: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier, "SEND_TIMEOUT_S", 1.0)  # the send's deadline: 7 s
    release = threading.Event()
    failures: list[str] = []

    class Hanging:
        """A client whose send never returns, as a socket no timeout covers would."""

        def whoami(self) -> str:
            return "@bot:testenv"

        def send(self, room_id: str, txn_id: str, content: dict[str, Any]) -> str:
            release.wait(120)
            raise RuntimeError("released")

    r = Running(tmp_path, _config(tmp_path, None, batch_s=0.0))
    running.append(r)
    health = Health(on_failure=lambda name, exc, repeated: failures.append(name))
    r.notifier = Notifier(
        r.notifier.config,
        r.store,
        r.metrics,
        Supervisor(health, r.stopping, backoff=(30.0, 30.0)),
        client=lambda config, token: Hanging(),
    )
    r.notifier.start()
    r.notifier.observe("prod", "report", _report("web"))
    config = agentic_config(tmp_path, [{"name": "lab", "path": "clone"}], "https://10.0.0.1:6443")
    started = now()

    def part() -> dict[str, Any]:
        # As the daemon does every few seconds (this process standing in for it).
        r.store.replace_components(health.snapshot())
        r.store.beat(started)
        found = status.gather(config, r.store)
        parts: dict[str, dict[str, Any]] = {c["name"]: c for c in found["daemon"]["components"]}
        return parts["notify.send"]

    wait_for(lambda: part()["state"] == "stuck", 60, "notify.send stuck in its send")
    assert "no progress" in part()["detail"] and "(sending)" in part()["detail"]
    # Released, the send raises: the supervisor restarts the thread, and says so.
    release.set()
    wait_for(lambda: part()["state"] == "restarting", 30, "notify.send restarting")
    assert part()["errors"] == 1 and "RuntimeError: released" in part()["last_error"]
    assert failures == ["notify.send"]
