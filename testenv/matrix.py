"""A real Matrix homeserver on loopback: Synapse, what the notify tests post to and read from.

Synapse is installed from PyPI into its own venv (``testenv/synapse/.venv``, by
``make testenv``), so its pinned dependencies never meet the project's. It serves the
client-server API over TLS only, with a certificate from the test's CA: the reconciler's
Matrix client always verifies TLS and refuses plain HTTP. State (SQLite, signing key,
media) lives in the given directory; accounts are made through shared-secret
registration only, federation is off and rate limits are out of the way. It can be
stopped and started again on the same port and state, which is how tests take the
homeserver down and bring it back.

The helpers below pose as the people in the room (register, create a room, say
something, react) with plain HTTP of their own, so a test checks the reconciler's client
against the homeserver rather than against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from testenv.pki import CertAuthority, make_serving_cert
from testenv.served import LoopbackServer

SYNAPSE_PYTHON = Path(__file__).resolve().parent / "synapse" / ".venv" / "bin" / "python"
SERVER_NAME = "testenv"
_NO_LIMIT = {"per_second": 10000, "burst_count": 10000}


class Account(NamedTuple):
    user_id: str
    token: str


class Homeserver(LoopbackServer):
    """One Synapse with its config, SQLite database and log in ``directory``."""

    def __init__(self, directory: Path, ca: CertAuthority) -> None:
        super().__init__(directory, "synapse")
        self.ca = ca
        self._secret = secrets.token_hex(16)
        self._context = ssl.create_default_context(cafile=str(ca.cert_file))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_file

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 120.0) -> None:
        if not SYNAPSE_PYTHON.is_file():
            raise FileNotFoundError(
                f"{SYNAPSE_PYTHON} is missing: run `make testenv` to install Synapse"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "homeserver.yaml"
        if not config_file.exists():  # a restart keeps the keys, secrets and database
            self._write_config(config_file)
        self._launch(
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_file)],
            self.url + "/health",
            self._context,
            timeout,
            env={"PATH": "/usr/bin:/bin", "SYNAPSE_CACHE_FACTOR": "0.5"},
        )

    def _write_config(self, config_file: Path) -> None:
        cert, key = make_serving_cert(self.ca, self.directory, "synapse")
        # An ed25519 seed is any 32 random bytes; Synapse wants it unpadded base64.
        seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        signing_key = self.directory / "signing.key"
        signing_key.write_text(f"ed25519 a_test {seed}\n")
        log_config = self.directory / "log.yaml"
        log_config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(message)s"}},
                    "handlers": {
                        "console": {"class": "logging.StreamHandler", "formatter": "plain"}
                    },
                    "root": {"level": "WARNING", "handlers": ["console"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        config: dict[str, Any] = {
            "server_name": SERVER_NAME,
            "pid_file": str(self.directory / "synapse.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.directory / "homeserver.db")},
            },
            "log_config": str(log_config),
            "media_store_path": str(self.directory / "media"),
            "signing_key_path": str(signing_key),
            "registration_shared_secret": self._secret,
            # Registration hashes a password nobody uses: the cheapest bcrypt cost will do.
            "bcrypt_rounds": 4,
            "enable_registration": False,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "enable_metrics": False,
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "user_directory": {"enabled": False},
            "url_preview_enabled": False,
            "enable_media_repo": False,
            "rc_message": _NO_LIMIT,
            "rc_registration": _NO_LIMIT,
            "rc_room_creation": _NO_LIMIT,
            "rc_login": {k: _NO_LIMIT for k in ("address", "account", "failed_attempts")},
            "rc_joins": {"local": _NO_LIMIT, "remote": _NO_LIMIT},
            "rc_joins_per_room": _NO_LIMIT,
            "rc_invites": {k: _NO_LIMIT for k in ("per_room", "per_user", "per_issuer")},
        }
        config_file.write_text(yaml.safe_dump(config))

    def register(self, user: str, admin: bool = False) -> Account:
        """A new account through shared-secret registration: (user ID, access token)."""
        path = "/_synapse/admin/v1/register"
        nonce = self._request("GET", path)["nonce"]
        password = secrets.token_hex(12)
        mac = hmac.new(self._secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        body = {
            "nonce": nonce,
            "username": user,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        answer = self._request("POST", path, body=body)
        return Account(answer["user_id"], answer["access_token"])

    def create_room(self, owner_token: str, invite: list[str] | tuple[str, ...] = ()) -> str:
        """A private, unencrypted room, owned by the token's user, inviting `invite`."""
        body = {"preset": "private_chat", "invite": list(invite)}
        answer = self._request("POST", "/_matrix/client/v3/createRoom", owner_token, body)
        room_id: str = answer["room_id"]
        return room_id

    def join(self, token: str, room_id: str) -> None:
        self._request("POST", f"/_matrix/client/v3/join/{_seg(room_id)}", token, {})

    def messages(self, token: str, room_id: str) -> list[dict[str, Any]]:
        """Every message and reaction in the room, oldest first, as the homeserver has them."""
        events: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "100"}
        filt = json.dumps({"types": ["m.room.message", "m.reaction"]})
        for _ in range(100):
            query = urllib.parse.urlencode({**params, "filter": filt})
            path = f"/_matrix/client/v3/rooms/{_seg(room_id)}/messages?{query}"
            answer = self._request("GET", path, token)
            events += answer.get("chunk", [])
            if not answer.get("chunk") or "end" not in answer:
                break
            params["from"] = answer["end"]
        return events[::-1]

    def say(
        self,
        token: str,
        room_id: str,
        body: str,
        thread_root: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Post a text message as a person's client would: in `thread_root`'s thread
        and/or as a reply to `reply_to`. Returns its event ID."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        relates: dict[str, Any] = {}
        if thread_root is not None:
            # What Element sends for a message in a thread (with the fallback for clients
            # that show no threads).
            relates = {"rel_type": "m.thread", "event_id": thread_root, "is_falling_back": True}
            relates["m.in_reply_to"] = {"event_id": reply_to or thread_root}
        elif reply_to is not None:
            relates = {"m.in_reply_to": {"event_id": reply_to}}
        if relates:
            content["m.relates_to"] = relates
        return self._send(token, room_id, "m.room.message", content)

    def react(self, token: str, room_id: str, event_id: str, key: str) -> str:
        """React to `event_id` with `key` (``"✅"``); returns the reaction's event ID."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return self._send(token, room_id, "m.reaction", content)

    def _send(self, token: str, room_id: str, kind: str, content: dict[str, Any]) -> str:
        txn = secrets.token_hex(8)
        path = f"/_matrix/client/v3/rooms/{_seg(room_id)}/send/{kind}/{txn}"
        event_id: str = self._request("PUT", path, token, content)["event_id"]
        return event_id

    def _request(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._context) as resp:
                answer: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"synapse {method} {path}: {exc.code} {exc.read()[:300]!r}"
            ) from None
        return answer


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")
