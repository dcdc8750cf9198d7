"""The shipper's bookkeeping, without a network: what is kept, dropped and counted."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.shipping import DropOldestQueue, ShippingConfig


def filled(capacity: int, count: int) -> DropOldestQueue:
    queue = DropOldestQueue(capacity)
    for i in range(count):
        queue.put(str(i))
    return queue


def test_a_full_queue_evicts_the_oldest_and_counts_it() -> None:
    queue = filled(3, 5)
    assert queue.dropped == 2
    assert queue.take(10) == ["2", "3", "4"]
    assert len(queue) == 0


def test_take_returns_the_oldest_first_and_at_most_n() -> None:
    queue = filled(10, 5)
    assert queue.take(2) == ["0", "1"]
    assert queue.take(2) == ["2", "3"]
    assert queue.dropped == 0


def test_a_failed_batch_goes_back_in_front_in_order() -> None:
    queue = filled(10, 5)
    batch = queue.take(3)
    queue.put("5")
    queue.put_back(batch)
    assert queue.take(10) == ["0", "1", "2", "3", "4", "5"]


def test_a_failed_batch_is_the_first_to_go_when_the_queue_filled_meanwhile() -> None:
    queue = filled(4, 4)
    batch = queue.take(2)
    queue.put("4")
    queue.put("5")
    queue.put_back(batch)
    assert queue.dropped == 2
    assert queue.take(10) == ["2", "3", "4", "5"]


def test_clear_and_discard_count_as_dropped() -> None:
    queue = filled(10, 4)
    queue.discard(2)
    queue.clear()
    assert (len(queue), queue.dropped) == (0, 6)


def test_insert_url_names_the_message_time_and_stream_fields() -> None:
    url = urlsplit(ShippingConfig(url="https://logs.monit.lan:9428/").insert_url)
    assert url.path == "/insert/jsonline"
    assert parse_qs(url.query) == {
        "_msg_field": ["event"],
        "_time_field": ["timestamp"],
        "_stream_fields": ["logger,cluster"],
    }


@pytest.mark.parametrize(
    "options",
    [
        {"url": "logs.monit.lan:9428"},
        {"url": "ftp://logs"},
        {"url": "http://logs", "batch_size": 0},
        {"url": "http://logs", "batch_size": 20, "max_queue": 10},
        {"url": "http://logs", "flush_interval_s": 0},
        {"url": "http://logs", "max_backoff_s": -1},
    ],
)
def test_nonsense_settings_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ShippingConfig(**options)  # type: ignore[arg-type]
