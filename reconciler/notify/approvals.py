"""Approvals: the decisions a person makes from the Matrix room, and their rules.

A message that needs a decision (a prune the guard held back, a sync of an app
without `syncPolicy.automated`) carries a short ID. An allowed person answering
`approve <id>` (or reacting with ✅ to that message) turns it into a sync request,
the one `reconciler sync --app A [--prune]` makes, which the daemon carries out on
its next reconcile. An approval never covers more than its message showed: a prune
approval confirms exactly the objects it was offered for (the others stay held),
and a condition that changes or closes retires its pending approvals. The rules
live here, as pure functions, so they are tested without a homeserver: who may
approve, which text is an approval, expiry, single use, the carry-out deadline,
and that a report-mode cluster (prod) is never offered nor approved. The store
keeps each approval and what became of it (who, when, the request).
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from reconciler import logs, requests
from reconciler.errors import ReconcilerError
from reconciler.model import ObjectRef
from reconciler.notify.notices import Notice
from reconciler.store import ApprovalRecord, RequestRecord, Store

# The store's form of a time, as approvals and their users compare it.
from reconciler.store import stamp as stamp

# What an approval carries out: `reconciler sync --app A --prune`, or without --prune.
ACTIONS: frozenset[str] = frozenset({"prune", "sync"})
# No 0/o, 1/l/i: an ID read off a phone screen is typed back right. 31**8 ≈ 8.5e11
# IDs, drawn by `secrets`, so one cannot be guessed from the ones seen before.
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_LENGTH = 8
# The reaction that approves: U+2705, which clients send with or without the
# emoji variation selector.
APPROVE_REACTIONS = frozenset({"\u2705", "\u2705\ufe0f"})
# "approve <id>", any case and spacing; the ID may be quoted as `code`, as Markdown
# clients render it.
_APPROVE = re.compile(r"approve\s+`?([^\s`]+)`?", re.IGNORECASE)
_RESULT_LINES = 10
# The action an approval offered with a condition of this kind carries out
# (reconciler.notify.notices names the kinds).
ACTION_OF_KIND = {"prune-blocked": "prune", "out-of-sync": "sync"}
# An approved request not carried out by its approval's expiry and this much more is
# given up (answered as failed), so nothing approved waits to be carried out forever.
CARRY_OUT_GRACE_S = 900.0
# Someone who may not approve is answered at most once in this long, so room members
# cannot make the bot post without limit (their asks are still logged and counted).
STRANGER_QUIET_S = 600.0


class NotOffered(ReconcilerError):
    """An approval that must not exist was asked for (report-mode cluster, unknown action)."""


def new_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(ID_LENGTH))


def offer(
    store: Store,
    cluster: str,
    app: str,
    action: str,
    detail: str,
    ttl_s: float,
    now: datetime.datetime,
    objects: Collection[str] = (),
) -> str:
    """The ID of an approval to `action` (prune, sync) `app` on `cluster`, described by
    `detail`, good for `ttl_s` from `now`: the one still pending for the same five, if
    any, else a new one. A prune approval covers exactly `objects` (each
    `str(ObjectRef)`: Notice.approval_objects, what its message showed) and no other
    object, so it needs them. Only a cluster the daemon has on record as apply-mode
    gets one: a report-mode (or not yet reconciled) cluster raises NotOffered."""
    if action not in ACTIONS:
        raise NotOffered(f"approval of {action!r} for app {app}: only prune or sync")
    if action == "prune" and not objects:
        raise NotOffered(f"approval to prune app {app}: it must name the objects it covers")
    mode = (store.cluster_state(cluster) or {}).get("mode")
    if mode != "apply":
        why = requests.report_only(cluster) if mode == "report" else "not reconciled yet"
        raise NotOffered(f"no approval for app {app} on cluster {cluster}: {why}")
    offered = ApprovalRecord(
        new_id(),
        cluster,
        app,
        action,
        detail,
        stamp(now),
        stamp(now + datetime.timedelta(seconds=ttl_s)),
        objects=tuple(sorted(objects)) if action == "prune" else (),
    )
    return store.offer_approval(offered).id


def retire(store: Store, told: Iterable[Notice]) -> list[ApprovalRecord]:
    """Retire (state `superseded`) the pending approvals of each condition `told`
    says opened, changed or closed: an approval is good for what its message showed,
    and a condition that changed (or is over) makes that message out of date. The
    approvals it retired, to log."""
    retired: list[ApprovalRecord] = []
    for notice in told:
        action = ACTION_OF_KIND.get(notice.kind)
        if action is not None:
            retired += store.retire_approvals(notice.cluster, notice.app, action)
    log = logs.get("reconciler.notify", component="notify.approvals")
    for approval in retired:
        log.info(
            "approval.superseded",
            approval=approval.id,
            cluster=approval.cluster,
            app=approval.app,
            action=approval.action,
            detail=approval.detail,
        )
    return retired


def parse(body: str) -> str | None:
    """The ID `body` approves (lower-cased), or None when it is no approval. The lines
    a Matrix reply quotes ("> ...") are not the reply's own text and are left out."""
    own = " ".join(line for line in body.splitlines() if not line.lstrip().startswith(">"))
    found = _APPROVE.fullmatch(" ".join(own.split()))
    return found.group(1).lower() if found else None


