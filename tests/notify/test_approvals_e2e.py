"""Approvals from the Matrix room, end to end: a real Synapse, real API servers, a real daemon.

The daemon holds a mass prune on agentic (the prune guard) and posts each held app
in the room with an approval ID. Someone not allowed to approve (by reply and by ✅)
and an allowed person answering too late or a second time change nothing and get a
refusal in the thread; the allowed person's `approve <id>` is carried out on the
next reconcile, the API server's audit log shows exactly those deletes, and the
result is answered in the thread.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testenv.matrix import Account
from tests.helpers_cluster import wait_for
from tests.helpers_lab import Lab
from tests.helpers_lab import app_files as lab_app_files
from tests.integration.conftest import lab  # noqa: F401  (the tests' GitOps lab fixture)
from tests.integration.test_daemon import FAST, Daemon, _ready
from tests.integration.test_prune_guard import GuardLab, app_files
from tests.notify.conftest import MatrixRoom

# Long enough for the first approval to be answered in time on a loaded machine,
# short enough to wait out for the second.
TTL_S = 60
CHECK = "\u2705"
HELD = ("held-a", "held-b", "held-c")


@dataclass
class Room:
    """The test's room as its people see it (reading it back from the homeserver)."""

    matrix: MatrixRoom
    # Said in the room before the daemon first started: never acted on.
    history: str = ""

    def say(self, who: Account, body: str) -> str:
        return self.matrix.server.say(who.token, self.matrix.room_id, body)

    def events(self) -> list[dict[str, Any]]:
        return self.matrix.server.messages(self.matrix.owner.token, self.matrix.room_id)

    def answers(self, about: str) -> list[str]:
        """The bot's messages in the thread of `about` or replying to it."""
        found = []
        for event in self.events():
            relates = event.get("content", {}).get("m.relates_to", {})
            replied = relates.get("m.in_reply_to", {}).get("event_id")
            bot = event["sender"] == self.matrix.bot.user_id
            if bot and about in (relates.get("event_id"), replied):
                found.append(str(event["content"]["body"]))
        return found

    def answered(self, about: str, text: str, timeout: float = 60) -> str:
        def seen() -> bool:
            return any(text in body for body in self.answers(about))

        wait_for(seen, timeout, f"the bot's answer to {about} saying {text!r}")
        return next(body for body in self.answers(about) if text in body)

    def offering(self, approval_id: str) -> str | None:
        """The event ID of the bot's message carrying `approval_id`, once posted."""
        return next(
            (
                str(e["event_id"])
                for e in self.events()
                if e["sender"] == self.matrix.bot.user_id
                and f"approve {approval_id}" in e.get("content", {}).get("body", "")
            ),
            None,
        )


@pytest.fixture
def room(matrix_room: MatrixRoom) -> Room:
    return Room(matrix_room)


