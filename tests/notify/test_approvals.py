"""Approval rules: which text approves, who may, expiry, single use, never prod."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from reconciler import status
from reconciler.config import Config, RenderConfig
from reconciler.model import ObjectRef
from reconciler.notify import approvals
from reconciler.notify.notices import Notice, State
from reconciler.store import ApprovalRecord, RequestRecord, Store

OWNER = "@owner:lab"
AT = datetime.datetime(2026, 12, 2, 7, 0, tzinfo=datetime.UTC)
SHOWN = ("ConfigMap ai/a", "ConfigMap ai/b", "ConfigMap ai/c")
PENDING = ApprovalRecord(
    "k7mq2x9a",
    "agentic",
    "web",
    "prune",
    "3 objects",
    "2026-12-02T06:50:00Z",
    "2026-12-02T07:50:00Z",
    objects=SHOWN,
)


@dataclass(frozen=True)
class Event:
    event_id: str
    sender: str
    type: str = "m.room.message"
    body: str | None = None
    relates_to_event: str | None = None
    rel_type: str | None = None
    key: str | None = None


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.record_cluster("agentic", "apply", True, None)
    store.record_cluster("prod", "report", True, None)
    return store


@pytest.mark.parametrize(
    "body",
    [
        "approve k7mq2x9a",
        "APPROVE K7MQ2X9A",
        "  Approve   k7mq2x9a \n",
        "approve `k7mq2x9a`",
        "> <@reconciler:lab> prune of web held back (k7mq2x9a)\n\napprove k7mq2x9a",
    ],
)
def test_approve_with_the_id_is_read_whatever_the_case_spacing_or_quoted_reply(body: str) -> None:
    assert approvals.parse(body) == "k7mq2x9a"


@pytest.mark.parametrize(
    "body", ["approved k7mq2x9a", "please approve k7mq2x9a", "approve", "approve a b", "ok"]
)
def test_other_text_is_no_approval(body: str) -> None:
    assert approvals.parse(body) is None


def test_ids_use_the_unambiguous_alphabet_and_do_not_repeat() -> None:
    ids = {approvals.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == approvals.ID_LENGTH and set(i) <= set(approvals.ALPHABET) for i in ids)
    assert not set("01ilo") & set(approvals.ALPHABET)


def test_an_allowed_user_approves_a_pending_approval() -> None:
    decision = approvals.decide(PENDING, PENDING.id, OWNER, {OWNER}, {"prod"}, AT)
    assert decision.approved and not decision.expired


def test_anyone_else_is_refused_without_learning_whether_the_id_exists() -> None:
    known = approvals.decide(PENDING, PENDING.id, "@mallory:lab", {OWNER}, set(), AT)
    unknown = approvals.decide(None, "zzzzzzzz", "@mallory:lab", {OWNER}, set(), AT)
    assert not known.approved and not known.expired
    assert known.reason == unknown.reason
    assert known.reason == "@mallory:lab may not approve: not one of the approvers"
    assert OWNER not in known.reason, "who may approve is not told to the room"


def test_an_unknown_id_is_refused() -> None:
    decision = approvals.decide(None, "zzzzzzzz", OWNER, {OWNER}, set(), AT)
    assert not decision.approved and "there is no approval zzzzzzzz" in decision.reason


def test_an_approval_past_its_expiry_is_refused_as_expired() -> None:
    later = datetime.datetime(2026, 12, 2, 7, 50, tzinfo=datetime.UTC)
    decision = approvals.decide(PENDING, PENDING.id, OWNER, {OWNER}, set(), later)
    assert not decision.approved and decision.expired
    marked = replace(PENDING, state="expired")
    assert approvals.decide(marked, PENDING.id, OWNER, {OWNER}, set(), AT).expired


def test_a_superseded_approval_is_refused_as_out_of_date() -> None:
    retired = replace(PENDING, state="superseded")
    decision = approvals.decide(retired, PENDING.id, OWNER, {OWNER}, set(), AT)
    assert not decision.approved and "is out of date" in decision.reason


@pytest.mark.parametrize("state", ["approved", "done", "failed"])
def test_an_approval_is_single_use(state: str) -> None:
    used = replace(PENDING, state=state, decided_by=OWNER, decided_at="2026-12-02T06:55:00Z")
    decision = approvals.decide(used, PENDING.id, OWNER, {OWNER}, set(), AT)
    assert not decision.approved and "already used by @owner:lab" in decision.reason


def test_an_approval_for_a_report_mode_cluster_is_refused() -> None:
    on_prod = replace(PENDING, cluster="prod")
    decision = approvals.decide(on_prod, PENDING.id, OWNER, {OWNER}, {"prod"}, AT)
    assert not decision.approved and "report-only" in decision.reason


def test_an_approved_prune_becomes_a_pruning_sync_request_bound_to_its_cluster() -> None:
    decided, request = approvals.approved(PENDING, OWNER, "$ask", "$root", AT)
    assert (request.app, request.prune, request.cluster, request.user) == (
        "web",
        True,
        "agentic",
        OWNER,
    )
    assert request.objects == frozenset(ObjectRef("", "ConfigMap", "ai", n) for n in "abc")
    assert (decided.state, decided.decided_by, decided.decided_event, decided.thread) == (
        "approved",
        OWNER,
        "$ask",
        "$root",
    )
    assert decided.request_id == request.id
    assert approvals.request_of(decided) == request
    _, sync = approvals.approved(replace(PENDING, action="sync"), OWNER, "$a", "$a", AT)
    assert sync.prune is False and sync.objects is None


def test_an_approve_message_is_answered_in_its_own_thread_or_the_one_it_is_in() -> None:
    plain = approvals.asked(Event("$1", OWNER, body="approve k7mq2x9a"), "@bot:lab")
    threaded = approvals.asked(
        Event("$2", OWNER, body="approve k7mq2x9a", relates_to_event="$root", rel_type="m.thread"),
        "@bot:lab",
    )
    assert plain == approvals.Ask("$1", OWNER, "k7mq2x9a", None, "$1")
    assert threaded == approvals.Ask("$2", OWNER, "k7mq2x9a", None, "$root")


@pytest.mark.parametrize("key", ["\u2705", "\u2705\ufe0f"])
def test_a_check_mark_reaction_asks_for_the_approval_of_the_message(key: str) -> None:
    event = Event("$3", OWNER, "m.reaction", None, "$msg", "m.annotation", key)
    assert approvals.asked(event, "@bot:lab") == approvals.Ask("$3", OWNER, None, "$msg", "$msg")


@pytest.mark.parametrize(
    "event",
    [
        Event("$4", "@bot:lab", body="approve k7mq2x9a"),
        Event("$5", OWNER, body="* approve k7mq2x9a", relates_to_event="$1", rel_type="m.replace"),
        Event("$6", OWNER, "m.reaction", None, "$msg", "m.annotation", "\U0001f44d"),
        Event("$7", OWNER, body="looks good to me"),
        Event("$8", OWNER, type="m.room.member"),
        # A ✅ that is no annotation of the message (another relation, or none).
        Event("$9", OWNER, "m.reaction", None, "$msg", "m.reference", "\u2705"),
        Event("$10", OWNER, "m.reaction", None, "$msg", None, "\u2705"),
        # Redacted: a message or a reaction stripped of its content.
        Event("$11", OWNER),
        Event("$12", OWNER, "m.reaction"),
        # The owner quoting someone else's ask, without asking.
        Event("$13", OWNER, body="> <@mallory:lab> approve k7mq2x9a\n\nwho is this?"),
    ],
)
def test_the_bots_own_events_edits_other_reactions_and_chat_ask_nothing(event: Event) -> None:
    assert approvals.asked(event, "@bot:lab") is None


def test_offering_again_while_pending_gives_the_same_id(store: Store) -> None:
    first = approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, AT, SHOWN)
    again = approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, AT, SHOWN)
    other = approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, AT, SHOWN[:2])
    assert first == again != other
    assert {a.id for a in store.approvals({"pending"})} == {first, other}
    offered = store.approval(first)
    assert offered is not None and offered.objects == SHOWN


def test_a_prune_approval_is_only_offered_for_the_objects_it_shows(store: Store) -> None:
    with pytest.raises(approvals.NotOffered, match="must name the objects it covers"):
        approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, AT)
    assert store.approvals({"pending"}) == []


def test_an_expired_offer_is_replaced_by_a_new_id(store: Store) -> None:
    first = approvals.offer(store, "agentic", "web", "sync", "", 60, AT)
    later = AT + datetime.timedelta(seconds=61)
    assert approvals.offer(store, "agentic", "web", "sync", "", 60, later) != first


@pytest.mark.parametrize("cluster", ["prod", "never-reconciled"])
def test_no_approval_is_offered_for_a_cluster_not_on_record_as_apply_mode(
    store: Store, cluster: str
) -> None:
    with pytest.raises(approvals.NotOffered, match=f"cluster {cluster}"):
        approvals.offer(store, cluster, "web", "prune", "", 3600, AT, SHOWN)
    assert store.approvals({"pending"}) == []


def test_only_the_first_decision_of_an_approval_wins(store: Store) -> None:
    approval = store.approval(approvals.offer(store, "agentic", "web", "sync", "", 3600, AT))
    assert approval is not None
    first, _ = approvals.approved(approval, OWNER, "$a", "$a", AT)
    second, _ = approvals.approved(approval, OWNER, "$b", "$b", AT)
    assert store.decide_approval(first, was="pending")
    assert not store.decide_approval(second, was="pending")
    assert store.approval(approval.id) == first


def test_pending_approvals_expire_once_and_are_kept_with_who_and_when(store: Store) -> None:
    kept = approvals.offer(store, "agentic", "web", "prune", "", 60, AT, SHOWN)
    gone = approvals.offer(store, "agentic", "db", "sync", "", 10, AT)
    expired = store.expire_approvals(approvals.stamp(AT + datetime.timedelta(seconds=30)))
    assert [a.id for a in expired] == [gone]
    assert store.expire_approvals(approvals.stamp(AT + datetime.timedelta(seconds=30))) == []
    assert [a.id for a in store.approvals({"pending"})] == [kept]


def test_the_result_answer_says_done_or_failed_with_the_sync_lines() -> None:
    ok = RequestRecord(
        "r1",
        "web",
        "agentic",
        OWNER,
        True,
        "t",
        "done",
        0,
        "agentic: converged in 0.4s (1 pruned)",
        ("out: agentic/web ConfigMap ai/old: pruned", "out: agentic: converged in 0.4s (1 pruned)"),
    )
    text = approvals.result_text(PENDING, ok)
    assert text.splitlines() == [
        "approval k7mq2x9a done: prune 3 objects of app web on agentic: "
        "agentic: converged in 0.4s (1 pruned)",
        "agentic/web ConfigMap ai/old: pruned",
    ]
    refused = replace(ok, state="refused", exit_code=2, summary="cluster agentic is not usable")
    assert approvals.result_text(PENDING, refused).startswith("approval k7mq2x9a FAILED")


def test_status_lists_only_pending_unexpired_approvals_in_json_and_table(
    store: Store, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    waiting = approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, now, SHOWN)
    approvals.offer(store, "agentic", "old", "sync", "", 60, now - datetime.timedelta(hours=1))
    used = store.approval(approvals.offer(store, "agentic", "db", "sync", "", 3600, now))
    assert used is not None
    store.decide_approval(approvals.approved(used, OWNER, "$a", "$a", now)[0], was="pending")

    config = Config(tmp_path / "config.toml", tmp_path, RenderConfig(), (), (), ())
    doc = status.gather(config, store)
    (listed,) = doc["approvals"]
    assert listed["id"] == waiting
    assert (listed["cluster"], listed["app"], listed["action"], listed["detail"]) == (
        "agentic",
        "web",
        "prune",
        "3 objects",
    )
    table = status.table(doc).splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("APPROVAL"))
    assert table[header + 1].split()[:5] == [waiting, "agentic", "web", "prune", "in"]
    assert len(table) == header + 2


def test_retention_drops_decided_approvals_and_keeps_those_still_waiting(store: Store) -> None:
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    waiting = approvals.offer(store, "agentic", "web", "prune", "", 7 * 86400, then, SHOWN)
    old = store.approval(approvals.offer(store, "agentic", "db", "sync", "", 60, then))
    assert old is not None
    store.decide_approval(approvals.approved(old, OWNER, "$a", "$a", then)[0], was="pending")
    store.finish_approval(old.id, "done", "agentic: converged")
    store.drop_history(datetime.timedelta(days=1))
    assert store.approval(old.id) is None
    assert store.approval(waiting) is not None


def _notice(kind: str, state: State, app: str = "web") -> Notice:
    return Notice(f"agentic/{app}/{kind}", kind, state, "agentic", app, "title")


@pytest.mark.parametrize("state", ["opened", "changed", "closed"])
def test_a_condition_that_changes_or_closes_retires_its_pending_approvals(
    store: Store, state: State
) -> None:
    shown = approvals.offer(store, "agentic", "web", "prune", "3 objects", 3600, AT, SHOWN)
    sync = approvals.offer(store, "agentic", "web", "sync", "drift", 3600, AT)
    other = approvals.offer(store, "agentic", "db", "prune", "3 objects", 3600, AT, SHOWN)

    retired = approvals.retire(
        store, [_notice("prune-blocked", state), _notice("violation", state)]
    )

    assert [a.id for a in retired] == [shown]
    assert {a.id for a in store.approvals({"pending"})} == {sync, other}
    old = store.approval(shown)
    assert old is not None and old.state == "superseded"
    assert "out of date" in approvals.decide(old, shown, OWNER, {OWNER}, set(), AT).reason
    # The message posted for what holds now gets an approval of its own.
    grown = approvals.offer(store, "agentic", "web", "prune", "4 objects", 3600, AT, SHOWN * 2)
    assert grown != shown
    assert approvals.retire(store, [_notice("out-of-sync", "closed")])[0].id == sync


def test_someone_not_allowed_is_answered_once_in_a_while_an_approver_always() -> None:
    quiet = approvals.Quiet({OWNER})
    soon = AT + datetime.timedelta(seconds=approvals.STRANGER_QUIET_S - 1)
    later = AT + datetime.timedelta(seconds=approvals.STRANGER_QUIET_S)

    assert quiet.due("@mallory:lab", "$1", AT)
    assert not quiet.due("@mallory:lab", "$2", soon)
    assert quiet.due("@mallory:lab", "$1", soon), "the same ask again: its answer failed"
    assert quiet.due("@eve:lab", "$3", soon), "each sender on their own"
    assert all(quiet.due(OWNER, f"$o{i}", AT) for i in range(5))
    assert quiet.due("@mallory:lab", "$4", later)
    assert not quiet.due("@mallory:lab", "$5", later)


def test_an_approved_request_not_carried_out_by_its_deadline_is_given_up_after_a_restart() -> None:
    approved = replace(PENDING, state="approved", decided_by=OWNER, request_id="r1")
    due = approvals.deadline(approved)
    assert due == AT + datetime.timedelta(minutes=50, seconds=approvals.CARRY_OUT_GRACE_S)
    left = RequestRecord("r1", "web", "agentic", OWNER, True, "t", "running")
    done = replace(left, state="done", exit_code=0)
    assert approvals.overdue(approved, None, False, due)
    assert approvals.overdue(approved, left, False, due), "running in a daemon now gone"
    assert not approvals.overdue(approved, left, True, due), "a worker has it: waited for"
    assert not approvals.overdue(approved, done, False, due), "finished: its result is told"
    assert not approvals.overdue(approved, None, False, due - datetime.timedelta(seconds=1))
    assert "FAILED" in approvals.overdue_text(approved)
    assert "given up" in approvals.overdue_text(approved)


def test_retention_drops_an_approved_approval_long_past_its_deadline(store: Store) -> None:
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    old = store.approval(approvals.offer(store, "agentic", "db", "sync", "", 60, then))
    assert old is not None
    store.decide_approval(approvals.approved(old, OWNER, "$a", "$a", then)[0], was="pending")
    store.drop_history(datetime.timedelta(days=1))
    assert store.approval(old.id) is None
