"""Logs shipped to a real VictoriaLogs: what arrives, what never does, and outages.

Every test logs through `reconciler.logs` exactly as the daemon does and reads
back with LogsQL, the way an operator would on monit. Each test tags its
events with its own ``run`` value, so tests sharing the server never see each
other's entries.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from reconciler import logs
from reconciler.diff.redact import redact
from reconciler.shipping import LogShipper, ShippingConfig
from testenv.clusters import free_port
from testenv.pki import make_ca
from testenv.victorialogs import VictoriaLogs

# What VictoriaLogs adds to every entry, and where it puts the fields it was told to use.
STORE_FIELDS = {"_msg", "_time", "_stream", "_stream_id"}
RENAMED = {"event": "_msg", "timestamp": "_time"}

Configure = Callable[..., tuple[LogShipper, io.StringIO]]


@pytest.fixture
def shipped_logging() -> Iterator[Configure]:
    """`logs.configure` with shipping on; afterwards the shipper is closed and logging restored."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    shippers: list[LogShipper] = []

    def configure(url: str, **options: Any) -> tuple[LogShipper, io.StringIO]:
        stdout = io.StringIO()
        shipper = logs.configure("info", stdout, ShippingConfig(url=url, **options))
        assert shipper is not None
        shippers.append(shipper)
        return shipper, stdout

    yield configure
    for shipper in shippers:
        shipper.close(timeout=0)
    root.handlers[:], root.level = saved_handlers, saved_level
    structlog.configure(**saved_structlog)


def lines(stdout: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_events_arrive_with_every_field_and_nothing_else(
    victorialogs: VictoriaLogs, shipped_logging: Configure
) -> None:
    _, stdout = shipped_logging(victorialogs.url, flush_interval_s=0.1)
    run = uuid.uuid4().hex
    log = logs.get("reconciler.engine", cluster="agentic", app="litellm", run=run)
    log.info("reconcile.applied", object="apps/v1/Deployment/ai/litellm", commit="0a1b2c3")
    log.warning("drift.found", object="v1/ConfigMap/ai/litellm-config", count=2)
    logging.getLogger("kubernetes.client").warning("watch restarted, run %s", run)

    shipped = victorialogs.wait_for(f"run:{run} OR {run}", 3)

    printed = [e for e in lines(stdout) if run in json.dumps(e)]
    assert len(printed) == 3
    by_msg = {entry["_msg"]: entry for entry in shipped}
    for event in printed:
        entry = by_msg[event["event"]]
        # Exactly stdout's fields: the shipper neither drops nor adds any.
        assert set(entry) - STORE_FIELDS == set(event) - set(RENAMED)
        for key, value in event.items():
            if key == "timestamp":
                assert datetime.fromisoformat(entry["_time"]) == datetime.fromisoformat(value)
            elif key != "event":
                assert entry[key] == str(value)
    applied = by_msg["reconcile.applied"]
    assert (applied["cluster"], applied["app"], applied["level"]) == ("agentic", "litellm", "info")
    assert applied["_stream"] == '{cluster="agentic",logger="reconciler.engine"}'
    assert by_msg[f"watch restarted, run {run}"]["level"] == "warning"


def test_a_secret_value_never_reaches_the_log_store(
    victorialogs: VictoriaLogs, shipped_logging: Configure
) -> None:
    _, stdout = shipped_logging(victorialogs.url, flush_interval_s=0.1)
    run = uuid.uuid4().hex
    canary = f"canary-{uuid.uuid4().hex}"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}
    redacted = redact({**secret, "data": {"password": canary}})
    logs.get(cluster="monit", run=run).info("drift.found", data=redacted["data"])

    (entry,) = victorialogs.wait_for(f"run:{run}", 1)

    assert entry["data.password"] == redacted["data"]["password"]
    everything = json.dumps(victorialogs.query("*"))
    assert canary not in everything
    assert canary not in stdout.getvalue()