def approves(reaction_key: str | None) -> bool:
    return reaction_key in APPROVE_REACTIONS


class RoomEvent(Protocol):
    """What is read of a Matrix event (reconciler.notify.matrix.RoomEvent)."""

    @property
    def event_id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def relates_to_event(self) -> str | None: ...
    @property
    def rel_type(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...


@dataclass(frozen=True)
class Ask:
    """Someone asked to approve: by ID (`approval_id`), or by a ✅ on the message
    `reacted_to`. Answers go in the thread rooted at `thread`."""

    event_id: str
    sender: str
    approval_id: str | None
    reacted_to: str | None
    thread: str

    @property
    def reply_to(self) -> str:
        """The event an answer quotes: the message asked in, or the one reacted to."""
        return self.reacted_to or self.event_id


def asked(event: RoomEvent, me: str) -> Ask | None:
    """The approval `event` asks for, or None: the bot's own events (`me`), edits,
    other reactions and ordinary chat are not asks, and get no answer."""
    if event.sender == me or event.rel_type == "m.replace":
        return None
    if event.type == "m.reaction":
        target = event.relates_to_event
        # Only an annotation is a reaction to a message (rel_type is what says so).
        if target and event.rel_type == "m.annotation" and approves(event.key):
            return Ask(event.event_id, event.sender, None, target, target)
        return None
    if event.type != "m.room.message" or not event.body:
        return None
    found = parse(event.body)
    if found is None:
        return None
    # A thread cannot branch: an ask inside a thread is answered in it, any other
    # starts a thread of its own.
    in_thread = event.rel_type == "m.thread" and event.relates_to_event
    thread = event.relates_to_event if in_thread and event.relates_to_event else event.event_id
    return Ask(event.event_id, event.sender, found, None, thread)


@dataclass(frozen=True)
class Decision:
    """What to do with one `approve`: carry it out, or refuse it and say why.
    `expired`: refused because the approval's time is up (marking it is due)."""

    approved: bool
    reason: str
    expired: bool = False


def decide(
    approval: ApprovalRecord | None,
    asked: str,
    sender: str,
    approvers: Collection[str],
    report_only: Collection[str],
    at: datetime.datetime,
) -> Decision:
    """Whether `sender` approving `asked` (found as `approval`, or None) at `at` goes
    ahead. Who asks is judged first, so someone not allowed learns nothing about
    which IDs exist."""
    if sender not in approvers:
        # Who may approve is not said: the room need not learn whose account to take.
        return _refused(f"{sender} may not approve: not one of the approvers")
    if approval is None:
        return _refused(f"there is no approval {asked}: check the ID in the message")
    if approval.cluster in report_only:
        return _refused(requests.report_only(approval.cluster))
    what = describe(approval)
    if approval.state == "expired" or (
        approval.state == "pending" and approval.expires_at <= stamp(at)
    ):
        return Decision(
            False, f"approval {approval.id} ({what}) expired at {approval.expires_at}", True
        )
    if approval.state == "superseded":
        return _refused(
            f"approval {approval.id} ({what}) is out of date: what it was offered for changed "
            "or is over; approve the ID of the latest message"
        )
    if approval.state != "pending":
        by = f" by {approval.decided_by} at {approval.decided_at}" if approval.decided_by else ""
        return _refused(f"approval {approval.id} ({what}) was already used{by}: it is single-use")
    return Decision(True, f"approved by {sender}: {what}")


def _refused(reason: str) -> Decision:
    return Decision(False, reason)


def describe(approval: ApprovalRecord) -> str:
    if approval.action == "prune":
        return f"prune {len(approval.objects)} objects of app {approval.app} on {approval.cluster}"
    return f"{approval.action} app {approval.app} on {approval.cluster}"


def carrying_out(approval: ApprovalRecord) -> str:
    """The answer to an approval that went ahead."""
    what = describe(approval)
    return f"approved by {approval.decided_by}: {what}: carrying it out on the next reconcile"


@dataclass
class Quiet:
    """Who, not one of `approvers`, was last answered (their ask's event, when): each
    such sender is answered at most once in STRANGER_QUIET_S, so room members cannot
    make the bot post without limit (nor, through the homeserver's rate limit, hold
    back the notices). An approver is always answered."""

    approvers: Collection[str]
    last: dict[str, tuple[str, datetime.datetime]] = field(default_factory=dict)

    def due(self, sender: str, event_id: str, at: datetime.datetime) -> bool:
        """Whether the refusal of `sender`'s ask `event_id` at `at` is answered; the
        same ask read again (its answer failed) is answered again."""
        if sender in self.approvers:
            return True
        quiet = datetime.timedelta(seconds=STRANGER_QUIET_S)
        self.last = {s: last for s, last in self.last.items() if at - last[1] < quiet}
        answered = self.last.setdefault(sender, (event_id, at))
        return answered[0] == event_id


def deadline(approval: ApprovalRecord) -> datetime.datetime:
    """When an approved request not carried out yet is given up."""
    return parse_stamp(approval.expires_at) + datetime.timedelta(seconds=CARRY_OUT_GRACE_S)


def parse_stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def overdue(
    approval: ApprovalRecord, record: RequestRecord | None, handed: bool, at: datetime.datetime
) -> bool:
    """Whether the approved `approval` is given up at `at`: past its deadline, its
    request (`record`) not finished and not `handed` to a worker by this process (the
    daemon restarted meanwhile). One handed over is waited for: a worker answers
    every request it takes, and giving it up could not take it back."""
    return not handed and not finished(record) and at >= deadline(approval)


def overdue_text(approval: ApprovalRecord) -> str:
    return (
        f"approval {approval.id} FAILED: {describe(approval)}: the daemon restarted before "
        f"carrying it out, and its deadline {stamp(deadline(approval))} is past: given up "
        "(approve a newer message to try again)"
    )


def approved(
    approval: ApprovalRecord, by: str, event_id: str, thread: str, at: datetime.datetime
) -> tuple[ApprovalRecord, requests.Request]:
    """`approval` as approved by `by` (from Matrix event `event_id`; answers go under
    `thread`), and the sync request that carries it out: `reconciler sync --app A`,
    with `--prune` for a held prune, bound to the approval's cluster."""
    request = _request(approval, secrets.token_hex(16), stamp(at), by)
    decided = replace(
        approval,
        state="approved",
        decided_by=by,
        decided_at=stamp(at),
        decided_event=event_id,
        thread=thread,
        request_id=request.id,
    )
    return decided, request


def request_of(approval: ApprovalRecord) -> requests.Request:
    """The request an approved approval became, again (to hand it over after a restart)."""
    assert approval.request_id and approval.decided_by and approval.decided_at
    return _request(approval, approval.request_id, approval.decided_at, approval.decided_by)


def _request(approval: ApprovalRecord, request_id: str, at: str, by: str) -> requests.Request:
    """`reconciler sync --app A`, with `--prune` confirming only the objects a prune
    approval covers (the rest stay held), bound to the approval's cluster."""
    prune = approval.action == "prune"
    objects = frozenset(ObjectRef.parse(o) for o in approval.objects) if prune else None
    return requests.Request(request_id, approval.app, prune, at, by, approval.cluster, objects)


def finished(record: RequestRecord | None) -> bool:
    return record is not None and record.state in requests.FINISHED


def carried_out(record: RequestRecord) -> bool:
    return record.state == "done" and record.exit_code == requests.EXIT_OK


def result_text(approval: ApprovalRecord, record: RequestRecord) -> str:
    """The answer in the thread once the request is over: its summary and the lines a
    `reconciler sync` would print (bounded), already redacted by the sync."""
    head = "done" if carried_out(record) else "FAILED"
    summary = record.summary or record.state
    lines = [
        line.removeprefix("out: ").removeprefix("err: ")
        for line in record.output
        if line.removeprefix("out: ") != summary
    ]
    more = len(lines) - _RESULT_LINES
    body = lines[:_RESULT_LINES] + ([f"... and {more} more"] if more > 0 else [])
    return "\n".join([f"approval {approval.id} {head}: {describe(approval)}: {summary}", *body])
