"""A server of ``testenv/bin`` run on loopback for the tests: its output in a log
file of its directory, ready once an HTTP(S) URL answers, killed with the test run
(even a SIGKILLed one) and stopped on demand, so it can be started again."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from testenv.clusters import _die_with_parent, _reap, free_port


class LoopbackServer:
    """One server process named `name`, with its files in `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    def _launch(
        self,
        argv: Sequence[str],
        ready_url: str,
        context: ssl.SSLContext | None,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._log = self.log_file.open("a", encoding="utf-8")
        self._proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready(ready_url, context, time.monotonic() + timeout)

    def stop(self, timeout: float = 3.0) -> None:
        if self._proc is not None:
            _reap([self._proc], timeout)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self, url: str, context: ssl.SSLContext | None, deadline: float) -> None:
        last = "not contacted"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._proc.returncode}; see {self.log_file}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context):
                    return  # urlopen raises for anything but a success
            except OSError as exc:  # URLError is an OSError
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready on {url} ({last})")
