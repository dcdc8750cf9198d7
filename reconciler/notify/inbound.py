"""The "notify.inbound" thread: reads the Matrix room and acts on approvals.

It long-polls the room (Matrix sync), keeps the position it read up to in the
store (so a restart never re-reads old replies; the first start takes the
room's present position and acts on no history), and hands each `approve <id>`
or ✅ to the rules of reconciler.notify.approvals. An approval that goes ahead
becomes a sync request handed to the daemon (`submit`: the daemon's own routing,
which refuses report-mode clusters too); once the request's record is done, the
result is answered in the thread. Everything else asked gets a refusal there.

The thread is thin on purpose: the decisions are pure functions, the HTTP is
reconciler.notify.matrix's, and the state is the store's. A homeserver that is
away is trouble (shown in status) and retried with backoff; it loses nothing,
since the position read is kept and the answers owed are in the store.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from reconciler import logs, requests
from reconciler.cluster.cache import Backoff
from reconciler.config import MatrixConfig
from reconciler.metrics import APPROVAL_OUTCOMES, ApprovalOutcome, Metrics
from reconciler.notify import approvals
from reconciler.notify.matrix import MatrixClient, MatrixError
from reconciler.notify.token import TokenError
from reconciler.notify.token import client as token_client
from reconciler.render.redaction import redact_text
from reconciler.store import ApprovalRecord, Store
from reconciler.supervise import Health, Supervisor

NAME = "notify.inbound"
# How long a sync waits for news; while an approved request awaits its answer, the
# loop comes back this often to look for it.
LONG_POLL_MS = 30_000
ANSWER_POLL_MS = 1_000
CLIENT_TIMEOUT_S = 10.0
# Beyond the long-poll itself: the client's own timeout and the handling of a batch.
SYNC_SLACK_S = 60.0
BACKOFF_S = (1.0, 60.0)

# Hands a request to the daemon: None once a worker has it, else why it is refused.
Submit = Callable[[requests.Request], str | None]
Count = Callable[[ApprovalOutcome], None]


def thread_reply(body: str, thread: str, in_reply_to: str) -> dict[str, Any]:
    """A notice in the thread rooted at `thread`, replying to `in_reply_to` (with the
    reply fallback, for clients that show no threads)."""
    return {
        "msgtype": "m.notice",
        "body": body,
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": thread,
            "is_falling_back": in_reply_to == thread,
            "m.in_reply_to": {"event_id": in_reply_to},
        },
    }


def txn_id(*parts: str) -> str:
    """A transaction ID fixed by what is answered, so an answer sent again after a
    failure or a restart is the same message to the homeserver, not a second one."""
    return "approval-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Inbound:
    """Reads the room of `config` and answers approvals; `run` is its supervised loop."""

    config: MatrixConfig
    store: Store
    report_only: Collection[str]
    submit: Submit
    health: Health
    stopping: threading.Event
    count: Count
    clock: Callable[[], datetime.datetime] = _now
    log: logs.Logger = field(default_factory=lambda: logs.get("reconciler.notify", component=NAME))
    # Requests handed to the daemon by this process (a restart of the loop must not
    # hand one over twice; a restart of the daemon must hand it over again).
    _handed: set[str] = field(default_factory=set)
    # The refusals of the batch being read (read again after a failure: logged and
    # counted once), and who not allowed to approve was last answered (event, when).
    _refused: set[str] = field(default_factory=set)
    _quiet: approvals.Quiet = field(init=False)

    def __post_init__(self) -> None:
        self._quiet = approvals.Quiet(frozenset(self.config.approvers))

    def run(self) -> None:
        """Until stopping: read the room, act on what was asked, answer what is done. A
        homeserver away, or a token file that cannot be used, is trouble (in status)
        and tried again with backoff; the token is read again each time."""
        backoff = Backoff(*BACKOFF_S)
        while not self.stopping.is_set():
            try:
                self._serve(backoff)
            except (TokenError, MatrixError) as exc:
                waited = exc.retry_after_s if isinstance(exc, MatrixError) else None
                delay = max(backoff.next(), waited or 0.0)
                self.health.trouble(NAME, f"{exc}; trying again in {delay:.0f}s")
                self.health.idle(NAME)
                self.stopping.wait(delay)
        self.health.idle(NAME)

    def _serve(self, backoff: Backoff) -> None:
        config = self.config
        self.health.busy(NAME, SYNC_SLACK_S, "connecting")
        client = token_client(config, CLIENT_TIMEOUT_S)
        me = client.whoami()
        since = self.store.notify_cursor(config.room_id)
        if since is None:
            # The first start: what was said before the daemon came is not acted on.
            since, _ = client.sync(None, 0, config.room_id, limit=1)
            self.store.set_notify_cursor(config.room_id, since)
            self.log.info("approvals.listening", room=config.room_id, user=me)
        while not self.stopping.is_set():
            # Expiring, handing over and answering may hang on the store or the room
            # too: the watchdog is owed a deadline for them as for the sync.
            self.health.busy(NAME, SYNC_SLACK_S, "answering approvals")
            self._expire()
            in_flight = self._give_up(client, self.store.approvals({"approved"}))
            self._hand_over(in_flight)
            self._answer(client, in_flight)
            wait_ms = ANSWER_POLL_MS if in_flight else self._until_expiry_ms()
            self.health.busy(NAME, wait_ms / 1000 + SYNC_SLACK_S, "reading the room")
            since, events = client.sync(since, wait_ms, config.room_id)
            backoff.reset()
            self.health.trouble(NAME, None)
            for event in events:
                ask = approvals.asked(event, me)
                if ask is not None:
                    self._handle(client, ask)
            self.store.set_notify_cursor(config.room_id, since)
            self._refused.clear()
            self.health.idle(NAME)

    def _until_expiry_ms(self) -> int:
        """How long to wait for news: the long poll, or less, so that the soonest pending
        approval is marked expired (logged, counted) when its time is up."""
        soonest = min((a.expires_at for a in self.store.approvals({"pending"})), default=None)
        if soonest is None:
            return LONG_POLL_MS
        expires = approvals.parse_stamp(soonest)
        left_ms = int((expires - self.clock()).total_seconds() * 1000) + ANSWER_POLL_MS
        return max(ANSWER_POLL_MS, min(LONG_POLL_MS, left_ms))

    def _expire(self) -> None:
        for approval in self.store.expire_approvals(approvals.stamp(self.clock())):
            self.count("expired")
            self.log.info("approval.expired", **_what(approval))

    def _give_up(
        self, client: MatrixClient, in_flight: list[ApprovalRecord]
    ) -> list[ApprovalRecord]:
        """Give up the approved requests not carried out by their deadline that no
        worker of this process has (answered as failed in the thread, never handed
        over again); the others, still in flight."""
        at, going = self.clock(), []
        for approval in in_flight:
            record = self.store.request(approval.request_id or "")
            if not approvals.overdue(approval, record, approval.request_id in self._handed, at):
                going.append(approval)
                continue
            text = approvals.overdue_text(approval)
            thread = approval.thread or ""
            self._send(client, text, thread, thread, ("result", approval.id))
            self.store.finish_approval(approval.id, "failed", text)
            self.count("failed")
            self.log.warning("approval.failed", **_what(approval), result=text)
        return going

    def _hand_over(self, in_flight: list[ApprovalRecord]) -> None:
        """Approved requests not yet handed to the daemon by this process (it restarted
        before carrying them out) are handed over again, under the same request ID."""
        for approval in in_flight:
            if approval.request_id in self._handed:
                continue
            if approvals.finished(self.store.request(approval.request_id or "")):
                continue
            self._submit(approvals.request_of(approval))

    def _submit(self, request: requests.Request) -> bool:
        """Hand `request` to the daemon; False if it refused it (the daemon records the
        refusal as the request's answer, which the thread hears as any other)."""
        self._handed.add(request.id)
        return self.submit(request) is None

    def _answer(self, client: MatrixClient, in_flight: list[ApprovalRecord]) -> None:
        """Answer in its thread each approved request whose record is done."""
        for approval in in_flight:
            record = self.store.request(approval.request_id or "")
            if record is None or not approvals.finished(record):
                continue
            ok = approvals.carried_out(record)
            self._send(
                client,
                approvals.result_text(approval, record),
                approval.thread or "",
                approval.thread or "",
                ("result", approval.id),
            )
            self.store.finish_approval(approval.id, "done" if ok else "failed", record.summary)
            self.count("carried_out" if ok else "failed")
            self.log.info(
                "approval.done" if ok else "approval.failed",
                **_what(approval),
                request=record.id,
                result=record.summary,
            )

    def _handle(self, client: MatrixClient, ask: approvals.Ask) -> None:
        approval_id = ask.approval_id
        if ask.reacted_to is not None:
            approval_id = self.store.approval_for_event(ask.reacted_to)
            if approval_id is None:
                return  # a ✅ on a message that offered nothing is just a reaction
        assert approval_id is not None
        approval = self.store.approval(approval_id)
        if approval is not None and approval.decided_event == ask.event_id:
            # Read again (its answer failed, or a restart came before the position was
            # kept): decided already; the answer goes again, the same message.
            record = self.store.request(approval.request_id or "")
            if record is None or record.state != "refused":
                self._carrying_out(client, approval, ask)
            return
        at = self.clock()
        decision = approvals.decide(
            approval, approval_id, ask.sender, self.config.approvers, self.report_only, at
        )
        if decision.approved and approval is not None:
            decided, request = approvals.approved(
                approval, ask.sender, ask.event_id, ask.thread, at
            )
            if self.store.decide_approval(decided, was="pending"):
                self.count("approved")
                self.log.info(
                    "approval.approved",
                    **_what(decided),
                    by=ask.sender,
                    at=decided.decided_at,
                    request=request.id,
                )
                if self._submit(request):
                    self._carrying_out(client, decided, ask)
                return
            # Another approval of the same ID came first: this one is a reuse.
            approval = self.store.approval(approval_id)
            decision = approvals.decide(
                approval, approval_id, ask.sender, self.config.approvers, self.report_only, at
            )
        if decision.expired:
            self._expire()
        if ask.event_id not in self._refused:
            self._refused.add(ask.event_id)
            self.count("refused")
            self.log.warning(
                "approval.refused",
                approval=approval_id,
                by=ask.sender,
                matrix_event=ask.event_id,
                reason=decision.reason,
            )
        if not self._quiet.due(ask.sender, ask.event_id, at):
            return
        refusal = f"refused: {decision.reason}"
        self._send(client, refusal, ask.thread, ask.reply_to, ("refused", ask.event_id))

    def _carrying_out(
        self, client: MatrixClient, approval: ApprovalRecord, ask: approvals.Ask
    ) -> None:
        text = approvals.carrying_out(approval)
        self._send(client, text, ask.thread, ask.reply_to, ("approved", ask.event_id))

    def _send(
        self, client: MatrixClient, body: str, thread: str, in_reply_to: str, key: tuple[str, str]
    ) -> None:
        try:
            # A message leaves the host: the free-text redaction is the last line of
            # defence for what an answer quotes (a sync's lines), as for every notice.
            content = thread_reply(redact_text(body), thread, in_reply_to)
            client.send(self.config.room_id, txn_id(*key), content)
        except MatrixError as exc:
            if exc.transient:
                raise  # the homeserver is away or busy: the loop retries
            # Refused for good (a thread that cannot be answered in): said in the log.
            self.log.warning("approval.answer.failed", thread=thread, error=str(exc))


def _what(approval: ApprovalRecord) -> dict[str, str | int]:
    return {
        "approval": approval.id,
        "cluster": approval.cluster,
        "app": approval.app,
        "action": approval.action,
        "detail": approval.detail,
        "objects": len(approval.objects),
    }


def start(
    config: MatrixConfig | None,
    store: Store,
    supervisor: Supervisor,
    metrics: Metrics,
    report_only: Collection[str],
    submit: Submit,
) -> Inbound | None:
    """Start the "notify.inbound" thread under `supervisor`; None (nothing started)
    when [notify.matrix] is not configured."""
    if config is None:
        return None
    for outcome in APPROVAL_OUTCOMES:
        metrics.count_approval(outcome, 0)
    inbound = Inbound(
        config,
        store,
        frozenset(report_only),
        submit,
        supervisor.health,
        supervisor.stopping,
        metrics.count_approval,
    )
    supervisor.thread(NAME, inbound.run)
    return inbound
