"""The state directory's rules: one writer at a time, private modes, the HMAC key file.

Two writers on one state (two daemons, or a CLI `sync` beside the daemon) would
race on the inventory and prune from a stale view of it, so every writer holds
an exclusive flock on `state_dir/lock` for its whole life, and the lock file
names the holder's pid for the message of the one refused.

Everything under state_dir is private to the service's user whatever the umask:
the directory is 0710 (its group may open a file it knows the name of, but not
list or create), files are 0600 and directories 0700, except the SQLite state
(state.db and its -wal/-shm), 0640, so that a member of the service's group can
run `reconciler status` while the daemon is down. What that group can read is
already redacted; the key that makes the in-sync verdict digests useless to a
guesser lives in `hmac.key`, 0600, outside the database.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from reconciler.errors import ReconcilerError

DIR_MODE = 0o710
DB_MODE = 0o640
# The process umask of every command: files it (and git, helm, kustomize) create are
# owner-only unless given a mode on purpose, whatever umask the service started with.
PRIVATE_UMASK = 0o077
LOCK_FILE = "lock"
KEY_FILE = "hmac.key"
KEY_BYTES = 32


class StateDirError(ReconcilerError):
    """The state directory cannot be used: not creatable, not lockable, a bad key file."""


class StateLocked(StateDirError):
    """Another process is writing to this state directory."""

    def __init__(self, lock: Path, pid: int | None) -> None:
        self.lock = lock
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{lock} is held by {holder}: another reconciler writes to this state")


def prepare(state_dir: Path) -> None:
    """Create state_dir (and its parents) if needed and make it private. An existing
    one is tightened only if it is empty or already a state (an older version made it
    0755): a state_dir set to a shared directory such as /tmp must not be chmod-ed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if state_dir.stat().st_mode & stat.S_ISVTX:
        return  # a sticky directory (/tmp) is shared by definition
    if not any(state_dir.iterdir()) or (state_dir / "state.db").exists():
        os.chmod(state_dir, DIR_MODE)


def secure_database(db: Path) -> None:
    """Give the SQLite files their mode: SQLite creates state.db 0644 whatever the umask
    (and -wal/-shm with state.db's mode at the time), so the mode is set after it did."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, DB_MODE)


class StateLock:
    """An exclusive flock on state_dir/lock, held until `release` or process exit."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateLocked naming the holder; never waits."""
        try:
            prepare(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError(f"{self.path}: cannot create the lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StateLocked(self.path, holder(self.path)) from None
            raise StateDirError(f"{self.path}: cannot lock: {exc.strerror}") from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[StateLock]:
    lock = StateLock(state_dir)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def holder(lock: Path) -> int | None:
    """The pid written in `lock` by its holder, if it can be read."""
    try:
        text = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def load_key(state_dir: Path, legacy: bytes | None = None) -> bytes:
    """The HMAC key of the verdict digests, from state_dir/hmac.key, created (0600,
    atomically: written aside, then linked into place) on first use. `legacy`, a key
    an older version kept in the database, becomes the file's key so stored verdicts
    stay valid."""
    path = state_dir / KEY_FILE
    key = read_key(state_dir)
    if key is not None:
        return key
    tmp = state_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (legacy or secrets.token_bytes(KEY_BYTES)).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made the key first: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    key = read_key(state_dir)
    if key is None:
        raise StateDirError(f"{path}: not a key written by the reconciler")
    return key


def read_key(state_dir: Path) -> bytes | None:
    """The key if the file exists and this user may read it, else None."""
    try:
        text = (state_dir / KEY_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return None
    return key if len(key) == KEY_BYTES else None
