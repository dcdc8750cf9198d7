"""The Matrix client-server API edge: the one module of the reconciler that talks to a homeserver.

Notifications and approvals go through the homelab's Matrix room; everything above this
module (formatting, dedup, approval decisions) works on plain data and never does HTTP,
so the rules about the access token and TLS are enforced here, once:

- The token is a bearer credential good for the bot's whole account. It travels only in
  the Authorization header, over TLS that is always verified (the system store, or the
  configured CA file). Plain ``http://`` is refused for every host, loopback included: a
  proxy or port-forward on loopback would carry the token in clear, and the test
  homeserver (testenv/matrix.py) serves TLS, so nothing needs the exception.
- No error message, log line or exception carries the token: messages name the
  homeserver and the call, and any text from the server is scrubbed of the token.
- Redirects are never followed (http.client does not), so the token cannot be carried to
  another host.
- Every call has a timeout and reads at most `MAX_RESPONSE_BYTES` of response.

Each call opens its own connection, so one client may be shared by threads. The standard
library does the HTTP, so notifications add no runtime dependency.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import logs
from reconciler.errors import ReconcilerError
from reconciler.urls import redact_url

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Event types a sync returns: messages (notices, replies) and reactions (a ✅ approval).
EVENT_TYPES = ("m.room.message", "m.reaction")
# When more events arrived since the last sync than a sync returns, the gap is read back
# with /messages, at most this many pages; older events are then skipped, not fetched forever.
_GAP_PAGES = 10
_MAX_ERROR_TEXT = 200


class MatrixError(ReconcilerError):
    """A homeserver call failed: `status` is the HTTP status (None when no answer came:
    refused, timed out, TLS), `errcode` the Matrix errcode (``M_FORBIDDEN``, ...) if any,
    `retry_after_s` how long the server asked to wait (429)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errcode: str | None = None,
        retry_after_s: float | None = None,
        verification_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.retry_after_s = retry_after_s
        self.verification_failed = verification_failed

    @property
    def transient(self) -> bool:
        """Worth retrying later: no answer (down, timeout, reset), rate limited or a server
        error. A refused token, an unknown room or a certificate that fails verification
        stays wrong until someone changes the configuration."""
        if self.verification_failed:
            return False
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class RoomEvent:
    """One timeline event, flattened to what notifications and approvals read.

    `relates_to_event` is the event a relation points at (the thread root for
    ``rel_type="m.thread"``, the reacted-to event for ``m.annotation``) or, for a plain
    reply (``m.in_reply_to``, no rel_type), the event replied to. `key` is a reaction's key
    (``"✅"``). `body` is None for events without a text body (reactions, redacted events,
    ``m.room.encrypted``: the room must not be encrypted, the bot has no keys).
    """

    event_id: str
    sender: str
    type: str
    body: str | None
    relates_to_event: str | None
    rel_type: str | None
    key: str | None
    origin_ts: int


