"""Argo CD `ignoreDifferences` entries (and policy ignore rules of the same shape).

A rule names objects by group/kind/name/namespace as Argo CD does (kind required,
group "" is the core group, `*` globs in group and kind, empty name or namespace
matches any) and the fields to leave out of the comparison: `jsonPointers`,
`jqPathExpressions`, and `managedFieldsManagers` (fields those managers own live).
Rules are parsed once, when the app or policy is loaded, so a bad expression is
reported there, naming itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from reconciler.diff import pointer
from reconciler.diff.fieldsets import FieldSet, remove_owned
from reconciler.diff.jq import JqPath, parse_jq
from reconciler.diff.pointer import RuleError
from reconciler.model import ObjectRef


@dataclass(frozen=True)
class IgnoreRule:
    kind: str
    group: str = ""
    name: str = ""
    namespace: str = ""
    json_pointers: tuple[tuple[str, ...], ...] = ()
    jq_paths: tuple[JqPath, ...] = ()
    managers: tuple[str, ...] = ()

    def matches(self, ref: ObjectRef) -> bool:
        return (
            fnmatchcase(ref.group, self.group)
            and fnmatchcase(ref.kind, self.kind)
            and self.name in ("", ref.name)
            and self.namespace in ("", ref.namespace)
        )


def parse_ignore_rules(entries: Iterable[Mapping[str, Any]], where: str) -> tuple[IgnoreRule, ...]:
    """Parse `ignoreDifferences` entries; `where` (an app or policy file) prefixes errors."""
    rules = []
    for number, entry in enumerate(entries, start=1):
        try:
            rules.append(_parse(entry))
        except RuleError as error:
            raise RuleError(f"{where}: ignoreDifferences entry {number}: {error}") from None
    return tuple(rules)


def _parse(entry: Mapping[str, Any]) -> IgnoreRule:
    kind = entry.get("kind")
    if not isinstance(kind, str) or not kind:
        raise RuleError("`kind` is required")
    return IgnoreRule(
        kind=kind,
        group=_text(entry, "group"),
        name=_text(entry, "name"),
        namespace=_text(entry, "namespace"),
        json_pointers=tuple(_pointer(p) for p in _texts(entry, "jsonPointers")),
        jq_paths=tuple(parse_jq(e) for e in _texts(entry, "jqPathExpressions")),
        managers=_texts(entry, "managedFieldsManagers"),
    )


def _pointer(text: str) -> tuple[str, ...]:
    segments = pointer.parse_pointer(text)
    if not segments:
        raise RuleError("jsonPointer '' would ignore the whole object; use a narrower one")
    return segments


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key) or ""
    if not isinstance(value, str):
        raise RuleError(f"`{key}` must be a string")
    return value


def _texts(entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = entry.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RuleError(f"`{key}` must be a list of strings")
    return tuple(values)


def ignored_fields(rules: Iterable[IgnoreRule], owners: Mapping[str, FieldSet]) -> FieldSet:
    """Every field that the rules' `managedFieldsManagers` own in the live object."""
    ignored = FieldSet()
    for rule in rules:
        for manager in rule.managers:
            if manager in owners:
                ignored.merge(owners[manager])
    return ignored


def apply_ignore(obj: dict[str, Any], rules: Iterable[IgnoreRule], ignored: FieldSet) -> None:
    """Delete in place what the (already matched) rules ignore from one object."""
    for rule in rules:
        for segments in rule.json_pointers:
            pointer.delete(obj, pointer.expand(obj, segments))
        for expression in rule.jq_paths:
            pointer.delete(obj, expression.paths(obj))
    remove_owned(obj, ignored)
