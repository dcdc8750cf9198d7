"""The subset of jq that Argo CD users write in `ignoreDifferences.jqPathExpressions`.

Only path expressions are needed (they name fields to delete), so a small parser is
enough and keeps a jq binary out of a pure stage. Anything outside the subset is
refused with a message naming it, never silently treated as matching nothing.

Supported: `.a.b`, `.a."k/x"`, `.a["k"]`, `.a[0]`, `.a[]`, `.a[]?`, and pipes into
`select(.path == literal)` / `select(.path != literal)` or into further paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.diff.pointer import Path, RuleError

SUPPORTED = '.a.b, .a["k"], .a[0], .a[], .a[]?, ... | select(.k == "v"), ... | .b'

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_INDEX = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Index:
    index: int


@dataclass(frozen=True)
class Iterate:
    optional: bool


@dataclass(frozen=True)
class Select:
    path: tuple[Step, ...]
    equal: bool
    literal: Any


Step = Field | Index | Iterate | Select


@dataclass(frozen=True)
class JqPath:
    """A parsed expression; `text` is kept so errors and reports can quote it."""

    text: str
    steps: tuple[Step, ...]

    def paths(self, obj: Any) -> list[Path]:
        """The concrete paths in `obj` the expression selects."""
        return [path for path, _ in _run(self.steps, [((), obj)])]


def parse_jq(text: str) -> JqPath:
    steps: list[Step] = []
    for stage in _split_pipes(text):
        if stage.startswith("select(") and stage.endswith(")"):
            steps.append(_parse_select(text, stage[len("select(") : -1].strip()))
        else:
            steps.extend(_parse_path(text, stage))
    return JqPath(text, tuple(steps))


def _unsupported(text: str, reason: str) -> RuleError:
    return RuleError(
        f"jqPathExpression {text!r} is not supported ({reason}); supported forms: {SUPPORTED}"
    )


def _split_pipes(text: str) -> Iterator[str]:
    depth, start, quoted = 0, 0, False
    for i, char in enumerate(text):
        if char == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and char == "|":
            yield _nonempty(text, text[start:i])
            start = i + 1
    yield _nonempty(text, text[start:])


def _nonempty(text: str, stage: str) -> str:
    if not stage.strip():
        raise _unsupported(text, "empty pipeline stage")
    return stage.strip()


def _parse_select(text: str, condition: str) -> Select:
    match = re.fullmatch(r"(?P<path>\S+?)\s*(?P<op>==|!=)\s*(?P<literal>.+)", condition)
    if match is None:
        raise _unsupported(text, f"select condition {condition!r} is not `.path == literal`")
    try:
        literal = json.loads(match["literal"])
    except json.JSONDecodeError:
        raise _unsupported(text, f"{match['literal']!r} is not a JSON literal") from None
    return Select(tuple(_parse_path(text, match["path"])), match["op"] == "==", literal)


def _parse_path(text: str, stage: str) -> list[Step]:
    if not stage.startswith("."):
        raise _unsupported(text, f"{stage!r} is not a path starting with '.'")
    steps: list[Step] = []
    pos = 1 if stage == "." or stage[1:2] in ("[", "") else 0
    while pos < len(stage):
        char = stage[pos]
        if char == "." and (name := _IDENT.match(stage, pos + 1)):
            steps.append(Field(name.group()))
            pos = name.end()
        elif char == "." and (quoted := _STRING.match(stage, pos + 1)):
            steps.append(Field(json.loads(quoted.group())))
            pos = quoted.end()
        elif char == "[":
            step, pos = _parse_bracket(text, stage, pos + 1)
            steps.append(step)
        else:
            raise _unsupported(text, f"unexpected {stage[pos:]!r}")
    return steps


def _parse_bracket(text: str, stage: str, pos: int) -> tuple[Step, int]:
    step: Step
    if stage.startswith("]", pos):
        end = pos + 1
        optional = stage.startswith("?", end)
        return Iterate(optional), end + optional
    if quoted := _STRING.match(stage, pos):
        step, end = Field(json.loads(quoted.group())), quoted.end()
    elif number := _INDEX.match(stage, pos):
        step, end = Index(int(number.group())), number.end()
    else:
        raise _unsupported(text, f"unexpected {stage[pos - 1 :]!r}")
    if not stage.startswith("]", end):
        raise _unsupported(text, f"expected ']' at {stage[end:]!r}")
    return step, end + 1


def _run(steps: tuple[Step, ...], found: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    for step in steps:
        found = [hit for path, value in found for hit in _apply(step, path, value)]
    return found


def _apply(step: Step, path: Path, value: Any) -> list[tuple[Path, Any]]:
    # jq errors on a step that does not fit the data; for ignore rules that object
    # simply has nothing to ignore there, which is what Argo CD does too.
    if isinstance(step, Field):
        if isinstance(value, dict) and step.name in value:
            return [((*path, step.name), value[step.name])]
        return []
    if isinstance(step, Index):
        if isinstance(value, list) and -len(value) <= step.index < len(value):
            index = step.index % len(value)
            return [((*path, index), value[index])]
        return []
    if isinstance(step, Iterate):
        if isinstance(value, list):
            return [((*path, i), v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return [((*path, k), v) for k, v in value.items()]
        return []
    # A missing field is null in jq, so `select(.name != "x")` keeps items without a name.
    selected = [v for _, v in _run(step.path, [((), value)])] or [None]
    hit = (step.literal in selected) if step.equal else any(v != step.literal for v in selected)
    return [(path, value)] if hit else []