@pytest.fixture
def daemon(lab: Lab, room: Room, tmp_path: Path) -> Iterator[Daemon]:  # noqa: F811  (the fixture)
    token_file = tmp_path / "matrix-token"
    token_file.write_text(room.matrix.bot.token + "\n")
    token_file.chmod(0o600)
    config = lab.config.read_text()
    config = config.replace(config[: config.index("[[repos]]")], "")
    notify = f"""
[notify.matrix]
homeserver = "{room.matrix.server.url}"
room_id = "{room.matrix.room_id}"
token_file = "{token_file}"
ca_file = "{room.matrix.server.ca_file}"
approvers = ["{room.matrix.owner.user_id}"]
approval_ttl_s = {TTL_S}
batch_s = 0.2
max_per_minute = 60
"""
    lab.config.write_text(FAST.format(state=tmp_path / "state") + config + notify)
    guard = GuardLab(lab)
    files: dict[str, bytes | None] = {}
    for cluster, namespace in lab.namespaces.items():
        files.update(dict.fromkeys(lab_app_files(cluster, namespace)))
    for app in HELD:
        files.update(app_files(app, guard.namespace, 8))
    lab.commit(files, "three apps of eight objects, the lab's own apps removed")
    room.history = room.say(room.matrix.owner, "approve 22222222")
    running = Daemon(lab, tmp_path / "daemon.log", tmp_path / "state")
    try:
        wait_for(lambda: _ready(running), 120, "the daemon's first full reconcile")
        wait_for(lambda: len(guard.config_maps()) == 8 * len(HELD), 60, "the apps applied")
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def pending(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """The pending approvals `reconciler status -o json` lists, by app."""
    return {a["app"]: a for a in daemon.status()["approvals"]}


def test_only_an_allowed_timely_first_approval_prunes_and_the_thread_hears_each_answer(
    daemon: Daemon, room: Room
) -> None:
    guard = GuardLab(daemon.lab)
    owner, stranger = room.matrix.owner, room.matrix.stranger
    guard.commit(
        {f"deploy/{app}/cm-{i}.yaml": None for app in HELD for i in range(1, 8)},
        "most of every app",
    )
    wait_for(lambda: pending(daemon).keys() == set(HELD), 60, "an approval offered per app")
    offered = pending(daemon)
    assert {(a["cluster"], a["action"]) for a in offered.values()} == {("agentic", "prune")}
    id_a, id_b, id_c = (offered[app]["id"] for app in HELD)
    wait_for(lambda: None not in map(room.offering, (id_a, id_b, id_c)), 60, "all posted")
    on_b, on_c = room.offering(id_b), room.offering(id_c)
    assert on_b is not None and on_c is not None

    # Someone else: by reply, and by ✅ on the message carrying it. Refused both times,
    # answered once (so no member can make the bot post without limit).
    asked = room.say(stranger, f"approve {id_a}")
    refused = room.answered(asked, "refused")
    assert "may not approve" in refused and owner.user_id not in refused
    reaction = room.matrix.server.react(stranger.token, room.matrix.room_id, on_b, CHECK)
    wait_for(lambda: reaction in refusals(daemon), 60, "the stranger's ✅ refused")
    assert room.answers(on_b) == [] and room.answers(reaction) == []
    assert guard.deletes() == [] and len(guard.config_maps()) == 24

    # The owner, in any case and spacing: carried out, and the result in the thread.
    approved = room.say(owner, f"  APPROVE {id_a.upper()} ")
    room.answered(approved, "carrying it out")
    result = room.answered(approved, f"approval {id_a} done", timeout=120)
    assert "held-a" in result and "7 pruned" in result
    assert guard.deletes() == [f"held-a-{i}" for i in range(1, 8)]

    # The owner's ✅ (as phones send it, with the variation selector) on the message.
    room.matrix.server.react(owner.token, room.matrix.room_id, on_c, CHECK + "\ufe0f")
    room.answered(on_c, f"approval {id_c} done", timeout=120)
    pruned = [f"held-{app}-{i}" for app in "ac" for i in range(1, 8)]
    assert guard.deletes() == pruned

    # The same ID again: single use.
    again = room.say(owner, f"approve {id_a}")
    assert "already used" in room.answered(again, "refused")

    # Past its expiry: refused, and held-b keeps every object.
    wait_for(lambda: id_b not in {a["id"] for a in pending(daemon).values()}, TTL_S + 30, "expiry")
    late = room.say(owner, f"approve {id_b}")
    assert "expired" in room.answered(late, "refused")
    assert guard.deletes() == pruned
    assert {f"held-b-{i}" for i in range(8)} <= guard.config_maps()

    events = [e for e in daemon.events() if str(e.get("event", "")).startswith("approval.")]
    decided = {e["approval"]: e for e in events if e["event"] == "approval.approved"}
    assert decided.keys() == {id_a, id_c}
    assert {(e["by"], e["cluster"]) for e in decided.values()} == {(owner.user_id, "agentic")}
    assert len([e for e in events if e["event"] == "approval.refused"]) == 4
    serving = next(e for e in daemon.events() if e.get("event") == "metrics.serving")
    with urllib.request.urlopen(f"http://{serving['address']}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    for outcome, count in {"approved": 2, "carried_out": 2, "refused": 4, "expired": 1}.items():
        assert f'reconciler_approvals_total{{outcome="{outcome}"}} {count}.0' in metrics
    assert room.matrix.bot.token not in daemon.log_path.read_text()
    assert room.matrix.bot.token not in json.dumps(daemon.status())


def test_the_room_is_read_on_from_where_it_was_left_across_a_restart_and_never_before(
    daemon: Daemon, room: Room, tmp_path: Path
) -> None:
    before = room.say(room.matrix.stranger, "approve 33333333")
    assert "may not approve" in room.answered(before, "refused")
    assert daemon.stop() == 0
    # Said while the daemon is down: answered once it is back, and nothing again.
    meanwhile = room.say(room.matrix.owner, "approve 44444444")
    again = Daemon(daemon.lab, tmp_path / "daemon-again.log", daemon.state_dir)
    try:
        wait_for(lambda: _ready(again), 120, "the restarted daemon's first full reconcile")
        assert "there is no approval 44444444" in room.answered(meanwhile, "refused")
        assert refusals(again) == [meanwhile]
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
            again.proc.wait()
    assert refusals(daemon) == [before]
    # Said before the daemon first read the room: history, never acted on.
    assert room.answers(room.history) == []


def test_an_approval_whose_prune_grew_is_out_of_date_and_the_new_one_prunes_what_it_shows(
    daemon: Daemon, room: Room
) -> None:
    guard, owner = GuardLab(daemon.lab), room.matrix.owner
    guard.commit({f"deploy/held-a/cm-{i}.yaml": None for i in range(1, 7)}, "six of held-a")
    wait_for(lambda: "held-a" in pending(daemon), 60, "an approval to prune six objects")
    old = pending(daemon)["held-a"]
    wait_for(lambda: room.offering(old["id"]) is not None, 60, "the message showing six")
    posted = next(e for e in room.events() if e["event_id"] == room.offering(old["id"]))
    assert "prune held by the guard (6 objects)" in posted["content"]["body"]

    # The prune grows before anyone answers: the message showing six is out of date.
    guard.commit({"deploy/held-a/cm-7.yaml": None}, "and a seventh")
    wait_for(lambda: pending(daemon).get("held-a", old)["id"] != old["id"], 60, "a new approval")
    new = pending(daemon)["held-a"]
    wait_for(lambda: room.offering(new["id"]) is not None, 60, "the message showing seven")

    stale = room.say(owner, f"approve {old['id']}")
    assert "out of date" in room.answered(stale, "refused")
    assert guard.deletes() == [] and len(guard.config_maps()) == 24

    approved = room.say(owner, f"approve {new['id']}")
    result = room.answered(approved, f"approval {new['id']} done", timeout=120)
    assert "7 pruned" in result
    assert guard.deletes() == [f"held-a-{i}" for i in range(1, 8)]
    superseded = [e for e in daemon.events() if e.get("event") == "approval.superseded"]
    assert [e["approval"] for e in superseded] == [old["id"]]


def refusals(daemon: Daemon) -> list[str]:
    """The Matrix events the daemon refused, in order."""
    return [e["matrix_event"] for e in daemon.events() if e.get("event") == "approval.refused"]
