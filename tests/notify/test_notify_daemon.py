"""Notifications end to end: a real Synapse, the real test clusters, the real daemon.

prod (report mode) is synced by the admin standing in for Argo CD; a person edits its
Secret by hand. The room gets exactly one message for that drift,
with a short redacted summary (no Secret value, from git or live) and what Argo CD
says beside it; resyncs that find the same drift post nothing more; Argo CD syncing
again closes it with one message. A homeserver that is down delays messages, loses
none (they wait in the store, across a restart of the daemon too) and never slows
the reconciles.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from testenv.matrix import Homeserver
from tests.faults.conftest import fault_lab  # noqa: F401 (the fault tests' lab, as a fixture)
from tests.faults.lab import Daemon, FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import CANARY, kubectl, reconciler_cli
from tests.integration.test_prod_removed_fields import argo_cd_syncs
from tests.notify.conftest import MatrixRoom

# The value a person puts in prod's Secret by hand: no more printable than git's.
LIVE_CANARY = "canary-live-4b7e0a-do-not-print"
OPENED = "web-prod: drift opened"
CLOSED = "web-prod: drift closed"
# How long the homeserver stays down in the outage test (the acceptance: 30 s).
DOWN_S = 30.0
CLUSTERS = ("prod", "agentic", "monit")


def _configure(lab: FaultLab, room: MatrixRoom) -> None:
    token = lab.tmp / "matrix-token"
    token.write_text(room.bot.token + "\n")
    token.chmod(0o600)
    lab.tables["notify.matrix"] = {
        "homeserver": room.server.url,
        "room_id": room.room_id,
        "token_file": str(token),
        "ca_file": str(room.server.ca_file),
        "approvers": [room.owner.user_id],
        "batch_s": 0.5,
    }


def _bodies(room: MatrixRoom) -> list[str]:
    """The bot's messages in the room, oldest first, read back from the homeserver."""
    return [
        str(e["content"].get("body", ""))
        for e in room.server.messages(room.owner.token, room.room_id)
        if e["sender"] == room.bot.user_id and e["type"] == "m.room.message"
    ]


def _events(room: MatrixRoom) -> list[dict[str, Any]]:
    return [
        e
        for e in room.server.messages(room.owner.token, room.room_id)
        if e["sender"] == room.bot.user_id
    ]


def _told(room: MatrixRoom, text: str) -> list[str]:
    return [b for b in _bodies(room) if text in b]


def _posted(room: MatrixRoom, text: str) -> bool:
    return bool(_told(room, text))


def _prod_in_sync(lab: FaultLab) -> str:
    prod, ns = lab.clusters["prod"], lab.namespaces["prod"]
    kubectl(prod, "create", "namespace", ns)
    argo_cd_syncs(prod, ns)
    return ns


def _edit_by_hand(lab: FaultLab, ns: str) -> None:
    """A person's edit on prod: the Secret's value, in one request (one drift, found by
    one reconcile)."""
    prod = lab.clusters["prod"]
    patch = json.dumps({"stringData": {"token": LIVE_CANARY}})
    kubectl(prod, "-n", ns, "patch", "secret", "token", "-p", patch)


def _prod_drift(daemon: Daemon) -> int | None:
    app = daemon.app("prod", "web-prod")
    return None if app is None else int(app["drift"])


def _reconciles(daemon: Daemon, cluster: str) -> int:
    return daemon.reconciles(cluster)


def _no_canary(*texts: str) -> None:
    for value in (CANARY, LIVE_CANARY):
        for spelling in (value, base64.b64encode(value.encode()).decode()):
            for text in texts:
                assert spelling not in text


def _state(daemon: Daemon) -> str:
    state = b"".join(p.read_bytes() for p in daemon.lab.state.glob("state.db*"))
    return state.decode("utf-8", "replace")


def test_a_prod_drift_is_one_redacted_message_not_repeated_and_its_end_is_one_more(
    fault_lab: FaultLab,  # noqa: F811 (the fixture imported above)
    matrix_room: MatrixRoom,
) -> None:
    ns = _prod_in_sync(fault_lab)
    _configure(fault_lab, matrix_room)
    daemon = fault_lab.start()
    wait_for(lambda: _prod_drift(daemon) == 0, 60, "prod in sync at first")

    _edit_by_hand(fault_lab, ns)
    wait_for(lambda: _posted(matrix_room, OPENED), 60, "the drift's message in the room")
    (opened,) = _told(matrix_room, OPENED)
    assert "1 object differs from git" in opened
    assert f'Secret {ns}/token — /data/token git "<redacted>", live "<redacted>"' in opened
    # prod's test cluster runs no Argo CD: the message says its view cannot be read.
    assert "Argo CD's sync and health: not readable" in opened
    (event,) = [e for e in _events(matrix_room) if OPENED in e["content"].get("body", "")]
    assert event["content"]["format"] == "org.matrix.custom.html"
    assert "<strong>prod/web-prod: drift opened" in event["content"]["formatted_body"]

    # Resyncs (every 5 s) find the same drift: nothing more is posted.
    seen = _reconciles(daemon, "prod")
    wait_for(lambda: _reconciles(daemon, "prod") >= seen + 3, 60, "three more prod reconciles")
    assert len(_told(matrix_room, OPENED)) == 1

    # Argo CD syncs again: the drift is gone, and that is said once.
    argo_cd_syncs(fault_lab.clusters["prod"], ns)
    wait_for(lambda: _posted(matrix_room, CLOSED), 60, "the closing message")
    seen = _reconciles(daemon, "prod")
    wait_for(lambda: _reconciles(daemon, "prod") >= seen + 2, 60, "two more prod reconciles")
    assert len(_told(matrix_room, CLOSED)) == 1
    assert len(_told(matrix_room, OPENED)) == 1
    assert daemon.metric("reconciler_notify_messages_total", outcome="sent") == len(
        _bodies(matrix_room)
    )

    everything = [str(e["content"]) for e in _events(matrix_room)]
    _no_canary(*everything, daemon.log_path.read_text(), _state(daemon))
    notify = daemon.status()["notify"]
    assert notify["pending"] == 0 and notify["homeserver_reachable"] is True
    fault_lab.assert_prod_untouched()


