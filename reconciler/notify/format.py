"""Notices -> one Matrix message: Markdown-style plain `body`, HTML `formatted_body`.

Matrix clients show `formatted_body` (`format: org.matrix.custom.html`) and fall
back to `body`, which notification pop-ups, bridges and plain clients read; both
say the same thing. Every piece of text passes the free-text redaction
(reconciler.render.redaction: credential-looking pairs, tokens, PEM blocks, long
random strings) on its way in, though a report's text is redacted already: a
message leaves the host, so it gets the same last line of defence as a tool's
error. Messages are bounded in notices and characters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from reconciler.notify.notices import Notice
from reconciler.render.redaction import redact_text

# Notices of different things in one message, at most; more wait for the next one.
MAX_NOTICES = 10
# Well under Matrix's 64 KiB event limit, and still readable on a phone.
MAX_BODY = 6000
_STATE_MARK = {"opened": "🔴", "changed": "🟠", "closed": "🟢"}
# cluster/app as notices begin: DNS-1123 names (reconciler.model).
_WHERE = re.compile(r"[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9.-]*: ")


def message(notices: Sequence[Notice], approvals: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The m.room.message content for `notices`; `approvals` gives, per notice key, the
    approval it carries (id, expiry) for the reply that decides it."""
    plain: list[str] = []
    rich: list[str] = []
    for notice in notices:
        p, r = _notice(notice, approvals.get(notice.key))
        plain.append(p)
        rich.append(r)
    body = _bounded("\n\n".join(plain))
    formatted = "".join(rich)
    if len(formatted) > MAX_BODY * 2:
        # A cut in HTML could leave tags open: fall back to the plain text, escaped.
        formatted = "<pre>" + html.escape(body) + "</pre>"
    return {
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
    }


def _notice(notice: Notice, approval: tuple[str, str] | None) -> tuple[str, str]:
    mark = _STATE_MARK.get(notice.state, "")
    title = _clean(notice.title)
    lines = [_clean(line) for line in notice.lines]
    plain = [f"{mark} **{title}**".strip(), *(f"- {line}" for line in lines)]
    rich = f"<p>{mark} <strong>{html.escape(title)}</strong></p>".replace("<p> ", "<p>")
    if lines:
        rich += "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
    if approval is not None:
        approval_id, expires = approval
        plain.append(f"To go ahead, reply `approve {approval_id}` or react ✅ (until {expires}).")
        rich += (
            f"<p>To go ahead, reply <code>approve {html.escape(approval_id)}</code> "
            f"or react ✅ (until {html.escape(expires)}).</p>"
        )
    return "\n".join(plain), rich


def _clean(text: str) -> str:
    # A leading `cluster/app:` is names, not a credential pair: an app called
    # `x-secrets` must not read as `secrets: <value>` and lose its message.
    where = _WHERE.match(text)
    lead, rest = (where[0], text[where.end() :]) if where else ("", text)
    return " ".join((lead + redact_text(rest)).split())


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_BODY else text[: MAX_BODY - 1] + "…"
