"""The "notify.send" thread: reports in, messages out to the Matrix room, never in the way.

A worker hands each reconcile's report to `Notifier.observe`, which only appends
to a bounded in-memory hand-off (full: the oldest report goes, counted) and
returns: a reconcile never waits for the room. The daemon's health has a slot of
its own, never dropped: its latest "degraded" or "back" always reaches the thread.
The thread turns reports into notices (reconciler.notify.notices: what opened,
changed or closed since the last one), and writes them, with what is open now,
to the store in one transaction, so a notice decided is a notice kept: a
homeserver that is down, or a restart, loses none. Dropping a report from the
hand-off loses nothing that matters either: the next report says what is open
then, and the store says what was told.

Pending notices go out as messages: those of one `batch_s` window together (a
notice asking for a decision alone), at most `max_per_minute` messages, each
under a transaction ID recorded before its first send, so a message resent after
a failure or a restart is the same event to the homeserver. An approval is
offered when its message is sent, not when the notice is decided, so its time
runs from when the room can see it; a condition still open when its approval
expired unused is posted again with a fresh one. A failed send is retried with
backoff (a 429's `retry_after_ms` honoured; after a 401 the token file is read
again); only a message the homeserver rejects for good is dropped. Pending
notices past `queue_size` go oldest first: those a later notice of the same key
supersedes, then the least important (closings, then drift), counted; what a
dropped notice told is taken back from what is open, so the next reconcile
tells it again.
"""

from __future__ import annotations

import datetime
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from reconciler import logs
from reconciler.cluster.cache import Backoff
from reconciler.config import MatrixConfig
from reconciler.metrics import NOTIFY_OUTCOMES, Metrics
from reconciler.model import Mode
from reconciler.notify import approvals, format, notices, pacing
from reconciler.notify.matrix import MatrixError
from reconciler.notify.token import TokenError, read_token
from reconciler.notify.token import client as token_client
from reconciler.render.redaction import redact_text
from reconciler.report import Report
from reconciler.store import ComponentRecord, NotifyHealth, OutboxNotice, Store, now
from reconciler.supervise import DEGRADED, Supervisor

NAME = "notify.send"
# Reports waiting for the thread; a reconcile every few seconds per cluster fills
# this only when the thread is stuck, and the newest reports are the ones that count.
HANDOFF_SIZE = 64
SEND_TIMEOUT_S = 10.0
# With nothing to send, the homeserver is asked who we are this often, so status
# says whether it is reachable before a message needs it.
PROBE_S = 60.0
BACKOFF_S = (1.0, 60.0)
# How often a token file that cannot be used is read again.
RECONNECT_S = 30.0
# The longest the thread sleeps between looks at the hand-off and the stop flag.
TICK_S = 1.0
# Turning a hand-off of reports into notices takes milliseconds; longer is stuck.
TAKE_DEADLINE_S = 60.0
# Pending notices read to make the next message: enough for one message, whatever
# waits behind it (the rest is counted, never loaded).
PENDING_WINDOW = 2 * format.MAX_NOTICES
# How often what is open is checked for an approval that expired unused.
REOFFER_S = 10.0
# What the homeserver answers for a token it does not know (revoked, rotated).
_TOKEN_REFUSED = "M_UNKNOWN_TOKEN"


class Client(Protocol):
    """What the thread needs of reconciler.notify.matrix.MatrixClient."""

    def whoami(self) -> str: ...

    def send(self, room_id: str, txn_id: str, content: dict[str, Any]) -> str: ...


# What a worker calls after each reconcile: cluster, mode, report, the apps it covered.
Observe = Callable[[str, Mode, Report, Collection[str] | None], None]


@dataclass(frozen=True)
class _Report:
    cluster: str
    mode: Mode
    report: Report
    only: frozenset[str] | None


@dataclass(frozen=True)
class _Health:
    parts: tuple[ComponentRecord, ...]


def matrix_client(config: MatrixConfig, token: str) -> Client:
    return token_client(config, SEND_TIMEOUT_S, token)


