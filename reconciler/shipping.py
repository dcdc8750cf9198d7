"""Ship the JSON log lines to the monitoring cluster's VictoriaLogs, never at a reconcile's expense.

Logging hands each rendered line to `LogShipper.submit`, which only appends to
a bounded in-memory queue; a background thread posts batches to VictoriaLogs'
JSON-lines ingestion API. When the sink is down or slow the queue fills and
the *oldest* entries are dropped and counted (`LogShipper.dropped`, exported
as ``reconciler_log_entries_dropped_total``): recent events are the ones an
operator looks for after an outage. stdout (journald) keeps every line, so a
drop loses nothing that is not also on the host.

Only the standard library talks HTTP here, so shipping adds no dependency and
no import-time cost when it is off.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.urls import redact_url

# VictoriaLogs indexes a stream per distinct set of these values: keep them few and low-cardinality.
STREAM_FIELDS = ("logger", "cluster")
_REQUEST_TIMEOUT_S = 5.0
_FIRST_RETRY_S = 0.2
# 408 and 429 say "later"; any other 4xx rejects these exact bytes, so resending cannot help.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})

_LOGGER = "reconciler.shipping"
_log = structlog.stdlib.get_logger(_LOGGER)


@dataclass(frozen=True)
class ShippingConfig:
    """Where and how to ship. ``url`` is VictoriaLogs' base URL (``https://host:9428``)."""

    url: str
    batch_size: int = 500
    flush_interval_s: float = 1.0
    max_queue: int = 10000
    ca_file: Path | None = None
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"ship_url must be an http:// or https:// URL, got {self.url!r}")
        if self.batch_size < 1 or self.max_queue < self.batch_size:
            raise ValueError("need 1 <= batch_size <= max_queue")
        if self.flush_interval_s <= 0 or self.max_backoff_s <= 0:
            raise ValueError("flush_interval_s and max_backoff_s must be positive")

    @property
    def insert_url(self) -> str:
        params = urllib.parse.urlencode(
            {
                "_stream_fields": ",".join(STREAM_FIELDS),
                "_msg_field": "event",
                "_time_field": "timestamp",
            }
        )
        return f"{self.url.rstrip('/')}/insert/jsonline?{params}"


class DropOldestQueue:
    """A FIFO of at most ``capacity`` lines where adding to a full queue evicts the oldest.

    Not thread-safe: `LogShipper` guards it with its own lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, line: str) -> None:
        self._items.append(line)
        self._trim()

    def take(self, n: int) -> list[str]:
        """Remove and return up to ``n`` of the oldest lines."""
        return [self._items.popleft() for _ in range(min(n, len(self._items)))]

    def put_back(self, batch: list[str]) -> None:
        """Return a batch that could not be sent to the front, where it is the oldest again."""
        self._items.extendleft(reversed(batch))
        self._trim()

    def discard(self, count: int) -> None:
        """Count lines removed by the caller and never delivered."""
        self.dropped += count

    def clear(self) -> None:
        self.discard(len(self._items))
        self._items.clear()

    def _trim(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popleft()
            self.dropped += 1


class LogShipper:
    """Batches lines to VictoriaLogs from a daemon thread; `submit` never blocks on the network."""

    def __init__(self, config: ShippingConfig) -> None:
        self.config = config
        self._queue = DropOldestQueue(config.max_queue)
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = 0.0
        self._context = (
            ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
            if config.url.startswith("https")
            else None
        )
        # A daemon thread, so a shipper nobody closed cannot keep the process alive.
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def dropped(self) -> int:
        """Lines never delivered: evicted when full, rejected by the sink, or unsent at close."""
        with self._cond:
            return self._queue.dropped

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, line: str) -> None:
        with self._cond:
            if self._closing:
                self._queue.discard(1)
                return
            self._queue.put(line)
            if len(self._queue) == self.config.batch_size:
                self._cond.notify()

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued until ``timeout``; whatever is left then counts as dropped."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(max(0.0, self._deadline - time.monotonic()))
        with self._cond:
            self._queue.clear()

    def _run(self) -> None:
        retry_in = _FIRST_RETRY_S
        failing = False
        while True:
            with self._cond:
                if not failing:
                    self._cond.wait_for(
                        lambda: self._closing or len(self._queue) >= self.config.batch_size,
                        timeout=self.config.flush_interval_s,
                    )
                if self._closing:
                    break
                batch = self._queue.take(self.config.batch_size)
            if not batch:
                continue
            error = self._send(batch, _REQUEST_TIMEOUT_S)
            if error is None:
                if failing:
                    _log.info("log_shipping.resumed", dropped_total=self.dropped)
                failing, retry_in = False, _FIRST_RETRY_S
                continue
            if not failing:
                _log.warning("log_shipping.failing", error=error, url=redact_url(self.config.url))
            failing = True
            with self._cond:
                self._queue.put_back(batch)
                self._cond.wait_for(lambda: self._closing, timeout=retry_in)
            retry_in = min(retry_in * 2, self.config.max_backoff_s)
        self._drain()

    def _drain(self) -> None:
        """At close: one pass over the queue, each request bounded by the time left."""
        while (left := self._deadline - time.monotonic()) > 0:
            with self._cond:
                batch = self._queue.take(self.config.batch_size)
            if not batch:
                return
            if self._send(batch, min(left, _REQUEST_TIMEOUT_S)) is not None:
                with self._cond:
                    self._queue.put_back(batch)
                return

    def _send(self, batch: list[str], timeout: float) -> str | None:
        """POST one batch; None when it is delivered or rejected for good, else why to retry."""
        request = urllib.request.Request(
            self.config.insert_url,
            data=("\n".join(batch) + "\n").encode(),
            method="POST",
            # With a form content type VictoriaLogs reads the body as a form and ingests nothing.
            headers={"Content-Type": "application/stream+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context) as resp:
                resp.read()
            return None
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in _RETRYABLE_CLIENT_ERRORS:
                with self._cond:
                    self._queue.discard(len(batch))
                reason = exc.read(300).decode("utf-8", "replace")
                _log.error(
                    "log_shipping.rejected", status=exc.code, reason=reason, lines=len(batch)
                )
                return None
            return f"HTTP {exc.code}"
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, TLS, resets
            return str(exc) or type(exc).__name__


class ShippingHandler(logging.Handler):
    """The logging handler that feeds a `LogShipper` the same JSON lines stdout gets."""

    def __init__(self, shipper: LogShipper) -> None:
        super().__init__()
        self.shipper = shipper
        # The shipper's own complaints go to stdout only: shipped, they would feed an
        # outage back into the queue it is failing to empty.
        self.addFilter(lambda record: record.name != _LOGGER)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.shipper.submit(self.format(record))
        except Exception:  # a log call must never raise into a reconcile
            self.handleError(record)

    def close(self) -> None:
        # logging.shutdown() calls this at interpreter exit, so queued lines get their flush.
        self.shipper.close()
        super().close()
