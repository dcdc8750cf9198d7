"""Structured logs: one JSON object per line on stdout, which journald keeps.

Every event carries a UTC timestamp, a level and the event name, plus whatever
context the caller bound (cluster, app, object, commit), so the monitoring
cluster can index them without parsing prose. Values reaching here are already
redacted by the diff stage; logs never receive object bodies.

With a `ShippingConfig`, the same rendered lines also go to the monitoring
cluster's VictoriaLogs (see `reconciler.shipping`); stdout stays the record of
last resort.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from reconciler.shipping import LogShipper, ShippingConfig, ShippingHandler

Logger = structlog.stdlib.BoundLogger


def configure(
    level: str = "info", stream: TextIO | None = None, ship_to: ShippingConfig | None = None
) -> LogShipper | None:
    """Send structlog events, and stdlib logging from libraries, as JSON lines to `stream`.

    With ``ship_to``, every line is also queued for VictoriaLogs; the returned
    shipper is for the caller to read ``dropped`` from and to ``close()`` at shutdown.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    shipper = LogShipper(ship_to) if ship_to is not None else None
    if shipper is not None:
        handlers.append(ShippingHandler(shipper))
    formatter = _RenderOnce(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
        foreign_pre_chain=_shared_processors(),
    )
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, ShippingHandler):
            old.close()  # a reconfigure must not leave a shipper thread behind
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # Library chatter (urllib3 retries, kubernetes client) stays out unless it is a warning.
    for noisy in ("urllib3", "kubernetes", "apscheduler", "watchfiles"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return shipper


class _RenderOnce(structlog.stdlib.ProcessorFormatter):
    """Render each record once for all handlers, so stdout and the shipper get the same line.

    Per handler, stdlib records would be stamped twice, with different timestamps.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: str | None = getattr(record, "_reconciler_line", None)
        if line is None:
            line = super().format(record)
            record._reconciler_line = line
        return line


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
    ]


def get(name: str = "reconciler", **context: Any) -> Logger:
    logger: Logger = structlog.stdlib.get_logger(name).bind(**context)
    return logger
