"""Run a command under the seccomp filter of systemd's MemoryDenyWriteExecute=yes.

    python tests/unit/deny_write_execute.py COMMAND [ARG...]

systemd (252) implements the setting as a seccomp filter that fails with
EPERM: mmap() asking for PROT_WRITE and PROT_EXEC together, mprotect() and
pkey_mprotect() asking for PROT_EXEC, and shmat() with SHM_EXEC. This installs
the same filter and execs COMMAND, so the daemon's Python, its native
extensions and the helm/kubectl/git it runs can be tried under it without
systemd. x86-64 only (the syscall numbers are that ABI's).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | 1
_LD_ABS_W, _JEQ_K, _AND_K, _RET_K = 0x20, 0x15, 0x54, 0x06
_NR_OFFSET, _ARCH_OFFSET = 0, 4
_ARG2_OFFSET = 16 + 2 * 8  # seccomp_data.args[2], low 32 bits (little-endian)
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000
# syscall number -> (flag bits of arg 2, value that is refused)
_RULES = {
    9: (_PROT_WRITE | _PROT_EXEC, _PROT_WRITE | _PROT_EXEC),  # mmap
    10: (_PROT_EXEC, _PROT_EXEC),  # mprotect
    329: (_PROT_EXEC, _PROT_EXEC),  # pkey_mprotect
    30: (_SHM_EXEC, _SHM_EXEC),  # shmat
}

supported = platform.machine() == "x86_64" and sys.platform == "linux"


class _Insn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Insn)))


def _program() -> list[tuple[int, int, int, int]]:
    # Layout: arch check, dispatch on the syscall number, one check per rule,
    # then DENY and ALLOW at the end (BPF jumps only go forward).
    checks = len(_RULES) * 3
    prog: list[tuple[int, int, int, int]] = [
        (_LD_ABS_W, 0, 0, _ARCH_OFFSET),
        (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_ABS_W, 0, 0, _NR_OFFSET),
    ]
    dispatch_end = len(prog) + len(_RULES) + 1  # + the ALLOW after the dispatch
    for i, nr in enumerate(_RULES):
        prog.append((_JEQ_K, dispatch_end + 3 * i - (len(prog) + 1), 0, nr))
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    deny = dispatch_end + checks
    for mask, refused in _RULES.values():
        prog.append((_LD_ABS_W, 0, 0, _ARG2_OFFSET))
        prog.append((_AND_K, 0, 0, mask))
        here = len(prog)
        prog.append((_JEQ_K, deny - (here + 1), deny + 1 - (here + 1), refused))
    prog += [(_RET_K, 0, 0, _RET_EPERM), (_RET_K, 0, 0, _RET_ALLOW)]
    return prog


def install() -> None:
    """Install the filter on this process (and everything it execs or forks)."""
    insns = (_Insn * len(prog := _program()))(*(_Insn(*i) for i in prog))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fprog = _Prog(len(prog), insns)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