class Notifier:
    """Notices for the room, from reports and the daemon's health. With no
    [notify.matrix] (`config` None) every method does nothing and no thread starts."""

    def __init__(
        self,
        config: MatrixConfig | None,
        store: Store,
        metrics: Metrics,
        supervisor: Supervisor,
        client: Callable[[MatrixConfig, str], Client] = matrix_client,
    ) -> None:
        self.config = config
        self._store = store
        self._metrics = metrics
        self._supervisor = supervisor
        self._client_for = client
        self._cond = threading.Condition()
        self._handoff: deque[_Report] = deque()
        self._handoff_dropped = 0
        self._latest_health: _Health | None = None
        self._degraded: frozenset[tuple[str, str]] | None = None
        self.log = logs.get("reconciler.notify")
        self._rate = pacing.RateLimit(config.max_per_minute if config else 1)
        self._backoff = Backoff(*BACKOFF_S)
        self._retry_at = 0.0
        self._due_at: float | None = None
        self._contact_at = -PROBE_S
        self._reoffer_at = 0.0
        self._reconnect = False
        self._health = NotifyHealth()
        self._token = ""
        self.thread: threading.Thread | None = None

    # -- called by the daemon: never blocks ----------------------------------------

    def start(self) -> None:
        if self.config is None:
            return
        self._health = self._store.notify_health() or NotifyHealth()
        for outcome in NOTIFY_OUTCOMES:
            self._metrics.count_notify(outcome, 0)
        self._store.record_notify_health(self._health)
        self.thread = self._supervisor.thread(NAME, self._loop)

    def observe(
        self, cluster: str, mode: Mode, report: Report, only: Collection[str] | None = None
    ) -> None:
        """A reconcile of `cluster` (of its apps `only`, when given) ended with `report`:
        hand it over and return."""
        self._hand(_Report(cluster, mode, report, None if only is None else frozenset(only)))

    def daemon_health(self, parts: Sequence[ComponentRecord]) -> None:
        """The daemon's parts as recorded now; handed over only when which parts are
        degraded (or stuck) changed."""
        degraded = notices.degraded_parts(parts, DEGRADED)
        if self.config is None or degraded == self._degraded:
            return
        self._degraded = degraded
        with self._cond:
            self._latest_health = _Health(tuple(parts))
            self._cond.notify()

    def _hand(self, item: _Report) -> None:
        if self.config is None:
            return
        with self._cond:
            if len(self._handoff) >= HANDOFF_SIZE:
                # Nothing is lost: a later report of the cluster says what is open then.
                self._handoff.popleft()
                self._handoff_dropped += 1
                self._metrics.count_notify("superseded")
            self._handoff.append(item)
            self._cond.notify()

    # -- the thread -------------------------------------------------------------------

    def _loop(self) -> None:
        config = self.config
        assert config is not None, "started only when configured"
        health, stopping = self._supervisor.health, self._supervisor.stopping
        client: Client | None = None
        while not stopping.is_set():
            if client is None or self._reconnect:
                # At the start, and after the homeserver refused the token: the file
                # may hold a new one by now.
                self._reconnect = False
                client = self._connect(config)
                if client is None:
                    return
            health.idle(NAME)
            self._take(config)
            self._reoffer(config)
            wait = self._send(config, client)
            with self._cond:
                if not self._handoff and self._latest_health is None:
                    self._cond.wait(timeout=min(wait, TICK_S))

    def _connect(self, config: MatrixConfig) -> Client | None:
        """The client, once the token file can be read (trouble, shown in status, until then)."""
        health, stopping = self._supervisor.health, self._supervisor.stopping
        troubled = False
        while not stopping.is_set():
            health.idle(NAME)
            try:
                self._token = read_token(config.token_file)
                client = self._client_for(config, self._token)
            except (TokenError, MatrixError) as exc:
                troubled = True
                health.trouble(NAME, str(exc))
                self._failed(str(exc), reachable=None)
                stopping.wait(RECONNECT_S)
                continue
            if troubled:
                health.trouble(NAME, None)
            return client
        return None

    def _take(self, config: MatrixConfig) -> None:
        """Turn what was handed over into notices in the store."""
        with self._cond:
            items: list[_Report | _Health] = list(self._handoff)
            self._handoff = deque()
            if self._latest_health is not None:
                items.append(self._latest_health)
                self._latest_health = None
            dropped, self._handoff_dropped = self._handoff_dropped, 0
        if dropped:  # counted in the metrics as they went
            self.log.info("notify.handoff.full", superseded=dropped)
        if not items:
            return
        health = self._supervisor.health
        health.busy(NAME, TAKE_DEADLINE_S, "turning reports into notices")
        try:
            for item in items:
                self._told(config, item)
        finally:
            health.idle(NAME)

    def _told(self, config: MatrixConfig, item: _Report | _Health) -> None:
        """Record what `item` tells (opened, changed, closed) and the notices saying it."""
        if isinstance(item, _Health):
            scope = notices.DAEMON_SCOPE
            found = notices.daemon_conditions(item.parts, DEGRADED)
            told = notices.transitions(self._store.notify_open(scope), found)
        else:
            scope = item.cluster
            found = notices.report_conditions(item.cluster, item.mode, item.report)
            told = notices.transitions(
                self._store.notify_open(scope),
                found,
                notices.closable(item.report, item.only),
                notices.argo_lines(item.cluster, item.report),
            )
        if told.notices or told.opened:
            approvals.retire(self._store, told.notices)  # their messages are out of date
            self._enqueue(config, scope, told.opened, told.closed, told.notices)

    def _enqueue(
        self,
        config: MatrixConfig,
        scope: str,
        opened: dict[str, str],
        closed: Sequence[str],
        told: Sequence[notices.Notice],
    ) -> None:
        outbox = [OutboxNotice(n.key, n.priority, n.encode()) for n in told]
        dropped = self._store.enqueue_notices(scope, opened, closed, outbox, config.queue_size)
        for n in told:
            self.log.info("notify.notice", key=n.key, state=n.state, kind=n.kind)
        if dropped:
            self._count_dropped(dropped)
            self.log.warning("notify.queue.full", dropped=dropped)
        if outbox and self._due_at is None:
            self._due_at = time.monotonic() + config.batch_s

    def _reoffer(self, config: MatrixConfig) -> None:
        """Post again, with a fresh approval, each open condition whose approval expired
        unused (the condition unchanged, nothing else would say it again)."""
        at = time.monotonic()
        if at < self._reoffer_at:
            return
        self._reoffer_at = at + REOFFER_S
        health = self._supervisor.health
        health.busy(NAME, TAKE_DEADLINE_S, "looking for approvals that expired unused")
        try:
            for sent in self._store.expired_offers(now()):
                again = notices.offered_again(notices.Notice.decode(sent.notice))
                self.log.info("notify.approval.reoffered", key=again.key, expired=sent.approval_id)
                self._enqueue(config, again.cluster, {}, (), [again])
        finally:
            health.idle(NAME)

    def _offer(self, config: MatrixConfig, pending: OutboxNotice) -> str | None:
        """The approval the notice `pending` carries, offered now that it is sent (the
        one still pending for the same decision, if any); None when it gets none."""
        notice = notices.Notice.decode(pending.notice)
        if not notice.approval_action or not notice.approval_detail or notice.state == "closed":
            return None
        if self._store.superseded_notice(pending):
            return None  # the later notice of its key asks, for what holds then
        try:
            return approvals.offer(
                self._store,
                notice.cluster,
                notice.app,
                notice.approval_action,
                notice.approval_detail,
                config.approval_ttl_s,
                datetime.datetime.now(datetime.UTC),
                notice.approval_objects,
            )
        except approvals.NotOffered as exc:
            self.log.info("notify.approval.not_offered", key=notice.key, reason=str(exc))
            return None

    def _message(
        self, config: MatrixConfig, batch: list[OutboxNotice]
    ) -> tuple[list[OutboxNotice], str]:
        """`batch` as one message, and its transaction ID: the one it had, unless the
        approval it carries had to be offered anew (a new message, then)."""
        first, txn_id, approval_id = batch[0], batch[0].txn_id, None
        if len(batch) == 1 and pacing.asks(first):
            approval_id = self._offer(config, first)
            if approval_id is not None and approval_id != first.approval_id:
                txn_id = None
        if txn_id is None:
            txn_id = f"reconciler.{secrets.token_hex(12)}"
            self._store.group_notices([n.id for n in batch], txn_id, approval_id)
            batch = [
                replace(n, txn_id=txn_id, approval_id=approval_id or n.approval_id) for n in batch
            ]
        return batch, txn_id

    def _send(self, config: MatrixConfig, client: Client) -> float:
        """Send the next message if one is due; how long until there is more to do."""
        count, _ = self._store.notify_backlog()
        self._metrics.set_notify_pending(count)
        at = time.monotonic()
        if at < self._retry_at:
            return self._retry_at - at
        if not count:
            self._due_at = None
            if at - self._contact_at >= PROBE_S:
                self._probe(client)
            return PROBE_S
        wait = self._rate.wait_s(at)
        if wait > 0:
            return wait
        if self._due_at is None:
            self._due_at = at  # waiting since before this process: due now
        self._supervisor.health.busy(NAME, TAKE_DEADLINE_S, "making the next message")
        batch = pacing.next_message(self._store.pending_notices(PENDING_WINDOW))
        grouped = batch[0].txn_id is not None
        if not grouped and at < self._due_at and count < format.MAX_NOTICES:
            return self._due_at - at
        batch, txn_id = self._message(config, batch)
        content = format.message(
            [notices.Notice.decode(n.notice) for n in batch], self._approvals(batch)
        )
        self._supervisor.health.busy(NAME, 2 * SEND_TIMEOUT_S + 5.0, "sending")
        try:
            event_id = client.send(config.room_id, txn_id, content)
        except MatrixError as exc:
            return self._send_failed(exc, txn_id, len(batch))
        finally:
            self._supervisor.health.idle(NAME)
        self._store.notices_sent(txn_id, event_id)
        self._supervisor.health.trouble(NAME, None)
        self._rate.sent(time.monotonic())
        self._backoff.reset()
        self._metrics.count_notify("sent")
        if self._health.reachable is False or self._health.last_error:
            self.log.info("notify.resumed")
        self._health = replace(
            self._health,
            sent_total=self._health.sent_total + 1,
            last_sent_at=now(),
            reachable=True,
            last_error=None,
        )
        self._contact_at = time.monotonic()
        self._store.record_notify_health(self._health)
        self.log.info("notify.sent", notices=len(batch), event_id=event_id, txn_id=txn_id)
        self._due_at = time.monotonic() if count > len(batch) else None
        return 0.0

    def _send_failed(self, exc: MatrixError, txn_id: str, count: int) -> float:
        self._token_refused(exc)
        verdict = pacing.after_failure(exc.status, exc.retry_after_s)
        error = self._error(exc)
        if verdict.action == "drop":
            dropped = self._store.notices_dropped(txn_id)
            self._count_dropped(dropped)
            self.log.error("notify.rejected", error=error, notices=count, txn_id=txn_id)
        else:
            self._metrics.count_notify("failed")
            self._health = replace(self._health, failed_total=self._health.failed_total + 1)
            if self._health.last_error is None:
                self.log.warning("notify.failing", error=error)
        delay = verdict.delay_s if verdict.delay_s is not None else self._backoff.next()
        self._retry_at = time.monotonic() + delay
        self._failed(error, reachable=verdict.reachable)
        if verdict.action == "retry":
            self._supervisor.health.trouble(NAME, f"messages wait for the room: {error}")
        return delay

    def _probe(self, client: Client) -> None:
        self._contact_at = time.monotonic()
        self._supervisor.health.busy(NAME, 2 * SEND_TIMEOUT_S + 5.0, "probing the homeserver")
        try:
            client.whoami()
        except MatrixError as exc:
            self._token_refused(exc)
            verdict = pacing.after_failure(exc.status, exc.retry_after_s)
            self._failed(self._error(exc), reachable=verdict.reachable)
            return
        finally:
            self._supervisor.health.idle(NAME)
        if self._health.reachable is not True:
            self._supervisor.health.trouble(NAME, None)
            self._health = replace(self._health, reachable=True, last_error=None)
            self._store.record_notify_health(self._health)

    def _token_refused(self, exc: MatrixError) -> None:
        if exc.status == 401 or exc.errcode == _TOKEN_REFUSED:
            self._reconnect = True

    def _approvals(self, batch: Sequence[OutboxNotice]) -> dict[str, tuple[str, str]]:
        """The approvals `batch` carries that can still be used (an ID that cannot is
        not shown)."""
        carried: dict[str, tuple[str, str]] = {}
        for n in batch:
            record = self._store.approval(n.approval_id) if n.approval_id else None
            if record is not None and record.state == "pending":
                carried[n.key] = (record.id, record.expires_at)
        return carried

    def _count_dropped(self, count: int) -> None:
        self._metrics.count_notify("dropped", count)
        self._health = replace(self._health, dropped_total=self._health.dropped_total + count)
        self._store.record_notify_health(self._health)

    def _failed(self, error: str, reachable: bool | None) -> None:
        self._health = replace(
            self._health, last_error=error, last_error_at=now(), reachable=reachable
        )
        self._store.record_notify_health(self._health)

    def _error(self, exc: Exception) -> str:
        """The error as it may be shown: the token, and anything like one, redacted."""
        return redact_text(str(exc), [self._token] if self._token else [])