class MatrixClient:
    """Calls one homeserver as the user whose access token it holds."""

    def __init__(
        self,
        homeserver: str,
        token: str,
        *,
        ca_file: Path | None,
        timeout_s: float = 10.0,
    ) -> None:
        parts = urllib.parse.urlsplit(homeserver.strip())
        self.homeserver = redact_url(homeserver.strip().rstrip("/"))
        if parts.username or parts.password or parts.query or parts.fragment:
            raise MatrixError(
                f"matrix homeserver {self.homeserver}: the URL may hold no user, query or fragment"
            )
        if parts.scheme != "https" or not parts.hostname:
            raise MatrixError(
                f"matrix homeserver {self.homeserver!r}: must be an https:// URL "
                "(the access token never travels without verified TLS)"
            )
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            raise MatrixError(
                f"matrix {self.homeserver}: the access token is empty or has "
                "whitespace or control characters"
            )
        if timeout_s <= 0:
            raise MatrixError(f"matrix {self.homeserver}: timeout_s must be positive")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        try:
            self._context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise MatrixError(
                f"matrix {self.homeserver}: CA file {ca_file} cannot be used: {exc}"
            ) from None

    def whoami(self) -> str:
        """The user ID the token belongs to (proves the token is valid)."""
        body = self._call("GET", "/account/whoami", what="whoami")
        return self._text(body, "user_id", "whoami")

    def joined(self, room_id: str) -> bool:
        """Whether the token's user has joined `room_id`."""
        body = self._call("GET", "/joined_rooms", what="joined_rooms")
        rooms = body.get("joined_rooms")
        return isinstance(rooms, list) and room_id in rooms

    def send(self, room_id: str, txn_id: str, content: dict[str, Any]) -> str:
        """Post an ``m.room.message``; returns its event ID. The homeserver answers a repeated
        `txn_id` (from the same token, while it remembers it: Synapse keeps them for at
        least 30 minutes) with the first event instead of posting again, so a send retried
        after a timeout whose request did arrive posts once."""
        path = f"/rooms/{_seg(room_id)}/send/m.room.message/{_seg(txn_id)}"
        body = self._call("PUT", path, what=f"send to {room_id}", payload=content)
        return self._text(body, "event_id", f"send to {room_id}")

    def sync(
        self, since: str | None, timeout_ms: int, room_id: str, *, limit: int = 100
    ) -> tuple[str, list[RoomEvent]]:
        """Messages and reactions in `room_id` after `since` (None: the latest `limit`),
        oldest first, waiting up to `timeout_ms` for one to arrive; returns the token to
        pass as `since` next time. When more than `limit` arrived, the rest are read back
        (up to `_GAP_PAGES` pages of `limit`), so a reply is not skipped after an outage."""
        room_filter = {
            "rooms": [room_id],
            "timeline": {"limit": limit, "types": list(EVENT_TYPES)},
            "state": {"types": []},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        }
        sync_filter = {
            "room": room_filter,
            "presence": {"types": []},
            "account_data": {"types": []},
        }
        params = {"timeout": str(max(0, timeout_ms)), "filter": json.dumps(sync_filter)}
        if since is not None:
            params["since"] = since
        body = self._call(
            "GET",
            "/sync?" + urllib.parse.urlencode(params),
            what=f"sync {room_id}",
            timeout_s=self._timeout_s + max(0, timeout_ms) / 1000,
        )
        next_batch = self._text(body, "next_batch", f"sync {room_id}")
        joined = _obj(_obj(body.get("rooms")).get("join"))
        timeline = _obj(_obj(joined.get(room_id)).get("timeline"))
        events = _objects(timeline.get("events"))
        if since is not None and timeline.get("limited") and timeline.get("prev_batch"):
            events = self._gap(room_id, str(timeline["prev_batch"]), since, limit) + events
        seen: set[str] = set()
        parsed = []
        for raw in events:
            event = _room_event(raw)
            if event is not None and event.event_id not in seen:
                seen.add(event.event_id)
                parsed.append(event)
        return next_batch, parsed

    def _gap(self, room_id: str, start: str, since: str, limit: int) -> list[dict[str, Any]]:
        """The events between `since` and a limited sync's first event, oldest first."""
        newest_first: list[dict[str, Any]] = []
        token = start
        for _ in range(_GAP_PAGES):
            params = {
                "dir": "b",
                "from": token,
                "to": since,
                "limit": str(limit),
                "filter": json.dumps({"types": list(EVENT_TYPES)}),
            }
            body = self._call(
                "GET",
                f"/rooms/{_seg(room_id)}/messages?" + urllib.parse.urlencode(params),
                what=f"messages {room_id}",
            )
            chunk = _objects(body.get("chunk"))
            newest_first += chunk
            end = body.get("end")
            if not chunk or not isinstance(end, str):
                break
            token = end
        else:
            # A bounded catch-up: what lies beyond is not read, so not acted on; said
            # (the count is unknown without reading it all, which the bound prevents).
            logs.get("reconciler.notify", component="notify.matrix").warning(
                "matrix.sync.gap_skipped",
                room=room_id,
                pages=_GAP_PAGES,
                read=len(newest_first),
                skipped="any older events of the gap: not read, not acted on",
            )
        return newest_first[::-1]

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        payload: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """One request to the client-server API; the JSON object it answers, or MatrixError."""
        where = f"matrix {self.homeserver} {what}"
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPSConnection(
            self._host,
            self._port,
            timeout=timeout_s or self._timeout_s,
            context=self._context,
        )
        try:
            conn.request(method, self._prefix + "/_matrix/client/v3" + path, data, headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_RESPONSE_BYTES + 1)
            status, retry_header = resp.status, resp.getheader("Retry-After")
        except ssl.SSLCertVerificationError as exc:
            raise MatrixError(
                f"{where}: TLS verification failed: {exc.verify_message}",
                verification_failed=True,
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, timeout, TLS, reset
            reason = self._scrub(str(exc) or type(exc).__name__)
            raise MatrixError(f"{where}: no answer: {reason}") from None
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise MatrixError(
                f"{where}: response larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB",
                status=status,
            )
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
            if 200 <= status < 300:
                raise MatrixError(f"{where}: answer is not a JSON object", status=status)
        if 200 <= status < 300:
            return body
        errcode, text = body.get("errcode"), body.get("error")
        errcode = errcode if isinstance(errcode, str) else None
        said = [errcode or "", self._scrub(text[:_MAX_ERROR_TEXT]) if isinstance(text, str) else ""]
        raise MatrixError(
            f"{where}: HTTP {status} {': '.join(s for s in said if s)}".rstrip(),
            status=status,
            errcode=errcode,
            retry_after_s=_retry_after(body, retry_header),
        )

    def _text(self, body: dict[str, Any], key: str, what: str) -> str:
        value = body.get(key)
        if not isinstance(value, str):
            raise MatrixError(f"matrix {self.homeserver} {what}: the answer has no {key!r}")
        return value

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>")


def _seg(value: str) -> str:
    """A room or transaction ID as one path segment ('!' and ':' escaped, '/' too)."""
    return urllib.parse.quote(value, safe="")


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object from the answer, or an empty one for anything else (a malformed answer
    reads as "nothing there" rather than failing on an attribute)."""
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _retry_after(body: dict[str, Any], header: str | None) -> float | None:
    millis = body.get("retry_after_ms")
    if isinstance(millis, int | float) and not isinstance(millis, bool) and millis >= 0:
        return float(millis) / 1000
    if header is not None and header.strip().isdigit():
        return float(header.strip())
    return None


def _room_event(raw: dict[str, Any]) -> RoomEvent | None:
    """A timeline event as a RoomEvent; None for one missing the fields every event has."""
    event_id, sender, kind, ts = (
        raw.get(k) for k in ("event_id", "sender", "type", "origin_server_ts")
    )
    if not (isinstance(event_id, str) and isinstance(sender, str) and isinstance(kind, str)):
        return None
    content = _obj(raw.get("content"))
    relates = _obj(content.get("m.relates_to"))
    rel_type = relates.get("rel_type") if isinstance(relates.get("rel_type"), str) else None
    target = relates.get("event_id") if rel_type is not None else None
    if target is None:
        reply = relates.get("m.in_reply_to")
        target = reply.get("event_id") if isinstance(reply, dict) else None
    body, key = content.get("body"), relates.get("key")
    return RoomEvent(
        event_id=event_id,
        sender=sender,
        type=kind,
        body=body if isinstance(body, str) else None,
        relates_to_event=target if isinstance(target, str) else None,
        rel_type=rel_type,
        key=key if isinstance(key, str) else None,
        origin_ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
    )
