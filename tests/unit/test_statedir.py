"""The state directory: one writer (flock), private modes whatever the umask, and the
HMAC key of the verdict digests in its own file, outside the database it protects."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import statedir
from reconciler.cli import main
from reconciler.model import ObjectRef
from reconciler.store import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield int(request.param)
    os.umask(previous)


def test_a_second_writer_is_refused_naming_the_lock_file_and_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with statedir.exclusive(state):
        with pytest.raises(statedir.StateLocked) as refused:
            statedir.StateLock(state).acquire()
        assert refused.value.pid == os.getpid()
        assert str(state / "lock") in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
    # Released with its holder: the next writer gets it.
    with statedir.exclusive(state):
        pass


def test_state_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    state = tmp_path / "state"
    with statedir.exclusive(state):
        store = Store(state / "state.db")
        store.verdict("x")  # creates the key file
        store.pin_identity("agentic", "uid")
        assert (state / "state.db-wal").exists()
        assert _mode(state) == 0o710
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert _mode(state / name) == 0o640, name
        assert _mode(state / "hmac.key") == 0o600
        assert _mode(state / "lock") == 0o600
        store.close()


def test_an_existing_open_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    Store(state / "state.db").close()
    assert _mode(state) == 0o710


def test_the_verdict_key_lives_outside_the_database(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    digest = store.verdict("a", "b")
    store.close()
    key = bytes.fromhex((tmp_path / "hmac.key").read_text())
    assert digest == hmac.new(key, b"a\0b\0", hashlib.sha256).hexdigest()
    assert key.hex().encode() not in (tmp_path / "state.db").read_bytes()
    reopened = Store(tmp_path / "state.db")
    assert reopened.verdict("a", "b") == digest, "the same key after a restart"
    reopened.close()


def test_a_key_kept_in_the_database_by_an_older_version_moves_to_the_file(
    tmp_path: Path,
) -> None:
    legacy = bytes(range(32))
    store = Store(tmp_path / "state.db")
    store._db.execute("INSERT INTO meta VALUES ('verdict_key', ?)", (legacy.hex(),))
    store._db.commit()
    store.close()
    migrated = Store(tmp_path / "state.db")
    expected = hmac.new(legacy, b"x\0", hashlib.sha256).hexdigest()
    assert migrated.verdict("x") == expected, "verdicts stored under the old key stay valid"
    assert bytes.fromhex((tmp_path / "hmac.key").read_text()) == legacy
    rows = migrated._db.execute("SELECT * FROM meta WHERE key = 'verdict_key'").fetchall()
    assert rows == []
    migrated.close()


def test_a_read_only_store_writes_no_verdicts_and_no_key(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    reader = Store(tmp_path / "state.db", readonly=True)
    reader.verdict("x")
    reader.remember_in_sync("agentic", [(ObjectRef("", "ConfigMap", "ns", "a"), "v")])
    assert reader.in_sync("agentic") == {}
    assert not (tmp_path / "hmac.key").exists()
    reader.close()


def test_a_shared_directory_named_as_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses-file").write_text("x")
    os.chmod(shared, 0o1777)
    for _ in range(2):
        Store(shared / "state.db").close()
        assert _mode(shared) == 0o1777


def test_run_on_a_state_dir_it_cannot_create_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "occupied").write_text("a file where the state directory should be")
    config = tmp_path / "config.toml"
    config.write_text(
        'daemon = { state_dir = "occupied/state" }\n'
        '[[repos]]\nname = "r"\npath = "r"\n'
        '[[clusters]]\nname = "c"\nkubeconfig = "kubeconfig"\nservers = ["https://c:6443"]\n'
    )
    assert main(["run", "--config", str(config)]) == 78
    err = capsys.readouterr().err
    assert f"{tmp_path / 'occupied' / 'state' / 'lock'}: cannot create the lock" in err
