"""The render sandbox: helm and kustomize run on what a commit says, so they run
as a child that can reach almost nothing of the management host.

A commit is not a login: whoever can push to a watched repository chooses the
charts and kustomizations the daemon renders, as the daemon's user, beside the
kubeconfigs and state.db. So each tool run gets
- Landlock (Linux >= 5.13): read access only to the system's programs and
  libraries, the few /etc files TLS and DNS need, the tool binary and the paths
  the caller grants (the commit's checkout, the chart cache); write access only
  to a private temp dir (and what the caller grants: the chart cache for pulls);
  with ABI >= 4 no TCP at all unless the caller asks for network; with ABI >= 6
  no signals to, and no abstract sockets of, processes outside the sandbox;
- a network namespace of its own (an unprivileged user namespace), so without
  network it has no interface but a downed loopback;
- a clean environment (no tokens, no KUBECONFIG) and that private temp dir as
  HOME, TMPDIR and working directory;
- RLIMIT_AS, RLIMIT_CPU and no core dumps.

The restrictions are applied in the forked child just before exec. The daemon
renders on a thread pool, so the child of a fork may inherit locks held by other
threads: everything it runs is prepared in the parent (the Landlock ruleset,
the rlimit values, bound ctypes functions and their arguments), and the child
only makes raw calls, no imports, path handling or logging.

Where the kernel (or a seccomp filter such as the systemd unit's) refuses a
protection, rendering still works; one log line per process says which
protections are active and which are not.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler import logs
from reconciler.render import landlock

# What any tool needs to start and to speak TLS and DNS: programs and libraries,
# CA certificates, resolver and locale files. Not /etc as a whole (passwd, shadow,
# the reconciler's own config), not /proc (other processes' environments), not /home.
SYSTEM_RUN = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")
SYSTEM_READ = (
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
)
DEV_NULL = "/dev/null"

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Grant:
    """What one tool run may touch beyond the system files and its private dir."""

    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    network: bool = False  # only for fetches the reconciler itself asks for
    # With network: the TCP ports it may connect to (Landlock ABI >= 4); empty: any.
    ports: tuple[int, ...] = ()
    # Programs the tool may start besides the system's (kustomize's helm).
    run: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_seconds: int


@dataclass(frozen=True)
class Protections:
    """What this kernel (under this process's seccomp filter) lets the sandbox use."""

    landlock_abi: int
    network_namespace: bool

    def report(self) -> tuple[list[str], list[str]]:
        """(active, unavailable) protections, in words for the log."""
        abi = self.landlock_abi
        checks = [
            (f"landlock filesystem (ABI {abi})", abi >= 1),
            ("landlock tcp", abi >= 4),
            ("landlock signal and abstract socket scope", abi >= 6),
            ("network namespace", self.network_namespace),
            ("clean environment", True),
            ("rlimits", True),
            ("output cap", True),
        ]
        active = [name for name, on in checks if on]
        return active, [name.replace(f" (ABI {abi})", "") for name, on in checks if not on]


_lock = threading.Lock()
_found: list[Protections] = []


def protections() -> Protections:
    """Probed once per process, and said once."""
    with _lock:
        if not _found:
            _found.append(Protections(landlock.abi(), _network_namespace_works()))
            _say(_found[0])
        return _found[0]


def confines_files() -> bool:
    """Whether tools run under Landlock's filesystem rules: read access only to the
    checkouts they are granted. Without them a tool can write whatever the daemon's
    user can, a checkout included."""
    return protections().landlock_abi >= 1


def _say(found: Protections) -> None:
    active, missing = found.report()
    # An error when files or the network stay reachable; under the systemd unit only
    # the network namespace is missing, and Landlock's TCP rules stand in for it.
    abi = found.landlock_abi
    weak = not abi or not (abi >= 4 or found.network_namespace)
    log = logs.get("reconciler.render")
    (log.error if weak else log.info)("render.sandbox", active=active, unavailable=missing)


def _network_namespace_works() -> bool:
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", ""],
            preexec_fn=_child_setup((), _CLONE_NEWUSER | _CLONE_NEWNET, None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def clean_env(private: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a tool: nothing inherited from the daemon. PATH is a
    fixed system one, for the programs tools start themselves (git for remote bases)."""
    return {
        "HOME": str(private),
        "TMPDIR": str(private),
        "LANG": "C",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **extra,
    }


def spawn(
    argv: Sequence[str], grant: Grant, limits: Limits, env: Mapping[str, str], private: Path
) -> subprocess.Popen[bytes]:
    """Start `argv` in the sandbox, its stdout and stderr piped, in a session of its own
    (so a kill reaches everything it started). FileNotFoundError for a missing binary,
    OSError or SubprocessError when the sandbox cannot be set up."""
    found = protections()
    # Found on the daemon's PATH (the tool's own is a fixed one); run by that name, so
    # a multi-call binary behind a symlink still sees which tool it is asked to be.
    found_on_path = shutil.which(argv[0])
    if found_on_path is None:
        raise FileNotFoundError(argv[0])
    program = os.path.abspath(found_on_path)  # the tool starts in its private dir
    binary = Path(program).resolve(strict=True)
    ruleset = None
    if found.landlock_abi:
        rules: dict[Path, int] = {Path(p): landlock.RUN for p in SYSTEM_RUN}
        rules.update({Path(p): landlock.READ for p in SYSTEM_READ})
        rules[binary] = landlock.RUN
        rules.update({p: landlock.READ for p in grant.read})
        rules.update({p: landlock.RUN for p in grant.run})
        rules.update({p: landlock.WRITE for p in (*grant.write, private, Path(DEV_NULL))})
        ruleset = landlock.ruleset(found.landlock_abi, rules, grant.network, grant.ports)
    try:
        rlimits = _rlimits(limits)
        isolate = 0 if grant.network or not found.network_namespace else _CLONE_NEWUSER
        isolate |= _CLONE_NEWNET if isolate else 0
        restrict = landlock.restrictor(ruleset) if ruleset is not None else None
        return subprocess.Popen(
            [program, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(private, env),
            cwd=private,
            start_new_session=True,
            preexec_fn=_child_setup(rlimits, isolate, restrict),
        )
    finally:
        if ruleset is not None:
            os.close(ruleset)


def _rlimits(limits: Limits) -> tuple[tuple[int, tuple[int, int]], ...]:
    # A limit can only be lowered: never ask for more than this process's hard limit.
    def capped(which: int, soft: int, hard: int) -> tuple[int, tuple[int, int]]:
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        return which, (soft, hard)

    return (
        capped(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        # SIGXCPU at the soft limit, SIGKILL one second later for a tool that ignores it.
        capped(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        capped(resource.RLIMIT_CORE, 0, 0),
    )


def _child_setup(
    rlimits: tuple[tuple[int, tuple[int, int]], ...],
    unshare_flags: int,
    restrict: tuple[object, tuple[object, ...]] | None,
) -> Callable[[], None]:
    """The child's last steps before exec: raw calls on values prepared here."""
    setrlimit = resource.setrlimit
    unshare = _libc.unshare
    prctl = _libc.prctl
    no_new_privs = (
        ctypes.c_int(landlock.PR_SET_NO_NEW_PRIVS),
        *[ctypes.c_ulong(v) for v in (1, 0, 0, 0)],
    )
    flags = ctypes.c_int(unshare_flags)

    def setup() -> None:
        for which, value in rlimits:
            setrlimit(which, value)
        if unshare_flags and unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare of user and network namespaces")
        if prctl(*no_new_privs) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if restrict is not None:
            call, args = restrict
            if call(*args) != 0:  # type: ignore[operator]
                raise OSError(ctypes.get_errno(), "landlock_restrict_self")

    return setup
