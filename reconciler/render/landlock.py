"""A small ctypes binding to Linux Landlock, for the render sandbox.

Landlock lets an unprivileged process give up filesystem and TCP access for
itself and everything it execs. The ruleset (which paths stay readable or
writable) is built here in the parent, with ordinary Python; the forked child
then only calls `restrict_self` on the ruleset's descriptor right before exec,
so the child does no path handling and no allocation-heavy work (it is forked
from a threaded daemon).

Only x86-64 and aarch64 syscall numbers are known; elsewhere `abi()` is 0 and
the sandbox says Landlock is unavailable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: the same numbers
# on x86-64 and aarch64 (they were added after the tables were unified).
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
PR_SET_NO_NEW_PRIVS = 38

_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_MAKE_AND_REMOVE = sum(1 << bit for bit in range(4, 13))  # remove dir/file, make char..sym
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_NET_CONNECT = 1 << 1
_NET_TCP = (1 << 0) | _NET_CONNECT  # bind, connect: ABI 4
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals: ABI 6

READ = _READ_FILE | _READ_DIR
RUN = READ | _EXECUTE
WRITE = ~0  # every right the kernel knows
# Rights that make sense on a file (not a directory); others make add_rule fail.
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_numbers = _SYSCALLS.get(platform.machine())


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or refuses: a seccomp
    filter, Landlock disabled at boot)."""
    if _numbers is None:
        return 0
    version = _syscall(_long(_numbers[0]), None, _long(0), _long(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _all_fs_rights(version: int) -> int:
    rights = RUN | _WRITE_FILE | _MAKE_AND_REMOVE
    if version >= 2:
        rights |= _REFER
    if version >= 3:
        rights |= _TRUNCATE
    if version >= 5:
        rights |= _IOCTL_DEV
    return rights


def ruleset(
    version: int, rules: Mapping[Path, int], network: bool, ports: Collection[int] = ()
) -> int:
    """A ruleset descriptor granting each path of `rules` its rights (READ, RUN or
    WRITE) and nothing else; without `network`, no TCP bind or connect either, and with
    `network` and `ports`, TCP connects to those ports only (ABI 4 and later). Missing
    paths are left out. The caller closes the descriptor."""
    assert _numbers is not None and version > 0
    handled = _all_fs_rights(version)
    # struct landlock_ruleset_attr grew with the ABI: handled_access_fs, _net, scoped.
    fields = [handled]
    if version >= 4:
        fields.append(_NET_TCP if ports or not network else 0)
    if version >= 6:
        fields.append(_SCOPES)
    attr = struct.pack(f"={len(fields)}Q", *fields)
    fd = _syscall(_long(_numbers[0]), ctypes.c_char_p(attr), _long(len(attr)), _long(0))
    if fd < 0:
        raise _error("landlock_create_ruleset")
    try:
        for path, rights in rules.items():
            _allow(fd, path, rights & handled)
        if version >= 4 and network:
            for port in ports:
                _allow_connect(fd, port)
    except BaseException:
        os.close(fd)
        raise
    return int(fd)


def _allow(ruleset_fd: int, path: Path, rights: int) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            rights &= _FILE_RIGHTS
        # struct landlock_path_beneath_attr is packed: u64 allowed_access, s32 parent_fd.
        _add_rule(ruleset_fd, _RULE_PATH_BENEATH, struct.pack("=Qi", rights, target), str(path))
    finally:
        os.close(target)


def _allow_connect(ruleset_fd: int, port: int) -> None:
    # struct landlock_net_port_attr: u64 allowed_access, u64 port.
    attr = struct.pack("=QQ", _NET_CONNECT, port)
    _add_rule(ruleset_fd, _RULE_NET_PORT, attr, f"tcp port {port}")


def _add_rule(ruleset_fd: int, rule_type: int, attr: bytes, what: str) -> None:
    add_rule = _long(_numbers[1] if _numbers else 0)
    done = _syscall(add_rule, _long(ruleset_fd), _long(rule_type), ctypes.c_char_p(attr), _long(0))
    if done < 0:
        raise _error(f"landlock_add_rule {what}")


Restrictor = tuple[Callable[..., int], tuple[ctypes.c_long, ...]]


def restrictor(ruleset_fd: int) -> Restrictor:
    """The bound function and arguments that restrict the calling process to the
    ruleset, prepared in the parent so the child only makes the call."""
    assert _numbers is not None
    return _syscall, (_long(_numbers[2]), _long(ruleset_fd), _long(0))


def _long(value: int) -> ctypes.c_long:
    # syscall(2) is variadic and reads every argument as a long: pass them at that width.
    return ctypes.c_long(value)


def _error(what: str) -> OSError:
    code = ctypes.get_errno() or errno.EINVAL
    return OSError(code, f"{what}: {os.strerror(code)}")
