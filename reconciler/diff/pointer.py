"""JSON pointers (RFC 6901) over plain JSON data, shared by ignore rules, redaction and
the change paths the diff reports, so all three spell a path the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from reconciler.errors import ReconcilerError

Segment = str | int
Path = tuple[Segment, ...]

WILDCARD = "*"


class RuleError(ReconcilerError):
    """An ignore or redaction rule names a path or expression that cannot be used."""


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """The unescaped segments of a pointer ('' is the whole document)."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise RuleError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    return tuple(s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/"))


def format_pointer(path: Iterable[Segment]) -> str:
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in path)


def expand(obj: Any, segments: Iterable[str], *, wildcard: bool = False) -> list[Path]:
    """The concrete paths in `obj` that `segments` names; none when it names nothing.

    With `wildcard`, a '*' segment matches every key or index at its level."""
    found: list[tuple[Path, Any]] = [((), obj)]
    for segment in segments:
        found = [
            ((*path, key), child)
            for path, value in found
            for key, child in _step(value, segment, wildcard)
        ]
    return [path for path, _ in found]


def _step(value: Any, segment: str, wildcard: bool) -> list[tuple[Segment, Any]]:
    if isinstance(value, dict):
        if wildcard and segment == WILDCARD:
            return list(value.items())
        return [(segment, value[segment])] if segment in value else []
    if isinstance(value, list):
        if wildcard and segment == WILDCARD:
            return list(enumerate(value))
        if segment.isdigit() and int(segment) < len(value):
            return [(int(segment), value[int(segment)])]
    return []


def delete(obj: Any, paths: Iterable[Path]) -> None:
    """Remove every path from `obj` in place. Later list indices go first so earlier
    deletions never shift the items that later ones name; vanished paths are skipped."""
    for path in sorted(paths, key=_sort_key, reverse=True):
        parent = _parent(obj, path)
        if parent is None:
            continue
        last = path[-1]
        in_map = isinstance(parent, dict) and last in parent
        in_list = isinstance(parent, list) and isinstance(last, int) and last < len(parent)
        if in_map or in_list:
            del parent[last]


def replace(obj: Any, path: Path, transform: Callable[[Any], Any]) -> None:
    """Replace the value at an existing `path` in place with `transform(value)`."""
    parent = _parent(obj, path)
    if parent is not None:
        parent[path[-1]] = transform(parent[path[-1]])


def _parent(obj: Any, path: Path) -> Any:
    if not path:
        return None
    value = obj
    for segment in path[:-1]:
        try:
            value = value[segment]
        except (KeyError, IndexError, TypeError):
            return None
    return value if isinstance(value, dict | list) else None


def _sort_key(path: Path) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, s, "") if isinstance(s, int) else (1, 0, s) for s in path)
