"""When the next message may go, what goes in it, and what a failed send means.

Pure decisions for the sending thread (reconciler.notify.notifier), kept apart so
they are tested without a homeserver: a sliding-window rate limit, how pending
notices are grouped into messages (a message already grouped is resent as it
was, under its transaction ID; a notice that carries an approval goes alone, so a
✅ on it names one decision), and which failures are worth a retry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from reconciler.notify.format import MAX_NOTICES

WINDOW_S = 60.0
# Errors that reject these exact bytes: sending them again cannot help.
_REJECTED = frozenset({400, 413})


class Pending(Protocol):
    """A notice waiting in the outbox (reconciler.store.OutboxNotice)."""

    @property
    def notice(self) -> Mapping[str, Any]: ...
    @property
    def approval_id(self) -> str | None: ...
    @property
    def txn_id(self) -> str | None: ...


P = TypeVar("P", bound=Pending)


class RateLimit:
    """At most `per_minute` messages in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._sent: deque[float] = deque()

    def wait_s(self, now: float) -> float:
        """How long until one more message may go (0: now)."""
        while self._sent and now - self._sent[0] >= WINDOW_S:
            self._sent.popleft()
        if len(self._sent) < self.per_minute:
            return 0.0
        return self._sent[0] + WINDOW_S - now

    def sent(self, now: float) -> None:
        self._sent.append(now)


def next_message(pending: Sequence[P]) -> list[P]:
    """The notices of the next message, from `pending` (oldest first): a message grouped
    before (a restart, a failed send) as it was; else the oldest notice asking for a
    decision alone, if it is first in line; else up to MAX_NOTICES asking none."""
    if not pending:
        return []
    grouped = next((n.txn_id for n in pending if n.txn_id), None)
    if grouped is not None:
        return [n for n in pending if n.txn_id == grouped]
    first = pending[0]
    if asks(first):
        return [first]
    plain = [n for n in pending if not asks(n)]
    return plain[:MAX_NOTICES]


def asks(pending: Pending) -> bool:
    """Whether the notice asks for a decision: it carries an approval, or gets one when
    it is sent (offered then, so its time runs from when the room can see it)."""
    return bool(pending.approval_id or pending.notice.get("approval_action"))


@dataclass(frozen=True)
class Verdict:
    """What to do after a failed send: retry (after `delay_s`, None: the backoff's) or
    drop; and whether the homeserver answered at all."""

    action: Literal["retry", "drop"]
    reachable: bool
    delay_s: float | None = None


def after_failure(status: int | None, retry_after_s: float | None) -> Verdict:
    """`status` None: no HTTP answer (refused, reset, TLS, timeout)."""
    if status is None or status >= 500:
        return Verdict("retry", False, retry_after_s)
    if status == 429:
        return Verdict("retry", True, retry_after_s)
    if status in _REJECTED:
        return Verdict("drop", True)
    # 401, 403, 404: a token revoked, the bot out of the room: an operator fixes it, and
    # the messages wait for that rather than vanish.
    return Verdict("retry", True, retry_after_s)
