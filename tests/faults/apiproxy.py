"""A TLS proxy on loopback in front of one test cluster's API server, to hurt it.

The daemon's kubeconfig names the proxy instead of the API server; the proxy
serves TLS with a certificate of the run's own CA (so the reconciler verifies
it as it verifies the API server), forwards every request with its headers
(the bearer token included) and streams each answer back, watches included.
Two faults can be switched on and off while the daemon runs:

- `garbage`: GET requests on a resource path (e.g. "/configmaps") are answered
  200 with a body that is not what the API sends (a list that is not JSON, a
  watch event that is not an event);
- `hang`: write requests (PATCH, POST, PUT, DELETE) are held without an answer
  until the fault is switched off; held requests are then dropped, unanswered.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from testenv.clusters import RECONCILER_USER, Cluster, write_kubeconfig
from testenv.pki import make_serving_cert

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
_WRITES = {"PATCH", "POST", "PUT", "DELETE"}
HELD_AT_MOST_S = 600.0


class ApiProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster: Cluster, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cluster = cluster
        cert, key = make_serving_cert(cluster.ca, directory, f"proxy-{cluster.name}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.upstream = cluster.ssl_context()
        self.garbage: str | None = None  # a path fragment whose GETs get garbage
        self.garbage_answers = 0
        self._streams: dict[int, tuple[str, _Handler]] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self.held = 0
        self.kubeconfig = directory / f"proxy-{cluster.name}.kubeconfig"
        write_kubeconfig(
            self.kubeconfig,
            cluster.name,
            f"https://127.0.0.1:{self.server_address[1]}",
            cluster.ca.cert_file,
            cluster.tokens[RECONCILER_USER],
        )

    def answer_garbage(self, fragment: str | None) -> None:
        """Answer GETs of paths containing `fragment` with garbage (None: pass all),
        and cut the answers of such paths under way, so a running watch sees it too."""
        self.garbage = fragment
        if fragment is None:
            return
        with self._lock:
            cut = [h for path, h in self._streams.values() if fragment in path]
        for handler in cut:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)

    def hang(self, on: bool) -> None:
        if on:
            self._released.clear()
        else:
            self._released.set()

    def hold(self) -> None:
        self.held += 1
        self._released.wait(HELD_AT_MOST_S)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiProxy

    def log_message(self, format: str, *args: object) -> None:
        pass  # the API server's audit log is the record

    def do_GET(self) -> None:
        proxy = self.server
        if proxy.garbage and proxy.garbage in urlsplit(self.path).path:
            proxy.garbage_answers += 1
            watch = "watch=true" in urlsplit(self.path).query
            # A watch line that is JSON but no event, then a line that is not JSON.
            body = b'{"kind": "not an event"}\nnot json\n' if watch else b"not json at all"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._forward(None)

    def _write(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self.server._released.is_set():
            self.server.hold()
            self.close_connection = True  # dropped, unanswered
            return
        self._forward(body)

    do_PATCH = do_POST = do_PUT = do_DELETE = _write

    def _forward(self, body: bytes | None) -> None:
        proxy = self.server
        upstream = http.client.HTTPSConnection(
            "127.0.0.1", proxy.cluster.port, context=proxy.upstream, timeout=HELD_AT_MOST_S
        )
        with proxy._lock:
            proxy._streams[id(self)] = (urlsplit(self.path).path, self)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # Streamed as it comes, so a watch's events arrive when the server sends them.
            while chunk := answer.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # the daemon hung up (a watch stopped)
        finally:
            with proxy._lock:
                proxy._streams.pop(id(self), None)
            upstream.close()


@contextlib.contextmanager
def api_proxy(cluster: Cluster, directory: Path) -> Iterator[ApiProxy]:
    proxy = ApiProxy(cluster, directory)
    thread = threading.Thread(target=proxy.serve_forever, name="api-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.hang(False)
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
