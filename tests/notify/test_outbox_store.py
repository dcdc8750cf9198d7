"""The notification tables of the state store: what is open, the pending notices that
survive a restart, the queue bound (least important dropped first), the message a
notice went into, and the queue's health as `reconciler status` shows it."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path

from reconciler import status
from reconciler.config import Config
from reconciler.store import ApprovalRecord, NotifyHealth, OutboxNotice, Store
from tests.builders import agentic_config
from tests.notify.test_config_matrix import MATRIX, REPOS, SERVER


def _n(
    key: str, priority: int = 1, approval: str | None = None, state: str = "opened"
) -> OutboxNotice:
    return OutboxNotice(key, priority, {"key": key, "state": state}, approval)


def test_open_conditions_and_pending_notices_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {"prod/web/drift": "f1"}, (), [_n("prod/web/drift")], 10)
    store.close()
    store = Store(tmp_path / "state.db")
    assert store.notify_open("prod") == {"prod/web/drift": "f1"}
    assert store.notify_open("agentic") == {}
    (pending,) = store.pending_notices(100)
    assert (pending.key, pending.notice, pending.txn_id) == (
        "prod/web/drift",
        {"key": "prod/web/drift", "state": "opened"},
        None,
    )
    store.enqueue_notices("prod", {}, ["prod/web/drift"], [_n("prod/web/drift", 0)], 10)
    assert store.notify_open("prod") == {}
    assert len(store.pending_notices(100)) == 2


def test_a_full_queue_drops_the_oldest_least_important_notices_not_yet_in_a_message(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {}, (), [_n("a", 2), _n("b", 0), _n("c", 1)], 10)
    first = store.pending_notices(100)[0]
    store.group_notices([first.id], "txn-1")
    dropped = store.enqueue_notices("prod", {}, (), [_n("d", 0), _n("e", 2)], 3)
    assert dropped == 2
    assert [n.key for n in store.pending_notices(100)] == ["a", "c", "e"]


def test_a_dropped_notice_is_taken_back_from_what_is_open_so_it_is_told_again(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {"prod/a/drift": "fa"}, (), [_n("prod/a/drift")], 10)
    store.group_notices([store.pending_notices(10)[0].id], "txn-a")
    store.notices_sent("txn-a", "$a")
    # Queue of one: "b opened" goes in, then "a closed" and "c opened" push out the rest.
    store.enqueue_notices("prod", {"prod/b/drift": "fb"}, (), [_n("prod/b/drift")], 1)
    dropped = store.enqueue_notices(
        "prod",
        {"prod/c/drift": "fc"},
        ["prod/a/drift"],
        [_n("prod/a/drift", 0, state="closed"), _n("prod/c/drift", 2)],
        1,
    )
    assert dropped == 2
    assert [n.key for n in store.pending_notices(10)] == ["prod/c/drift"]
    # b's opening was never told: forgotten, so the next reconcile opens it again;
    # a's closing was never told: open still, under a fingerprint nothing matches.
    assert store.notify_open("prod") == {"prod/a/drift": "", "prod/c/drift": "fc"}


def test_a_message_refused_for_good_is_taken_back_from_what_is_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {"prod/a/drift": "fa"}, (), [_n("prod/a/drift")], 10)
    (pending,) = store.pending_notices(10)
    store.group_notices([pending.id], "txn-refused")
    assert store.notices_dropped("txn-refused") == 1
    assert store.notify_open("prod") == {}


def test_a_full_queue_drops_a_notice_a_later_one_of_its_key_supersedes_first(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {"prod/a/drift": "f1"}, (), [_n("prod/a/drift", 2)], 10)
    store.enqueue_notices("prod", {}, (), [_n("prod/z/drift", 0)], 10)
    changed = _n("prod/a/drift", 2, state="changed")
    dropped = store.enqueue_notices("prod", {"prod/a/drift": "f2"}, (), [changed], 2)
    assert dropped == 1
    pending = store.pending_notices(10)
    assert [(n.key, n.notice["state"]) for n in pending] == [
        ("prod/z/drift", "opened"),
        ("prod/a/drift", "changed"),
    ]
    # The later notice tells the key: what is open stays as it recorded.
    assert store.notify_open("prod") == {"prod/a/drift": "f2"}


def test_pending_notices_are_read_a_window_at_a_time_a_grouped_message_first(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices("prod", {}, (), [_n(f"k{i:03d}") for i in range(200)], 1000)
    last = store.pending_notices(1000)[-1]
    store.group_notices([last.id], "txn-late")
    window = store.pending_notices(5)
    assert [n.key for n in window] == ["k199", "k000", "k001", "k002", "k003"]
    assert store.superseded_notice(window[1]) is False
    store.enqueue_notices("prod", {}, (), [_n("k000")], 1000)
    assert store.superseded_notice(window[1]) is True


def test_an_open_condition_whose_sent_approval_expired_is_offered_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    key = "agentic/old/prune-blocked"
    store.enqueue_notices("agentic", {key: "f"}, (), [_n(key, 2)], 10)
    store.offer_approval(
        ApprovalRecord(
            "k3m9x2ab",
            "agentic",
            "old",
            "prune",
            "d",
            "2026-12-02T07:00:00Z",
            "2026-12-02T08:00:00Z",
        )
    )
    (pending,) = store.pending_notices(10)
    store.group_notices([pending.id], "txn-1", "k3m9x2ab")
    assert store.expired_offers("2026-12-02T09:00:00Z") == [], "not sent yet"
    store.notices_sent("txn-1", "$held")
    assert store.expired_offers("2026-12-02T07:30:00Z") == []
    (again,) = store.expired_offers("2026-12-02T09:00:00Z")
    assert (again.key, again.approval_id) == (key, "k3m9x2ab")
    # Once posted again, the new notice is the last word on the key.
    store.enqueue_notices("agentic", {}, (), [_n(key, 2, state="changed")], 10)
    assert store.expired_offers("2026-12-02T09:00:00Z") == []
    # A closed condition is not offered again.
    store.enqueue_notices("agentic", {}, [key], [], 10)
    assert store.expired_offers("2026-12-02T09:00:00Z") == []


def test_a_sent_message_names_the_approval_it_carries(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.enqueue_notices(
        "agentic", {}, (), [_n("agentic/old/prune-blocked", 2, "k3m9x2ab"), _n("x")], 10
    )
    held, other = store.pending_notices(100)
    store.group_notices([held.id], "txn-a")
    store.group_notices([other.id], "txn-b")
    store.notices_sent("txn-a", "$event-a")
    store.notices_sent("txn-b", "$event-b")
    assert store.approval_for_event("$event-a") == "k3m9x2ab"
    assert store.approval_for_event("$event-b") is None
    assert store.approval_for_event("$unknown") is None
    assert store.pending_notices(100) == []
    assert store.notices_dropped("txn-a") == 0  # sent stays sent


def _config(tmp_path: Path, matrix: Mapping[str, object] | None = None) -> Config:
    sections = {"notify": {"matrix": matrix}} if matrix else {}
    return agentic_config(tmp_path, REPOS, SERVER, **sections)


def test_status_shows_the_notification_queues_health(tmp_path: Path) -> None:
    config = _config(tmp_path, MATRIX)
    store = Store(config.state_dir / "state.db")
    store.enqueue_notices("prod", {}, (), [_n("a"), _n("b")], 10)
    store.record_notify_health(
        NotifyHealth(
            3, 1, 4, "matrix https://m: no answer: refused", "2026-12-02T07:00:00Z", None, False
        )
    )
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    found = status.gather(config, store, at)
    notify = found["notify"]
    assert notify["pending"] == 2 and notify["oldest_pending_age_s"] >= 29
    assert (notify["sent_total"], notify["dropped_total"], notify["failed_total"]) == (3, 1, 4)
    assert notify["homeserver_reachable"] is False
    assert notify["last_error"] == "matrix https://m: no answer: refused"
    assert not status.healthy(found)
    assert "notify: homeserver UNREACHABLE, 2 pending" in status.table(found, at)


def test_status_says_nothing_of_notifications_when_none_are_configured(tmp_path: Path) -> None:
    config = _config(tmp_path)
    found = status.gather(config, Store(config.state_dir / "state.db"))
    assert found["notify"] is None
    assert "notify:" not in status.table(found)
