"""systemd integration: the unit file as systemd reads it, and sd_notify over a real socket."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from reconciler import systemd
from tests.unit import deny_write_execute

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "systemd" / "reconciler.service"
EXEC_START = "/opt/reconciler/bin/reconciler"
# Measured 1.0 with systemd 252 (1.1 before the IP allow-list); a setting dropped or
# weakened raises it.
MAX_EXPOSURE = 1.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit_settings() -> dict[str, list[str]]:
    """`Section.Key` -> every value assigned, in order (keys like SystemCallFilter repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: check a copy that differs in that path only.
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC_START} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={sys.executable} "))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys and bad values; it only says so on stderr.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_systemd_analyze
def test_security_exposure_is_low() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    print(f"systemd-analyze security: {found[1]} {found[2]}")
    assert float(found[1]) <= MAX_EXPOSURE, done.stdout


def test_unit_keeps_the_service_contract() -> None:
    s = unit_settings()
    assert s["Service.Type"] == ["notify"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert int(s["Service.WatchdogSec"][0]) > 0
    assert s["Service.ExecStart"] == [f"{EXEC_START} run --config /etc/reconciler/config.toml"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.RestartPreventExitStatus"] == ["78"]  # config errors are not retried
    assert s["Service.User"] == ["reconciler"]
    assert s["Service.StateDirectory"] == ["reconciler"]
    # The operator's clones are visible read-only, and nothing else of /home is.
    assert s["Service.ProtectHome"] == ["tmpfs"]
    bound = s["Service.BindReadOnlyPaths"][0].split()
    assert bound == ["-/home/prod_homelab", "-/home/agentic_lab", "-/home/monit_homelab"]
    assert "Service.BindPaths" not in s and "Service.ReadWritePaths" not in s


def test_unit_bounds_memory_tasks_and_addresses_to_what_config_names() -> None:
    s = unit_settings()
    assert s["Service.MemoryMax"] == ["2G"]
    assert int(s["Service.TasksMax"][0]) >= 256  # Go tools start ~20 threads, 16 at once
    assert s["Service.IPAddressDeny"] == ["any"]
    allowed = [
        ipaddress.IPv4Network(a)
        for a in " ".join(s["Service.IPAddressAllow"]).split()
        if a != "localhost"
    ]
    assert "localhost" in " ".join(s["Service.IPAddressAllow"]).split()
    config = tomllib.loads((REPO_ROOT / "config.toml").read_text())
    for cluster in config["clusters"]:
        for server in cluster["servers"]:
            host = urlsplit(server).hostname or ""
            if host.replace(".", "").isdigit():  # an address, not Argo CD's in-cluster name
                assert any(ipaddress.ip_address(host) in net for net in allowed), server
        # prod's kubeconfig points into its network; so may the others'.
        network = ipaddress.IPv4Network(cluster["network"])
        assert any(network.subnet_of(net) or net.subnet_of(network) for net in allowed), network
    # The render sandbox's Landlock calls are in no systemd group: allowed by name.
    filters = " ".join(s["Service.SystemCallFilter"]).split()
    for call in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
        assert call in filters


@pytest.mark.skipif(not deny_write_execute.supported, reason="filter is written for x86-64")
def test_the_daemons_code_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    # Every native part the daemon loads (pygit2 and its fetch callbacks, the CEL and
    # watchfiles extensions, OpenSSL, YAML) and the tools it runs, under the filter.
    script = f"""
import importlib, json, mmap, pkgutil, subprocess, sys
import pygit2
import reconciler
for module in pkgutil.walk_packages(reconciler.__path__, "reconciler."):
    importlib.import_module(module.name)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("the filter is not active")
except PermissionError:
    pass
from testenv.gitrepos import SIGNATURE
upstream = pygit2.init_repository({str(tmp_path / "upstream")!r}, bare=True)
tree = upstream.TreeBuilder()
tree.insert("a.yaml", upstream.create_blob(b"kind: ConfigMap\\n"), pygit2.enums.FileMode.BLOB)
upstream.create_commit("refs/heads/main", SIGNATURE, SIGNATURE, "m", tree.write(), [])
seen = []
class Callbacks(pygit2.RemoteCallbacks):
    def update_tips(self, refname, old, new):
        seen.append(refname)
cache = pygit2.init_repository({str(tmp_path / "cache")!r}, bare=True)
cache.remotes.create_anonymous(upstream.path).fetch(
    ["+refs/heads/main:refs/remotes/origin/main"], callbacks=Callbacks())
assert seen == ["refs/remotes/origin/main"], seen
assert cache.revparse_single("refs/remotes/origin/main").tree["a.yaml"]
import cel, ssl, yaml
assert cel.evaluate("1 + 2", {{}}) == 3
ssl.create_default_context().load_default_certs()
assert yaml.load("a: 1", Loader=yaml.CSafeLoader) == {{"a": 1}}
for command in json.loads(sys.argv[1]):
    subprocess.run(command, check=True, capture_output=True, timeout=60)
"""
    tools = {
        "git": shutil.which("git"),
        "kubectl": shutil.which("kubectl", path=str(Path(sys.executable).parent)),
        "helm": shutil.which("helm", path=str(REPO_ROOT / "testenv" / "bin")),
    }
    missing = sorted(name for name, path in tools.items() if path is None)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make testenv builds helm)")
    commands = [
        [tools["git"], "version"],
        [tools["kubectl"], "version", "--client"],
        [tools["helm"], "version"],
    ]
    guard = Path(deny_write_execute.__file__)
    done = subprocess.run(
        [sys.executable, str(guard), sys.executable, "-c", script, json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


# -- sd_notify ------------------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path is long.
    with (
        tempfile.TemporaryDirectory(prefix="notify-") as directory,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = os.path.join(directory, "notify")
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


def test_notifications_reach_the_notify_socket(notify_socket: socket.socket) -> None:
    assert systemd.ready()
    assert notify_socket.recv(4096) == b"READY=1"
    assert systemd.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert systemd.status("reconciling agentic")
    assert notify_socket.recv(4096) == b"STATUS=reconciling agentic"
    assert systemd.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_ready_with_status_is_one_datagram_and_status_cannot_inject(
    notify_socket: socket.socket,
) -> None:
    assert systemd.ready("3 clusters\nMAINPID=1")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=3 clusters MAINPID=1"


def test_abstract_socket_names(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"reconciler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.ready()
    # A socket that went away is reported, not raised.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not systemd.watchdog()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # meant for another process (we inherited it)
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for key, val in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if val is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(os.getpid()) if val == "self" else val)
    assert systemd.watchdog_interval() == expected
