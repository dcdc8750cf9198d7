"""Secret values never leave the process (invariant 7).

Every Secret's `data` and `stringData` values, and the fields named by redaction
rules, are replaced by a marker before anything is compared, rendered, logged or
stored. The marker is a keyed hash (HMAC-SHA256 with a random per-process key, cut
to 12 hex digits): equal values get equal markers, so a diff still shows *that* a
value changed, but without the key a marker cannot be brute-forced back to a short
secret the way a plain hash could. Markers are therefore comparable within one
process only; the state store must not compare markers across restarts.

`redact` is for structured data, `redact_text` for free text that may echo an
object, such as an API server's error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from reconciler.diff import pointer
from reconciler.diff.normalize import CONTROLLER_ANNOTATIONS, plain
from reconciler.model import GroupKind, api_group

_KEY = secrets.token_bytes(32)
_MARKER = re.compile(r"<redacted [0-9a-f]{12}>")
TEXT_MARKER = "<redacted>"
LAST_APPLIED = CONTROLLER_ANNOTATIONS[0]


@dataclass(frozen=True)
class RedactionRule:
    """Fields to hide in objects of one group/kind (`*` globs allowed), as JSON
    pointers whose `*` segments match every key or index."""

    kind: str
    group: str = ""
    pointers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for text in self.pointers:
            pointer.parse_pointer(text)  # raises RuleError naming the bad pointer

    def matches(self, group: str, kind: str) -> bool:
        return fnmatchcase(group, self.group) and fnmatchcase(kind, self.kind)

    def paths(self, obj: Any) -> Iterator[pointer.Path]:
        for text in self.pointers:
            yield from pointer.expand(obj, pointer.parse_pointer(text), wildcard=True)


# Always applied, whatever the configured rules say. InfisicalSecret needs no rule:
# its spec holds only references; the values land in the Secret it manages.
SECRET_RULE = RedactionRule(kind="Secret", pointers=("/data/*", "/stringData/*"))


def marker(value: Any) -> str:
    if isinstance(value, str) and _MARKER.fullmatch(value):
        return value  # already redacted: keep redaction idempotent
    data = json.dumps(value, sort_keys=True).encode()
    return f"<redacted {hmac.new(_KEY, data, hashlib.sha256).hexdigest()[:12]}>"


def redact(obj: Mapping[str, Any], rules: Iterable[RedactionRule] = ()) -> dict[str, Any]:
    """A copy of `obj` (or of every item of a `*List`) with secret values replaced."""
    copy: dict[str, Any] = plain(obj)
    redact_in_place(copy, tuple(rules))
    return copy


def redact_in_place(
    obj: dict[str, Any], rules: tuple[RedactionRule, ...], group_kind: GroupKind | None = None
) -> None:
    """Redact `obj` itself; `group_kind` overrides what its apiVersion and kind say."""
    for target, _, matched in _targets(obj, rules, group_kind):
        for rule in matched:
            for path in rule.paths(target):
                pointer.replace(target, path, marker)
        # kubectl's client-side apply keeps a full copy of the object in this annotation.
        annotations = target.get("metadata", {}).get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            annotations[LAST_APPLIED] = marker(annotations[LAST_APPLIED])


def redact_text(
    message: str, objects: Iterable[Mapping[str, Any]], rules: Iterable[RedactionRule] = ()
) -> str:
    """`message` with every secret value of `objects` (raw, base64 or JSON-escaped)
    replaced by a marker. Longest first, so a value that contains another goes whole."""
    rules = tuple(rules)
    values: set[str] = set()
    for obj in objects:
        for target, kind, matched in _targets(plain(obj), rules, None):
            for rule in matched:
                for path in rule.paths(target):
                    field = path[0] if kind == "Secret" else ""
                    values.update(
                        v for t in _strings(_get(target, path)) for v in _spellings(t, field)
                    )
    for value in sorted(values, key=len, reverse=True):
        message = message.replace(value, TEXT_MARKER)
    return message


def _targets(
    obj: dict[str, Any], rules: tuple[RedactionRule, ...], group_kind: GroupKind | None
) -> Iterator[tuple[dict[str, Any], str, list[RedactionRule]]]:
    """Each object with secrets, its kind, and the rules naming them: `obj` itself and
    the items of a `*List` (whose items the API server sends without kind/apiVersion)."""
    found = group_kind or _group_kind(obj, GroupKind("", ""))
    group, kind = found.group, found.kind
    matched = [rule for rule in (SECRET_RULE, *rules) if rule.matches(group, kind)]
    if matched:
        yield obj, kind, matched
    items = obj.get("items")
    if kind.endswith("List") and isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                yield from _targets(
                    item, rules, _group_kind(item, GroupKind(group, kind[: -len("List")]))
                )


def _group_kind(obj: Mapping[str, Any], default: GroupKind) -> GroupKind:
    api_version = obj.get("apiVersion")
    group = api_group(api_version) if isinstance(api_version, str) else default.group
    return GroupKind(group, str(obj.get("kind") or default.kind))


def _spellings(text: str, field: Any) -> Iterator[str]:
    """The forms a value takes in messages: itself, JSON-escaped, and for a Secret the
    other side of its base64 (the server echoes `stringData` as encoded `data`)."""
    forms: tuple[str, ...] = (text,)
    if field == "data":
        forms = (text, _b64decode(text))
    elif field == "stringData":
        forms = (text, base64.b64encode(text.encode()).decode())
    for form in forms:
        if form:
            yield form
            yield json.dumps(form)[1:-1]


def _b64decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _get(obj: Any, path: pointer.Path) -> Any:
    for segment in path:
        obj = obj[segment]
    return obj