def test_close_flushes_what_is_queued(
    victorialogs: VictoriaLogs, shipped_logging: Configure
) -> None:
    # Neither the batch size nor the interval would send these before close().
    shipper, _ = shipped_logging(victorialogs.url, flush_interval_s=60.0)
    run = uuid.uuid4().hex
    for seq in range(10):
        logs.get(run=run).info("shutdown.pending", seq=seq)
    shipper.close(timeout=5.0)

    assert shipper.dropped == 0
    assert len(victorialogs.wait_for(f"run:{run}", 10)) == 10


def test_close_with_the_sink_down_keeps_its_deadline(shipped_logging: Configure) -> None:
    shipper, _ = shipped_logging(f"http://127.0.0.1:{free_port()}", flush_interval_s=60.0)
    for seq in range(5):
        logs.get().info("shutdown.pending", seq=seq)
    started = time.monotonic()
    shipper.close(timeout=0.5)

    assert time.monotonic() - started < 2.0
    assert shipper.dropped == 5
    logs.get().info("after.close")
    assert shipper.dropped == 6


def test_a_rejected_batch_is_dropped_not_retried(
    victorialogs: VictoriaLogs, shipped_logging: Configure
) -> None:
    # A path VictoriaLogs does not serve: it answers 400, so resending is pointless.
    shipper, stdout = shipped_logging(victorialogs.url + "/wrong", flush_interval_s=0.1)
    for seq in range(3):
        logs.get().info("rejected", seq=seq)

    wait_until(lambda: shipper.dropped == 3, "rejected batch counted as dropped")
    assert shipper.pending == 0
    (complaint,) = [e for e in lines(stdout) if e["event"] == "log_shipping.rejected"]
    assert complaint["status"] == 400


def test_sink_outage_never_blocks_drops_the_oldest_and_recovers(
    victorialogs: VictoriaLogs, shipped_logging: Configure
) -> None:
    victorialogs.stop()
    try:
        shipper, stdout = shipped_logging(
            victorialogs.url,
            batch_size=100,
            max_queue=1000,
            flush_interval_s=0.1,
            max_backoff_s=0.5,
        )
        run = uuid.uuid4().hex
        log = logs.get("reconciler.engine", cluster="agentic", run=run)
        started = time.monotonic()
        for seq in range(10_000):
            log.info("reconcile.step", seq=seq)
        # A correctness bound (no call waits on the network), not a benchmark.
        assert time.monotonic() - started < 2.0

        # Once no batch is in flight, the queue holds exactly the newest 1000.
        wait_until(
            lambda: (shipper.pending, shipper.dropped) == (1000, 9000),
            "queue settled at the newest 1000",
        )
        events = [e["event"] for e in lines(stdout)]
        assert events.count("log_shipping.failing") == 1
    finally:
        victorialogs.start()

    shipped = victorialogs.wait_for(f"run:{run}", 1000)
    assert sorted(int(e["seq"]) for e in shipped) == list(range(9000, 10_000))
    wait_until(
        lambda: "log_shipping.resumed" in [e["event"] for e in lines(stdout)],
        "recovery logged on stdout",
    )
    assert shipper.dropped == 9000


def test_https_is_verified_against_the_configured_ca(
    tmp_path: Path, shipped_logging: Configure
) -> None:
    ca = make_ca(tmp_path / "pki", "monit-test")
    server = VictoriaLogs(tmp_path / "vl", ca=ca)
    server.start()
    try:
        # The system trust store does not know this CA: nothing is sent, and stdout says why.
        untrusting, stdout = shipped_logging(server.url, flush_interval_s=0.1)
        logs.get().info("unverified")
        wait_until(
            lambda: "log_shipping.failing" in stdout.getvalue(), "verification failure logged"
        )
        assert "CERTIFICATE_VERIFY_FAILED" in stdout.getvalue()
        assert untrusting.pending == 1

        trusting, _ = shipped_logging(server.url, flush_interval_s=0.1, ca_file=ca.cert_file)
        run = uuid.uuid4().hex
        logs.get(run=run).info("verified")
        assert server.wait_for(f"run:{run}", 1)[0]["_msg"] == "verified"
        assert trusting.dropped == 0
    finally:
        server.stop()