def test_a_homeserver_that_is_down_delays_messages_loses_none_and_slows_no_reconcile(
    fault_lab: FaultLab,  # noqa: F811 (the fixture imported above)
    matrix_room: MatrixRoom,
    homeserver: Homeserver,
) -> None:
    ns = _prod_in_sync(fault_lab)
    _configure(fault_lab, matrix_room)
    daemon = fault_lab.start()
    wait_for(lambda: _prod_drift(daemon) == 0, 60, "prod in sync at first")

    homeserver.stop()
    stopped = time.monotonic()
    before = {c: _reconciles(daemon, c) for c in CLUSTERS}
    _edit_by_hand(fault_lab, ns)
    wait_for(lambda: (_prod_drift(daemon) or 0) >= 1, 60, "prod's drift found")

    def failing() -> bool:
        notify = daemon.status()["notify"]
        return notify["pending"] >= 1 and notify["homeserver_reachable"] is False

    wait_for(failing, 60, "the message waiting in the store, the homeserver unreachable")
    assert daemon.metric("reconciler_notify_messages_total", outcome="failed") >= 1
    assert daemon.metric("reconciler_notify_pending") >= 1
    # Reconciles go on at their pace (a resync every 5 s) while sends fail.
    wait_for(
        lambda: all(_reconciles(daemon, c) >= n + 3 for c, n in before.items()),
        60,
        "three more reconciles of every cluster while the homeserver is down",
    )
    durations = [
        e["duration_s"] for e in daemon.events("reconcile.done") if e.get("cluster") == "prod"
    ]
    assert max(durations[-3:]) < 5.0, durations

    # The daemon restarts while the homeserver is still down: the message waits in the store.
    assert daemon.stop() == 0
    daemon = fault_lab.start("after-restart")
    assert daemon.status()["notify"]["pending"] >= 1
    resumed = {c: _reconciles(daemon, c) for c in CLUSTERS}

    def down_long_and_reconciling() -> bool:
        # True only once the outage has lasted DOWN_S, every cluster reconciling meanwhile.
        reconciling = all(_reconciles(daemon, c) >= n + 2 for c, n in resumed.items())
        return reconciling and time.monotonic() - stopped >= DOWN_S

    wait_for(
        down_long_and_reconciling,
        DOWN_S + 120,
        f"{DOWN_S:.0f} s with the homeserver down, every cluster reconciling all along",
    )
    assert time.monotonic() - stopped >= DOWN_S
    assert daemon.status()["notify"]["pending"] >= 1, "the message still waits, none lost"
    durations = [
        e["duration_s"] for e in daemon.events("reconcile.done") if e.get("cluster") == "prod"
    ]
    assert durations and max(durations[-2:]) < 5.0, durations
    homeserver.start()
    wait_for(lambda: _posted(matrix_room, OPENED), 120, "the delayed message")
    wait_for(lambda: daemon.status()["notify"]["pending"] == 0, 60, "nothing pending")
    seen = _reconciles(daemon, "prod")
    wait_for(lambda: _reconciles(daemon, "prod") >= seen + 2, 60, "two more prod reconciles")
    assert len(_told(matrix_room, OPENED)) == 1
    assert daemon.status()["notify"]["homeserver_reachable"] is True
    _no_canary(daemon.log_path.read_text(), *(str(e["content"]) for e in _events(matrix_room)))
    fault_lab.assert_prod_untouched()


def test_check_connect_verifies_the_token_and_that_the_bot_joined_the_room(
    fault_lab: FaultLab,  # noqa: F811 (the fixture imported above)
    matrix_room: MatrixRoom,
) -> None:
    _configure(fault_lab, matrix_room)
    fault_lab.write_config()
    done = _check_connect(fault_lab.config)
    assert f"the token is {matrix_room.bot.user_id}'s" in done.stdout
    assert f"has joined {matrix_room.room_id}" in done.stdout
    assert matrix_room.bot.token not in done.stdout + done.stderr

    # A room the bot never joined, and a token the homeserver does not know.
    stranger_room = matrix_room.server.create_room(matrix_room.owner.token)
    fault_lab.tables["notify.matrix"]["room_id"] = stranger_room
    fault_lab.write_config()
    done = _check_connect(fault_lab.config)
    assert done.returncode == 1
    assert f"has not joined room {stranger_room}" in done.stderr
    (fault_lab.tmp / "matrix-token").write_text("syt_not_a_real_token\n")
    done = _check_connect(fault_lab.config)
    assert done.returncode == 1 and "M_UNKNOWN_TOKEN" in done.stderr
    assert "syt_not_a_real_token" not in done.stdout + done.stderr


def _check_connect(config: Path) -> subprocess.CompletedProcess[str]:
    return reconciler_cli(config, "check", "--connect")
