"""What a failed tool said, fit to keep: every helm and kustomize stderr passes
through `tool_message` before it becomes a RenderError, and so before it
reaches a log line, the state store, the CLI or a metric.

Tools echo their input when they fail: a kustomize secretGenerator literal, a
chart URL with `user:password@`, an Authorization header of a failed pull. So
the message is redacted by pattern (secret-looking keys, URL credentials,
bearer tokens, PEM blocks, long base64-looking strings) and by value (the app's
own Secret values, found in its source by `app_secret_values`), then cut to its
meaningful lines.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from typing import Any

from reconciler.documents import MANIFEST_SUFFIXES, parse_documents
from reconciler.errors import ReconcilerError
from reconciler.tree import Tree

MARKER = "<redacted>"
MAX_LINES = 5
MAX_CHARS = 1000
_MAX_LINE = 400
_LINE_HEAD = 120  # of a longer line, its start (what failed) and its end (the root cause)
_MIN_SECRET = 3  # shorter values would blank out ordinary words and are weak anyway

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
# scheme://user:password@host and scp-like user:password@host
_URL_CREDENTIALS = re.compile(
    r"(?P<lead>[a-z][a-z0-9+.-]*://|\s|^|[\"'(])[^\s/@:\"']+:[^\s/@\"']*@"
)
_AUTH_HEADER = re.compile(
    r"(?i)\b(?P<key>(?:proxy-)?authorization|cookie|set-cookie)(?P<sep>\"?\s*[:=]\s*)[^\n]+"
)
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic|token)\s+[A-Za-z0-9\-._~+/]{8,}=*")
_SECRET_KEY = (
    r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?|auth)[\w.-]*"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?P<key>{_SECRET_KEY})(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;}}\]]+)"
)
_FROM_LITERAL = re.compile(r"(?P<key>--from-literal[= ][^=\s]+=)\S+")
_BLOB = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")
# Where a Go crash stops saying why and starts dumping goroutines and registers.
_CRASH_DUMP = re.compile(r"^(goroutine \d+ |runtime stack:|\[signal )")
# Lines that say what went wrong, in the words helm, kustomize, git and Go use.
_CAUSE = re.compile(
    r"(?i)error|fatal|fail|cannot|can't|unable|not found|no such|denied|refused|invalid"
    r"|not allowed|unknown|missing|panic|timeout|timed out|exit status"
)
# Advice and chatter that name no cause: Helm's hint printed after a YAML parse error,
# klog's info and warning lines.
_NOISE = re.compile(r"^(Use --debug flag|[IW]\d{4} \d\d:\d\d:\d\d)")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with secret values (raw or base64), and whatever looks like a credential,
    replaced by a marker."""
    for value in sorted(_spellings(secrets), key=len, reverse=True):
        text = text.replace(value, MARKER)
    text = _PEM.sub(MARKER, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['lead']}{MARKER}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{m['sep']}{MARKER}", text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {MARKER}", text)
    text = _FROM_LITERAL.sub(lambda m: f"{m['key']}{MARKER}", text)
    text = _KEY_VALUE.sub(
        lambda m: m[0] if m["value"] == MARKER else f"{m['key']}{m['sep']}{MARKER}", text
    )
    return _BLOB.sub(lambda m: MARKER if _looks_random(m[0]) else m[0], text)


def _looks_random(word: str) -> bool:
    # Kubernetes names and paths are lower case; encoded keys and tokens mix cases and digits.
    return (
        any(c.isupper() for c in word)
        and any(c.islower() for c in word)
        and any(c.isdigit() for c in word)
    )


def _spellings(secrets: Iterable[str]) -> Iterator[str]:
    for value in secrets:
        value = value.strip()
        if len(value) >= _MIN_SECRET:
            yield value
            yield base64.b64encode(value.encode()).decode()


def tool_message(stderr: bytes, secrets: Iterable[str] = ()) -> str:
    """The meaningful part of a failed tool's stderr, redacted: the lines that name a
    cause (else its last lines), at most MAX_LINES of them and about MAX_CHARS
    characters; a long line keeps its start and its end, where Go's wrapped errors
    put the root cause."""
    text = redact_text(stderr.decode("utf-8", "replace"), secrets)
    lines: list[str] = []
    for raw in text.splitlines():
        if _CRASH_DUMP.match(raw):
            break
        line = raw.strip()
        if not line or _NOISE.match(line) or (lines and line == lines[-1]):
            continue
        if line.startswith(":") and lines:
            # A wrapped error whose inner message ended in a newline (git's `fatal: ...\n`
            # then kustomize's `: exit status 128`): one error, one line.
            lines[-1] += line
        else:
            lines.append(line)
    causes = [ln for ln in lines if _CAUSE.search(ln)]
    chosen = (causes or lines)[-MAX_LINES:]
    if not chosen:
        return "failed without a message"
    message = " | ".join(map(_bounded, chosen))
    return message if len(message) <= MAX_CHARS else "..." + message[-MAX_CHARS:]


def _bounded(line: str) -> str:
    if len(line) <= _MAX_LINE:
        return line
    return f"{line[:_LINE_HEAD]} ... {line[-(_MAX_LINE - _LINE_HEAD) :]}"


def app_secret_values(tree: Tree, base: str) -> list[str]:
    """Secret values an app's source states in plain sight: Secret manifests' data and
    stringData, and kustomize secretGenerator literals and env files. Unreadable or
    malformed files are skipped: this only widens redaction."""
    values: list[str] = []
    try:
        paths = tree.files(base, recurse=True)
    except ReconcilerError:
        return values
    for path in paths:
        if not path.endswith(MANIFEST_SUFFIXES) and not path.endswith("/Kustomization"):
            continue
        try:
            docs = parse_documents(tree.read(path), path)
        except ReconcilerError:
            continue
        directory = path.rpartition("/")[0]
        for doc in docs:
            if isinstance(doc, dict):
                values.extend(_secret_values(doc))
                values.extend(_env_file_values(tree, directory, doc))
    return values


def _secret_values(doc: dict[Any, Any]) -> Iterator[str]:
    if doc.get("kind") == "Secret":
        for field in ("data", "stringData"):
            content = doc.get(field)
            if isinstance(content, dict):
                for value in content.values():
                    if isinstance(value, str):
                        yield value
                        if field == "data":
                            yield _b64decode(value)
    for generator in _generators(doc):
        for literal in _strings(generator.get("literals")):
            # kustomize quotes a literal without "=" whole in its error.
            _, sep, value = literal.partition("=")
            yield value if sep else literal


def _env_file_values(tree: Tree, directory: str, doc: dict[Any, Any]) -> Iterator[str]:
    for generator in _generators(doc):
        for env in _strings(generator.get("envs")):
            try:
                text = tree.read(f"{directory}/{env}" if directory else env)
            except ReconcilerError:
                continue
            for line in text.decode("utf-8", "replace").splitlines():
                yield line.partition("=")[2]


def _generators(doc: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
    generators = doc.get("secretGenerator")
    if isinstance(generators, list):
        yield from (g for g in generators if isinstance(g, dict))


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _b64decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
