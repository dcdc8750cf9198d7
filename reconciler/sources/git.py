"""Read what is committed on a tracked ref, and fetch it, without touching the clone.

The operator's clone is opened read-only. Fetched objects and refs go into a
bare cache repository under state_dir whose object database borrows the
clone's objects (git "alternates"), so the cache can read both what was
fetched and what the operator committed or pulled locally. The working tree
is never read: files come from the commit's tree.

Tools that need files on disk get a checkout of the commit. A commit usually
changes a file or two, so a new commit's checkout is made from the last one
this process wrote of the repository: what the commits share is hard-linked,
only what the tree diff changed is written. Only while tools cannot write checkouts
(see Checkouts): a file linked is every checkout's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pygit2
from pygit2.enums import CredentialType, FetchPrune, FileMode, RepositoryOpenFlag

from reconciler.config import RepoConfig
from reconciler.errors import SourceError, TreeError
from reconciler.tree import EntryKind, clean_path
from reconciler.urls import redact_url

_REMOTE_REF = re.compile(r"^refs/remotes/([^/]+)/(.+)$")
_MAX_SYMLINK_HOPS = 16
_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")
_OID = re.compile(r"\b[0-9a-f]{40}\b")
# Symlinks followed for one fingerprint before it gives up (and never matches).
_MAX_FINGERPRINT_LINKS = 1000
_MAX_LINKS_CACHED = 100_000  # tree id -> the links under it; cleared when full
_LINKS: dict[pygit2.Oid, tuple[str, ...]] = {}
# The last checkout this process wrote of each repository (its directory of checkouts ->
# the tree written, and where), from which the next commit's is made.
_BASES: dict[Path, tuple[pygit2.Oid, Path]] = {}
_MAX_BASES = 1000
_BASES_LOCK = threading.Lock()
# Checkout files are read-only: one file may be hard-linked into the checkouts of many
# commits, and a write into one (the render sandbox grants tools read access only, where
# the kernel has Landlock) must fail rather than change what the others hold.
_FILE_MODE = 0o400
_EXECUTABLE_MODE = 0o500
# libgit2 otherwise waits for the OS TCP timeout when a remote is unreachable.
pygit2.settings.server_connect_timeout = 10_000
pygit2.settings.server_timeout = 60_000


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Checkouts:
    """Where a repository's commits are checked out, and whether a new checkout may
    hard-link the files it shares with the last one written (asked once per checkout).

    The caller tells, sources do not know the render stage: only while the render
    sandbox holds tools to read access on checkouts (Landlock's filesystem rules).
    Without them a tool runs as the daemon's user and can chmod a checkout file,
    rewrite it and restore its mode; linked, that content would be in every later
    checkout. The mode and size a link is checked against catch only a careless write."""

    root: Path
    linked: Callable[[], bool] = _never


class GitTree:
    """`reconciler.tree.Tree` over one commit of a pygit2 repository.

    Apps render on several threads; a libgit2 repository must not be used by
    two threads at once, so every access goes through the repository's one lock."""

    def __init__(
        self,
        repo_name: str,
        repository: pygit2.Repository,
        commit: pygit2.Commit,
        checkouts: Checkouts,
        lock: threading.RLock | None = None,
    ) -> None:
        self._repo_name = repo_name
        self._repository = repository
        self._root = commit.tree
        self._commit = str(commit.id)
        self._checkouts = checkouts
        # Trees of several commits of one repository object share its lock.
        self._lock = lock or threading.RLock()
        self._incomplete: Path | None = None  # this render's checkout lacking unreadable objects
        self._fingerprints: dict[str, str] = {}  # path -> fingerprint ('' for none) at this commit

    @property
    def repo(self) -> str:
        return self._repo_name

    @property
    def commit(self) -> str:
        return self._commit

    def _where(self, path: str) -> str:
        return f"{path or '.'} at commit {self._commit[:12]} of repo {self._repo_name}"

    @contextmanager
    def _reading(self, path: str) -> Iterator[None]:
        """Under the lock; an object the database lacks (a partial clone, a lost loose
        object, a corrupt pack) is a TreeError about `path`, so only the apps that need
        `path` fail."""
        with self._lock:
            try:
                yield
            except (pygit2.GitError, KeyError) as exc:
                raise self._unreadable(path, exc) from None

    def _unreadable(self, path: str, exc: Exception) -> TreeError:
        oid = _OID.search(str(exc))
        which = f"git object {oid[0]}" if oid else "a git object"
        return TreeError(
            f"cannot read {self._where(path)}: {which} is missing from the repository "
            "(a partial clone or a corrupt pack? `git fsck` in the clone tells)"
        )

    def _resolve(self, path: str) -> pygit2.Object | None:
        return self._locate(path)[0]

    def _locate(self, path: str) -> tuple[pygit2.Object | None, str]:
        """The object at `path` and where it really is (repo-relative), following
        symlinks as the filesystem will once the tree is materialised: a link's target
        is relative to the directory the link really is in, so `..` after a link to a
        directory climbs from where that directory is, not from where the text suggests
        (Argo CD's out-of-bounds check).

        (None, "") when nothing is there; TreeError when a link leaves the repository,
        enters `.git` or loops."""
        pending = [p for p in reversed(clean_path(path).split("/")) if p]
        dirs: list[pygit2.Tree] = [self._root]  # the directories walked into, root first
        names: list[str] = []
        obj: pygit2.Object = self._root
        links: list[str] = []  # followed so far, named in errors

        def escape(where: str) -> TreeError:
            if not links:
                return TreeError(f"{self._where(path)} points {where}")
            through = f" (through {links[-1]})" if len(links) > 1 else ""
            return TreeError(f"symlink {self._where(links[0])}{through} points {where}")

        while pending:
            part = pending.pop()
            if not isinstance(obj, pygit2.Tree):
                return None, ""  # a file used as a directory
            if part in ("", "."):
                continue
            if part == "..":
                if not names:
                    raise escape("outside the repository")
                names.pop()
                dirs.pop()
                obj = dirs[-1]
                continue
            if part.lower() == ".git":
                raise escape("into .git")
            if part not in obj:
                return None, ""
            entry = obj[part]
            if entry.filemode == FileMode.COMMIT:  # a submodule: not part of this repo
                return None, ""
            if entry.filemode == FileMode.LINK:
                links.append("/".join([*names, part]))
                if len(links) > _MAX_SYMLINK_HOPS:
                    raise TreeError(f"symlink loop at {self._where(links[0])}")
                assert isinstance(entry, pygit2.Blob)
                target = entry.data.decode("utf-8", "replace")
                if target.startswith("/"):
                    raise escape("outside the repository")
                if not target:
                    return None, ""
                pending.extend(reversed(target.split("/")))
                continue  # resolved from the directory holding the link
            names.append(part)
            obj = entry
            if isinstance(entry, pygit2.Tree):
                dirs.append(entry)
        return obj, "/".join(names)

    def kind(self, path: str) -> EntryKind:
        with self._reading(path):
            obj = self._resolve(path)
        if isinstance(obj, pygit2.Tree):
            return "dir"
        if isinstance(obj, pygit2.Blob):
            return "file"
        return "missing"

    def _blob(self, path: str) -> pygit2.Blob:
        with self._reading(path):
            obj = self._resolve(path)
        if not isinstance(obj, pygit2.Blob):
            raise TreeError(f"no file {self._where(path)}")
        return obj

    def size(self, path: str) -> int:
        with self._reading(path):
            return self._blob(path).size

    def read(self, path: str) -> bytes:
        with self._reading(path):
            return self._blob(path).data

    def files(self, path: str, recurse: bool) -> list[str]:
        with self._reading(path):
            top = self._resolve(path)
            if not isinstance(top, pygit2.Tree):
                raise TreeError(f"no directory {self._where(path)}")
            found: list[str] = []
            self._collect(top, clean_path(path), recurse, found)
        return sorted(found)

    def _collect(self, tree: pygit2.Tree, base: str, recurse: bool, found: list[str]) -> None:
        for entry in tree:
            name = entry.name or ""
            child = f"{base}/{name}" if base else name
            if entry.filemode == FileMode.LINK:
                # Directory symlinks are not followed while listing: that could loop.
                if isinstance(self._resolve(child), pygit2.Blob):
                    found.append(child)
            elif isinstance(entry, pygit2.Tree):
                if recurse:
                    try:
                        self._collect(entry, child, recurse, found)
                    except (pygit2.GitError, KeyError) as exc:
                        raise self._unreadable(child, exc) from None  # the deepest one
            elif isinstance(entry, pygit2.Blob):
                found.append(child)

    def fingerprint(self, path: str) -> str | None:
        """The git object id of what is at `path` (None when nothing is), so equal
        fingerprints at two commits mean equal content. A directory's also covers the
        targets of the symlinks under it: a tool following a link reads its target,
        which may lie outside the directory."""
        with self._reading(path):
            found = self._fingerprints.get(path)
            if found is None:
                found = self._fingerprint(path, frozenset(), [_MAX_FINGERPRINT_LINKS])
                self._fingerprints[path] = found
        return found or None

    def _fingerprint(self, path: str, within: frozenset[str], budget: list[int]) -> str:
        """'' for nothing at `path`; `within` holds the directories whose links are being
        followed (a link back into one is a loop, named rather than followed)."""
        obj, where = self._locate(path)
        if obj is None:
            return ""
        links = _links_under(obj) if isinstance(obj, pygit2.Tree) else ()
        if not links:
            return str(obj.id)
        if where in within:
            return f"{obj.id} loop"
        parts = [str(obj.id)]
        for link in links:
            budget[0] -= 1
            if budget[0] < 0:
                # Too many links to follow: a fingerprint that never matches, so whatever
                # read this directory is rendered again every time.
                return f"{obj.id} unbounded {uuid.uuid4()}"
            try:
                target = self._fingerprint(
                    f"{where}/{link}" if where else link, within | {where}, budget
                )
            except TreeError:
                target = "outside"  # never materialised, and an error for whoever reads it
            parts.append(f"{link}\0{target}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def materialise(self) -> Path:
        """Write the commit's files once into state_dir; commits are immutable, so the
        directory is reused by every later render of the same commit. It is written
        beside, then renamed into place: a render never sees half a checkout.

        Objects the repository lacks are left out, so the apps that do not need them
        still render (those that do fail reading them first: size, read, files). Such
        a checkout serves this tree alone and is removed with it, never reused: the
        objects may arrive with the next fetch."""
        # `.2`: checkouts written before links were resolved as the kernel resolves them
        # may hold escaping links, so they are never reused.
        dest = self._checkouts.root / self._repo_name / f"{self._commit}.2"
        with self._lock:
            if self._incomplete is not None:
                return self._incomplete
            if dest.is_dir():
                # Touched as used, so prune_checkouts spares a checkout being read.
                with contextlib.suppress(OSError):
                    os.utime(dest)
                return dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
            try:
                base = self._base(dest.parent) if self._checkouts.linked() else None
                if not self._write(self._root, str(tmp), "", base):
                    self._incomplete = tmp
                    weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
                    return tmp
                os.rename(tmp, dest)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not dest.is_dir():  # otherwise another process wrote it first
                    raise
                return dest
            with _BASES_LOCK:
                if len(_BASES) >= _MAX_BASES and dest.parent not in _BASES:
                    _BASES.clear()  # a process that used many state directories (tests)
                _BASES[dest.parent] = (self._root.id, dest)
        return dest

    def _base(self, checkouts: Path) -> tuple[str, pygit2.Object] | None:
        """The last checkout this process wrote into `checkouts` and its tree, while it
        is still there: what the next checkout is made from."""
        with _BASES_LOCK:
            found = _BASES.get(checkouts)
        if found is None or not found[1].is_dir():
            return None
        try:
            tree = self._repository[found[0]]
        except (pygit2.GitError, KeyError, ValueError):
            return None
        return (str(found[1]), tree) if isinstance(tree, pygit2.Tree) else None

    def _write(
        self, tree: pygit2.Tree, root: str, rel: str, base: tuple[str, pygit2.Object] | None
    ) -> bool:
        """Whether every object under `tree` could be written to `root`/`rel`. `base` is
        a checkout this process wrote and what its tree holds at `rel`: the files it has
        unchanged are hard-linked from it rather than written."""
        complete = True
        for entry in tree:
            name = entry.name or ""
            if name in ("", ".", "..") or "/" in name or name.lower() == ".git":
                continue  # a crafted tree: never a path outside, never a repository
            child = f"{rel}/{name}" if rel else name
            try:
                before = _entry(base[1], name) if base is not None else None
                was = (base[0], before) if base is not None and before is not None else None
                complete &= self._write_entry(entry, root, child, was)
            except (pygit2.GitError, KeyError):
                complete = False
        return complete

    def _write_entry(
        self, entry: pygit2.Object, root: str, rel: str, base: tuple[str, pygit2.Object] | None
    ) -> bool:
        target = f"{root}/{rel}"
        mode = entry.filemode
        if mode == FileMode.LINK:
            assert isinstance(entry, pygit2.Blob)
            try:
                inside = self._resolve(rel) is not None
            except TreeError:
                inside = False  # apps that read it get the TreeError instead
            # Only links whose whole chain ends inside the repository are written, so
            # the kernel, following them for helm or kustomize, lands where _resolve did.
            # Each is decided again at every commit: its target may have changed.
            if inside:
                os.symlink(entry.data.decode("utf-8", "replace"), target)
        elif isinstance(entry, pygit2.Tree):
            os.mkdir(target, 0o700)
            return self._write(entry, root, rel, base)
        elif isinstance(entry, pygit2.Blob):
            on_disk = _EXECUTABLE_MODE if mode == FileMode.BLOB_EXECUTABLE else _FILE_MODE
            unchanged = (
                base is not None
                and base[1].id == entry.id
                and base[1].filemode == mode
                and _link(f"{base[0]}/{rel}", target, on_disk, entry.size)
            )
            if not unchanged:
                _write_file(target, entry.data, on_disk)
        return True


@dataclass(frozen=True)
class FetchOutcome:
    """The result of one fetch: `ok` is False when the remote could not be reached,
    in which case the last fetched commit (if any) keeps being used."""

    ok: bool
    commit: str | None
    message: str


class _Credentials(pygit2.RemoteCallbacks):
    """Credentials from the ssh agent or the environment, tried once each, so a
    rejected credential fails the fetch instead of being retried forever."""

    def __init__(self) -> None:
        super().__init__()
        self._tried: set[CredentialType] = set()

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Keypair | pygit2.UserPass:
        ssh, plain = CredentialType.SSH_KEY, CredentialType.USERPASS_PLAINTEXT
        if allowed_types & ssh and ssh not in self._tried:
            self._tried.add(ssh)
            return pygit2.KeypairFromAgent(username_from_url or "git")
        token = os.environ.get("RECONCILER_GIT_TOKEN")
        if allowed_types & plain and token and plain not in self._tried:
            self._tried.add(plain)
            user = os.environ.get("RECONCILER_GIT_USERNAME", "x-access-token")
            return pygit2.UserPass(user, token)
        raise pygit2.GitError(f"no usable credentials for {redact_url(url)}")


# How long a checkout of a commit no longer rendered is kept (reconciler.sources.git
# GitSource.prune_checkouts).
CHECKOUT_IDLE_S = 3600.0


class GitSource:
    """One configured repository: its clone (read-only) and its cache in state_dir."""

    def __init__(
        self, config: RepoConfig, state_dir: Path, link_checkouts: Callable[[], bool] = _never
    ) -> None:
        """`link_checkouts`: whether tools are held to read access on checkouts now
        (see Checkouts); without it every checkout is written whole."""
        self.name = config.name
        self.ref = config.ref
        self._config = config
        self._cache_path = state_dir / "git" / f"{config.name}.git"
        self._stamp = state_dir / "git" / f"{config.name}.last-fetch"
        self._checkouts = Checkouts(state_dir / "checkouts", link_checkouts)

    def _open_clone(self) -> pygit2.Repository:
        path = self._config.path
        if not path.exists():
            raise SourceError(f"repo {self.name}: {path} does not exist")
        try:
            # No upward search: a plain directory inside some other repo is an error.
            return pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError as exc:
            raise SourceError(
                f"repo {self.name}: {path} is not a readable git repository ({exc})"
            ) from None

    def _open_cache(self, clone: pygit2.Repository) -> pygit2.Repository:
        try:
            if not self._cache_path.exists():
                self._cache_path.parent.mkdir(parents=True, exist_ok=True)
                pygit2.init_repository(str(self._cache_path), bare=True)
            alternates = self._cache_path / "objects" / "info" / "alternates"
            wanted = str(Path(clone.path) / "objects") + "\n"
            if not alternates.exists() or alternates.read_text() != wanted:
                alternates.parent.mkdir(parents=True, exist_ok=True)
                alternates.write_text(wanted)
            return pygit2.Repository(str(self._cache_path))
        except (OSError, pygit2.GitError) as exc:
            raise SourceError(
                f"repo {self.name}: cannot use cache {self._cache_path} ({exc})"
            ) from None

    def url(self) -> str | None:
        """How Applications name this repo: configured `url`, else the clone's origin."""
        if self._config.url:
            return self._config.url
        clone = self._open_clone()
        remote = _REMOTE_REF.match(self.ref)
        name = remote.group(1) if remote else "origin"
        try:
            return str(clone.remotes[name].url)
        except (KeyError, ValueError):
            return None

    def snapshot(self) -> GitTree:
        """The tree of the tracked ref's commit: the newer of the clone's ref (a local
        commit or pull) and the cache's (the last fetch)."""
        clone = self._open_clone()
        cache = self._open_cache(clone)
        try:
            local = _lookup(clone, self.ref)
            fetched = _lookup(cache, self.ref)
            if local is None and fetched is None:
                known = ", ".join(sorted(r for r in clone.references if r.startswith("refs/")))
                raise SourceError(
                    f"repo {self.name}: ref {self.ref} not found in {self._config.path} "
                    f"(known refs: {known or 'none'})"
                )
            chosen = _newer(cache, local, fetched)
            commit = cache[chosen].peel(pygit2.Commit)
            return GitTree(self.name, cache, commit, self._checkouts)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise SourceError(
                f"repo {self.name}: cannot read {self.ref} from {self._config.path} "
                f"(corrupt repository? {exc})"
            ) from None

    def prune_checkouts(self, keep: Collection[str], idle_s: float = CHECKOUT_IDLE_S) -> int:
        """Remove this repo's checkouts of commits not in `keep` (the commits rendered
        now) that were written over `idle_s` ago, and how many: one is written per
        commit rendered, and a daemon renders many commits a day. The age spares a
        checkout another process (a `diff` beside the daemon) may be reading."""
        try:
            entries = list((self._checkouts.root / self.name).iterdir())
        except OSError:
            return 0
        horizon = time.time() - idle_s
        removed = 0
        for entry in entries:
            if entry.name.partition(".")[0] in keep:
                continue
            try:
                if entry.lstat().st_mtime > horizon:
                    continue
            except OSError:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        return removed

    def revisions(self, tracked: GitTree) -> GitRevisions:
        """The repository's other commits, for sources pinned by targetRevision."""
        clone = self._open_clone()
        cache = self._open_cache(clone)
        return GitRevisions(self.name, self.ref, (clone, cache), tracked, self._checkouts)

    def fetch(self) -> FetchOutcome:
        """Fetch the remote's branches and tags into the cache; the outcome names the
        tracked branch's commit."""
        remote = _REMOTE_REF.match(self.ref)
        if remote is None:
            return FetchOutcome(
                True,
                None,
                f"repo {self.name}: {self.ref} is not a remote-tracking ref; "
                "it is read from the clone and nothing is fetched",
            )
        remote_name, branch = remote.groups()
        clone = self._open_clone()
        try:
            url = str(clone.remotes[remote_name].url)
        except (KeyError, ValueError):
            raise SourceError(
                f"repo {self.name}: clone {self._config.path} has no remote {remote_name!r} "
                f"(needed to fetch {self.ref})"
            ) from None
        cache = self._open_cache(clone)
        # Every branch and tag: a source's targetRevision may name any of them, and one
        # deleted or moved upstream must not linger here (prune, forced updates).
        refspecs = [f"+refs/heads/*:refs/remotes/{remote_name}/*", "+refs/tags/*:refs/tags/*"]
        try:
            cache.remotes.create_anonymous(url).fetch(
                refspecs, callbacks=_Credentials(), prune=FetchPrune.PRUNE
            )
        except (pygit2.GitError, OSError) as exc:
            return self._offline(cache, url, str(exc))
        fetched = _lookup(cache, self.ref)
        if fetched is None:
            return self._offline(cache, url, f"branch {branch} not found on the remote")
        self._stamp.write_text(datetime.now(UTC).isoformat(timespec="seconds"))
        return FetchOutcome(
            True,
            str(fetched),
            f"repo {self.name}: fetched {branch} from {redact_url(url)} at {str(fetched)[:12]}",
        )

    def _offline(self, cache: pygit2.Repository, url: str, reason: str) -> FetchOutcome:
        last = _lookup(cache, self.ref)
        failed = f"repo {self.name}: fetch from {redact_url(url)} failed ({reason})"
        if last is None:
            return FetchOutcome(
                False, None, f"{failed}; never fetched, using the clone's {self.ref}"
            )
        when = self._stamp.read_text() if self._stamp.exists() else "at an unknown time"
        return FetchOutcome(
            False,
            str(last),
            f"{failed}; offline, keeping the last fetched commit {str(last)[:12]} (fetched {when})",
        )


class GitRevisions:
    """`reconciler.tree.Revisions` of one repository: a branch, tag or commit resolved
    from the fetched cache and the clone, as the tracked ref is (the newer of the two),
    one GitTree per commit per render, sharing the repository's lock."""

    def __init__(
        self,
        repo_name: str,
        tracked_ref: str,
        repositories: tuple[pygit2.Repository, pygit2.Repository],  # clone, cache
        tracked: GitTree,
        checkouts: Checkouts,
    ) -> None:
        self._repo_name = repo_name
        self._clone, self._cache = repositories
        remote = _REMOTE_REF.match(tracked_ref)
        # Branches as the remote has them when the tracked ref is remote-tracking, else
        # the clone's own (a local repository).
        self._branches = f"refs/remotes/{remote.group(1)}/" if remote else "refs/heads/"
        self._checkouts = checkouts
        self._trees: dict[str, GitTree] = {tracked.commit: tracked}
        self._lock = threading.RLock()

    def at(self, revision: str) -> GitTree:
        with self._lock:
            try:
                commit = self._commit(revision)
            except (pygit2.GitError, KeyError, ValueError) as exc:
                raise SourceError(
                    f"repo {self._repo_name}: cannot resolve revision {_shown(revision)} "
                    f"(corrupt repository? {exc})"
                ) from None
            tree = self._trees.get(str(commit.id))
            if tree is None:
                tree = GitTree(self._repo_name, self._cache, commit, self._checkouts, self._lock)
                self._trees[tree.commit] = tree
            return tree

    def _commit(self, revision: str) -> pygit2.Commit:
        """In git's order: a tag, a branch, then a commit SHA."""
        if revision.startswith("refs/heads/"):
            names = [self._branches + revision.removeprefix("refs/heads/")]
        elif revision.startswith("refs/"):
            names = [revision]
        else:
            names = [f"refs/tags/{revision}", self._branches + revision]
        for name in names:
            if not pygit2.reference_is_valid_name(name):
                continue
            local, fetched = _peeled(self._clone, name), _peeled(self._cache, name)
            if local is not None or fetched is not None:
                return self._cache[_newer(self._cache, local, fetched)].peel(pygit2.Commit)
        if _SHA.match(revision):
            try:
                found = self._cache.revparse_single(revision.lower())
            except KeyError:
                found = None
            except (ValueError, pygit2.GitError):
                raise TreeError(
                    f"revision {_shown(revision)} is ambiguous in repo {self._repo_name}"
                ) from None
            if isinstance(found, pygit2.Commit):
                return found
        raise TreeError(
            f"revision {_shown(revision)} does not exist in repo {self._repo_name} "
            "(no branch, tag or commit of that name)"
        )


def _entry(tree: pygit2.Object, name: str) -> pygit2.Object | None:
    """What directory `tree` holds as `name`; None when it holds nothing of that name or
    is no directory (a file replaced by a directory)."""
    if not isinstance(tree, pygit2.Tree):
        return None
    try:
        return tree[name]
    except KeyError:
        return None


def _link(source: str, target: str, mode: int, size: int) -> bool:
    """Hard-link `source`, a file of an earlier checkout, as `target`, if it is still the
    read-only regular file of the blob's size written there."""
    try:
        found = os.lstat(source)
        if (
            not stat.S_ISREG(found.st_mode)
            or stat.S_IMODE(found.st_mode) != mode
            or found.st_size != size
        ):
            return False
        os.link(source, target, follow_symlinks=False)
    except OSError:
        return False  # gone (pruned meanwhile): written instead
    return True


def _write_file(target: str, data: bytes, mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with open(fd, "wb") as out:
        os.fchmod(fd, mode)  # exactly, whatever the umask: _link compares it
        out.write(data)


def _links_under(tree: pygit2.Tree) -> tuple[str, ...]:
    """The paths (relative to `tree`) of the symlinks anywhere under it. Kept per tree
    id, which names its content: after a commit only the directories it changed are
    walked again."""
    found = _LINKS.get(tree.id)
    if found is None:
        links: list[str] = []
        for entry in tree:
            name = entry.name or ""
            if entry.filemode == FileMode.LINK:
                links.append(name)
            elif isinstance(entry, pygit2.Tree):
                links.extend(f"{name}/{link}" for link in _links_under(entry))
        found = tuple(links)
        if len(_LINKS) >= _MAX_LINKS_CACHED:
            _LINKS.clear()
        _LINKS[tree.id] = found
    return found


def _shown(revision: str) -> str:
    """An Application's revision, quoted and bounded for a message."""
    return repr(revision if len(revision) <= 80 else revision[:80] + "...")


def _peeled(repository: pygit2.Repository, ref: str) -> pygit2.Oid | None:
    """The commit `ref` names (through annotated tags), or None."""
    target = _lookup(repository, ref)
    if target is None:
        return None
    try:
        return repository[target].peel(pygit2.Commit).id
    except (pygit2.GitError, KeyError, ValueError):
        return None  # a tag of a tree or blob names no commit


def _lookup(repository: pygit2.Repository, ref: str) -> pygit2.Oid | None:
    if ref == "HEAD":
        if repository.head_is_unborn:
            return None
        target = repository.head.target
    else:
        reference = repository.references.get(ref)
        if reference is None:
            return None
        target = reference.resolve().target
    return target if isinstance(target, pygit2.Oid) else None


def _newer(
    repository: pygit2.Repository, local: pygit2.Oid | None, fetched: pygit2.Oid | None
) -> pygit2.Oid:
    if local is None:
        assert fetched is not None
        return fetched
    if fetched is None or local == fetched:
        return local
    # A local commit or pull moves the clone ahead of the cache; otherwise the fetch is newer.
    return local if repository.descendant_of(local, fetched) else fetched
