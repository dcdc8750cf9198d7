"""Supervised work: which part of the daemon last moved when, and which has stopped.

Invariant 9: nothing stops silently. A thread that dies on an unexpected
exception, or blocks in a call that never returns, stops its part of the work
while every other part (and the main loop feeding systemd's watchdog) looks
fine. So every long-running part (a cluster's worker, each watch of a live
cache, each scheduled job, the git watcher) reports here: `busy` when it starts
something that must finish or progress within a bound, `idle` when it waits
for work, `trouble` when a handled problem keeps it from working (a kind that
cannot be listed), `failed` when it raised. `supervise` runs a thread's loop
and restarts it with backoff when it raises.

`snapshot()` says what each part is doing; a part is *stuck* when it is past
its deadline or its thread is dead, and the daemon then stops its heartbeat and
watchdog pings so systemd restarts it. A part with trouble or restarting after
an error is *degraded*: reported, but the pings go on, because it is still
trying (an unreachable cluster is not a stuck one).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from reconciler.cluster.cache import Backoff
from reconciler.store import ComponentRecord, now

State = Literal["ok", "busy", "trouble", "restarting", "stuck"]
# The states that make the daemon degraded; "stuck" also stops the watchdog.
DEGRADED: frozenset[State] = frozenset({"trouble", "restarting", "stuck"})
# A unit that ran this long since its last restart has recovered: its backoff starts over.
HEALTHY_RUN_S = 60.0
RESTART_BACKOFF = (1.0, 60.0)
MESSAGE_LENGTH = 300

# Told of each unexpected exception, to log and count it: (component, exception, and
# whether it repeats the component's last error, so its traceback was logged already).
OnFailure = Callable[[str, BaseException, bool], None]


@dataclass
class _Part:
    last: float
    progress_at: str
    deadline: float | None = None
    doing: str = ""
    trouble: str | None = None
    restarting_until: float | None = None
    thread: threading.Thread | None = None
    errors: int = 0
    last_error: str | None = None
    last_error_at: str | None = None


class Health:
    """Thread-safe registry of every supervised part of one daemon."""

    def __init__(
        self, on_failure: OnFailure | None = None, redact: Callable[[str], str] = str
    ) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, _Part] = {}
        self._on_failure = on_failure
        self._redact = redact

    def _part(self, name: str) -> _Part:
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = _Part(time.monotonic(), now())
        return part

    def register(self, name: str, thread: threading.Thread | None = None) -> None:
        """Start following `name`; with `thread`, a dead thread makes it stuck."""
        with self._lock:
            part = self._part(name)
            part.thread = thread or part.thread

    def busy(self, name: str, within_s: float, doing: str = "") -> None:
        """`name` is working, and shows progress again or finishes within `within_s`."""
        with self._lock:
            part = self._part(name)
            part.last, part.progress_at = time.monotonic(), now()
            part.deadline = part.last + within_s
            part.doing = doing or part.doing
            part.restarting_until = None

    def idle(self, name: str) -> None:
        """`name` is waiting for work, as it should."""
        with self._lock:
            part = self._part(name)
            part.last, part.progress_at = time.monotonic(), now()
            part.deadline, part.doing, part.restarting_until = None, "", None

    def trouble(self, name: str, problem: str | None) -> None:
        """A handled problem keeps `name` from doing its work (None: it is over)."""
        with self._lock:
            self._part(name).trouble = problem

    def failed(self, name: str, exc: BaseException, restart_in: float | None = None) -> None:
        """`name` raised unexpectedly; with `restart_in`, it restarts after that long."""
        message = self._redact(short(exc))
        with self._lock:
            part = self._part(name)
            repeated = part.last_error == message
            part.errors += 1
            part.last_error, part.last_error_at = message, now()
            if restart_in is not None:
                part.deadline = None
                part.restarting_until = time.monotonic() + restart_in
        if self._on_failure is not None:
            self._on_failure(name, exc, repeated)

    def done(self, name: str) -> None:
        """`name` ended as it should (nothing to watch, say): no longer followed."""
        with self._lock:
            self._parts.pop(name, None)

    def snapshot(self) -> list[ComponentRecord]:
        at = time.monotonic()
        with self._lock:
            return [self._component(name, part, at) for name, part in sorted(self._parts.items())]

    @staticmethod
    def _component(name: str, part: _Part, at: float) -> ComponentRecord:
        state: State
        # A thread not started yet (no ident) is not a dead one.
        thread = part.thread
        if thread is not None and thread.ident is not None and not thread.is_alive():
            state, detail = "stuck", "its thread has died"
        elif part.deadline is not None and at > part.deadline:
            doing = f" ({part.doing})" if part.doing else ""
            state, detail = "stuck", f"no progress for {at - part.last:.0f}s{doing}"
        elif part.restarting_until is not None:
            left = max(0.0, part.restarting_until - at)
            state, detail = "restarting", f"restarting in {left:.0f}s after: {part.last_error}"
        elif part.trouble is not None:
            state, detail = "trouble", part.trouble
        elif part.deadline is not None:
            state, detail = "busy", part.doing
        else:
            state, detail = "ok", ""
        return ComponentRecord(
            name,
            state,
            detail,
            part.progress_at,
            part.errors,
            part.last_error,
            part.last_error_at,
        )


def short(exc: BaseException) -> str:
    """One line naming the exception, bounded; the callers redact it before it leaves."""
    text = " ".join(str(exc).split())
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message if len(message) <= MESSAGE_LENGTH else message[: MESSAGE_LENGTH - 1] + "…"


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@dataclass
class Supervisor:
    """Runs units of work under `health`, restarting those that raise."""

    health: Health
    stopping: threading.Event
    backoff: tuple[float, float] = RESTART_BACKOFF

    def thread(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        """Start `loop` in a daemon thread named `name`, restarted whenever it raises,
        until `stopping` is set; it ends when `loop` returns."""
        thread = threading.Thread(target=self.run, args=(name, loop), name=name, daemon=True)
        self.health.register(name, thread)
        thread.start()
        return thread

    def run(self, name: str, loop: Callable[[], None]) -> None:
        """`loop()` until it returns or `stopping` is set, restarted with backoff on an
        exception, which is reported to `health` (logged, counted and recorded)."""
        backoff = Backoff(*self.backoff)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                loop()
            except Exception as exc:  # the point of a supervisor: nothing escapes unseen
                if time.monotonic() - started > HEALTHY_RUN_S:
                    backoff.reset()
                delay = backoff.next()
                self.health.failed(name, exc, restart_in=delay)
                self.stopping.wait(delay)
            else:
                break
        # Ended as it should, by itself or because the daemon is stopping (even before
        # its first turn, or while it waited to restart): a stopping daemon's parts are
        # not dead, so the health checks of its last seconds must not say so.
        self.health.done(name)

    def call(self, name: str, work: Callable[[], None], within_s: float) -> None:
        """One run of `work` (a scheduled job): busy for at most `within_s`, and an
        exception reported rather than raised; the next run is the job's next turn."""
        self.health.busy(name, within_s, "running")
        try:
            work()
        except Exception as exc:
            self.health.failed(name, exc)
        finally:
            self.health.idle(name)
