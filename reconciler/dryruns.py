"""Server-side dry-runs sent side by side, without hammering a server that throttles.

A diff sends one dry-run per desired object it has no remembered verdict for: on a
first start, one per object. Sent one at a time, each waits out a round trip to a
remote API server, so they go out concurrently, at most `ceiling` at once per cluster
(daemon.dry_run_concurrency), under an adaptive limit: when API Priority and Fairness
answers 429, the limit halves and no request of the cluster leaves before the server's
Retry-After has passed; successes grow the limit back one step at a time (additive
increase, multiplicative decrease, as TCP shares a congested link).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from reconciler.cluster import RETRY_PAUSES_S, ClusterError, Throttled

T = TypeVar("T")

# The wait after a 429 that names none, and the longest wait one 429 may ask for.
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 10.0
# How long one request waits on 429s in all before it fails (an error of its object).
MAX_THROTTLED_S = 30.0


class AdaptiveLimit:
    """How many requests of one cluster may be in flight at once, and from when.

    `limit` starts at `ceiling`. A 429 halves it (once per throttled spell: the
    requests that were already in flight answer 429 together, and that is one signal)
    and holds every new request until the Retry-After has passed; `limit` successes
    in a row raise it by one, up to `ceiling` again."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ceiling < 1:
            raise ValueError(f"a concurrency limit is at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self._successes = 0
        self._resume_at = float("-inf")
        self._clock = clock
        self._changed = threading.Condition()

    def acquire(self) -> None:
        """Wait for a free slot at a time the server accepts requests, and take it."""
        with self._changed:
            while True:
                hold = self._resume_at - self._clock()
                if hold <= 0 and self.in_flight < self.limit:
                    break
                self._changed.wait(hold if hold > 0 else None)
            self.in_flight += 1

    def succeeded(self) -> None:
        """Give back a slot whose request was answered."""
        with self._changed:
            self._release()
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit = min(self.ceiling, self.limit + 1)

    def failed(self) -> None:
        """Give back a slot whose request failed for a reason other than throttling."""
        with self._changed:
            self._release()

    def throttled(self, retry_after: float | None) -> float:
        """Give back a slot whose request was refused with 429 and the server's
        Retry-After (seconds, if it said); returns how long requests now wait."""
        wait = DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after
        wait = min(max(wait, 0.0), MAX_RETRY_AFTER_S)
        with self._changed:
            self._release()
            now = self._clock()
            if now >= self._resume_at:  # a new throttled spell, not an echo of this one
                self.limit = max(1, self.limit // 2)
                self._successes = 0
            self._resume_at = max(self._resume_at, now + wait)
            return self._resume_at - now

    def _release(self) -> None:
        self.in_flight -= 1
        self._changed.notify_all()


def send(limit: AdaptiveLimit, call: Callable[[], T], patience_s: float = MAX_THROTTLED_S) -> T:
    """`call` in a slot of `limit`. After a 429 it is sent again once the server's
    Retry-After has passed, as long as it waits `patience_s` at most in all; after
    another transient failure, again after each of RETRY_PAUSES_S."""
    throttled_s = 0.0
    pauses = iter(RETRY_PAUSES_S)
    while True:
        limit.acquire()
        try:
            result = call()
        except Throttled as exc:
            wait = limit.throttled(exc.retry_after)
            throttled_s += wait
            if throttled_s > patience_s:
                raise
            continue  # the next acquire waits the Retry-After out
        except ClusterError as exc:
            limit.failed()
            pause = next(pauses, None)
            if not exc.transient or pause is None:
                raise
            time.sleep(pause)
            continue
        except BaseException:
            limit.failed()
            raise
        limit.succeeded()
        return result
