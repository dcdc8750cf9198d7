"""`reconciler status` reads the daemon's part health from the store: a daemon that
is up with a stuck part is `stuck` (it names the part), one with trouble is
`degraded`, and either makes `status` exit 1 (`healthy` False)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from reconciler import status
from reconciler.config import Config, RenderConfig
from reconciler.store import ComponentRecord, Store, now


def _config(tmp_path: Path) -> Config:
    return Config(tmp_path / "config.toml", tmp_path, RenderConfig(), (), (), ())


def _part(name: str, state: str, detail: str = "") -> ComponentRecord:
    return ComponentRecord(name, state, detail, now(), 0, None, None)


def _status(tmp_path: Path, parts: list[ComponentRecord], beat: bool) -> dict[str, Any]:
    store = Store(tmp_path / "state.db")
    try:
        if beat:
            store.beat(now())
        else:
            # The heartbeat stopped a minute ago (held back), the parts are fresh.
            store.beat(now())
            old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
            with store._tx() as db:
                db.execute("UPDATE heartbeat SET at = ?", (old.isoformat(),))
        store.replace_components(parts)
        return status.gather(_config(tmp_path), store)
    finally:
        store.close()


def test_every_part_progressing_is_running_and_healthy(tmp_path: Path) -> None:
    doc = _status(tmp_path, [_part("worker agentic", "ok"), _part("job fetch", "busy")], True)
    assert (doc["daemon"]["running"], doc["daemon"]["state"]) == (True, "running")
    assert status.healthy(doc)
    assert status.table(doc).startswith("daemon: running")


def test_a_kind_that_cannot_be_listed_is_degraded_and_named(tmp_path: Path) -> None:
    problem = "cluster agentic: list ConfigMap: Forbidden (HTTP 403)"
    parts = [_part("worker agentic", "ok"), _part("watch agentic ConfigMap", "trouble", problem)]
    doc = _status(tmp_path, parts, True)
    assert (doc["daemon"]["running"], doc["daemon"]["state"]) == (True, "degraded")
    assert not status.healthy(doc)
    table = status.table(doc)
    assert table.startswith("daemon: DEGRADED")
    assert "watch agentic ConfigMap" in table and problem in table


def test_a_stuck_part_holds_the_heartbeat_and_status_names_it(tmp_path: Path) -> None:
    parts = [_part("worker agentic", "stuck", "no progress for 95s (reconcile)")]
    doc = _status(tmp_path, parts, False)
    assert (doc["daemon"]["running"], doc["daemon"]["state"]) == (False, "stuck")
    assert not status.healthy(doc)
    table = status.table(doc)
    assert table.startswith("daemon: STUCK (pid")
    assert "worker agentic" in table.splitlines()[0]
    assert "no progress for 95s (reconcile)" in table


def test_a_daemon_that_is_down_reports_no_parts(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        store.replace_components([_part("worker agentic", "stuck", "no progress")])
        doc = status.gather(_config(tmp_path), store)
    finally:
        store.close()
    assert (doc["daemon"]["state"], doc["daemon"]["components"]) == ("down", [])
