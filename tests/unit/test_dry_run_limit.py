"""The adaptive limit on concurrent dry-runs: halved by a 429, held for the server's
Retry-After, grown back by successes; and `send`, which retries through it."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from reconciler.cluster import Forbidden, ServerError, Throttled
from reconciler.cluster.client import retry_after_s, status_error
from reconciler.dryruns import MAX_RETRY_AFTER_S, AdaptiveLimit, send


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_429_halves_the_limit_once_per_throttled_spell() -> None:
    clock = Clock()
    limit = AdaptiveLimit(8, clock)
    for _ in range(3):
        limit.acquire()
    assert limit.throttled(2.0) == 2.0
    assert limit.limit == 4
    # The requests in flight with it answer 429 too: the same spell, not three more halvings.
    clock.now += 0.5
    assert limit.throttled(1.0) == pytest.approx(1.5), "the longer wait of the spell holds"
    limit.throttled(None)
    assert limit.limit == 4
    clock.now += 2.0
    limit.acquire()
    limit.throttled(1.0)
    assert limit.limit == 2, "a 429 after the spell is over halves again"
    for _ in range(3):
        clock.now += 5.0
        limit.acquire()
        limit.throttled(1.0)
    assert limit.limit == 1, "never below one request at a time"
    assert limit.in_flight == 0


def test_successes_grow_the_limit_back_to_the_ceiling_one_step_at_a_time() -> None:
    clock = Clock()
    limit = AdaptiveLimit(4, clock)
    limit.acquire()
    limit.throttled(1.0)
    assert limit.limit == 2
    clock.now += 1.0
    seen = []
    for _ in range(12):
        limit.acquire()
        limit.succeeded()
        seen.append(limit.limit)
    assert seen == [2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]


def test_the_wait_a_429_asks_for_is_bounded_and_defaults_to_a_second() -> None:
    assert AdaptiveLimit(2, Clock()).throttled(3600.0) == MAX_RETRY_AFTER_S
    assert AdaptiveLimit(2, Clock()).throttled(None) == 1.0
    assert AdaptiveLimit(2, Clock()).throttled(-5.0) == 0.0


def test_a_throttled_limit_holds_every_new_request_until_the_retry_after_passed() -> None:
    limit = AdaptiveLimit(4)
    limit.acquire()
    throttled_at = time.monotonic()
    limit.throttled(0.3)
    started: list[float] = []

    def request() -> None:
        limit.acquire()
        started.append(time.monotonic())
        limit.succeeded()

    threads = [threading.Thread(target=request) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(started) == 3
    assert min(started) - throttled_at >= 0.3


def test_no_more_requests_are_in_flight_than_the_limit() -> None:
    limit = AdaptiveLimit(3)
    inside = threading.Semaphore(0)
    go = threading.Event()
    lock = threading.Lock()
    now, most = [0], [0]

    def call() -> None:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        inside.release()
        go.wait(10)
        with lock:
            now[0] -= 1

    def request() -> None:
        send(limit, call)

    threads = [threading.Thread(target=request) for _ in range(7)]
    for t in threads:
        t.start()
    for _ in range(3):
        assert inside.acquire(timeout=10)
    assert not inside.acquire(timeout=0.2), "a fourth request waits for a slot"
    go.set()
    for t in threads:
        t.join(10)
    assert most == [3]
    assert limit.in_flight == 0


def test_send_retries_a_throttled_request_after_the_retry_after() -> None:
    limit = AdaptiveLimit(8)
    refusal = Throttled("c", "429", None, 0.05)
    answers: list[Exception | str] = [refusal, refusal, "ok"]
    calls: list[float] = []

    def call() -> str:
        calls.append(time.monotonic())
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert send(limit, call) == "ok"
    assert [b - a >= 0.05 for a, b in itertools.pairwise(calls)] == [True, True]
    assert limit.limit == 2, "halved twice: each 429 came after the last wait was over"


def test_send_gives_up_once_it_waited_its_patience_on_429s() -> None:
    limit = AdaptiveLimit(2)
    calls = []

    def call() -> None:
        calls.append(1)
        raise Throttled("c", "too many requests (HTTP 429)", None, 0.05)

    with pytest.raises(Throttled):
        send(limit, call, patience_s=0.175)
    assert len(calls) == 4, "three waits of 0.05 s fit in its patience, the fourth does not"
    assert limit.in_flight == 0


def test_send_raises_a_permanent_error_at_once_and_retries_a_transient_one() -> None:
    limit = AdaptiveLimit(2)
    calls = []

    def forbidden() -> None:
        calls.append(1)
        raise Forbidden("c", "no", None)

    with pytest.raises(Forbidden):
        send(limit, forbidden)
    assert calls == [1]
    answers: list[Exception | str] = [ServerError("c", "503", None), "ok"]

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert send(limit, flaky) == "ok"
    assert limit.limit == 2, "only a 429 lowers the limit"
    assert limit.in_flight == 0


def test_a_429_is_a_throttled_error_carrying_the_servers_retry_after() -> None:
    status = {"reason": "TooManyRequests"}
    error = status_error("agentic", 429, status, "apply x (dry-run)", None, retry_after_s("3"))
    assert isinstance(error, Throttled) and error.retry_after == 3.0
    assert error.transient, "other callers still retry it as before"
    assert retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert type(status_error("agentic", 503, status, "x")) is ServerError
