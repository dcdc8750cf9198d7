"""sd_notify(3) without libsystemd: readiness, watchdog pings and status for Type=notify.

The protocol is one datagram of newline-separated assignments to the socket
named by $NOTIFY_SOCKET, so a dependency (and a C library) would buy nothing.
Outside systemd the variable is unset and every call is a no-op returning
False, so the daemon runs the same way in a terminal, in tests and under
systemd. A failed send is reported, never raised: losing a status line must
not stop reconciling (a missed watchdog ping shows up as a restart anyway).
"""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send `assignments` (e.g. "READY=1") in one datagram; True if systemd got it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        # Abstract namespace: systemd spells the leading NUL as '@'.
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock: and other transports are not used for system services
    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd start-up is complete (Type=notify leaves "activating" only then)."""
    if status_text is None:
        return notify("READY=1")
    return notify("READY=1", _status(status_text))


def watchdog() -> bool:
    """Ping the watchdog: proof the event loop still turns (WatchdogSec=)."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd shutdown has begun, so `systemctl status` says "deactivating"."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status shown by `systemctl status`."""
    return notify(_status(text))


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, or None when no watchdog is expected of us.

    Half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends, so one late
    ping is not fatal. $WATCHDOG_PID, when set, must name this process: a child
    that inherited the environment must not think the watchdog is its job."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def _status(text: str) -> str:
    # A newline would end the assignment and start another one chosen by the text.
    return "STATUS=" + " ".join(text.split())
