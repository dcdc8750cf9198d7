"""Chart version constraints, as Helm reads a chart's `targetRevision`.

Argo CD hands a chart source's `targetRevision` to Helm, which accepts a
semver constraint (`1.2.*`, `^1.2`, `~1.2.3`, `>=1.0 <2.0`, `1.2 - 1.4`,
`a || b`) and takes the highest version of the repository's index that meets
it. The reconciler reads the index itself (render/charts.py), so it needs the
same choice; this is that choice, on plain strings. As in Helm, a pre-release
is only chosen when the constraint itself names one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# One version as charts and constraints write it: `v` optional, minor and patch
# optional (or wildcards, in a constraint), then pre-release and build metadata.
_VERSION = re.compile(
    r"^v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_COMPARISON = re.compile(r"^(?P<op>!=|>=|<=|=<|=>|~>|[=<>~^])?\s*(?P<version>\S+)$")
_WILDCARDS = ("x", "X", "*")
# The syntax that makes a targetRevision a constraint rather than one version.
_RANGE = re.compile(r"[*^~<>=|!, ]|(^|\.)[xX](\.|$)")

Key = tuple[int, int, int, tuple[tuple[int, int | str], ...]]
# A release's pre-release part: above every pre-release identifier, as a release
# sorts after its pre-releases.
_RELEASE: tuple[tuple[int, int | str], ...] = ((2, 0),)


class ConstraintError(ValueError):
    """A constraint Helm would not read either; its message says which part."""


@dataclass(frozen=True)
class _Bound:
    """`version` (as a sort key) compared by `op`, one of = != > >= < <=."""

    op: str
    key: Key

    def allows(self, key: Key) -> bool:
        order = (key > self.key) - (key < self.key)
        return {
            "=": order == 0,
            "!=": order != 0,
            ">": order > 0,
            ">=": order >= 0,
            "<": order < 0,
            "<=": order <= 0,
        }[self.op]


def is_constraint(revision: str) -> bool:
    """Whether `revision` is a range to resolve rather than one exact version."""
    return bool(_RANGE.search(revision.strip()))


def highest(constraint: str, versions: Iterable[str]) -> str | None:
    """The highest of `versions` that meets `constraint` (None when none does);
    versions that are not semver are passed over, as Helm does."""
    alternatives = _parse(constraint)
    pre_allowed = "-" in constraint
    best: tuple[Key, str] | None = None
    for version in versions:
        key = _key(version)
        if key is None or (key[3] != _RELEASE and not pre_allowed):
            continue
        meets = any(all(b.allows(key) for b in bounds) for bounds in alternatives)
        if meets and (best is None or key > best[0]):
            best = (key, version)
    return None if best is None else best[1]


def _parse(constraint: str) -> list[list[_Bound]]:
    alternatives = [part.strip() for part in constraint.split("||")]
    if not all(alternatives):
        raise ConstraintError(f"version constraint {constraint!r} has an empty alternative")
    return [_conjunction(part) for part in alternatives]


def _conjunction(text: str) -> list[_Bound]:
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        return _comparison(f">={hyphen[1]}") + _comparison(f"<={hyphen[2]}")
    # Operators may be followed by a space (`>= 1.2`): join them to their version.
    tokens = re.sub(r"(!=|>=|<=|=<|=>|~>|[=<>~^])\s+", r"\1", text).replace(",", " ").split()
    return [bound for token in tokens for bound in _comparison(token)]


def _comparison(token: str) -> list[_Bound]:
    match = _COMPARISON.match(token)
    parts = _VERSION.match(match["version"]) if match else None
    if match is None or parts is None:
        raise ConstraintError(f"{token!r} is not a version or a version comparison")
    op = {"=<": "<=", "=>": ">=", "~>": "~"}.get(match["op"] or "=", match["op"] or "=")
    fields = [parts["major"], parts["minor"], parts["patch"]]
    # How many leading numbers were given: the rest are wildcards.
    given = next((i for i, f in enumerate(fields) if f is None or f in _WILDCARDS), 3)
    numbers = [int(f) for f in fields[:given]] + [0] * (3 - given)
    pre = parts["pre"] if given == 3 else None
    low = _as_key(numbers, pre)
    if given == 0:
        return [] if op in ("=", ">=", "<=", "~", "^") else [_Bound(op, low)]
    if op == "^":
        # Up to the next change of the leftmost non-zero number given.
        place = next((i for i, n in enumerate(numbers[:given]) if n), given - 1)
        return [_Bound(">=", low), _Bound("<", _bump(numbers, place))]
    if op == "~":
        place = min(1, given - 1) if given > 1 else 0
        return [_Bound(">=", low), _Bound("<", _bump(numbers, place))]
    if given == 3:
        return [_Bound(op, low)]
    high = _bump(numbers, given - 1)  # a partial version stands for [low, high)
    return {
        "=": [_Bound(">=", low), _Bound("<", high)],
        "!=": [],  # `!=1.2` would exclude a whole line; Helm reads it so loosely too
        ">": [_Bound(">=", high)],
        ">=": [_Bound(">=", low)],
        "<": [_Bound("<", low)],
        "<=": [_Bound("<", high)],
    }[op]


def _bump(numbers: list[int], place: int) -> Key:
    """The lowest version after every version sharing `numbers` up to `place`."""
    raised = [*numbers[:place], numbers[place] + 1] + [0] * (2 - place)
    # `-0` sorts below every pre-release: nothing of the next line is let in.
    return _as_key(raised, "0")


def _key(version: str) -> Key | None:
    parts = _VERSION.match(version.strip())
    if parts is None or any(
        f is None or f in _WILDCARDS for f in (parts["major"], parts["minor"], parts["patch"])
    ):
        return None
    return _as_key([int(parts["major"]), int(parts["minor"]), int(parts["patch"])], parts["pre"])


def _as_key(numbers: list[int], pre: str | None) -> Key:
    identifiers: tuple[tuple[int, int | str], ...] = (
        tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else _RELEASE
    )
    return numbers[0], numbers[1], numbers[2], identifiers
