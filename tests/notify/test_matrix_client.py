"""The Matrix client (reconciler/notify/matrix.py) against a real Synapse over TLS: what it
posts is in the room, what people answer comes back with its relation, and every failure
is a MatrixError that names the homeserver, says whether to retry, and never the token."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.notify.matrix import MatrixClient, MatrixError, RoomEvent
from testenv.matrix import Homeserver
from testenv.pki import make_ca
from tests.notify.conftest import MatrixRoom


def _client(room: MatrixRoom, token: str | None = None, **kwargs: float) -> MatrixClient:
    return MatrixClient(
        room.server.url, token or room.bot.token, ca_file=room.server.ca_file, **kwargs
    )


def _notice(text: str) -> dict[str, str]:
    return {
        "msgtype": "m.notice",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": f"<p>{text}</p>",
    }


def test_whoami_names_the_tokens_user(matrix_room: MatrixRoom) -> None:
    assert _client(matrix_room).whoami() == matrix_room.bot.user_id


def test_joined_is_true_only_for_rooms_the_bot_is_in(matrix_room: MatrixRoom) -> None:
    elsewhere = matrix_room.server.create_room(matrix_room.owner.token)
    client = _client(matrix_room)
    assert client.joined(matrix_room.room_id)
    assert not client.joined(elsewhere)


def test_a_sent_message_is_in_the_room_as_sent(matrix_room: MatrixRoom) -> None:
    content = _notice("drift opened on prod: grafana")
    event_id = _client(matrix_room).send(matrix_room.room_id, "txn-1", content)
    [event] = matrix_room.server.messages(matrix_room.owner.token, matrix_room.room_id)
    assert event["event_id"] == event_id
    assert event["sender"] == matrix_room.bot.user_id
    assert event["content"] == content


def test_a_repeated_transaction_posts_once(matrix_room: MatrixRoom) -> None:
    client = _client(matrix_room)
    first = client.send(matrix_room.room_id, "outbox-7", _notice("once"))
    again = client.send(matrix_room.room_id, "outbox-7", _notice("once"))
    other = client.send(matrix_room.room_id, "outbox-8", _notice("twice"))
    assert again == first != other
    bodies = [
        e["content"]["body"]
        for e in matrix_room.server.messages(matrix_room.owner.token, matrix_room.room_id)
    ]
    assert bodies == ["once", "twice"]


def test_sync_returns_replies_and_reactions_with_what_they_relate_to(
    matrix_room: MatrixRoom,
) -> None:
    server, room_id, owner = matrix_room.server, matrix_room.room_id, matrix_room.owner
    client = _client(matrix_room)
    since, _ = client.sync(None, 0, room_id)
    notice = client.send(room_id, "t1", _notice("prune blocked: approve a1b2"))
    in_thread = server.say(owner.token, room_id, "approve a1b2", thread_root=notice)
    reaction = server.react(owner.token, room_id, notice, "✅")
    reply = server.say(matrix_room.stranger.token, room_id, "why?", reply_to=notice)

    next_batch, events = client.sync(since, 5000, room_id)

    by_id = {e.event_id: e for e in events}
    assert [e.event_id for e in events] == [notice, in_thread, reaction, reply]
    assert by_id[in_thread] == RoomEvent(
        event_id=in_thread,
        sender=owner.user_id,
        type="m.room.message",
        body="approve a1b2",
        relates_to_event=notice,
        rel_type="m.thread",
        key=None,
        origin_ts=by_id[in_thread].origin_ts,
    )
    assert (by_id[reaction].type, by_id[reaction].key) == ("m.reaction", "✅")
    assert (by_id[reaction].relates_to_event, by_id[reaction].rel_type) == (
        notice,
        "m.annotation",
    )
    assert by_id[reaction].body is None
    assert (by_id[reply].relates_to_event, by_id[reply].rel_type) == (notice, None)
    assert by_id[in_thread].origin_ts >= by_id[notice].origin_ts > 0
    # The next sync starts after them: nothing is read twice.
    assert client.sync(next_batch, 0, room_id)[1] == []


def test_sync_waits_for_the_next_event(matrix_room: MatrixRoom) -> None:
    client = _client(matrix_room)
    since, _ = client.sync(None, 0, matrix_room.room_id)
    started = time.monotonic()
    _, events = client.sync(since, 700, matrix_room.room_id)
    assert events == []
    assert time.monotonic() - started >= 0.6


def test_sync_after_a_gap_returns_every_event_in_order(matrix_room: MatrixRoom) -> None:
    server, room_id = matrix_room.server, matrix_room.room_id
    client = _client(matrix_room)
    since, _ = client.sync(None, 0, room_id)
    said = [server.say(matrix_room.owner.token, room_id, f"m{i}") for i in range(7)]
    _, events = client.sync(since, 0, room_id, limit=3)
    assert [e.event_id for e in events] == said


def test_sync_of_a_room_the_bot_is_not_in_is_empty(matrix_room: MatrixRoom) -> None:
    elsewhere = matrix_room.server.create_room(matrix_room.owner.token)
    matrix_room.server.say(matrix_room.owner.token, elsewhere, "private")
    assert _client(matrix_room).sync(None, 0, elsewhere)[1] == []


def test_a_refused_token_is_a_lasting_error_without_the_token(matrix_room: MatrixRoom) -> None:
    bad = "syt_not_a_real_token_" + "x" * 20
    with pytest.raises(MatrixError) as caught:
        _client(matrix_room, bad).whoami()
    assert (caught.value.status, caught.value.errcode) == (401, "M_UNKNOWN_TOKEN")
    assert not caught.value.transient
    assert matrix_room.server.url in str(caught.value)
    assert bad not in str(caught.value) and bad not in repr(caught.value.args)


def test_sending_to_a_room_the_bot_left_is_forbidden(matrix_room: MatrixRoom) -> None:
    elsewhere = matrix_room.server.create_room(matrix_room.owner.token)
    with pytest.raises(MatrixError) as caught:
        _client(matrix_room).send(elsewhere, "t", _notice("x"))
    assert (caught.value.status, caught.value.errcode) == (403, "M_FORBIDDEN")
    assert not caught.value.transient
    assert elsewhere in str(caught.value)


def test_a_server_certificate_from_another_ca_fails_verification(
    matrix_room: MatrixRoom, tmp_path: Path
) -> None:
    other_ca = make_ca(tmp_path / "other", "not-the-homeservers-ca")
    client = MatrixClient(matrix_room.server.url, matrix_room.bot.token, ca_file=other_ca.cert_file)
    with pytest.raises(MatrixError, match="TLS verification failed") as caught:
        client.whoami()
    assert caught.value.verification_failed and not caught.value.transient
    assert matrix_room.bot.token not in str(caught.value)


def test_a_stopped_homeserver_is_a_quick_transient_error(
    matrix_room: MatrixRoom, homeserver: Homeserver
) -> None:
    client = _client(matrix_room, timeout_s=5.0)
    homeserver.stop()
    started = time.monotonic()
    with pytest.raises(MatrixError, match="no answer") as caught:
        client.send(matrix_room.room_id, "t", _notice("while down"))
    assert time.monotonic() - started < 2.0
    assert caught.value.transient and caught.value.status is None
    homeserver.start()
    # Back up, the same client and token work again.
    assert client.whoami() == matrix_room.bot.user_id


@pytest.mark.parametrize(
    ("homeserver_url", "complaint"),
    [
        ("http://127.0.0.1:8008", "must be an https:// URL"),
        ("http://matrix.example", "must be an https:// URL"),
        ("matrix.example:8448", "must be an https:// URL"),
        ("https://bot:pw@matrix.example", "no user, query or fragment"),
    ],
)
def test_a_homeserver_url_without_verified_tls_is_refused(
    homeserver_url: str, complaint: str
) -> None:
    with pytest.raises(MatrixError, match=complaint) as caught:
        MatrixClient(homeserver_url, "syt_secret", ca_file=None)
    assert "syt_secret" not in str(caught.value) and "pw" not in str(caught.value)


@pytest.mark.parametrize("token", ["", "syt_a b", "syt_a\nInjected: header"])
def test_a_token_that_cannot_be_a_header_is_refused(token: str) -> None:
    with pytest.raises(MatrixError, match="access token is empty or has whitespace") as caught:
        MatrixClient("https://matrix.example", token, ca_file=None)
    assert token == "" or token not in str(caught.value)
