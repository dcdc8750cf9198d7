"""Fixtures of the notify tests: a real Matrix homeserver (testenv/matrix.py), one per run,
and a fresh room per test with the people the tests need in it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testenv.matrix import Account, Homeserver
from testenv.pki import make_ca
from tests.helpers_cluster import unique


@dataclass(frozen=True)
class MatrixRoom:
    """A room on `server` the bot has joined, with its owner (who may approve) and a
    stranger (a member who may not)."""

    server: Homeserver
    room_id: str
    bot: Account
    owner: Account
    stranger: Account


@pytest.fixture(scope="session")
def _synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    # Lazy like the clusters: only tests that talk to Matrix start it.
    directory = tmp_path_factory.mktemp("matrix")
    server = Homeserver(directory / "synapse", make_ca(directory / "ca", "testenv-matrix-ca"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def homeserver(_synapse: Homeserver) -> Iterator[Homeserver]:
    """The run's homeserver, up; a test that takes it down need not bring it back."""
    if not _synapse.running:
        _synapse.start()
    yield _synapse
    if not _synapse.running:
        _synapse.start()


@pytest.fixture
def matrix_room(homeserver: Homeserver) -> MatrixRoom:
    bot, owner, stranger = (homeserver.register(unique(role)) for role in ("bot", "owner", "x"))
    room_id = homeserver.create_room(owner.token, invite=[bot.user_id, stranger.user_id])
    homeserver.join(bot.token, room_id)
    homeserver.join(stranger.token, room_id)
    return MatrixRoom(homeserver, room_id, bot, owner, stranger)
